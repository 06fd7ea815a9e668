"""Near-constant predictors are flagged; the head's bias can start at the constant predictor's optimum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peltc.runtime.metrics import near_constant
from peltc.runtime.task_glue import task


def test_near_constant_regression_and_classification():
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 5, 200)
    assert near_constant(task("stsb"), 2.5 + 0.01 * rng.standard_normal(200), y) is not None
    assert near_constant(task("stsb"), y + 0.3 * rng.standard_normal(200), y) is None
    labels = np.array([0] * 120 + [1] * 80)
    assert near_constant(task("sst2"), np.array([1] * 196 + [0] * 4), labels) is not None
    assert near_constant(task("sst2"), labels, labels) is None
    # a task whose labels are themselves nearly all one class is not flagged for predicting it
    assert near_constant(task("sst2"), np.ones(200), np.array([1] * 195 + [0] * 5)) is None


def test_head_bias_prior(tiny_model):
    from peltc.runtime.classify import head_output, init_head_bias

    reg = tiny_model(num_labels=1)
    init_head_bias(reg, [1.0, 2.0, 4.5], task("stsb"))
    assert float(head_output(reg).bias.detach()) == pytest.approx(2.5)
    cls = tiny_model(num_labels=2)
    init_head_bias(cls, [0, 0, 0, 1], task("sst2"))
    p = torch.softmax(head_output(cls).bias.detach(), 0)
    assert p.tolist() == pytest.approx([4 / 6, 2 / 6])          # add-one smoothed frequencies


def test_head_bias_flag_is_checked(tmp_path, capsys):
    from pathlib import Path

    from peltc.cli import main
    spec = Path(__file__).resolve().parents[2] / "specs" / "lora.pelt"
    assert main(["compile", str(spec), "--train", "glue/rte", "--head-bias", "mean", "--out", str(tmp_path / "r")]) == 2
    assert "[U106]" in capsys.readouterr().err


def test_head_weights_zero_starts_at_the_constant_predictor(tiny_model, tiny_dir, small_glue, tmp_path):
    """--head-weights zero: the head's output weights start at 0 (with head_bias prior the model starts
    exactly at the constant predictor); the option is checked like every flag."""
    import json
    from pathlib import Path

    from peltc.cli import main
    from peltc.runtime.settings import resolve_settings
    from peltc.runtime.classify import head_output

    assert resolve_settings(None, {"head_weights": "zero"}).head_weights == "zero"
    spec = Path(__file__).resolve().parents[2] / "specs" / "lora.pelt"
    out = tmp_path / "r"
    assert main(["compile", str(spec), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir", str(small_glue),
                 "--out", str(out), "--k", "32", "--dev-size", "40", "--epochs", "1", "--min-steps", "0",
                 "--max-length", "32", "--quiet", "--no-render", "--head-weights", "zero"]) == 0
    diag = json.loads((out / "diagnostics.json").read_text())["records"]
    assert diag[0]["predictions"]["majority_share"] == 1.0      # step 0: one constant prediction
    assert main(["compile", str(spec), "--train", "glue/rte", "--head-weights", "small", "--out", str(tmp_path / "x")]) == 2
    assert head_output(tiny_model()).weight.abs().sum() > 0    # the default stays random
