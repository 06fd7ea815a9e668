"""The language's vocabulary as data: methods, their typed parameters and defaults, the canonical
insertion points, where each method may attach, gate kinds and gate sources.

Everything that checks or documents the language reads these tables; nothing here executes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# --- canonical insertion points ---------------------------------------------------------------
# Per-layer points, in data-flow order inside one transformer layer. The order decides whether a
# gate's source is available before the module it gates.
LAYER_POINTS: dict[str, str] = {
    "input": "value",               # h_in, the layer input
    "attention": "block",           # the self-attention block (prefix-tuning attaches here)
    "attention.query": "linear",
    "attention.key": "linear",
    "attention.value": "linear",
    "attention.out": "linear",      # the attention output projection
    "attention.output": "value",    # the attention sub-layer output (after its LayerNorm)
    "ffn": "block",                 # the feed-forward block
    "ffn.gate": "linear",           # the gate projection of a gated MLP (decoders: SwiGLU's gate_proj)
    "ffn.up": "linear",
    "ffn.down": "linear",
    "ffn.output": "value",          # the feed-forward sub-layer output h_FN (after its LayerNorm)
    "output": "value",              # h_out, the layer output: the residual stream leaving the layer (LoReFT)
}
POINT_ORDER: dict[str, int] = {
    "input": 0, "attention": 1, "attention.query": 1, "attention.key": 1, "attention.value": 1,
    "attention.out": 2, "attention.output": 3, "ffn": 4, "ffn.gate": 4, "ffn.up": 4, "ffn.down": 5, "ffn.output": 6,
    "output": 7,
}
# Whole-model points (no layer selector).
GLOBAL_POINTS: dict[str, str] = {
    "embeddings": "block",
    "head": "block",   # the model's pooler (frozen base part of the head)
    "all": "block",    # every base module (bitfit: every bias; finetune: every weight)
}
# A bare `layers[i]` target means the whole layer.
WHOLE_LAYER = "layer"

# Gate sources are hidden-state values of the same layer; written `layer.input`, `attention.output`,
# `ffn.output` (`layer.input` is the canonical `layers[i].input`).
GATE_SOURCES: dict[str, str] = {
    "layer.input": "input",
    "attention.output": "attention.output",
    "ffn.output": "ffn.output",
}
GATE_KINDS = ("none", "sigmoid", "scalar", "const")
POOLS = ("masked_mean", "mean_unmasked", "first")
PLACEMENTS = ("sequential", "parallel")


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


@dataclass(frozen=True)
class MethodSpec:
    name: str
    doc: str
    params: dict[str, ParamSpec]
    points: frozenset[str]        # where it may attach (LAYER_POINTS keys, GLOBAL_POINTS keys, "layer")
    default_at: tuple[str, ...] = ()   # used when `at` is omitted
    gated: bool = True
    placement: bool = False        # accepts `placement sequential|parallel`
    check_note: str | None = None  # a note `peltc check` prints under each instance of the method


_LINEARS = frozenset(k for k, v in LAYER_POINTS.items() if v == "linear")

# Every method takes `lr`: its parameters form their own optimiser group with this learning rate
# (None: the run's lr). One value per instance: its parameters are one group.
LR = ParamSpec("float", None, "learning rate of this instance's parameters (default: the run's lr)",
               min=0.0, min_exclusive=True, instance_only=True)
PREFIX_INITS = ("random", "tokens")
LORA_SCALINGS = ("standard", "rs")
LORA_INITS = ("default", "pissa", "olora")
PROMPT_INITS = ("random", "text", "vocab")
PROMPT_ENCODERS = ("none", "mlp", "lstm")

METHODS: dict[str, MethodSpec] = {
    "adapter": MethodSpec(
        "adapter", "bottleneck adapter: down → act → up, zero-initialised up",
        {
            "size": ParamSpec("int", 48, "bottleneck width", min=1, below_hidden=True),
            "activation": ParamSpec("choice", "relu", "non-linearity", choices=("relu", "gelu", "tanh", "silu")),
            "placement": ParamSpec("choice", "sequential", "after the sub-layer (sequential, Pfeiffer) or beside it (parallel, He et al.)", choices=PLACEMENTS),
            "scale": ParamSpec("float", 1.0, "constant multiplier on the adapter output", min=0.0),
            "lr": LR,
        },
        frozenset({"attention.output", "ffn.output"}), placement=True,
    ),
    "prefix": MethodSpec(
        "prefix", "prefix-tuning: trainable keys/values prepended in self-attention",
        {
            "length": ParamSpec("int", 10, "prefix length L", min=1, max=512),
            "mlp": ParamSpec("int_or_none", 512, "reparameterisation MLP width (none: train prefixes directly)", min=1),
            "init": ParamSpec("choice", "random", "initial prefix: random, or tokens (the base model's keys and "
                              "values of real vocabulary tokens, Li & Liang)", choices=PREFIX_INITS,
                              instance_only=True),
            "lr": LR,
        },
        frozenset({"attention"}),
    ),
    "prompt": MethodSpec(
        "prompt", "prompt tuning: n learned vectors prepended to the input embeddings (P-tuning with an encoder)",
        {
            "length": ParamSpec("int", 20, "number of prompt vectors n", min=1, max=512, instance_only=True),
            "init": ParamSpec("choice", "random", "initial vectors: random (N(0, 1), as peft), text (the word "
                              "embeddings of `text`'s tokens, repeated or cut to n), or vocab (n rows of the "
                              "word embeddings drawn at random)", choices=PROMPT_INITS, instance_only=True),
            "text": ParamSpec("str", None, "the text whose tokens start the prompt (with `init text`)",
                              instance_only=True),
            "encoder": ParamSpec("choice", "none", "P-tuning's reparameterisation while training: none, mlp "
                                 "(3 linears, ReLU) or lstm (bidirectional 2-layer LSTM + 2 linears); folded "
                                 "into plain vectors after training", choices=PROMPT_ENCODERS, instance_only=True),
            "encoder_hidden": ParamSpec("int", 128, "the encoder's hidden width H", min=1, instance_only=True),
            "lr": LR,
        },
        frozenset({"embeddings"}), default_at=("embeddings",),
    ),
    "lora": MethodSpec(
        "lora", "low-rank update W x + s · B A x on a linear",
        {
            "rank": ParamSpec("int", 8, "rank r", min=1, below_hidden=True),
            "alpha": ParamSpec("float", 16.0, "scaling alpha (s = alpha / rank when ungated; a gate replaces it)",
                               min=0.0, max_exclusive=False, gate_replaces=True),
            "dropout": ParamSpec("float", 0.0, "dropout on the LoRA input", min=0.0, max=1.0, max_exclusive=True),
            "scaling": ParamSpec("choice", "standard",
                                 "scale s: standard (alpha / rank) or rs (rsLoRA, alpha / √rank)",
                                 choices=LORA_SCALINGS, gate_replaces=True, quiet_default=True),
            "init": ParamSpec("choice", "default", "initial A and B: default (A random, B = 0), pissa (the base "
                              "weight's top-rank singular triplets) or olora (QR); with pissa / olora the base "
                              "keeps W − s·B A", choices=LORA_INITS, quiet_default=True),
            "dora": ParamSpec("bool", False, "DoRA: W' = m ⊙ (W + s·B A) / ‖W + s·B A‖ per output row, the "
                              "norm detached, m learned (initialised to the row norms)", quiet_default=True),
            "lr_ratio": ParamSpec("float", 1.0, "LoRA+: B's learning rate is lr_ratio × A's", min=0.0,
                                  min_exclusive=True, instance_only=True, quiet_default=True),
            "lr": LR,
        },
        _LINEARS,
    ),
    "bitfit": MethodSpec(
        "bitfit", "train bias terms (as a zero-initialised delta; base biases stay frozen)",
        {"lr": LR},
        frozenset(set(LAYER_POINTS) - {"input", "output"}) | {"embeddings", "head", "all", WHOLE_LAYER},
        default_at=("all",),
    ),
    "ia3": MethodSpec(
        "ia3", "(IA)³: learned vectors, initialised to 1, scaling keys and values (their projections' outputs) "
        "and the FFN's intermediate activation (the down projection's input)",
        {"lr": LR},
        frozenset({"attention.key", "attention.value", "ffn.down"}),
    ),
    "loreft": MethodSpec(
        "loreft", "LoReFT: h + Rᵀ(W h + b − R h) on the layer output at the first / last real tokens, "
        "R with orthonormal rows",
        {
            "rank": ParamSpec("int", 1, "rank r (rows of R)", min=1, below_hidden=True),
            "first": ParamSpec("int", 3, "intervene at the first p real tokens of each sequence", min=0, max=512),
            "last": ParamSpec("int", 0, "intervene at the last s real tokens of each sequence", min=0, max=512),
            "tied": ParamSpec("bool", False, "one intervention for the first and the last positions (false: one "
                              "each, as AdapterHub's tied_weights)"),
            "lr": LR,
        },
        frozenset({"output"}),
        check_note="does not merge into the base weights: it edits the hidden states at chosen token "
                   "positions, which no weight change reproduces",
    ),
    "finetune": MethodSpec(
        "finetune", "train base-model weights directly (full fine-tuning when at all)",
        {"lr": LR},
        frozenset({"all"}),
        default_at=("all",), gated=False,
    ),
}

# --- typed parameters ------------------------------------------------------------------------------
# One pydantic model per method, built from the ParamSpec table above (the defaults live there and only
# there): `method_params` reads an IR node's parameters as that model, every default filled (an IR
# written before a parameter existed reads as its default).
_PY_TYPES: dict[str, Any] = {"int": int, "float": float, "choice": str, "int_or_none": int | None, "bool": bool,
                             "str": str}


@functools.lru_cache(maxsize=None)
def params_model(method: str) -> type:
    """The typed parameter model of ``method`` (``params_model("lora")(rank=4).alpha == 16.0``)."""
    from pydantic import ConfigDict, create_model

    fields: dict[str, Any] = {}
    for name, p in METHODS[method].params.items():
        typ = _PY_TYPES[p.type]
        if p.below_hidden:
            typ = typ | str          # "hidden/16" until a model is bound (`resolve_relative`)
        if p.default is None:
            typ = typ | None
        fields[name] = (typ, p.default)
    return create_model(f"{method.capitalize()}Params", __config__=ConfigDict(frozen=True, extra="allow"),
                        **fields)


def method_params(method: str, params: dict[str, Any]) -> Any:
    """``params`` (an IR node's) as ``method``'s typed model, defaults filled."""
    return params_model(method)(**params)


def is_default(method: str, name: str, value: Any) -> bool:
    """Whether ``value`` is parameter ``name``'s default for ``method`` (what a summary leaves out)."""
    return value == METHODS[method].params[name].default


def shown(method: str, name: str, value: Any) -> bool:
    """Whether a summary lists parameter ``name`` at ``value`` (an option at its default is left out)."""
    p = METHODS[method].params.get(name)
    return p is None or not (p.quiet_default and value == p.default)


def gate_replaces(method: str, name: str, params: dict[str, Any]) -> bool:
    """Whether a gate (other than ``none``) replaces parameter ``name`` of an instance with ``params``:
    LoRA's ``alpha`` and ``scaling`` (the gate is the scale), except under ``dora true``, where the gate
    scales DoRA's change of the output and alpha / rank stays the LoRA's scale inside it."""
    p = METHODS[method].params.get(name)
    return p is not None and p.gate_replaces and not params.get("dora")


def placement_of(params: dict[str, Any]) -> str:
    """Where an instance's modules sit: its ``placement`` parameter (the adapter's, default filled by the
    lowering), or the first of `PLACEMENTS` (sequential) for a method without one."""
    return params.get("placement", PLACEMENTS[0])


# --- sizes relative to the model ------------------------------------------------------------------
# A parameter bounded by the hidden size (adapter `size`, lora `rank`) may be written `hidden/D`:
# ⌊hidden / D⌋ on the model it is checked against (AdapterHub's reduction factor D; D > 1, a decimal
# allowed: `hidden/1.5` is 512 on bert-base). The IR keeps the written text until a model is bound.
RELATIVE_TO = "hidden"


def relative_divisor(value: Any) -> Fraction | None:
    """D of a relative value (``"hidden/16"`` → 16), exactly; None for a plain value."""
    if isinstance(value, str) and value.startswith(RELATIVE_TO + "/"):
        return Fraction(value[len(RELATIVE_TO) + 1:])
    return None


def resolve_relative(value: Any, hidden: int) -> Any:
    """A relative value on a model of ``hidden`` size (``"hidden/1.5"``, 768 → 512); others as they are."""
    d = relative_divisor(value)
    return value if d is None else math.floor(Fraction(hidden) / d)


# Settings sections: `head { ... }` and `train { ... }`.
HEAD_PARAMS: dict[str, ParamSpec] = {
    # No default here: compile_model keeps the model's own head; `peltc compile` uses its recipe's.
    "pool": ParamSpec("choice", None, "pooler: the model's own head over the first token; mean: the masked mean over tokens feeds the head (a frozen pretrained pooler is bypassed)", choices=("pooler", "mean")),
}
# The pooling `peltc compile`'s recipe gives a spec without `head { pool … }` (runtime/settings.py says why);
# `peltc render` draws it.
RECIPE_POOL = "mean"
TRAIN_PARAMS: dict[str, ParamSpec] = {
    "lr": ParamSpec("float", None, "learning rate", min=0.0, min_exclusive=True),
    "epochs": ParamSpec("float", None, "training epochs (upper bound with early stopping)", min=0.0,
                        min_exclusive=True),
    "batch_size": ParamSpec("int", None, "per-device batch size", min=1),
    "warmup": ParamSpec("float", None, "warm-up ratio of total steps", min=0.0, max=1.0, max_exclusive=True),
    "weight_decay": ParamSpec("float", None, "AdamW weight decay", min=0.0),
    "patience": ParamSpec("int", None, "early-stopping patience in evaluations", min=1),
    "min_steps": ParamSpec("int", None, "optimiser steps before early stopping may stop", min=0),
    "eval_steps": ParamSpec("int", None, "evaluate every N steps (default: every epoch)", min=1),
    "max_length": ParamSpec("int", None, "tokeniser max length", min=8),
    "head_lr": ParamSpec("float", None, "learning rate of the task head (default: lr)", min=0.0,
                         min_exclusive=True),
    "head_bias": ParamSpec("choice", None, "initial bias of the task head's output layer: zero (as "
                           "transformers), or prior (the constant predictor's optimum on the training "
                           "labels: their mean for regression, log class frequencies for classification)",
                           choices=("zero", "prior")),
    "head_weights": ParamSpec("choice", None, "initial weights of the task head's output layer: random (as "
                              "transformers) or zero (with head_bias prior the head starts exactly at the "
                              "constant predictor; the PELT modules get gradient once the head has moved)",
                              choices=("random", "zero")),
}
SECTIONS = ("head", "train")
