"""Tiny random models of every family (hidden 32, 2 layers, 4 heads, intermediate 37) and helpers
for the torch back-end tests (a uniquely named module: imported as ``torch_models``)."""

from __future__ import annotations

import copy

import torch

FAMILIES = ["bert", "roberta", "electra", "distilbert", "deberta-v2"]
PREFIX_FAMILIES = [f for f in FAMILIES if f != "deberta-v2"]


def tiny_config(family: str, attn: str | None = None):
    from transformers import BertConfig, DebertaV2Config, DistilBertConfig, ElectraConfig, RobertaConfig
    common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64)
    cfg = {
        "bert": lambda: BertConfig(**common),
        "roberta": lambda: RobertaConfig(**common, pad_token_id=1),
        "electra": lambda: ElectraConfig(**common, embedding_size=16),
        "distilbert": lambda: DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                               max_position_embeddings=64),
        "deberta-v2": lambda: DebertaV2Config(**common),
    }[family]()
    if attn is not None:
        cfg._attn_implementation = attn
    return cfg


_CACHE: dict = {}


def tiny_model(family: str, attn: str | None = None, seed: int = 0):
    """A fresh (deep-copied) tiny sequence classifier in eval mode; built once per (family, attn, seed).

    Also seeds torch's global generator, so what the test draws next (the PELT modules'
    initialisation in `compile_model`) does not depend on which tests ran before in this process."""
    from transformers import AutoModelForSequenceClassification
    key = (family, attn, seed)
    if key not in _CACHE:
        torch.manual_seed(seed)
        _CACHE[key] = AutoModelForSequenceClassification.from_config(tiny_config(family, attn)).eval()
    torch.manual_seed(seed)
    return copy.deepcopy(_CACHE[key])


def changed(out: torch.Tensor, base: torch.Tensor, rel: float = 1e-3) -> bool:
    """``out`` differs from ``base`` by more than ``rel`` of base's scale (tiny random models have
    logits of ~1e-2, so an absolute threshold would depend on the family)."""
    return bool((out - base).abs().max() > max(1e-6, rel * float(base.abs().max())))


def tiny_batch(seed: int = 1, batch: int = 3, seq: int = 7) -> dict[str, torch.Tensor]:
    """Token ids with padding: example 1 has 2 padding positions, example 2 has 4."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    for i, pad in enumerate([0, 2, 4][:batch]):
        if pad:
            mask[i, seq - pad:] = 0
            ids[i, seq - pad:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def perturb(model, std: float = 0.2, seed: int = 0) -> None:
    """Give every PELT parameter a random value (so zero-initialised parts matter). An orthogonal
    parametrisation's ``original`` (LoReFT's R, Householder form) keeps its ±1 diagonal, as training does."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "pelt_" in n:
                signs = p.diagonal().clone() if ".parametrizations." in n else None
                p.add_(torch.randn(p.shape, generator=g) * std)
                if signs is not None:
                    p.diagonal().copy_(signs)


def make_ir(family: str, attachments: list[dict], head_pool: str = "pooler", layers: int = 2):
    """An IR built by hand (no front end): settings + one attachment per dict.

    Each dict: instance, method, layer, point, and optionally params, gate (GateSpec kwargs),
    placement, order.
    """
    from peltc.compiler.ir import IR, AttachmentNode, GateSpec, InstanceNode, SettingsNode, attachment_id
    ir = IR()
    ir.add(SettingsNode(id="settings", family=family, head={"pool": head_pool},
                        dims={"hidden": 32, "layers": layers, "heads": 4, "intermediate": 37, "embedding": 32}))
    seen = set()
    for i, a in enumerate(attachments):
        gate = GateSpec(**a.get("gate", {}))
        if a["instance"] not in seen:
            seen.add(a["instance"])
            ir.add(InstanceNode(id=f"inst:{a['instance']}", name=a["instance"], method=a["method"],
                                params=a.get("params", {}), gate=gate, order=i))
        ir.add(AttachmentNode(id=attachment_id(a["instance"], a["layer"], a["point"]), instance=a["instance"],
                              method=a["method"], layer=a["layer"], point=a["point"], params=a.get("params", {}),
                              gate=gate, placement=a.get("placement", "sequential"), order=a.get("order", 0)))
    return ir


# --- decoders (Llama, Mistral, Qwen2, Qwen3): hidden 64, 2 layers, 4 heads over 2 KV heads ---------------
DECODERS = ["llama", "mistral", "qwen2", "qwen3"]


def tiny_decoder_config(family: str, attn: str | None = None, **over):
    """Grouped KV heads (4 query heads, 2 KV heads); Qwen3 with its own head_dim (24, not 64 / 4)."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config
    common = dict(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=48, max_position_embeddings=128, pad_token_id=0,
                  tie_word_embeddings=False)
    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}[family]
    extra = {"head_dim": 24} if family == "qwen3" else {}
    cfg = cls(**{**common, **extra, **over})
    if attn is not None:
        cfg._attn_implementation = attn
    return cfg


def tiny_decoder(family: str, causal_lm: bool = False, attn: str | None = None, seed: int = 0, **over):
    """A fresh tiny decoder in eval mode: *ForSequenceClassification (2 labels) or *ForCausalLM."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    key = ("decoder", family, causal_lm, attn, seed, tuple(sorted(over.items())))
    if key not in _CACHE:
        torch.manual_seed(seed)
        auto = AutoModelForCausalLM if causal_lm else AutoModelForSequenceClassification
        _CACHE[key] = auto.from_config(tiny_decoder_config(family, attn, **over)).eval()
    torch.manual_seed(seed)
    return copy.deepcopy(_CACHE[key])


def per_query_gate_case(attn: str, b: int = 2, hq: int = 4, hkv: int = 2, q: int = 5, L: int = 3, hd: int = 16):
    """Inputs of the prefix attention with a per-query (causal) gate: query / key / value (grouped KV
    heads), a causal mask in the implementation's form (bool for sdpa, additive for eager), prefix keys
    and values ``pk`` / ``pv``, a gate ``g`` (batch, query) and the boolean ``causal`` mask."""
    g_ = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(b, h, q, hd, generator=g_) for h in (hq, hkv, hkv))
    pk, pv = torch.randn(b, hkv, L, hd, generator=g_), torch.randn(b, hkv, L, hd, generator=g_)
    g = torch.rand(b, q, generator=g_)
    causal = torch.ones(q, q, dtype=torch.bool).tril().view(1, 1, q, q).expand(b, 1, q, q)
    mask = causal if attn == "sdpa" else torch.zeros(b, 1, q, q).masked_fill(~causal, torch.finfo(torch.float32).min)
    return query, key, value, mask, pk, pv, g, causal
