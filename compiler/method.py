"""What a method is, as data: its typed parameters (`ParamSpec`) and one `Method` row — the one shape that
built-in methods (`schema.METHODS`) and plug-in methods (`compiler/methods.py`, docs/extending.md) share.

Torch-free: a `Method` names its torch part (``attach`` / ``build``) by a callable or a ``"module:function"``
string that only `compiler/torch/rewrite/` calls, so ``peltc check`` and the language server never import
torch for it. Everything else here (counts, drawing, merge rule) is plain Python over numbers and strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

@dataclass(frozen=True)
class ParamSpec:
    type: str                 # "int" | "float" | "choice" | "int_or_none" | "bool" | "str"
    default: Any
    doc: str
    min: float | None = None  # inclusive
    max: float | None = None  # exclusive when ``max_exclusive``
    max_exclusive: bool = False
    choices: tuple[str, ...] = ()
    below_hidden: bool = False  # must be < the model's hidden size (checked with a model)
    gate_replaces: bool = False  # has no effect under a gate (other than `none`): warning W202
    min_exclusive: bool = False  # ``min`` itself is out of range (e.g. a learning rate of 0)
    instance_only: bool = False  # set for the whole instance only, never in a per-layer override (E116)
    quiet_default: bool = False  # left out of `peltc check` / `show` when at its default (an option)

    def out_of_range(self, v: float) -> str | None:
        """None when ``v`` is within range, else what the range is ("must be > 0, ≤ 1")."""
        lo, hi = self.min, self.max
        low_bad = lo is not None and (v <= lo if self.min_exclusive else v < lo)
        high_bad = hi is not None and (v >= hi if self.max_exclusive else v > hi)
        if not (low_bad or high_bad):
            return None
        parts = []
        if lo is not None:
            parts.append(f"{'>' if self.min_exclusive else '≥'} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if self.max_exclusive else '≤'} {hi:g}")
        return ", ".join(parts)



# What a method changes at its point, which decides how the torch back end finds its module(s) and what
# the checks ask of that module:
#   linear     — one nn.Linear (LoRA; a plug-in's `build` module adds its output to the linear's)
#   value      — the LayerNorm (post-norm) or sub-layer (pre-norm) producing a hidden value (adapters)
#   attention  — a layer's self-attention module (prefixes)
#   biases     — every bias-holding module a point covers (BitFit)
#   model      — the whole base model (full fine-tuning)
#   layer      — a whole transformer layer module, its output (LoReFT)
#   input      — the base model itself, whose input embeddings it extends (prompt tuning)
HOSTS = ("linear", "value", "attention", "biases", "model", "layer", "input")


@dataclass(frozen=True)
class CountContext:
    """The model facts one attachment's count may use (no weights): what `Method.count` receives."""

    params: Any                 # the instance's parameters as its typed model (defaults filled)
    point: str                  # the canonical point ("attention.query", "ffn.output", "all", …)
    layer: int | None           # None at a whole-model point
    dims: dict[str, int]        # hidden, intermediate, heads, layers (+ kv_heads, head_dim on decoders)
    fan_in: int                 # a linear point's in / out features; hidden, hidden elsewhere
    fan_out: int
    kv_width: int               # width of one layer's keys (and values): kv_heads × head_dim, or hidden
    base_params: int | None     # the base model's parameters (None where not exact)
    bias_terms: Callable[[], int] = lambda: 0   # computed on demand: see `biases`
    covered: tuple = ()         # `shared_count` only: each attachment's typed parameters, in layer order

    @property
    def hidden(self) -> int:
        return self.dims["hidden"]

    @property
    def biases(self) -> int:
        """Bias terms the point's modules hold on this family (BitFit's count)."""
        return self.bias_terms()


@dataclass(frozen=True)
class Drawing:
    """How `peltc render` draws a method's module: its colours, and how it joins its point
    (``edge``: None — in the data path, after the point; "parallel" — beside a linear, added to its output
    (``label`` on the edge); "prefix" — into the attention; "bias" — trains the point's own parameters)."""

    fill: str = "#e6e6e6"
    line: str = "#555555"
    edge: str | None = "parallel"
    label: str = ""
    legend: bool = False    # always in the legend (the first five built-ins, as the goldens); else when drawn


@dataclass(frozen=True)
class Method:
    """One method of the language. The first fields are the vocabulary (what `check` knows without a
    model); the rest say how to count it, build it, merge it and draw it.

    ``count(ctx) -> int | None``: its trainable parameters at one attachment (gate excluded: peltc adds the
    gate's), a function of its parameters and the model's dimensions (`CountContext`); None: not exact.
    ``shared_count(ctx)``: parameters one instance trains once for all its attachments (the prefix's
    reparameterisation MLP), with ``ctx.covered``; None: nothing shared. ``attach``: the torch step, ``attach(ctx)`` with a `compiler.torch.rewrite.attach.AttachContext` (any
    host), or a ``"module:function"`` string naming it. ``build``: the simple form for ``host="linear"``:
    ``build(ctx) -> nn.Module`` whose ``forward(x)`` is added (times the gate, if any) to the linear's
    output; if the module has ``delta_weight() -> Tensor (out, in)`` and ``merges`` is True, `merge` adds it
    to the base weight. ``no_merge`` says why a method does not merge (shown by `check` and `merge`).
    ``text(params) -> str``: the one-line description `render` and `show` print; ``origin``: where it came
    from ("built-in", or the plug-in file / entry point that registered it)."""

    name: str
    doc: str
    params: dict[str, ParamSpec]
    points: frozenset[str]            # where it may attach (LAYER_POINTS keys, GLOBAL_POINTS keys, "layer")
    default_at: tuple[str, ...] = ()  # used when `at` is omitted
    gated: bool = True
    placement: bool = False           # accepts `placement sequential|parallel`
    host: str = "linear"
    count: Callable[[CountContext], int | None] | None = None
    shared_count: Callable[[CountContext], int | None] | None = None   # per instance, shared by its layers
    attach: Callable[..., None] | str | None = None
    build: Callable[..., Any] | None = None
    merges: bool = False
    no_merge: str = ""
    reads_own_gate: bool = False      # a sigmoid gate may read the value at its own point (adapters)
    check_note: str | None = None     # a note `peltc check` prints under each instance of the method
    drawing: Drawing = field(default_factory=Drawing)
    text: Callable[[Any], str] | None = None
    origin: str = "built-in"

    @property
    def builtin(self) -> bool:
        return self.origin == "built-in"
