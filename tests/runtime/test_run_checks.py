"""What `peltc compile --train` says and checks before it trains (issue 22, items 3, 5, 12, 15): the
schedule (steps, warm-up) at start and a warning when it trains nothing; K against the data before the
weights load; GLUE from the Hub failing at once offline; the degenerate-run advice fitting the run;
progress bars only on a terminal."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from peltc.cli import main
from peltc.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
LORA = ROOT / "specs" / "lora.pelt"
QUICK = ["--dev-size", "40", "--min-steps", "0", "--max-length", "32", "--quiet", "--no-render"]


# --- item 3: a schedule that trains nothing ---------------------------------------------------------

def test_schedule_counts_steps_and_warmup_as_the_trainer_does():
    from peltc.runtime.settings import resolve_settings, schedule

    one = schedule(resolve_settings(None, {"epochs": 1.0, "batch_size": 16}), 16)
    assert (one.steps, one.warmup_steps, one.trained_steps, one.trains_nothing) == (1, 1, 0, True)
    assert one.warning() is not None
    two = schedule(resolve_settings(None, {"epochs": 1.0, "batch_size": 16}), 32)
    assert (two.steps, two.warmup_steps, two.trained_steps, two.warning()) == (2, 1, 1, None)
    flat = schedule(resolve_settings(None, {"epochs": 1.0, "batch_size": 16, "warmup": 0.0}), 16)
    assert (flat.steps, flat.warmup_steps, flat.trained_steps) == (1, 0, 1)
    recipe = schedule(resolve_settings(None, {}), 100)          # 20 epochs × 7 steps, 6 % warm-up
    assert (recipe.steps, recipe.steps_per_epoch, recipe.warmup_steps) == (140, 7, 9)


def test_a_run_that_trains_nothing_is_warned_about_and_says_its_schedule(tiny_dir, small_glue, tmp_path, capsys):
    """--k 16 --epochs 1 at batch 16: one step, at learning rate 0 — LoRA's B stays exactly 0."""
    out = tmp_path / "idle"
    rc = main(["compile", str(LORA), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir",
               str(small_glue), "--out", str(out), "--k", "16", "--epochs", "1", "--batch-size", "16", *QUICK])
    captured = capsys.readouterr()
    assert rc == 0
    assert "schedule: 1 optimiser step" in captured.out and "warm-up 1 step" in captured.out
    m = json.loads((out / "metrics.json").read_text())
    assert m["schedule"] == {"steps": 1, "steps_per_epoch": 1, "warmup_steps": 1, "trained_steps": 0}
    assert m["warnings"] and "trains nothing" in m["warnings"][0]
    assert "trains nothing" in captured.err
    from safetensors.torch import load_file
    tensors = load_file(str(next((out / "adapter").glob("weights-*.safetensors"))))
    lora_b = [t for n, t in tensors.items() if "pelt_lora" in n and n.endswith(".B.weight")]
    assert lora_b and all(float(t.abs().max()) == 0.0 for t in lora_b)


# --- item 5: checks that come first ------------------------------------------------------------------

def test_k_larger_than_the_data_is_refused_before_the_weights_load(tiny_dir, small_glue, tmp_path, monkeypatch):
    from peltc.runtime import run

    def no_weights(*a, **k):
        raise AssertionError("the weights were loaded before K was checked")

    monkeypatch.setattr(run, "load_base", no_weights)
    opts = run.RunOptions(spec=str(LORA), task="glue/rte", model=str(tiny_dir), data_dir=str(small_glue),
                          k=100000, dev_size=40, out=str(tmp_path / "r"), render=False, progress=False)
    with pytest.raises(DataError) as e:
        run.train_run(opts)
    assert e.value.diagnostic.code == "D106"
    assert not (tmp_path / "r").exists()


def test_glue_without_data_dir_fails_at_once_offline(tiny_dir, tmp_path, monkeypatch, capsys):
    """No --data-dir, no $PELT_GLUE_DIR, the Hub offline and nothing cached: D107 at once, saying
    --data-dir / $PELT_GLUE_DIR — never datasets' retry loop."""
    import datasets

    from peltc.runtime import task_glue

    asked = []

    def no_hub(*a, **k):         # datasets' own path: a minute of retries before it gives up
        asked.append(a)
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.delenv("PELT_GLUE_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "ds-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    t0 = time.monotonic()
    with pytest.raises(DataError) as e:
        task_glue.load_glue(task_glue.task("rte"))
    assert e.value.diagnostic.code == "D107" and time.monotonic() - t0 < 5 and not asked
    assert "--data-dir" in e.value.diagnostic.help and "PELT_GLUE_DIR" in e.value.diagnostic.help
    rc = main(["compile", str(LORA), "--train", "glue/rte", "--model", str(tiny_dir), "--out", str(tmp_path / "r"),
               "--k", "16", *QUICK])
    err = capsys.readouterr().err
    assert rc == 3 and "[D107]" in err and "Traceback" not in err and not (tmp_path / "r").exists() and not asked


def test_compile_help_names_data_dir_and_the_environment_variable(capsys):
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "$PELT_GLUE_DIR" in out.split("--data-dir DATA_DIR")[-1]
    assert "--data-dir or $PELT_GLUE_DIR" in out


# --- item 12: the degenerate-run advice fits the run ---------------------------------------------------

@pytest.mark.parametrize("pool,advised", [("mean", False), ("pooler", True), (None, False)])
def test_degenerate_advice_suggests_mean_pooling_only_to_a_run_without_it(pool, advised):
    import numpy as np

    from peltc.runtime.metrics import degenerate_warning
    from peltc.runtime.task_glue import task

    w = degenerate_warning(task("cola"), np.ones(10, dtype=int), pool=pool)
    assert w is not None and ("mean pooling" in w) is advised


def test_evaluate_saved_reads_the_runs_pooling(tiny_dir):
    from peltc.api import compile_model
    from peltc.compiler.archs import load_config
    from peltc.runtime import classify
    from peltc.runtime.models import load_base

    for spec, pool in (("lora l { at layers[*].attention.{query, value} rank 2 }\nhead { pool mean }", "mean"),
                       ("lora l { at layers[*].attention.{query, value} rank 2 }\nhead { pool pooler }", "pooler")):
        _, model = load_base(load_config(str(tiny_dir)), 2)
        compile_model(spec, model)
        assert classify.head_pool(model) == pool


# --- item 15: progress bars only on a terminal -----------------------------------------------------------

class _Tty:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, s):
        return len(s)

    def flush(self):
        pass


@pytest.mark.parametrize("tty,quiet,bars", [(False, False, False), (True, False, True), (True, True, False)])
def test_progress_bars_only_when_stderr_is_a_terminal(tty, quiet, bars, monkeypatch):
    import sys

    from peltc.runtime import run

    seen = {}

    def fake_run(opts):
        seen["progress"] = opts.progress
        return {}

    import datasets
    import transformers.utils.logging

    monkeypatch.setattr(run, "train_run", fake_run)
    monkeypatch.setattr(sys, "stderr", _Tty(tty))
    try:
        main(["compile", str(LORA), "--train", "glue/rte", *(["--quiet"] if quiet else [])])
        assert seen["progress"] is bars
        if not bars:     # nor the libraries' own bars (loading weights, writing checkpoints, tokenising)
            assert not transformers.utils.logging.is_progress_bar_enabled()
            assert not datasets.is_progress_bar_enabled()
    finally:
        transformers.utils.logging.enable_progress_bar()
        datasets.enable_progress_bars()
