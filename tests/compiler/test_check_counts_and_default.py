"""`peltc check` / `show` / `render` agree with `peltc compile` (issue 22, item 7): the trained AND the
saved totals, each labelled (a prefix's reparameterisation MLP trains and is folded away); without
--model and without a `model` line, the model `compile` trains by default (the packaged MiniLM); and a
spec without a `head` block is drawn with the pooling training uses (the recipe's masked mean)."""

from __future__ import annotations

import re
from pathlib import Path

from peltc.cli import main
from peltc.compiler import schema
from peltc.compiler.archs import DEFAULT_MODEL, PACKAGED_MODEL, KNOWN_MODELS, load_config
from peltc.compiler.pipeline import build_ir
from peltc.compiler.render import to_dot

SPECS = Path(__file__).resolve().parents[2] / "specs"


def totals(out: str) -> dict[str, int]:
    """``{"trained": N, "saved": M}`` from the `total trained:` / `total saved:` lines."""
    got = {}
    for kind in ("trained", "saved"):
        m = re.search(rf"^\s*total {kind}: ([\d,]+)", out, re.M)
        assert m, (kind, out)
        got[kind] = int(m.group(1).replace(",", ""))
    return got


def test_check_prints_trained_and_saved_for_unipelt_apl_on_minilm(capsys):
    assert main(["check", str(SPECS / "unipelt_apl.pelt"), "--model", "minilm"]) == 0
    # `peltc compile`'s report: PELT total 2,871,608 trained, 352,824 saved (+ 770 in the head: 2,872,378)
    assert totals(capsys.readouterr().out) == {"trained": 2_871_608, "saved": 352_824}


def test_check_trained_equals_saved_without_a_prefix_mlp(capsys):
    assert main(["check", str(SPECS / "lora.pelt"), "--model", "bert-base-uncased"]) == 0
    assert totals(capsys.readouterr().out) == {"trained": 294_912, "saved": 294_912}


def test_show_prints_both_totals(capsys):
    assert main(["show", str(SPECS / "unipelt_apl.pelt"), "--model", "minilm"]) == 0
    last = capsys.readouterr().out.rstrip("\n").split("\n")[-1]
    assert re.findall(r"\d[\d,]{3,}\d", last) == ["2,871,608", "352,824"]


def test_check_without_model_means_compiles_default_model(capsys):
    assert main(["check", str(SPECS / "lora.pelt")]) == 0     # no --model, no `model` line
    out = capsys.readouterr().out
    assert "pending" not in out
    assert totals(out)["saved"] == 6 * 2 * (2 * 384 * 8)       # MiniLM: 6 layers, hidden 384
    r = build_ir((SPECS / "lora.pelt").read_text(), default_model=DEFAULT_MODEL)
    assert r.defaulted and r.ir.settings.dims["layers"] == 6 and r.ir.settings.dims["hidden"] == 384
    # the same model as compile's default (runtime.models.resolve_model: the packaged MiniLM)
    assert KNOWN_MODELS[DEFAULT_MODEL] is KNOWN_MODELS["sentence-transformers/all-MiniLM-L6-v2"]
    try:
        packaged = load_config(PACKAGED_MODEL).config
    except Exception:   # the package is not installed (a torch-free install): the stored table
        packaged = KNOWN_MODELS[DEFAULT_MODEL]
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads"):
        assert r.model.config[key] == packaged[key], key


def test_model_none_checks_without_a_model(capsys):
    assert main(["check", str(SPECS / "lora.pelt"), "--model", "none"]) == 0
    out = capsys.readouterr().out
    assert "pending without a model" in out and "total" not in out


def test_render_without_a_head_block_draws_the_recipes_pooling():
    assert schema.RECIPE_POOL == "mean"
    lora = "lora qv { at layers[*].attention.{query, value} }"
    plain = to_dot(build_ir(lora, model="minilm").ir).source
    assert "masked mean over tokens" in plain and "pooler (first token)" not in plain
    assert "no head block: pool mean" in plain
    pooler = to_dot(build_ir(lora + "\nhead { pool pooler }", model="minilm").ir).source
    assert "pooler (first token)" in pooler and "no head block" not in pooler
    mean = to_dot(build_ir(lora + "\nhead { pool mean }", model="minilm").ir).source
    assert "masked mean over tokens" in mean and "no head block" not in mean
