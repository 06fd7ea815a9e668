"""Prefix-tuning through transformers' public ``AttentionInterface`` (never ``past_key_values``).

Each covered self-attention module holds ``pelt_prefix[instance]``, a `Prefix` giving that layer's
prefix keys and values ``P (2, L, H)``. We register two attention functions,
``peltc_prefix_sdpa`` and ``peltc_prefix_eager`` (each with the stock mask function of the
implementation it wraps), and ``rewrite`` switches the model to the one matching its current
implementation (on its own copy of the config), then checks with `calls_prefix_attention` that each
covered attention module really calls it (transformers 4.x encoders ignore the switch: C015,
naming ``MIN_TRANSFORMERS``). The function receives the attention module, query/key/value as
``(batch, heads, seq, head_dim)`` and the mask (bool ``(batch, 1, q, k)`` for sdpa, additive float
for eager, or None when nothing is masked); it prepends ``g_P · P_K`` / ``g_P · P_V`` (``g_P`` per
example, computed from the layer input), prepends attend columns (True / 0) to the mask, then calls
the stock function. With ``output_attentions`` (eager) the returned weights cover ``L + k`` keys,
prefix first. A module without an enabled prefix passes through unchanged.

Reparameterisation during training (``mlp`` = width): one `PrefixEncoder` per instance,
``Embedding(L, H) → Linear(H, mlp) → tanh → Linear(mlp, 2·n·H)`` for the ``n`` covered layers,
computed once per forward (by `PeltState.begin`, before the first layer). ``mlp = None`` trains the per-layer prefixes directly. Folding
(``rewrite.fold_prefix``) replaces the encoder by its output as plain per-layer parameters.

Initialisation (``init``): ``random`` keeps the modules' own (PyTorch's Embedding / Linear defaults;
N(0, 0.02) without the MLP). ``tokens`` (Li & Liang) sets the prefix to the base model's keys and
values of real vocabulary tokens, ``token_ids`` (``rewrite`` runs the frozen base model on them before
attaching anything): `Prefix.init_kv` copies them, `PrefixEncoder.init_kv` solves its last Linear so
that its output equals them (bias: their mean over positions; weight: the minimum-norm solution,
in float64, for the fixed random embedding and first Linear — exact when mlp ≥ length).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Callable, Iterator

import torch
from torch import nn

from peltc.compiler.torch.gate import Gate
from peltc.compiler.torch.state import PeltState, route_absent

IMPLEMENTATIONS = {"sdpa": "peltc_prefix_sdpa", "eager": "peltc_prefix_eager"}
# The lowest transformers peltc supports (pyproject.toml declares it; .ci/run tests it). Prefix-tuning
# needs 5.0, the first release whose encoders (BERT, RoBERTa, ELECTRA, DistilBERT) call attention
# through the AttentionInterface (4.x picks the attention class when the model is built); the runtime
# needs 5.4 (5.2 lacks Trainer.create_optimizer(model); under 5.3 a one-epoch run is never evaluated
# on dev during training: tests/runtime/test_run.py).
MIN_TRANSFORMERS = "5.4"


class PrefixEncoder(nn.Module):
    """The training-time reparameterisation of one prefix instance over its covered layers."""

    def __init__(self, length: int, hidden: int, mlp: int, n_layers: int, *, width: int | None = None,
                 device=None, dtype=None):
        super().__init__()
        # width: of one layer's keys (values): hidden on encoders, num_key_value_heads × head_dim on decoders
        self.length, self.hidden, self.n_layers = length, hidden, n_layers
        self.width = hidden if width is None else width
        self.embedding = nn.Embedding(length, hidden, device=device, dtype=dtype)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp, device=device, dtype=dtype), nn.Tanh(),
                                 nn.Linear(mlp, 2 * n_layers * self.width, device=device, dtype=dtype))

    def forward(self) -> torch.Tensor:
        """(n_layers, 2, L, W): keys and values of every covered layer (W = the key width)."""
        out = self.mlp(self.embedding.weight)                                # (L, 2·n·W)
        return out.view(self.length, self.n_layers, 2, self.width).permute(1, 2, 0, 3)

    @torch.no_grad()
    def init_kv(self, kv: torch.Tensor) -> float:
        """Make ``forward()`` return ``kv`` (n_layers, 2, L, H): the embedding and the first Linear keep
        their random values, the last Linear is solved for — bias = the mean of ``kv`` over the L
        positions, weight = the minimum-norm W with ``W · tanh(first(e_k)) = kv_k − bias`` for every
        position k (float64). Returns the largest remaining difference, relative to ``kv``'s scale;
        raises ValueError when the L hidden vectors are not independent (fewer hidden units than L)."""
        target = kv.permute(2, 0, 1, 3).reshape(self.length, -1).double()   # forward's layout, (L, 2·n·H)
        hidden = self.mlp[1](self.mlp[0](self.embedding.weight)).double()   # (L, mlp)
        if int(torch.linalg.matrix_rank(hidden)) < self.length:
            raise ValueError(f"the {hidden.shape[1]} hidden units cannot reproduce {self.length} prefix "
                             "positions exactly (init tokens needs mlp ≥ length)")
        bias = target.mean(0)
        weight = (torch.linalg.pinv(hidden) @ (target - bias)).T            # (2·n·H, mlp)
        last = self.mlp[2]
        last.weight.copy_(weight.to(last.weight.dtype))
        last.bias.copy_(bias.to(last.bias.dtype))
        scale = float(kv.abs().max()) or 1.0
        return float((self().double() - kv.double()).abs().max()) / scale


class Prefix(nn.Module):
    """One layer's prefix of one instance: a slice of the encoder's output, or its own parameter."""

    def __init__(self, length: int, hidden: int, gate: Gate | None, state: PeltState,
                 encoder: PrefixEncoder | None = None, index: int = 0, *, device=None, dtype=None):
        # hidden: the width of this layer's keys (values) — num_key_value_heads × head_dim on decoders
        super().__init__()
        self.length, self.hidden, self.index = length, hidden, index
        self.gate = gate
        self.enabled = True
        self.__dict__["_state"] = state
        self.__dict__["_encoder"] = encoder
        if encoder is None:
            self.prefix = nn.Parameter(torch.empty(2, length, hidden, device=device, dtype=dtype))
            nn.init.normal_(self.prefix, 0.0, 0.02)

    def extra_repr(self) -> str:
        return f"length={self.length}, reparameterised={self.encoder is not None}"

    @torch.no_grad()
    def init_kv(self, kv: torch.Tensor) -> None:
        """Start this layer's own prefix (``mlp none``) at ``kv`` (2, L, H)."""
        self.prefix.copy_(kv.to(self.prefix.dtype))

    @property
    def encoder(self) -> PrefixEncoder | None:
        return self.__dict__["_encoder"]

    def kv(self) -> torch.Tensor:
        """(2, L, H) — the (ungated) prefix keys and values of this layer."""
        enc = self.encoder
        if enc is None:
            return self.prefix
        kv = self.__dict__["_state"].prefix_kv
        out = kv.get(id(enc))
        if out is None:            # the base model's pre-hook did not run (a layer called directly)
            out = kv[id(enc)] = enc()
        return out[self.index]


def token_ids(vocab_size: int, length: int) -> list[int]:
    """The vocabulary tokens `init tokens` starts a prefix of ``length`` from: ids spread evenly over
    the middle 80% of the vocabulary, away from its ends (where special, unused and byte tokens sit),
    ``⌊V · (1/10 + 4/5 · (k + ½) / length)⌋`` for k = 0 … length − 1 (no tokenizer needed: the same
    everywhere). On BERT's uncased vocabulary (MiniLM's), length 4: monument, delight, wasting, cambodian.

    >>> token_ids(30522, 4)
    [6104, 12208, 18313, 24417]
    """
    return [vocab_size * (length + 8 * k + 4) // (10 * length) for k in range(length)]


def prefix_key_values(module: nn.Module, key: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, PeltState] | None:
    """The enabled prefixes of an attention module, gated, as (batch, kv_heads, L, head_dim) each,
    and the model's `PeltState`. A per-token gate (a decoder's causal sigmoid gate, (batch, q)) cannot
    scale a key shared by every query: `prefix_key_values_per_query` handles it."""
    host = module._modules.get("pelt_prefix")
    if host is None:
        return None
    parts = [p for p in host.values() if p.enabled and not route_absent(p)]
    if not parts:
        return None
    batch, heads, _, hd = key.shape
    ks, vs = [], []
    for p in parts:
        kv = p.kv().to(key.dtype)                                      # (2, L, H)
        kv = kv.view(2, p.length, heads, hd).transpose(1, 2)               # (2, heads, L, hd)
        if p.gate is not None:
            g = p.gate(key).to(key.dtype)                                  # (batch,)
            if g.dim() == 2:
                return None
            kv = kv.unsqueeze(1) * g.view(1, batch, 1, 1, 1)               # (2, batch, heads, L, hd)
        else:
            kv = kv.unsqueeze(1).expand(2, batch, heads, p.length, hd)
        ks.append(kv[0])
        vs.append(kv[1])
    state = parts[0].__dict__["_state"]
    if len(ks) == 1:
        return ks[0], vs[0], state
    return torch.cat(ks, dim=2), torch.cat(vs, dim=2), state


def prefix_runs(module: nn.Module) -> tuple[tuple[int, int | None], ...]:
    """``(length, run)`` of each prefix `prefix_key_values` prepends, in its order; the run is None outside
    a routed model (several runs on one base) and for prefixes of no run."""
    host = module._modules["pelt_prefix"]
    return tuple((p.length, p.__dict__.get("_pelt_run")) for p in host.values()
                 if p.enabled and not route_absent(p))


def routed_mask(state: PeltState, mask: torch.Tensor | None, parts: tuple[tuple[int, int | None], ...],
                query: torch.Tensor, key: torch.Tensor, base: str) -> torch.Tensor:
    """The attention mask with the prefix columns prepended, each visible only to the examples of its run
    (``state.route``): bool for sdpa, additive float for eager (as the mask given). ``key`` is the
    tokens' keys (before the prefixes). Computed once per forward (every layer gets the same tensor)."""
    ck = ("routed_prefix_mask", parts, base)
    hit = state.cache.get(ck)
    if hit is not None and hit[0] is mask:
        return hit[1]
    batch, q, k = query.shape[0], query.shape[2], key.shape[2]
    route = state.route.to(query.device)
    vis = torch.cat([(route == run if run is not None else torch.ones_like(route, dtype=torch.bool))
                     .view(batch, 1, 1, 1).expand(batch, 1, q, length) for length, run in parts], dim=-1)
    floating = mask is not None and mask.dtype != torch.bool or mask is None and base == "eager"
    if mask is None:
        tokens = torch.ones((batch, 1, q, k), dtype=torch.bool, device=query.device)
    else:
        tokens = mask.expand(batch, mask.shape[1], q, k) if mask.dim() == 4 else mask
    if mask is None and floating:
        tokens = torch.zeros((batch, 1, q, k), dtype=query.dtype, device=query.device)
    if floating:
        cols = torch.zeros(vis.shape, dtype=tokens.dtype, device=query.device).masked_fill(
            ~vis, torch.finfo(tokens.dtype).min)
    else:
        cols = vis
    cols = cols.expand(batch, tokens.shape[1], q, cols.shape[-1])
    out = torch.cat([cols, tokens], dim=-1)
    state.cache[ck] = (mask, out)
    return out


def per_query_gate(module: nn.Module, key: torch.Tensor):
    """``(P_K, P_V, g, state)`` when the module's enabled prefix has a per-token gate ``g`` (batch, q):
    P_K, P_V ungated, (batch, kv_heads, L, head_dim). None otherwise. (One prefix per attention block.)"""
    host = module._modules.get("pelt_prefix")
    parts = [p for p in host.values() if p.enabled] if host is not None else []
    if len(parts) != 1 or parts[0].gate is None:
        return None
    p = parts[0]
    g = p.gate(key)
    if g.dim() != 2:
        return None
    batch, heads, _, hd = key.shape
    kv = p.kv().to(key.dtype).view(2, p.length, heads, hd).transpose(1, 2)
    kv = kv.unsqueeze(1).expand(2, batch, heads, p.length, hd)
    return kv[0], kv[1], g.to(key.dtype), p.__dict__["_state"]


def _gated_per_query(module, query, key, value, mask, pk, pv, g, scaling, base, kwargs):
    """Attention with the prefix keys and values scaled by a gate per *query* token, ``g`` (batch, q):
    the logit of query t on prefix key p is ``scaling · q_t · (g_t P_K[p])`` and its value ``g_t P_V[p]``.
    One call of the stock function does it: the logits' change ``(g_t − 1) · scaling · q_t · P_K[p]`` is
    an additive mask on the prefix columns, and the values ride on a doubled head dim, ``[P_V, 0]`` for
    the prefix and ``[0, V]`` for the tokens, so the output is ``g_t · o[:hd] + o[hd:]``.

    With ``state.prefix_gate == "kv_weight"`` (decoders, ``Family.prefix_gate``) the gate also scales the
    prefix's attention *weights*: query t's unnormalised weight on prefix position p is
    ``g_t · exp(scaling · q_t · g_t P_K[p])`` (an additive ``log g_t`` on the prefix columns), so g_t → 0
    gives the attention without the prefix. ("kv" alone sends the prefix logits to 0 as g_t → 0, which on a
    decoder outbids the tokens that the attention sink leaves: a "kv" gate at 0.2 still takes most of the
    attention in SmolLM2's upper layers. The weights alone are not enough either: Adam grows the prefix
    keys at full speed however small the gate, until their logits overcome log g_t; scaled by g_t they
    cannot.)"""
    length, hd = pk.shape[2], key.shape[-1]
    scaling = hd ** -0.5 if scaling is None else scaling
    host = module._modules.get("pelt_prefix")
    state = next(iter(host.values())).__dict__["_state"] if host else None
    rep = query.shape[1] // pk.shape[1]
    logits = query @ pk.repeat_interleave(rep, dim=1).transpose(-1, -2)            # (batch, heads, q, L)
    bias = logits * scaling * (g - 1).view(g.shape[0], 1, g.shape[1], 1)
    if state is not None and getattr(state, "prefix_gate", "kv") == "kv_weight":
        # and the prefix's attention weights times g_t: + log g_t on the prefix columns
        bias = bias + torch.log(g.float().clamp_min(torch.finfo(torch.float32).tiny)).to(query.dtype).view(
            g.shape[0], 1, g.shape[1], 1)
    if mask is None:
        mask = torch.zeros((*query.shape[:1], 1, query.shape[2], key.shape[2]), dtype=query.dtype,
                           device=query.device)
    elif mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~mask, torch.finfo(query.dtype).min)
    mask = torch.cat([bias, mask.to(query.dtype).expand(*bias.shape[:3], mask.shape[-1])], dim=-1)
    key = torch.cat([pk, key], dim=2)
    if state is not None and state.observer is not None:   # diagnostics: the real weights, gate bias included
        state.observer(module, query, key, mask, length, scaling)
    zv, zp = torch.zeros_like(value), torch.zeros_like(pv)
    value = torch.cat([torch.cat([pv, zp], dim=-1), torch.cat([zv, value], dim=-1)], dim=2)
    out, weights = _stock(module, base)(module, query, key, value, mask, scaling=scaling, **kwargs)
    # out: (batch, q, heads, 2·hd)
    out = out[..., :hd] * g.view(g.shape[0], g.shape[1], 1, 1) + out[..., hd:]
    return out.contiguous(), weights


def causal_mask(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """A bool (1, 1, q, k) causal mask, the queries being the last q of the k keys."""
    q, k = query.shape[2], key.shape[2]
    i = torch.arange(q, device=query.device).unsqueeze(1) + (k - q)
    return (torch.arange(k, device=query.device).unsqueeze(0) <= i).view(1, 1, q, k)


def extended_mask(state: PeltState, mask: torch.Tensor | None, length: int, pad: int = 0) -> torch.Tensor | None:
    """`extend_mask`, computed once per forward: every layer receives the same mask tensor."""
    key = ("prefix_mask", length, pad)
    hit = state.cache.get(key)
    if hit is None or hit[0] is not mask:
        hit = state.cache[key] = (mask, extend_mask(mask, length, pad))
    return hit[1]


def extend_mask(mask: torch.Tensor | None, length: int, pad: int = 0) -> torch.Tensor | None:
    """Prepend ``length`` always-attend columns, then ``pad`` never-attend ones, to a bool or additive-float
    attention mask."""
    if mask is None:
        return None
    shape = (*mask.shape[:-1], length + pad)
    if mask.dtype == torch.bool:
        cols = torch.ones(shape, dtype=torch.bool, device=mask.device)
        if pad:
            cols[..., length:] = False
    else:
        cols = torch.zeros(shape, dtype=mask.dtype, device=mask.device)
        if pad:
            cols[..., length:] = torch.finfo(mask.dtype).min
    return torch.cat([cols, mask], dim=-1)


# torch's CPU flash attention (sdpa's kernel for float CPU tensors) is markedly cheaper when the number of
# keys is a multiple of 16: 128 queries × 138 keys cost ~25 % more than × 144 (`bench/sdpa_keys.py`). A
# prefix makes the key count ``L + seq`` (10 + 128 on the benchmarks), so when a mask is there anyway, the
# prefix block is followed by never-attended zero keys up to the next multiple (exact: their weight is 0).
# Not under attention dropout (training): its random mask would be drawn over a different shape, so a
# seeded run would no longer reproduce.
KEY_MULTIPLE = {("sdpa", "cpu"): 16}


def key_padding(base: str, mask: torch.Tensor | None, query: torch.Tensor, keys: int) -> int:
    """How many never-attended keys to add after a prefix so ``keys`` reaches the kernel's preferred multiple
    (0 without a mask: adding one would change the kernel's path, and for other implementations/devices; 0 under
    torch.compile, whose graph serves every length)."""
    multiple = KEY_MULTIPLE.get((base, query.device.type))
    if multiple is None or mask is None or not query.dtype.is_floating_point or torch.compiler.is_compiling():
        return 0       # compiled (dynamic shapes): a pad that depends on the length would specialise on it
    return -keys % multiple


def _generic_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    w = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        w = w + attention_mask
    w = nn.functional.softmax(w, dim=-1)
    w = nn.functional.dropout(w, p=dropout, training=module.training)
    return torch.matmul(w, value).transpose(1, 2).contiguous(), w


def _stock(module: nn.Module, base: str) -> Callable:
    if base == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    return fn if callable(fn) else _generic_eager


class _Probed(Exception):
    """Raised by a prefix attention function called on a module being probed (`calls_prefix_attention`)."""


def make_attention(base: str) -> Callable:
    """An attention function that prepends prefixes, then runs the stock ``base`` function."""
    def prefix_attention(module, query, key, value, attention_mask, **kwargs):
        if module.__dict__.get("_pelt_probe"):
            raise _Probed
        if attention_mask is None and getattr(module, "is_causal", False) and query.shape[2] > 1 \
                and module._modules.get("pelt_prefix") is not None:
            # sdpa would apply is_causal top-left aligned once prefix columns are in: be explicit
            attention_mask = causal_mask(query, key)
            if base == "eager":
                attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device
                                             ).masked_fill(~attention_mask, torch.finfo(query.dtype).min)
        pq = per_query_gate(module, key)
        if pq is not None:
            scaling = kwargs.pop("scaling", None)
            return _gated_per_query(module, query, key, value, attention_mask, pq[0], pq[1], pq[2], scaling,
                                    base, kwargs)
        kv = prefix_key_values(module, key)
        if kv is not None:
            length, pad = kv[0].shape[2], 0
            if kv[2].route is not None:     # several runs on one base: each prefix only for its run's examples
                attention_mask = routed_mask(kv[2], attention_mask, prefix_runs(module), query, key, base)
            else:
                pad = 0 if kwargs.get("dropout") else key_padding(base, attention_mask, query, length + key.shape[2])
                attention_mask = extended_mask(kv[2], attention_mask, length, pad)
            zeros = [key.new_zeros(*key.shape[:2], pad, key.shape[3])] if pad else []
            key = torch.cat([kv[0], *zeros, key], dim=2)
            value = torch.cat([kv[1], *zeros, value], dim=2)
            if kv[2].observer is not None:
                kv[2].observer(module, query, key, attention_mask, length, kwargs.get("scaling"))
        return _stock(module, base)(module, query, key, value, attention_mask, **kwargs)
    prefix_attention.__name__ = f"{IMPLEMENTATIONS[base]}_forward"
    return prefix_attention


def _explicit_causal(mask_fn: Callable) -> Callable:
    """The stock mask function, never returning None for a causal mask (sdpa's ``is_causal`` shortcut):
    the prefix function prepends always-visible columns to an explicit causal mask."""
    def fn(*args, **kwargs):
        kwargs["allow_is_causal_skip"] = False
        return mask_fn(*args, **kwargs)
    fn.__name__ = f"peltc_{mask_fn.__name__}"
    return fn


def register_attention() -> None:
    """Register the prefix attention functions and their mask functions with transformers."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
    masks = {"sdpa": _explicit_causal(sdpa_mask), "eager": eager_mask}
    for base, name in IMPLEMENTATIONS.items():
        AttentionInterface.register(name, make_attention(base))
        AttentionMaskInterface.register(name, masks[base])


def calls_prefix_attention(module: nn.Module, hidden: int) -> bool | None:
    """Whether the attention module's forward calls a prefix attention function (the one its
    ``config._attn_implementation`` names in the AttentionInterface) — i.e. whether prefixes would run.

    Runs ``module.forward`` (no hooks, no grad) on one zero token; the prefix function, seeing the
    module marked, stops the forward before any attention is computed. True: it was called; False:
    the forward returned without calling it (an attention class that computes attention itself, as
    BERT's does on transformers 4.x); None: the module cannot be run on its own with that input.
    """
    p = next(module.parameters(), None)
    x = torch.zeros(1, 1, hidden, device=p.device if p is not None else None,
                    dtype=p.dtype if p is not None and p.is_floating_point() else None)
    kwargs = {}
    if "position_embeddings" in inspect.signature(module.forward).parameters:     # rotary (decoders)
        hd = int(getattr(module, "head_dim", hidden))
        kwargs["position_embeddings"] = (x.new_ones(1, 1, hd), x.new_zeros(1, 1, hd))
    module.__dict__["_pelt_probe"] = True
    try:
        with torch.no_grad():
            module.forward(x, **kwargs)
    except _Probed:
        return True
    except Exception:       # noqa: BLE001 — another signature (4.x DistilBERT: query, key, value, mask)
        return None
    finally:
        del module.__dict__["_pelt_probe"]
    return False


@contextlib.contextmanager
def observe_prefix_attention(model: nn.Module) -> Iterator[dict[int, float]]:
    """Within the block, forwards record per layer the attention mass that real tokens put on prefix
    positions (softmax weight summed over the prefix columns): ``{layer: mass}``, the mean over heads
    and over the real query tokens of every forward in the block (so a probe can run in several
    batches). Diagnostics only (it recomputes the scores)."""
    from peltc.compiler.archs import family_of_model
    from peltc.compiler.torch.targets import layer_of

    states = {id(m.__dict__["_state"]): m.__dict__["_state"] for m in model.modules() if isinstance(m, Prefix)}
    fam = family_of_model(model)
    layer_at = {id(m): (layer_of(fam, name) if fam else None) for name, m in model.named_modules()
                if isinstance(m._modules.get("pelt_prefix"), nn.ModuleDict)}
    mass: dict[int, float] = {}
    totals: dict[int, list[float]] = {}

    def observer(module, query, key, mask, length, scaling):
        q = query.float()
        k = key.float()
        if k.shape[1] != q.shape[1]:                       # grouped KV heads
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        w = q @ k.transpose(-1, -2) * (scaling if scaling is not None else q.shape[-1] ** -0.5)
        if mask is not None:
            w = w.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else w + mask.float()
        p = w.softmax(-1)[..., :length].sum(-1)             # (batch, heads, q)
        state = next(iter(states.values()))
        m = state.mask
        if m is not None and m.shape == (p.shape[0], p.shape[2]):
            tok = m.to(p.dtype).unsqueeze(1)
            total, count = float((p * tok).sum()), float(tok.sum() * p.shape[1])
        else:
            total, count = float(p.sum()), float(p.numel())
        layer = layer_at.get(id(module))
        layer = -1 if layer is None else layer
        acc = totals.setdefault(layer, [0.0, 0.0])
        acc[0] += total
        acc[1] += count
        mass[layer] = acc[0] / acc[1] if acc[1] else 0.0

    for st in states.values():
        st.observer = observer
    try:
        yield mass
    finally:
        for st in states.values():
            st.observer = None
