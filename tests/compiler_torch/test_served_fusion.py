"""The serving fast paths (compiler/torch/served.py) compute what the training path computes: no-grad
forwards with the fusions on equal the same model with them off (``rewrite.serve_fused``), padded batches,
encoders and a decoder's cached generation; the stacked weights follow parameter changes; a forward with
autograd never takes them."""

from __future__ import annotations

import pytest
import torch
from torch_models import logits, perturb, tiny_batch, tiny_decoder, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch.compiled import compiled
from peltc.compiler.torch.gate import read_gates
from peltc.compiler.torch.rewrite import fold_prefix, merge, serve_fused

# specs/unipelt_apl.pelt at a tiny model's size (hidden 32)
APL = ("adapter ffn_adapter { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
       "prefix kv { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
       "lora qv { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }")


def _served(model, spec: str = APL):
    compile_model(spec, model)
    perturb(model, std=0.5)
    fold_prefix(model)
    return model.eval()


def _both(model, batch):
    serve_fused(model, False)
    off = logits(model, batch)
    serve_fused(model, True)
    return off, logits(model, batch)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_unipelt_served_equals_unfused(family):
    model = _served(tiny_model(family, attn="sdpa"))
    batch = tiny_batch()
    off, on = _both(model, batch)
    torch.testing.assert_close(on, off, rtol=0, atol=1e-6)
    packs = {k[0] for k in compiled(model).state.packs}
    # the fast paths ran: one down-projection for the attention block's LoRAs (with the gates reading
    # layer.input), the adapter's gate inside its down-projection
    assert {"lora_A", "adapter_down", "adapter_up"} <= packs
    assert torch.equal(logits(model, batch), on)        # the kept stacks give the same result again


def test_every_gate_value_is_the_same():
    model = _served(tiny_model("bert", attn="sdpa"))
    batch = tiny_batch()
    serve_fused(model, False)
    logits(model, batch)
    off = read_gates(model)
    serve_fused(model, True)
    logits(model, batch)
    on = read_gates(model)
    assert on.keys() == off.keys() and len(on) == 2 * 4        # 2 layers × (adapter, prefix, 2 LoRAs)
    for k in on:
        torch.testing.assert_close(on[k], off[k], rtol=0, atol=1e-6)


def test_stacks_follow_a_parameter_change():
    model = _served(tiny_model("bert", attn="sdpa"))
    batch = tiny_batch()
    logits(model, batch)                                  # stacks built
    perturb(model, std=0.3, seed=5)                       # in place: versions move
    off, on = _both(model, batch)
    torch.testing.assert_close(on, off, rtol=0, atol=1e-6)
    with torch.no_grad():                                 # and a LoRA alone, after the stacks were rebuilt
        lora = next(m for n, m in model.named_modules() if n.endswith("pelt_lora.qv"))
        lora.A.weight.mul_(3.0)
    off, on = _both(model, batch)
    torch.testing.assert_close(on, off, rtol=0, atol=1e-6)


def test_a_forward_with_autograd_never_takes_them():
    model = _served(tiny_model("bert", attn="sdpa"))
    state = compiled(model).state
    batch = tiny_batch()
    model.train()
    out = model(**batch).logits
    out.sum().backward()
    assert not state.packs
    with torch.no_grad():                                 # no grad but train mode (dropout): not either
        model(**batch)
    assert not {k[0] for k in state.packs} & {"lora_A", "adapter_down", "adapter_up"}


def test_ungated_lora_and_merge():
    """Ungated LoRAs on query, key and value (one down-projection) and an ungated adapter; after a
    partial merge the group drops the merged LoRAs."""
    spec = ("lora l { at layers[*].attention.{query, key, value} rank 4 }\n"
            "lora g { at layers[*].attention.query rank 2 gate sigmoid(layer.input) }\n"
            "adapter a { at layers[*].ffn.output size 8 scale 0.5 }")
    model = _served(tiny_model("bert", attn="sdpa"), spec)
    batch = tiny_batch()
    off, on = _both(model, batch)
    torch.testing.assert_close(on, off, rtol=0, atol=1e-6)
    merge(model, skip_gated=True)
    groups = compiled(model).state.lora_groups
    assert all(len(g) == 1 for g in groups.values() if g)   # only the gated LoRA of each layer is left
    off, on = _both(model, batch)
    torch.testing.assert_close(on, off, rtol=0, atol=1e-6)


def test_decoder_cached_generation_equals_uncached_and_unfused():
    spec = ("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
            "prefix p { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
            "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }")
    model = tiny_decoder("llama", causal_lm=True, attn="sdpa")
    compile_model(spec, model)
    perturb(model, std=0.5)
    fold_prefix(model)
    model.eval()
    ids = torch.tensor([[5, 17, 42, 8, 61], [9, 9, 33, 70, 2]])
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6, do_sample=False,
              pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    runs = {}
    for fused in (True, False):
        serve_fused(model, fused)
        for cache in (True, False):
            with torch.no_grad():
                runs[fused, cache] = model.generate(input_ids=ids, use_cache=cache, **kw)
    assert any(k[0] == "lora_A" for k in compiled(model).state.packs) is False   # off last: stacks dropped
    ref = runs[False, False]
    for out in runs.values():
        assert torch.equal(out.sequences, ref.sequences)
        torch.testing.assert_close(torch.stack(out.logits, 1), torch.stack(ref.logits, 1), rtol=1e-4, atol=1e-5)
    serve_fused(model, True)
    with torch.no_grad():
        model(input_ids=ids)
    assert any(k[0] == "lora_A" for k in compiled(model).state.packs)   # q and v LoRAs: one matmul
    one = torch.stack(runs[True, True].logits, 1)
    torch.testing.assert_close(one, torch.stack(runs[False, True].logits, 1), rtol=0, atol=1e-6)


def test_lora_options_served_equal_unfused():
    """DoRA leaves the shared down-projection (it rescales the base output); rsLoRA and PiSSA ride in it."""
    spec = ("lora q { at layers[*].attention.query rank 4 dora true }\n"
            "lora v { at layers[*].attention.value rank 4 scaling rs }\n"
            "lora k { at layers[*].attention.key rank 2 init pissa }")
    model = _served(tiny_model("bert", attn="sdpa"), spec)
    batch = tiny_batch()
    off, on = _both(model, batch)
    torch.testing.assert_close(on, off, rtol=0, atol=1e-6)
    assert all(not lo.dora for group in compiled(model).state.lora_groups.values() for lo in group)


def test_stacks_follow_a_fused_optimizer_step():
    """After a training forward and an optimizer step the next no-grad forward sees the stepped weights (a
    training forward drops the stacks; tests/runtime/test_task_gen.py's gen:jsonl run caught stale stacks in
    its dev evaluations under the HF Trainer, which this direct step does not reproduce)."""
    model = _served(tiny_model("bert", attn="sdpa"))
    batch = tiny_batch()
    logits(model, batch)                                       # the stacks built
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-1, fused=True)
    model.train()
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.pow(2).mean().backward()
    opt.step()
    model.eval()
    off, on = _both(model, batch)
    torch.testing.assert_close(on, off, rtol=0, atol=1e-6)
