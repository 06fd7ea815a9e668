"""The language's vocabulary as data: methods, their typed parameters and defaults, the canonical
insertion points, where each method may attach, gate kinds and gate sources.

Everything that checks or documents the language reads these tables; nothing here executes.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any

from peltc.compiler import method as method_mod
from peltc.compiler.method import CountContext, Drawing

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


ParamSpec = method_mod.ParamSpec
MethodSpec = method_mod.Method   # the old name of a method's row


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

_ATTACH = "peltc.compiler.torch.rewrite.attach:"   # the torch steps of the built-ins (called by rewrite only)


def _adapter_count(c: CountContext) -> int:
    return 2 * c.hidden * int(c.params.size) + int(c.params.size) + c.hidden


def _lora_count(c: CountContext) -> int:
    """A (rank × in) and B (out × rank); DoRA adds its magnitude vector (out)."""
    return int(c.params.rank) * (c.fan_in + c.fan_out) + (c.fan_out if c.params.dora else 0)


def _prefix_count(c: CountContext) -> int:
    """Per layer, after folding: keys and values (each num_key_value_heads × head_dim wide on decoders);
    the reparameterisation MLP is counted once per instance (`_prefix_shared`)."""
    return 2 * int(c.params.length) * c.kv_width


def _prefix_shared(c: CountContext) -> int:
    """The reparameterisation MLP trained with the prefix and folded away after training (0 without one):
    an embedding of the longest length, then hidden → mlp → keys and values of every covered layer."""
    if c.params.mlp is None:
        return 0
    h, mlp, out = c.hidden, int(c.params.mlp), 2 * len(c.covered) * c.kv_width
    length = max((int(p.length) for p in c.covered), default=int(c.params.length))
    return length * h + (h * mlp + mlp) + (mlp * out + out)


def loreft_units(first: int, last: int, tied: bool) -> int:
    """LoReFT's interventions per layer: one for the first and one for the last positions (one when tied);
    a side with no positions has none."""
    sides = int(first > 0) + int(last > 0)
    return min(sides, 1) if tied else sides


def _loreft_count(c: CountContext) -> int:
    """Per layer, each intervention: R (r × d, orthogonal rows), W (r × d) and b (r)."""
    p = c.params
    return loreft_units(int(p.first), int(p.last), bool(p.tied)) * (2 * int(p.rank) * c.hidden + int(p.rank))


def _prompt_shared(c: CountContext) -> int | None:
    """P-tuning's encoder, trained and folded away (None for ``encoder none``), its input embedding included
    (peft's ``PromptEncoder``): ``mlp`` nE + (EH + H) + (H² + H) + (HE + E); ``lstm`` nE + a bidirectional
    2-layer LSTM (per direction 4H(in + H) + 8H, in = E then 2H) + (4H² + 2H) + (2HE + E)."""
    p, e = c.params, c.dims["embedding"]
    n, h = int(p.length), int(p.encoder_hidden)
    if p.encoder == "mlp":
        return n * e + (e * h + h) + (h * h + h) + (h * e + e)
    if p.encoder == "lstm":
        lstm = 2 * (4 * h * (e + h) + 8 * h) + 2 * (4 * h * (2 * h + h) + 8 * h)
        return n * e + lstm + (4 * h * h + 2 * h) + (2 * h * e + e)
    return None


_LOREFT_NO_MERGE = ("does not merge into the base weights: it edits the hidden states at chosen token positions, "
                    "which no weight change reproduces")

# The registry of methods: the built-ins below, and plug-ins added by `compiler.methods.register` (one
# table: every reader looks a method up here, built-in or not).
METHODS: dict[str, method_mod.Method] = {
    "adapter": method_mod.Method(
        "adapter", "bottleneck adapter: down → act → up, zero-initialised up",
        {
            "size": ParamSpec("int", 48, "bottleneck width", min=1, below_hidden=True),
            "activation": ParamSpec("choice", "relu", "non-linearity", choices=("relu", "gelu", "tanh", "silu")),
            "placement": ParamSpec("choice", "sequential", "after the sub-layer (sequential, Pfeiffer) or beside it (parallel, He et al.)", choices=PLACEMENTS),
            "scale": ParamSpec("float", 1.0, "constant multiplier on the adapter output", min=0.0),
            "lr": LR,
        },
        frozenset({"attention.output", "ffn.output"}), placement=True, host="value", count=_adapter_count,
        attach=_ATTACH + "attach_adapter", reads_own_gate=True,
        no_merge="an adapter is a module of its own, not a change of a base weight",
        drawing=Drawing("#cfe0fb", "#1f5fbf", edge=None, legend=True),
    ),
    "prefix": method_mod.Method(
        "prefix", "prefix-tuning: trainable keys/values prepended in self-attention",
        {
            "length": ParamSpec("int", 10, "prefix length L", min=1, max=512),
            "mlp": ParamSpec("int_or_none", 512, "reparameterisation MLP width (none: train prefixes directly)", min=1),
            "init": ParamSpec("choice", "random", "initial prefix: random, or tokens (the base model's keys and "
                              "values of real vocabulary tokens, Li & Liang)", choices=PREFIX_INITS,
                              instance_only=True),
            "lr": LR,
        },
        frozenset({"attention"}), host="attention", count=_prefix_count, shared_count=_prefix_shared,
        attach=_ATTACH + "attach_prefix",
        no_merge="prefix-tuning adds keys and values to the attention, not a change of a base weight",
        drawing=Drawing("#ffe2b8", "#c96a00", edge="prefix", label="K,V", legend=True),
    ),
    "prompt": method_mod.Method(
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
        frozenset({"embeddings"}), default_at=("embeddings",), host="input",
        count=lambda c: int(c.params.length) * c.dims["embedding"], shared_count=_prompt_shared,
        attach=_ATTACH + "attach_prompt",
        no_merge="a soft prompt adds positions before the tokens, not a change of a base weight",
        drawing=Drawing("#e6dcf7", "#5b3fa8", edge="prompt"),
    ),
    "lora": method_mod.Method(
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
        _LINEARS, host="linear", count=_lora_count, attach=_ATTACH + "attach_lora", merges=True,
        drawing=Drawing("#d3efd6", "#2e7d32", edge="parallel", label="+", legend=True),
    ),
    "bitfit": method_mod.Method(
        "bitfit", "train bias terms (as a zero-initialised delta; base biases stay frozen)",
        {"lr": LR},
        frozenset(set(LAYER_POINTS) - {"input", "output"}) | {"embeddings", "head", "all", WHOLE_LAYER},
        default_at=("all",), host="biases", count=lambda c: c.biases, attach=_ATTACH + "attach_bitfit",
        merges=True, drawing=Drawing("#f1d5ee", "#8e2f88", edge="bias", legend=True),
    ),
    "ia3": method_mod.Method(
        "ia3", "(IA)³: learned vectors, initialised to 1, scaling keys and values (their projections' outputs) "
        "and the FFN's intermediate activation (the down projection's input)",
        {"lr": LR},
        frozenset({"attention.key", "attention.value", "ffn.down"}), host="linear",
        count=lambda c: c.fan_in if c.point == "ffn.down" else c.fan_out, attach=_ATTACH + "attach_ia3",
        merges=True, drawing=Drawing("#d6eef2", "#00838f", edge="parallel", label="⊙"),
    ),
    "loreft": method_mod.Method(
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
        frozenset({"output"}), host="layer", count=_loreft_count, attach=_ATTACH + "attach_loreft",
        no_merge="LoReFT " + _LOREFT_NO_MERGE, check_note=_LOREFT_NO_MERGE,
        drawing=Drawing("#f3e2cf", "#8d5524", edge=None),
    ),
    "finetune": method_mod.Method(
        "finetune", "train base-model weights directly (full fine-tuning when at all)",
        {"lr": LR},
        frozenset({"all"}),
        default_at=("all",), gated=False, host="model", count=lambda c: c.base_params,
        attach=_ATTACH + "attach_finetune",
        no_merge="full fine-tuning is no delta to merge (its artifact holds the trained weights)",
        drawing=Drawing("#ffd3d0", "#c0392b", edge="bias", legend=True),
    ),
}


def host_of(method: str) -> str:
    """What ``method`` changes at its point (`method.HOSTS`): what the checks, counts and the torch back end
    branch on instead of the method's name."""
    return METHODS[method].host


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
    "gate_lr": ParamSpec("float", None, "learning rate of every gate's parameters (default: its instance's lr)",
                         min=0.0, min_exclusive=True),
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
