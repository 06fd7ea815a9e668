"""The diagram is drawn from the plan the rewrite applies: its module nodes are exactly the modules
that hold PELT parameters in the compiled (and prefix-folded, as saved) model."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers

from peltc.api import build_spec_ir, compile_model
from peltc.compiler.diagram import diagram_module_nodes
from peltc.compiler.torch.rewrite import fold_prefix

SPECS = sorted(p for p in (Path(__file__).resolve().parents[2] / "specs").glob("*.pelt")
               if p.name != "finetune.pelt")   # finetune trains base weights in place: no PELT modules


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_diagram_nodes_are_the_pelt_modules(spec):
    # hidden 576: the specs' sizes must fit (MAM's parallel adapter is 512 wide); 4 layers for top-3 LoRA
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=576, num_hidden_layers=4, num_attention_heads=2,
                                  intermediate_size=32)
    model = transformers.BertForSequenceClassification(cfg)
    ir = build_spec_ir(spec, model)
    compile_model(ir, model)
    fold_prefix(model)
    holders = {n.split(".pelt_")[0] for n, _ in model.named_parameters() if "pelt_" in n}
    assert holders == diagram_module_nodes(ir)


# --- decoders: the same on a tiny model of each family (pre-norm blocks, gated MLP) -------------------
def _decoder_cases():
    from torch_models import DECODERS
    biased = {"bitfit.pelt", "bitfit_attention_gated_adapter.pelt"}   # only Qwen2 has biases (q, k, v)
    return [(f, s) for f in DECODERS for s in SPECS if s.name not in biased or f == "qwen2"] + \
           [(f, EVERY_DECODER_POINT) for f in DECODERS]


EVERY_DECODER_POINT = """
adapter seq_a { at layers[*].attention.output size 8 gate scalar }
adapter par_f { at layers[*].ffn.output size 8 placement parallel scale 2 }
adapter seq_f { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }
lora l { at layers[*].attention.{query, key, value, out}, layers[*].ffn.{gate, up, down} rank 2 }
prefix kv { at layers[1..].attention length 3 }
"""


@pytest.mark.parametrize("family,spec", _decoder_cases(),
                         ids=lambda x: x if isinstance(x, str) and "\n" not in x else getattr(x, "stem", "every_point"))
def test_decoder_diagram_nodes_are_the_pelt_modules(family, spec):
    from torch_models import tiny_decoder
    model = tiny_decoder(family, num_hidden_layers=4)       # 4 layers for top-3 LoRA; hidden 64
    ir = build_spec_ir(spec, model)
    compile_model(ir, model)
    fold_prefix(model)
    holders = {n.split(".pelt_")[0] for n, _ in model.named_parameters() if "pelt_" in n}
    assert holders == diagram_module_nodes(ir)
