"""save → load in a fresh process → identical logits (≤ 1e-6), strict keys, for specs covering every
method (adapter sequential + parallel, prefix, LoRA, BitFit, all gate kinds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from peltc.api import compile_model
from peltc.compiler.torch.artifact import save_artifact
from peltc.compiler.torch.rewrite import fold_prefix

ROOT = Path(__file__).resolve().parents[2]
SPECS = ["unipelt_apl.pelt", "mam_adapter.pelt", "bitfit.pelt", "lora_top_layers.pelt"]
GATES = """
adapter a { at layers[*].attention.output size 8 gate scalar(init=0.3) }
lora b { at layers[0].ffn.up rank 2 gate const(0.7) }
bitfit c { at layers[1].ffn gate sigmoid(layer.input, pool=mean_unmasked) }
"""

_LOADER = r"""
import sys, numpy as np, torch, transformers
from peltc.api import compile_model
from peltc.compiler.ir import IR
from peltc.compiler.torch.artifact import load_into, load_tensors
from peltc.compiler.torch.rewrite import fold_prefix
base, art, ids, out = sys.argv[1:5]
model = transformers.BertForSequenceClassification.from_pretrained(base)
manifest, tensors = load_tensors(art)
ir = IR.from_dict(manifest["ir"])
compile_model(ir, model)
fold_prefix(model)
load_into(model, manifest, tensors, spec_hash=ir.settings.spec_hash)
model.eval()
x = torch.from_numpy(np.load(ids))
with torch.no_grad():
    logits = model(input_ids=x, attention_mask=(x != 0).long()).logits
np.save(out, logits.numpy())
"""


def _train_a_bit(model, steps=3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(1)
    for _ in range(steps):
        x = torch.randint(1, 100, (4, 12))
        loss = model(input_ids=x, labels=torch.tensor([0, 1, 0, 1])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("spec", SPECS + ["gates"])
def test_fresh_process_reload_is_identical(spec, tmp_path):
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=576, num_hidden_layers=4, num_attention_heads=2,
                                  intermediate_size=32)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg)
    model.save_pretrained(tmp_path / "base")
    src = GATES if spec == "gates" else ROOT / "specs" / spec
    report = compile_model(src, model)
    _train_a_bit(model)
    fold_prefix(model)
    ir_dict = model._pelt.ir.to_dict()
    save_artifact(model, tmp_path / "adapter", ir_dict=ir_dict, spec_text=str(src),
                  spec_hash=model._pelt.ir.settings.spec_hash, base_model=str(tmp_path / "base"))
    x = torch.randint(1, 100, (3, 10))
    x[0, 7:] = 0     # padding
    np.save(tmp_path / "ids.npy", x.numpy())
    model.eval()
    with torch.no_grad():
        want = model(input_ids=x, attention_mask=(x != 0).long()).logits.numpy()
    subprocess.run([sys.executable, "-c", _LOADER, str(tmp_path / "base"), str(tmp_path / "adapter"),
                    str(tmp_path / "ids.npy"), str(tmp_path / "got.npy")], check=True)
    got = np.load(tmp_path / "got.npy")
    assert np.abs(got - want).max() <= 1e-6
    assert report.trainable_total > 0
