"""SIGINT / SIGTERM at several moments of a real `peltc compile --train` process (loading the model,
inside `datasets`' fingerprint hashing — which swallows exceptions —, tokenising, training, saving):
exit 130 / 143, one line naming the signal, no traceback, and the folder either absent (nothing
to resume) or resumable — and a resume then finishes the run. A damaged checkpoint is a clean
error (A014)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("_interrupt_driver.py")
SPEC = ROOT / "specs" / "unipelt_apl.pelt"

pytestmark = pytest.mark.slow


def run(phase, sig, tiny_dir, small_glue, out, *extra):
    argv = ["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir", str(small_glue),
            "--out", str(out), "--k", "32", "--dev-size", "40", "--epochs", "2", "--batch-size", "8",
            "--eval-steps", "2", "--min-steps", "0", "--max-length", "32", "--quiet", "--no-render", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(DRIVER), phase, sig, "--", *argv], capture_output=True,
                          text=True, env=env, timeout=600, cwd=str(ROOT))


def assert_clean(p, code, sig):
    assert p.returncode == code, p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted ({sig})"), p.stderr[-2000:]
    return last


@pytest.mark.parametrize("phase", ["loading", "hashing", "tokenising"])
def test_interrupt_before_training_leaves_nothing(phase, tiny_dir, small_glue, tmp_path):
    out = tmp_path / "r"
    p = run(phase, "SIGINT", tiny_dir, small_glue, out)
    last = assert_clean(p, 130, "SIGINT")
    assert "nothing was written" in last
    assert not out.exists()


def test_interrupt_in_training_is_resumable_then_finishes(tiny_dir, small_glue, tmp_path):
    out = tmp_path / "r"
    p = run("training", "SIGTERM", tiny_dir, small_glue, out)
    last = assert_clean(p, 143, "SIGTERM")
    assert "--resume" in last and "checkpoint-" in last
    assert not (out / "metrics.json").exists() and (out / "run.json").is_file()

    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    ckpt = max((damaged / "trainer").glob("checkpoint-*"), key=lambda d: int(d.name.split("-")[1]))
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    q = run("none", "SIGINT", tiny_dir, small_glue, damaged, "--resume")
    assert q.returncode == 3 and "[A014]" in q.stderr and "model.safetensors" in q.stderr, q.stderr[-3000:]
    assert "Traceback" not in q.stderr

    r = run("none", "SIGINT", tiny_dir, small_glue, out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resume: continuing from" in r.stdout and "(step 2" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["final"] and m["train"]["resumed_from"]
    assert not list((out / "trainer").glob("checkpoint-*")), "checkpoints removed once finished"


def test_interrupt_while_saving_resumes_by_scoring(tiny_dir, small_glue, tmp_path):
    out = tmp_path / "r"
    p = run("saving", "SIGINT", tiny_dir, small_glue, out)
    last = assert_clean(p, 130, "SIGINT")
    assert "training finished, adapter saved" in last
    assert (out / "adapter" / "manifest.json").is_file() and not (out / "metrics.json").exists()
    r = run("none", "SIGINT", tiny_dir, small_glue, out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "scoring the test set" in r.stdout
    assert json.loads((out / "metrics.json").read_text())["final"]


def test_swallowed_signal_is_raised_again():
    """Library code that catches everything (datasets' bare ``except:``) cannot make a run go on."""
    import signal

    from peltc.errors import Interrupted
    from peltc.runtime import signals

    with signals.interruptible():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        except BaseException:   # noqa: B036 — what the library does
            pass
        with pytest.raises(Interrupted) as e:
            signals.raise_if_interrupted()
    assert e.value.exit_code == 130
