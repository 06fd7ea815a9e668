"""Exact parameter counts from a model's dimensions (no weights): the numbers `peltc check` prints.

The torch back end's live counts must equal these; tests check both on a `BertConfig()` shape.
"""

from __future__ import annotations

from typing import Any

from peltc.compiler.archs import Family, blocks, has_bias


def kv_width(d: dict[str, int]) -> int:
    """Width of one layer's keys (and of its values): num_key_value_heads × head_dim (hidden on encoders)."""
    if "kv_heads" in d:
        return d["kv_heads"] * d["head_dim"]
    return d["hidden"]


def linear_dims(point: str, d: dict[str, int]) -> tuple[int, int]:
    """(in, out) features of a canonical linear point (grouped K/V and an explicit head_dim on decoders)."""
    h, i = d["hidden"], d["intermediate"]
    q = d["heads"] * d["head_dim"] if "head_dim" in d else h
    kv = kv_width(d)
    return {"ffn.up": (h, i), "ffn.gate": (h, i), "ffn.down": (i, h), "attention.query": (h, q),
            "attention.key": (h, kv), "attention.value": (h, kv), "attention.out": (q, h)}.get(point, (h, h))


def gate_params(kind: str, d: dict[str, int]) -> int:
    return {"sigmoid": d["hidden"] + 1, "scalar": 1}.get(kind, 0)


def bias_size(point: str, d: dict[str, int]) -> int:
    """Bias terms held by the module at a single point (a linear's out features, a LayerNorm's width)."""
    if point in ("attention.output", "ffn.output"):
        return d["hidden"]
    return linear_dims(point, d)[1]


def bitfit_params(point: str, family: Family, d: dict[str, int], n_layers: int) -> int:
    """Bias terms covered by a bitfit attachment (per layer for layer points); only the points whose
    module holds a bias on this family count (a decoder's RMSNorms and most of its linears have none)."""
    bl = blocks(family)
    if point in bl:
        return sum(bias_size(p, d) for p in bl[point] if has_bias(family, p, d))
    if point == "embeddings":
        return d["embedding"] * len(family.embeddings_bias)
    if point == "head":
        return d["hidden"] if family.pooler else 0
    if point == "all":
        return (bitfit_params("embeddings", family, d, n_layers)
                + n_layers * bitfit_params("layer", family, d, n_layers)
                + bitfit_params("head", family, d, n_layers))
    return bias_size(point, d) if has_bias(family, point, d) else 0


def base_params(family: Family, config: dict[str, Any], d: dict[str, int]) -> int | None:
    """Parameters of the base model (task head excluded), from its config; None when not exact."""
    if family.name == "deberta-v2":
        return None
    if family.pre_norm:
        return _decoder_params(family, config, d)
    h, e, i, n = d["hidden"], d["embedding"], d["intermediate"], d["layers"]
    vocab = int(config.get("vocab_size", 30522))
    pos = int(config.get(family.position_key, 512))
    types = int(config.get("type_vocab_size", 2)) if family.token_types else 0
    emb = (vocab + pos + types) * e + 2 * e
    if e != h:
        emb += e * h + h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    pooler = (h * h + h) if family.pooler else 0
    return emb + n * layer + pooler


def _decoder_params(family: Family, config: dict[str, Any], d: dict[str, int]) -> int:
    """A decoder's base model: token embeddings, per layer the four attention projections, the gated MLP's
    three linears (their biases where the family has them), two RMSNorms (weights only; Qwen3 adds one
    per head dim on queries and keys), and the final norm. No position embeddings (rotary), no head."""
    h, n = d["hidden"], d["layers"]
    vocab = int(config.get("vocab_size", 32000))
    layer = 2 * h + (2 * d["head_dim"] if family.qk_norm else 0)
    for p in ("attention.query", "attention.key", "attention.value", "attention.out", "ffn.gate", "ffn.up",
              "ffn.down"):
        fin, fout = linear_dims(p, d)
        layer += fin * fout + (fout if has_bias(family, p, d) else 0)
    return vocab * h + n * layer + h
