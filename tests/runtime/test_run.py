"""`peltc compile --train` end to end on a tiny model and the local GLUE TSVs: the run folder,
`peltc eval` reproducing the test metrics exactly, `peltc predict`, resume, grid, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peltc.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "unipelt_apl.pelt"
FAST = ["--k", "32", "--dev-size", "40", "--epochs", "1", "--batch-size", "16", "--min-steps", "0",
        "--max-length", "32", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dir, small_glue):
    out = tmp_path_factory.mktemp("runs") / "apl"
    rc = main(["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir", str(small_glue),
               "--out", str(out), *FAST])
    assert rc == 0
    return out


def test_run_folder_holds_everything(run):
    for f in ("spec.pelt", "ir.json", "architecture.svg", "metrics.json", "gates.json", "gates.png",
              "trainer_log.json", "run.json", "adapter/manifest.json"):
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    assert m["final"] and 0.0 <= m["test"]["accuracy"] <= 1.0
    assert m["sizes"] == {"train": 32, "dev": 40, "test": 40}
    assert m["dev"]["history"], "evaluated on dev at least once"
    gates = json.loads((run / "gates.json").read_text())
    # APL: one row per gated module, a mean per layer, every value a probability
    assert set(gates) == {"ffn_adapter", "kv", "qv/attention.query", "qv/attention.value"}
    assert all(set(row) == {"0", "1"} and all(0 < v < 1 for v in row.values()) for row in gates.values())
    diag = json.loads((run / "diagnostics.json").read_text())["records"]
    assert (run / "diagnostics.png").is_file()
    assert diag[0]["step"] == 0 and len(diag) == 1 + len(m["dev"]["history"])
    for rec in diag:
        assert set(rec["gates"]) == {"ffn_adapter/ffn.output", "kv/attention", "qv/attention.query",
                                     "qv/attention.value"}
        assert set(rec["prefix_mass"]) == {"0", "1"} and all(0 < v < 1 for v in rec["prefix_mass"].values())
        assert set(rec["norms"]) == {"ffn_adapter", "kv", "qv"} and set(rec["prefix_norms"]["kv"]) == {"0", "1"}
        assert rec["features"]["std"] > 0 and -1 <= rec["features"]["cosine_to_mean"] <= 1
    assert "near_constant" in m
    manifest = json.loads((run / "adapter" / "manifest.json").read_text())
    assert not any("encoder" in n and ".prefix" in n and "mlp" in n for n in manifest["tensors"])


def test_eval_reproduces_test_metrics_exactly(run, small_glue, capsys):
    capsys.readouterr()
    assert main(["eval", str(run), "--data-dir", str(small_glue)]) == 0
    printed = json.loads(capsys.readouterr().out.split("\nwarning")[0])
    assert printed == json.loads((run / "metrics.json").read_text())["test"]


def test_predict_prints_a_label(run, capsys):
    capsys.readouterr()
    assert main(["predict", str(run), "--text", "A man is walking.", "--text-pair", "Someone walks."]) == 0
    out = capsys.readouterr().out
    assert out.split()[0] in ("entailment", "not_entailment")




def test_bad_task_data_and_run_dir_are_clean_errors(tiny_dir, small_glue, tmp_path, capsys):
    assert main(["compile", str(SPEC), "--train", "glue/cloa", "--model", str(tiny_dir)]) == 2
    assert "did you mean 'cola'" in capsys.readouterr().err
    bad = tmp_path / "glue" / "RTE"
    bad.mkdir(parents=True)
    (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    (bad / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    rc = main(["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir",
               str(tmp_path / "glue"), "--out", str(tmp_path / "r"), "--no-render", *FAST])
    err = capsys.readouterr().err
    assert rc == 3 and "train.tsv:2" in err and "Traceback" not in err
    assert main(["eval", str(tmp_path / "nope")]) == 2


def test_grid_runs_and_resumes(tiny_dir, small_glue, tmp_path, capsys):
    from peltc.runtime.grid import run_grid
    kw = dict(tasks=["rte"], ks=["32"], seeds=[1], out=str(tmp_path / "grid"), model=str(tiny_dir),
              data_dir=str(small_glue), overrides={"epochs": 1, "min_steps": 0, "max_length": 32}, dev_size=40)
    t = run_grid([str(ROOT / "specs" / "lora.pelt")], **kw)
    cell = t["cells"]["lora|rte|32"]
    assert cell["n"] == 1 and cell["mean"] is not None
    assert "| lora |" in (tmp_path / "grid" / "grid.md").read_text()
    capsys.readouterr()
    run_grid([str(ROOT / "specs" / "lora.pelt")], **kw)
    assert "1 already finished, 0 to run" in capsys.readouterr().out


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(tiny_dir, small_glue, tmp_path):
    """The same command under torchrun (gloo, CPU, 2 processes) trains with DDP and writes the same files."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "peltc", "compile", str(ROOT / "specs" / "lora.pelt"), "--train", "glue/rte", "--model",
           str(tiny_dir), "--data-dir", str(small_glue), "--out", str(out), "--no-render", *FAST]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["final"] and "accuracy" in m["test"]
    assert not list(tmp_path.glob("ddp-*")), "both ranks used one run folder"
