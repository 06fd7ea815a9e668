"""`peltc search` and `peltc grid --storage` on a real PostgreSQL server, started here on loopback (Debian's
postgresql package: initdb in a temporary folder, a free port, its unix socket there too), with several worker
processes; and a grid run as a study reproducing the same grid run without one."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import search_helpers as H  # noqa: E402

from peltc.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL server not installed (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql "
                    "(.ci/run does)")
    bin_dir = Path(found[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="peltc-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:                  # initdb refuses root: run the server as Debian's postgres user
        import pwd
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "peltc", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://peltc@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_search_with_two_worker_processes_on_postgres(postgres_url, tmp_path, tiny_dir, capsys):
    """`--jobs 2`: two worker processes share the study in PostgreSQL; the study ends with exactly N trials
    finished, each in its own run folder; --status prints them and writes the plots."""
    n, out = 3, tmp_path / "out"
    data, space = H.write_data(tmp_path), H.write_space(tmp_path)
    cmd = ["search", str(space), "--train", f"csv:{data}", "--trials", str(n), "--study", "pg", "--out", str(out),
           "--model", str(tiny_dir), "--storage", postgres_url, "--jobs", "2", "--heartbeat", "2", *H.FAST]
    w = H.peltc(*cmd, log=tmp_path / "w.log")
    assert w.wait(timeout=500) == 0, (tmp_path / "w.log").read_text()[-3000:]
    st = H.study(postgres_url, "pg")
    s = H.states(st)
    finished = [t for t in st.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n and "RUNNING" not in s, s
    # both processes joined the study (which of them ran the trials depends on how fast each started)
    assert (tmp_path / "w.log").read_text().count("search: study 'pg' in postgresql://") == 2
    assert len({t.user_attrs["pid"] for t in finished}) in (1, 2)
    assert len({t.user_attrs["run_dir"] for t in finished}) == n
    assert main(["search", "--status", "--study", "pg", "--storage", postgres_url, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("| COMPLETE |") == len([t for t in finished if t.state.name == "COMPLETE"])
    assert (out / "pg" / "history.png").is_file()


@pytest.mark.slow
def test_grid_with_storage_reproduces_the_grid_without(postgres_url, tmp_path, tiny_dir, capsys):
    """The same grid run as today (no storage) and as a study in PostgreSQL by two worker threads: the same
    runs, the same metrics, the same record format, and `peltc grid --table` reads it."""
    data = H.write_data(tmp_path)
    grid = [str(ROOT / "specs" / "lora.pelt"), "--tasks", f"csv:{data}", "--model", str(tiny_dir),
            "--k", "32", "--seeds", "1,2", "--dev-size", "40", "--epochs", "2", "--lr", "0.01", "--min-steps", "0",
            "--max-length", "32"]
    assert main(["grid", *grid, "--out", str(tmp_path / "a"), "--record", str(tmp_path / "a.json")]) == 0
    assert main(["grid", *grid, "--out", str(tmp_path / "b"), "--record", str(tmp_path / "b.json"),
                 "--storage", postgres_url, "--jobs", "2"]) == 0
    a, b = (json.loads((tmp_path / f"{x}.json").read_text())["runs"] for x in "ab")
    timings = {"wall_seconds", "train_examples_per_second", "eval_examples_per_second", "runtime",
               "samples_per_second", "steps_per_second"}

    def strip(rs):
        return [{k: {m: x for m, x in v.items() if m not in timings} if isinstance(v, dict) else v
                 for k, v in r.items() if k not in timings} for r in rs]
    assert len(a) == 2 and strip(a) == strip(b)
    assert [r["test"] for r in a] == [r["test"] for r in b]
    st = H.study(postgres_url, "grid-b")
    assert H.states(st) == {"COMPLETE": 2}
    capsys.readouterr()
    assert main(["grid", "--table", str(tmp_path / "b.json")]) == 0
    assert "| lora |" in capsys.readouterr().out
