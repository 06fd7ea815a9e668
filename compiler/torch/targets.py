"""Targeting as a pure function: which modules of a model an attachment touches.

Paths come from the family table (``archs.FAMILIES``): ``base`` + ``layers`` + index + the
point's relative path. ``prefix`` is ``"<base>."`` for a task model (``BertForSequenceClassification``)
and ``""`` for a bare base model. Nothing here looks at a model.

>>> from peltc.compiler.archs import FAMILIES
>>> point_path(FAMILIES["bert"], "bert.", 3, "ffn.output")
'bert.encoder.layer.3.output.LayerNorm'
>>> [t.path for t in bitfit_targets(FAMILIES["distilbert"], "distilbert.", 0, "ffn", 2)]
['distilbert.transformer.layer.0.ffn.lin1', 'distilbert.transformer.layer.0.ffn.lin2', 'distilbert.transformer.layer.0.output_layer_norm']
"""

from __future__ import annotations

from dataclasses import dataclass

from peltc.compiler.archs import BLOCKS, Family, blocks


@dataclass(frozen=True)
class Target:
    path: str               # module path in the model given to the rewrite
    layer: int | None
    point: str              # a single canonical point (blocks are expanded), or a global point name


def layer_path(fam: Family, prefix: str, layer: int) -> str:
    return f"{prefix}{fam.layers}.{layer}"


def layer_of(fam: Family, path: str) -> int | None:
    """The layer index in a module path (``…<layers>.<i>[.…]``, with or without the base prefix), or
    None for a module outside the layers.

    >>> from peltc.compiler.archs import FAMILIES
    >>> layer_of(FAMILIES["bert"], "bert.encoder.layer.3.attention.self"), layer_of(FAMILIES["bert"], "classifier")
    (3, None)
    """
    marker = fam.layers + "."
    at = path.find(marker)
    if at < 0 or (at > 0 and path[at - 1] != "."):
        return None
    head = path[at + len(marker):].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def encoder_path(fam: Family, prefix: str) -> str:
    """The module whose output is the sequence of final hidden states (parent of the layers)."""
    return prefix + fam.layers.rsplit(".", 1)[0]


def point_path(fam: Family, prefix: str, layer: int, point: str) -> str:
    rel = fam.points[point]
    base = layer_path(fam, prefix, layer)
    return f"{base}.{rel}" if rel else base


def bitfit_targets(fam: Family, prefix: str, layer: int | None, point: str, n_layers: int) -> list[Target]:
    """The bias-holding modules a bitfit attachment covers."""
    if layer is not None:
        points = blocks(fam).get(point, (point,))
        return [Target(point_path(fam, prefix, layer, p), layer, p) for p in points]
    if point == "embeddings":
        return [Target(prefix + e, None, "embeddings") for e in fam.embeddings_bias]
    if point == "head":
        return [Target(prefix + fam.pooler, None, "head")] if fam.pooler else []
    if point == "all":
        out = bitfit_targets(fam, prefix, None, "embeddings", n_layers)
        for i in range(n_layers):
            out += bitfit_targets(fam, prefix, i, "layer", n_layers)
        return out + bitfit_targets(fam, prefix, None, "head", n_layers)
    raise ValueError(f"bitfit cannot attach at {point!r}")


def targets(fam: Family, prefix: str, host: str, layer: int | None, point: str, n_layers: int) -> list[Target]:
    """Every module an attachment touches, by its method's host (`method.HOSTS`): ``model`` (finetune) none —
    it touches the whole model; ``biases`` every bias-holding module of the point; ``input`` the base model itself; else the point's
    module."""
    if host == "model":
        return []
    if host == "biases":
        return bitfit_targets(fam, prefix, layer, point, n_layers)
    if host == "input":         # the base model, whose forward gets the prompt prepended to its embeddings
        return [Target(prefix[:-1], None, point)]
    if layer is None:
        raise ValueError(f"a {host} method cannot attach at the global point {point!r}")
    return [Target(point_path(fam, prefix, layer, point), layer, point)]
