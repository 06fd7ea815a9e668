"""Exact parameter counts from a model's dimensions (no weights): the numbers `peltc check` prints.

The torch back end's live counts must equal these; tests check both on a `BertConfig()` shape.
"""

from __future__ import annotations

from typing import Any

from peltc.compiler.archs import BLOCKS, Family


def linear_dims(point: str, d: dict[str, int]) -> tuple[int, int]:
    """(in, out) features of a canonical linear point."""
    h, i = d["hidden"], d["intermediate"]
    return {"ffn.up": (h, i), "ffn.down": (i, h)}.get(point, (h, h))


def gate_params(kind: str, d: dict[str, int]) -> int:
    return {"sigmoid": d["hidden"] + 1, "scalar": 1}.get(kind, 0)


def adapter_params(size: int, d: dict[str, int]) -> int:
    h = d["hidden"]
    return h * size + size + size * h + h


def lora_params(rank: int, point: str, d: dict[str, int]) -> int:
    fin, fout = linear_dims(point, d)
    return rank * fin + fout * rank


def prefix_params(length: int, d: dict[str, int]) -> int:
    """Per layer, after folding: keys and values."""
    return 2 * length * d["hidden"]


def prefix_mlp_params(length: int, mlp: int | None, n_layers: int, d: dict[str, int]) -> int:
    """The reparameterisation trained with the prefix and folded away after training."""
    if mlp is None:
        return 0
    h = d["hidden"]
    out = 2 * n_layers * h
    return length * h + (h * mlp + mlp) + (mlp * out + out)


def bias_size(point: str, d: dict[str, int]) -> int:
    """Bias terms held by the module at a single point (a linear's out features, a LayerNorm's width)."""
    if point in ("attention.output", "ffn.output"):
        return d["hidden"]
    return linear_dims(point, d)[1]


def bitfit_params(point: str, family: Family, d: dict[str, int], n_layers: int) -> int:
    """Bias terms covered by a bitfit attachment (per layer for layer points)."""
    if point in BLOCKS:
        return sum(bias_size(p, d) for p in BLOCKS[point])
    if point == "embeddings":
        return d["embedding"] * len(family.embeddings_bias)
    if point == "head":
        return d["hidden"] if family.pooler else 0
    if point == "all":
        return (bitfit_params("embeddings", family, d, n_layers)
                + n_layers * bitfit_params("layer", family, d, n_layers)
                + bitfit_params("head", family, d, n_layers))
    return bias_size(point, d)


def base_params(family: Family, config: dict[str, Any], d: dict[str, int]) -> int | None:
    """Parameters of the base model (task head excluded), from its config; None when not exact."""
    if family.name == "deberta-v2":
        return None
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
