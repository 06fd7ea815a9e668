"""Switching to the prefix attention function: checked at compile time on what the attention modules
actually call (issue 9.10), and confined to the compiled model — never the caller's config object
(issue 9.11)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch_models import logits, perturb, tiny_config, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch import disable, fold_prefix, merge
from peltc.compiler.torch.prefix import MIN_TRANSFORMERS
from peltc.errors import CompileError

SPEC = ("prefix p { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
        "lora l { at layers[*].attention.{query, value} rank 2 alpha 4 }")


def _untouched(model) -> bool:
    return not any("pelt_" in n for n, _ in model.named_parameters()) and \
        all(p.requires_grad for p in model.parameters()) and "_pelt" not in model.__dict__


def _tf_version() -> str:
    import transformers
    return transformers.__version__


# --- 9.10: the switch must take effect, checked at compile time ---------------------------------------

class _OwnSdpaSelfAttention(torch.nn.Module):
    """What BERT's attention is on transformers 4.x: a class picked when the model is built that calls
    sdpa itself, whatever ``config._attn_implementation`` says."""

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        b, s, _ = hidden_states.shape
        shape = (b, s, -1, self.attention_head_size)
        q, k, v = (lin(hidden_states).view(shape).transpose(1, 2) for lin in (self.query, self.key, self.value))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(b, s, -1), None


def _own_sdpa(model):
    """Make every BERT self-attention module ignore the attention interface (as on transformers 4.x)."""
    for m in model.modules():
        if type(m).__name__ == "BertSelfAttention":
            m.__class__ = type("BertSdpaSelfAttention", (_OwnSdpaSelfAttention, type(m)), {})
    return model


def test_attention_that_does_not_call_the_interface_is_refused_at_compile_time():
    model = _own_sdpa(tiny_model("bert", "sdpa"))
    cfg = model.config.to_dict()
    with pytest.raises(CompileError) as e:
        compile_model(SPEC, model)
    d = e.value.diagnostic
    assert d.code == "C015"
    assert "BertSdpaSelfAttention" in d.message and "layers[0]" in d.message
    assert f"transformers {_tf_version()}" in d.message
    assert f">= {MIN_TRANSFORMERS}" in d.help and _tf_version() in d.help
    assert _untouched(model)                                      # nothing changed, not even the config
    assert model.config.to_dict() == cfg and model.config._attn_implementation == "sdpa"


def test_set_attn_implementation_that_does_not_take_is_refused_at_compile_time(monkeypatch):
    # transformers 4.x: BertForSequenceClassification.set_attn_implementation only logs a warning.
    model = tiny_model("bert", "sdpa")
    monkeypatch.setattr(type(model), "set_attn_implementation", lambda self, name: None)
    with pytest.raises(CompileError) as e:
        compile_model(SPEC, model)
    d = e.value.diagnostic
    assert d.code == "C015" and f"transformers {_tf_version()}" in d.message
    assert f"transformers >= {MIN_TRANSFORMERS}" in d.help
    assert _untouched(model) and model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_the_compile_time_check_accepts_the_supported_attention(family, batch):
    model = tiny_model(family, "eager")
    base = logits(model, batch)
    compile_model(SPEC, model)
    assert model.config._attn_implementation == "peltc_prefix_eager"
    assert not torch.allclose(logits(model, batch), base, atol=1e-6)          # the prefixes are used ...
    disable(model, "p")
    torch.testing.assert_close(logits(model, batch), base, rtol=0, atol=1e-6)   # ... and only they change it


def test_declared_lower_bound_matches_the_check():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    deps = pyproject["project"]["optional-dependencies"]["torch"]
    assert f"transformers>={MIN_TRANSFORMERS}" in deps


@pytest.mark.skipif(not _tf_version().startswith("4."), reason="only transformers 4.x lacks the interface")
def test_real_transformers_4_gives_the_precise_error():
    model = tiny_model("bert", "sdpa")
    with pytest.raises(CompileError) as e:
        compile_model(SPEC, model)
    assert e.value.diagnostic.code == "C015"
    assert _untouched(model)


# --- 9.11: a compile changes only the model it was given --------------------------------------------

def _two_models(family: str, attn: str):
    from transformers import AutoModelForSequenceClassification
    cfg = tiny_config(family, attn)
    models = []
    for _ in range(2):                   # the same weights, the same config object
        torch.manual_seed(0)
        models.append(AutoModelForSequenceClassification.from_config(cfg).eval())
    return cfg, *models


def _compile(spec, model):
    torch.manual_seed(1)                 # the same PELT initialisation for both models
    return compile_model(spec, model)


@pytest.mark.parametrize("family,attn", [("bert", "sdpa"), ("bert", "eager"), ("distilbert", "sdpa")])
def test_compiling_a_prefix_spec_leaves_a_shared_config_unchanged(family, attn, batch):
    cfg, a, b = _two_models(family, attn)
    assert a.config is cfg and b.config is cfg
    before = copy.deepcopy(cfg.__dict__)
    _compile(SPEC, a)
    assert cfg._attn_implementation == attn
    assert cfg.__dict__ == before
    assert b.config is cfg                                       # the other model was not touched
    assert a.config is not cfg and a.config._attn_implementation == f"peltc_prefix_{attn}"
    base = getattr(a, family)
    assert all(m.config is a.config for m in a.modules() if "config" in vars(m))   # one copy, used everywhere
    assert base.config is a.config
    perturb(a)
    out_a = logits(a, batch)
    # the second model compiles and runs, with its own prefixes
    _compile(SPEC, b)
    assert cfg.__dict__ == before and b.config is not a.config
    perturb(b)
    torch.testing.assert_close(logits(b, batch), out_a, rtol=0, atol=1e-5)   # same weights and init


def test_config_copy_survives_fold_merge_and_artifact_round_trip(tmp_path, batch):
    from peltc.compiler.torch.artifact import load_into, load_tensors, save_artifact
    cfg, a, b = _two_models("bert", "sdpa")
    before = copy.deepcopy(cfg.__dict__)
    spec = SPEC.replace("mlp 16 gate sigmoid(layer.input)", "mlp 16 gate scalar")
    _compile(spec, a)
    perturb(a)
    out = logits(a, batch)
    fold_prefix(a)
    save_artifact(a, tmp_path, ir_dict={"nodes": [], "edges": []}, spec_text=spec, spec_hash="h" * 64,
                  base_model="tiny")
    torch.testing.assert_close(logits(a, batch), out, rtol=0, atol=1e-5)
    merge(a)
    torch.testing.assert_close(logits(a, batch), out, rtol=0, atol=1e-5)
    # load onto the second model (built from the same config object, untouched by the first compile)
    _compile(spec, b)
    fold_prefix(b)
    manifest, tensors = load_tensors(tmp_path)
    load_into(b, manifest, tensors)
    torch.testing.assert_close(logits(b, batch), out, rtol=0, atol=1e-5)
    assert cfg.__dict__ == before


def test_deepcopy_of_a_compiled_model_keeps_its_own_config(batch):
    model = tiny_model("bert", "sdpa")
    compile_model(SPEC, model)
    perturb(model)
    twin = copy.deepcopy(model)
    assert twin.config is not model.config and twin.bert.config is twin.config
    torch.testing.assert_close(logits(twin, batch), logits(model, batch), rtol=0, atol=0)


def test_a_failed_compile_leaves_the_shared_config_unchanged():
    cfg, a, _ = _two_models("bert", "sdpa")
    before = copy.deepcopy(cfg.__dict__)
    _own_sdpa(a)
    with pytest.raises(CompileError):
        compile_model(SPEC, a)
    assert a.config is cfg and cfg.__dict__ == before
    assert all(m.config is cfg for m in a.modules() if "config" in vars(m))

