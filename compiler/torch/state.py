"""The per-forward context shared by every PELT module of one compiled model.

One `PeltState` per compiled model. Hooks that `rewrite` installs fill it during a forward:

- ``begin`` (a forward pre-hook on the base model) stores the 2-D attention mask of the batch
  and drops everything captured by the previous forward;
- ``record`` (a pre-hook on each layer's attention block, forward hooks on value points) stores the hidden-state
  values that gates read (``layers[i].input``, ``attention.output``, ``ffn.output``) and that
  parallel adapters take as input;
- ``end`` (a forward hook on the base model) drops the captured values again, so no activation
  outlives its batch. The mask (small, no autograd history) and the prefix MLP outputs are kept
  until the next ``begin`` so that gradient-checkpointed layers recomputed during backward find
  them. Hooks that capture values fire *inside* a layer's forward (transformers checkpoints
  ``forward``, not ``__call__``, so a hook on the layer module itself would not run again).

This module defines the state and the hook *functions*; only ``rewrite`` registers them.

>>> s = PeltState()
>>> s.begin(None); s.record(0, "input", "h0"); s.value(0, "input")
'h0'
>>> s.end(); s.values
{}
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable

import torch

from peltc.errors import CompileError


class PeltState:
    """Mask of the current batch, captured point values, per-forward caches, gate groups."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None              # (batch, seq) 1 = token, 0 = padding
        self.values: dict[tuple[int, str], torch.Tensor] = {}
        self.cache: dict[Any, Any] = {}                     # per-forward results (fused gates, prefix MLP)
        self.groups: dict[tuple[int, str, str], list] = {}  # (layer, source, pool) → sigmoid gates to fuse
        self.encoders: list = []                            # prefix reparameterisations, run at `begin`
        self.attn_implementation: str | None = None         # required while prefixes are attached
        self.prefix_kv: dict[int, torch.Tensor] = {}        # id(encoder) → its output for this forward
        self.observer = None                                # diagnostics: sees prefix attention inputs
        # decoders: causal gates pool over the tokens so far; one generation step (a forward continuing
        # a KV cache) adds to the running sums of the cache's tokens, ``carry`` — held by the cache itself
        # (`attach_carry`), so that beam search's reordering and a crop keep them in step with the keys
        self.causal = False
        self.gate_norm = False                              # sigmoid gates read x / rms(x) (the IR's GateBehaviour)
        self.prefix_gate = "kv"                             # per-token prefix gate: "kv" or "kv_weight" (the IR's GateBehaviour)
        self.continuing = False
        self.past = 0                                       # tokens in the KV cache before this forward
        # LoReFT on a decoder (`reft.py`): while ``generate`` runs (``prompt_kind`` "generate": ``prompt`` is
        # its first forward's mask, taken there) or a forward trains on token labels ("labels": ``prompt``
        # the real tokens labelled -100), LoReFT's positions are the prompt's
        self.prompt: torch.Tensor | None = None
        self.prompt_kind: str | None = None
        self.carry: dict[Any, Any] = {}
        # several runs on one base (``rewrite.attach_runs``): ``route`` (batch,) holds each example's run
        # index, set by the entry point (`peltc.api.Runs`) before a forward and cleared after it; every
        # PELT module of run r scales its contribution by ``route == r`` (`route_mask`)
        self.routed = False
        self.route: torch.Tensor | None = None
        self.present: frozenset[int] = frozenset()
        # serving (no-grad forwards, `served`): one matmul for the LoRAs of an attention block that read the
        # same input (and the sigmoid gates reading it), an adapter's gate inside its down-projection, sums
        # added in place. ``fuse`` switches them off (``rewrite.serve_fused``: the before / after benchmark);
        # ``lora_groups`` (rewrite fills it) lists the LoRAs of one attention block; ``packs`` holds the
        # stacked weights, rebuilt when a parameter changes (its version or storage)
        self.fuse = True
        self.lora_groups: dict[Any, list] = {}
        self.packs: dict[Any, tuple[Any, torch.Tensor]] = {}

    # --- lifecycle ---------------------------------------------------------------------------
    def begin(self, mask: torch.Tensor | None, continuing: bool = False, carry: dict | None = None,
              past: int = 0) -> None:
        """Start a forward. ``continuing``: it continues a KV cache of ``past`` tokens, whose causal-gate
        sums are ``carry`` (None: the cache holds none; gates then pool over this forward's tokens)."""
        self.mask = mask.detach() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        self.continuing = continuing
        self.past = past if continuing else 0
        self.carry = carry if continuing and carry is not None else {}
        self.values.clear()
        self.cache.clear()
        if torch.is_grad_enabled():
            # a training forward: an optimizer step may follow that leaves the version counters alone (fused
            # AdamW), so the serving stacks (`pack`) are rebuilt at the next no-grad forward
            self.packs.clear()
        self.present = frozenset(int(r) for r in self.route.unique().tolist()) if self.route is not None \
            else frozenset()
        # Prefix MLPs run once per forward, before any layer: outside gradient-checkpointed layers,
        # so a layer recomputed during backward reads the same tensor (kept until the next begin).
        self.prefix_kv = {id(e): e() for e in self.encoders}

    def end(self) -> None:
        self.values.clear()
        self.cache.clear()

    # --- values ------------------------------------------------------------------------------
    def record(self, layer: int, point: str, value: torch.Tensor) -> None:
        self.values[(layer, point)] = value

    def value(self, layer: int, point: str) -> torch.Tensor:
        try:
            return self.values[(layer, point)]
        except KeyError:
            name = "layer.input" if point == "input" else point
            raise CompileError(
                f"layer {layer}: the value '{name}' was not computed before it was read "
                "(a gate or parallel adapter reads a point that comes later in the layer, or the "
                "base model was bypassed)", code="C010",
                help="gate sources must come before the gated module in the same layer") from None

    def token_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The mask as x's dtype, shaped (batch, seq, 1), or None when every token counts."""
        m = self.mask
        if m is None or m.shape[0] != x.shape[0] or m.shape[1] != x.shape[1]:
            return None
        key = ("mask", x.dtype, x.device)
        out = self.cache.get(key)
        if out is None:
            out = self.cache[key] = m.to(device=x.device, dtype=x.dtype).unsqueeze(-1)
        return out

    def tail_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The mask of x's tokens as x's dtype, (batch, seq, 1): the last ``seq`` columns (a generation
        step's mask covers the cached tokens too), or None when every token counts."""
        m = self.mask
        if m is None or m.shape[0] != x.shape[0] or m.shape[1] < x.shape[1]:
            return None
        return m[:, m.shape[1] - x.shape[1]:].to(device=x.device, dtype=x.dtype).unsqueeze(-1)

    def run_mask(self, run: int, like: torch.Tensor) -> torch.Tensor:
        """(batch,) in like's dtype and device: 1 for the examples of run ``run``, 0 for the others."""
        key = ("run", run, like.dtype, like.device)
        out = self.cache.get(key)
        if out is None:
            out = self.cache[key] = (self.route == run).to(device=like.device, dtype=like.dtype)
        return out

    def run_rows(self, run: int, device) -> torch.Tensor:
        """(n,) long: the indices of run ``run``'s examples in the batch."""
        key = ("rows", run, device)
        out = self.cache.get(key)
        if out is None:
            out = self.cache[key] = (self.route == run).nonzero().squeeze(1).to(device)
        return out

    def pack(self, key, tensors: list[torch.Tensor], build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``build()`` (stacked weights), kept in ``packs[key]`` until one of ``tensors`` changes (its version
        counter, storage or dtype: an optimizer step, ``load_state_dict``, ``.to()``). No-grad forwards only."""
        if torch.compiler.is_compiling():   # dynamo cannot compare data pointers: the stack is traced into the graph
            return build()
        stamp = tuple((t._version, t.data_ptr(), t.dtype) for t in tensors)
        hit = self.packs.get(key)
        if hit is None or hit[0] != stamp:
            with torch.no_grad():
                hit = self.packs[key] = (stamp, build())
        return hit[1]

    def token_count(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens per example, (batch, 1), at least 1 (call only when `token_mask` is not None)."""
        key = ("count", x.dtype, x.device)
        out = self.cache.get(key)
        if out is None:
            out = self.cache[key] = self.token_mask(x).sum(1).clamp_min(1.0)
        return out


# --- routing (several runs on one base) -----------------------------------------------------------------

def route_mask(module, like: torch.Tensor) -> torch.Tensor | None:
    """The 0/1 mask (batch,) of the examples of ``module``'s run, or None when the module belongs to no
    routed run or no route is set (a single-run model: nothing to mask)."""
    run = module.__dict__.get("_pelt_run")
    if run is None:
        return None
    state: PeltState = module.__dict__["_pelt_route_state"]
    return None if state.route is None else state.run_mask(run, like)


def route_rows(module, like: torch.Tensor) -> torch.Tensor | None:
    """The batch indices of ``module``'s run's examples (on like's device), or None (not routed)."""
    run = module.__dict__.get("_pelt_run")
    if run is None:
        return None
    state: PeltState = module.__dict__["_pelt_route_state"]
    return None if state.route is None else state.run_rows(run, like.device)


def route_absent(module) -> bool:
    """Whether ``module`` belongs to a run with no example in the current batch (then it is skipped)."""
    run = module.__dict__.get("_pelt_run")
    if run is None:
        return False
    state: PeltState = module.__dict__["_pelt_route_state"]
    return state.route is not None and run not in state.present


def mask_like(m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A per-example mask (batch,) shaped to broadcast over ``t`` (batch, …)."""
    return m.view(m.shape[0], *([1] * (t.dim() - 1)))


# --- hook functions (registered by rewrite) -------------------------------------------------------
# Each ``*_hook`` returns a ``functools.partial`` over the state rather than a closure, so that
# ``copy.deepcopy(model)`` gives the copy's hooks the copy's state (partials deep-copy their args).

def mask_argument_index(forward: Callable) -> int | None:
    """Position of ``attention_mask`` among a forward's positional parameters (self excluded)."""
    try:
        params = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names.index("attention_mask") if "attention_mask" in names else None


def _begin(state: PeltState, mask_index: int | None, module, args, kwargs):
    need = state.attn_implementation
    if need is not None:
        have = getattr(getattr(module, "config", None), "_attn_implementation", need)
        if have != need:
            # (compiling checked that the switch to `need` took effect: someone switched it back since)
            raise CompileError(
                f"the model's attention implementation is {have!r}, not {need!r} as set (and checked) when "
                f"compiling: it was changed after compiling, and its prefixes, which run only through "
                f"{need!r}, would be skipped silently", code="C014",
                help=f"call model.set_attn_implementation({need!r}) again")
    mask = kwargs.get("attention_mask")
    if mask is None and mask_index is not None and len(args) > mask_index:
        mask = args[mask_index]
    if state.routed:
        _check_route(state, mask, args, kwargs)
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    try:
        past = int(cache.get_seq_length()) if cache is not None else 0
    except (AttributeError, TypeError):
        past = 0
    state.begin(mask, past > 0, getattr(cache, CARRY, None) if past > 0 else None, past)


def _check_route(state: PeltState, mask, args, kwargs) -> None:
    if state.route is None:
        raise CompileError("this model carries several runs (peltc.load_runs) and was called without a route: "
                           "no run is chosen for its examples", code="C018",
                           help="call it through the Runs object load_runs returned: runs(run=[…], **batch)")
    ids = kwargs.get("input_ids", kwargs.get("inputs_embeds", args[0] if args else None))
    batch = mask.shape[0] if isinstance(mask, torch.Tensor) else ids.shape[0] if isinstance(ids, torch.Tensor) \
        else None
    if batch is not None and batch != state.route.shape[0]:
        raise CompileError(f"the route names a run for {state.route.shape[0]} example(s), the batch has {batch}",
                           code="C022", help="give one run per example")


def _end(state: PeltState, module, args, output):
    state.end()
    if state.causal and state.carry:
        cache = _output_cache(output)
        if cache is not None:
            attach_carry(cache, state.carry)


# --- causal gates' running sums, kept on the KV cache ----------------------------------------------------
# A decoder's gate of token t pools over the tokens ≤ t; a generation step sees only its new tokens, so
# the sums over the cached ones travel with the cache (``cache._pelt_carry``: {gate key: per-token running
# sums}). Whatever reorders the cache's batch — beam search's ``reorder_cache(beam_idx)``,
# ``batch_select_indices``, ``batch_repeat_interleave`` — reorders them too (the cache object's methods
# are wrapped, once); a crop needs nothing: a step reads the sums at the cache's own length.

CARRY = "_pelt_carry"
_BATCH_OPS = {
    "reorder_cache": lambda t, idx: t.index_select(0, idx.to(t.device)),
    "batch_select_indices": lambda t, idx: t[idx.to(t.device) if isinstance(idx, torch.Tensor) else idx],
    "batch_repeat_interleave": lambda t, n: t.repeat_interleave(n, dim=0),
}


def _output_cache(output):
    """The KV cache a base model's forward returned (``cache``, ``past_key_values`` before transformers
    5.2x; in a tuple output, the element that is one), or None."""
    # (a dict's values — a ModelOutput is an OrderedDict — tested by type, which torch.compile traces)
    items = output.values() if isinstance(output, dict) else output if isinstance(output, tuple) else ()
    return next((o for o in items if hasattr(o, "get_seq_length") and hasattr(o, "reorder_cache")), None)


def attach_carry(cache, carry: dict) -> None:
    """Keep ``carry`` on ``cache``; wrap the cache's batch-reordering methods to reorder it as well."""
    cache.__dict__[CARRY] = carry
    for name in _BATCH_OPS:
        if hasattr(type(cache), name) and name not in cache.__dict__:
            cache.__dict__[name] = partial(_reordered, name, cache)   # (a partial: torch.compile traces it)


def _reordered(name: str, cache, arg) -> Any:
    out = getattr(type(cache), name)(cache, arg)
    carry = cache.__dict__.get(CARRY) or {}
    op = _BATCH_OPS[name]
    for key, v in carry.items():
        carry[key] = tuple(op(t, arg) for t in v) if isinstance(v, tuple) else op(v, arg)
    return out


def _layer_input(state: PeltState, layer: int, module, args, kwargs):
    h = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
    if isinstance(h, torch.Tensor):
        state.record(layer, "input", h)


def _value(state: PeltState, layer: int, point: str, module, args, output):
    state.record(layer, point, output[0] if isinstance(output, tuple) else output)


def begin_hook(state: PeltState, mask_index: int | None):
    """Forward pre-hook (with_kwargs) on the base model: start a new forward."""
    return partial(_begin, state, mask_index)


def end_hook(state: PeltState):
    """Forward hook on the base model: drop the captured values."""
    return partial(_end, state)


def layer_input_hook(state: PeltState, layer: int):
    """Forward pre-hook (with_kwargs) on a layer's attention block, the first module to read
    the layer input: record ``layers[i].input``."""
    return partial(_layer_input, state, layer)


def value_hook(state: PeltState, layer: int, point: str):
    """Forward hook on the module producing a value point: record its output."""
    return partial(_value, state, layer, point)
