"""The compiled model equals the base model at init, and with every gate forced to 0.

A parametrised table (family × case), as peft's test_custom_models.py.
"""

from __future__ import annotations

import pytest
import torch
from torch_models import FAMILIES, PREFIX_FAMILIES, changed, logits, perturb, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch import disable, force_gates

LINEARS = "layers[*].attention.{query, key, value, out}, layers[*].ffn.{up, down}"

# name → spec; every case is zero-initialised (equal to the base model at init)
CASES = {
    "adapter-seq-none": "adapter a { at layers[*].ffn.output size 8 }",
    "adapter-seq-sigmoid-own": "adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }",
    "adapter-seq-attn-sigmoid": "adapter a { at layers[*].attention.output size 8 gate sigmoid(attention.output) }",
    "adapter-seq-scalar": "adapter a { at layers[*].ffn.output size 8 gate scalar }",
    "adapter-seq-const": "adapter a { at layers[*].ffn.output size 8 gate const(0.5) }",
    "adapter-par-sigmoid": ("adapter a { at layers[*].attention.output, layers[*].ffn.output size 8 "
                            "placement parallel gate sigmoid(layer.input) }"),
    "adapter-par-first": ("adapter a { at layers[*].ffn.output size 8 placement parallel "
                          "gate sigmoid(attention.output, pool=first) }"),
    "adapter-mixed": ("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
                      "adapter b { at layers[*].ffn.output size 4 placement parallel gate scalar }\n"
                      "adapter c { at layers[*].ffn.output size 4 gate sigmoid(layer.input, pool=mean_unmasked) }"),
    "lora-none": f"lora l {{ at {LINEARS} rank 4 }}",
    "lora-sigmoid": "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }",
    "lora-scalar": "lora l { at layers[*].ffn.{up, down} rank 4 gate scalar }",
    "lora-const": "lora l { at layers[*].attention.out rank 4 gate const(2) }",
    "lora-two": ("lora l { at layers[*].attention.query rank 4 }\n"
                 "lora m { at layers[*].attention.query rank 2 gate sigmoid(layer.input) }"),
    "lora-rs": f"lora l {{ at {LINEARS} rank 4 scaling rs }}",
    "lora-dora": f"lora l {{ at {LINEARS} rank 4 dora true }}",
    "lora-dora-sigmoid": "lora l { at layers[*].attention.{query, value} rank 4 dora true gate sigmoid(layer.input) }",
    "lora-pissa": f"lora l {{ at {LINEARS} rank 4 init pissa }}",
    "lora-olora-const": "lora l { at layers[*].ffn.{up, down} rank 4 init olora gate const(0.5) }",
    "bitfit-all": "bitfit b { at all }",
    "bitfit-layer-sigmoid": "bitfit b { at layers[*] gate sigmoid(layer.input) }",
    "bitfit-ffn-sigmoid": "bitfit b { at layers[1].ffn gate sigmoid(attention.output) }",
    "bitfit-emb-scalar": "bitfit b { at embeddings gate scalar }",
    "unipelt-al": ("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
                   "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }\n"
                   "bitfit b { at layers[*].attention.output gate sigmoid(layer.input) }"),
}
GATED = [k for k, v in CASES.items() if "gate" in v and "gate const" not in v and "lora-two" != k
         and "lora-scalar" != k and "adapter-mixed" != k]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", list(CASES))
def test_equal_to_base_at_init(family, case, batch):
    model = tiny_model(family)
    base = logits(model, batch)
    compile_model(CASES[case], model)
    torch.testing.assert_close(logits(model, batch), base, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "distilbert", "deberta-v2"])
@pytest.mark.parametrize("case", GATED)
def test_equal_to_base_with_gates_forced_to_zero(family, case, batch):
    model = tiny_model(family)
    base = logits(model, batch)
    compile_model(CASES[case], model)
    perturb(model)
    assert changed(logits(model, batch), base), "perturbed modules must matter"
    assert force_gates(model, 0.0) > 0
    torch.testing.assert_close(logits(model, batch), base, rtol=0, atol=1e-6)
    force_gates(model, None)
    assert changed(logits(model, batch), base)


@pytest.mark.parametrize("family", PREFIX_FAMILIES)
@pytest.mark.parametrize("spec", [
    "prefix p { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }",
    "prefix p { at layers[*].attention length 3 mlp none }",
    "prefix p { at layers[1].attention length 2 mlp none gate scalar }",
])
def test_prefix_disabled_equals_base(family, spec, batch):
    model = tiny_model(family)
    base = logits(model, batch)
    compile_model(spec, model)
    perturb(model)
    assert changed(logits(model, batch), base)
    disable(model, "p")
    torch.testing.assert_close(logits(model, batch), base, rtol=0, atol=1e-6)
    disable(model, "p", False)
    assert changed(logits(model, batch), base)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_disable_every_instance_of_unipelt_apl_equals_base(family, batch):
    model = tiny_model(family)
    base = logits(model, batch)
    compile_model(CASES["unipelt-al"] + "\nprefix p { at layers[*].attention length 3 mlp 16 "
                                        "gate sigmoid(layer.input) }", model)
    perturb(model)
    for inst in "albp":
        disable(model, inst)
    torch.testing.assert_close(logits(model, batch), base, rtol=0, atol=1e-6)
