"""One attachment's modules at its resolved targets: `attach_one` looks its method up in the registry
(`schema.METHODS`) and calls the method's torch step with an `AttachContext` — the built-ins' steps below,
a plug-in's own ``attach``, or for a plug-in's ``build`` the generic `attach_delta`. Built-ins: adapters
wrap the LayerNorm of their value point (`AdapterPoint`) or hook a pre-norm sub-layer, LoRA wraps its
linear (`LoraLinear`), BitFit adds a delta + forward hook on its bias-holding modules, (IA)³ a vector +
a forward (pre-)hook on its linear, LoReFT its interventions + a forward hook on the layer, prefixes
live on the attention modules (their MLP on the base model). Also: recording the base model's keys and values of
``init tokens`` prefixes, and solving their MLPs to start there."""

from __future__ import annotations

import importlib
import types
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

import peltc.compiler.torch.targets as tg
from peltc.compiler import schema
from peltc.compiler.archs import Family
from peltc.compiler.ir import AttachmentNode
from peltc.compiler.torch.adapter import Adapter, AdapterPoint, attach_prenorm
from peltc.compiler.torch.bitfit import FOLDED, BiasDelta, bias_size, bitfit_hook
from peltc.compiler.torch import ia3, reft
from peltc.compiler.torch.delta import Delta, DeltaLinear
from peltc.compiler.torch.gate import Gate
from peltc.compiler.torch.lora import LoRA, LoraLinear, principal_init
from peltc.compiler.torch.plan import inner_module, kv_width, span_of, where_of
from peltc.compiler.torch.prefix import Prefix, PrefixEncoder, token_ids
from peltc.compiler.torch import prompt as soft_prompt
from peltc.compiler.torch.state import PeltState
from peltc.errors import CompileError


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def _gate(att: AttachmentNode, state: PeltState, hidden: int, where: dict, reads_own: bool = False) -> Gate | None:
    """The attachment's gate module (None for ``gate none``), as it starts on the model (`start_gate`:
    the family's resolved ``gate_init`` where the spec writes no ``init=``)."""
    if att.gate.kind == "none":
        return None
    return Gate(att.start_gate, hidden, (att.instance, att.layer, att.point), state,
                reads_own=reads_own, **where)


@dataclass
class AttachContext:
    """What a method's torch step gets for one attachment: the model, the attachment (its parameters as
    ``args``), its resolved targets, the per-forward state, the hidden size; `gate` builds its gate."""

    model: nn.Module
    fam: Family
    att: AttachmentNode
    targets: list[tg.Target]
    state: PeltState
    hidden: int
    encoders: dict = field(default_factory=dict)
    atts: list[AttachmentNode] = field(default_factory=list)
    prefix: str = ""
    token_kv: dict | None = None

    @property
    def args(self) -> Any:
        return self.att.args

    @property
    def module(self) -> nn.Module:
        """The (first) target module, unwrapped from peltc's own wrappers: the base linear of a linear point."""
        return inner_module(self.model.get_submodule(self.targets[0].path))

    @property
    def fan_in(self) -> int:
        return int(self.module.in_features)

    @property
    def fan_out(self) -> int:
        return int(self.module.out_features)

    @property
    def where(self) -> dict:
        """``device`` and ``dtype`` of the target module's parameters (build new parameters with them)."""
        return where_of(self.module)

    def gate(self, reads_own: bool = False) -> Gate | None:
        """The attachment's gate module (None for ``gate none``): multiply the method's output by it."""
        return _gate(self.att, self.state, self.hidden, self.where, reads_own)


_STEPS: dict[str, Callable[[AttachContext], None]] = {}


def step_of(method: str) -> Callable[[AttachContext], None]:
    """The torch step of ``method`` (registry): its ``attach`` (a callable, or "module:function" imported
    on first use), else `attach_delta` for a ``build`` plug-in."""
    m = schema.METHODS[method]
    if callable(m.attach):
        return m.attach
    if m.attach is None:
        return attach_delta
    if m.attach not in _STEPS:
        mod, _, fn = m.attach.partition(":")
        _STEPS[m.attach] = getattr(importlib.import_module(mod), fn)
    return _STEPS[m.attach]


def attach_delta(ctx: AttachContext) -> None:
    """A plug-in's ``build(ctx)`` module, added to the output of the linear at its point (`DeltaLinear`)."""
    m = schema.METHODS[ctx.att.method]
    where = ctx.where
    try:
        fn = m.build(ctx)
    except Exception as e:    # the plug-in's own code
        raise CompileError(f"{ctx.att.instance}: the plug-in method '{m.name}' ({m.origin}) failed to build its "
                           f"module at {ctx.targets[0].path}: {type(e).__name__}: {e}", code="C030",
                           span=span_of(ctx.att), help="fix the plug-in's build function") from None
    if not isinstance(fn, nn.Module):
        raise CompileError(f"{ctx.att.instance}: the plug-in method '{m.name}' built {type(fn).__name__}, not an "
                           "nn.Module", code="C030", span=span_of(ctx.att), help="build must return an nn.Module")
    host = ctx.model.get_submodule(ctx.targets[0].path)
    if not isinstance(host, DeltaLinear):
        host = DeltaLinear(host)
        set_module(ctx.model, ctx.targets[0].path, host)
    fn.to(**where)
    host.pelt_delta[ctx.att.instance] = Delta(fn, ctx.gate(), m.merges)


def attach_finetune(ctx: AttachContext) -> None:
    """Nothing to attach: `inject.apply` leaves every base weight trainable (host ``model``)."""


def attach_adapter(ctx: AttachContext) -> None:
    """Post-norm: wrap the LayerNorm of the value point; pre-norm (decoders): hook the sub-layer."""
    if ctx.fam.pre_norm:
        _attach_prenorm_adapter(ctx.model, ctx.att, ctx.targets[0], ctx.state, ctx.hidden)
    else:
        _attach_adapter(ctx.model, ctx.att, ctx.targets[0], ctx.state, ctx.hidden)


def attach_lora(ctx: AttachContext) -> None:
    _attach_lora(ctx.model, ctx.att, ctx.targets[0], ctx.state, ctx.hidden)


def attach_bitfit(ctx: AttachContext) -> None:
    _attach_bitfit(ctx.model, ctx.att, ctx.targets, ctx.state, ctx.hidden)


def attach_ia3(ctx: AttachContext) -> None:
    _attach_ia3(ctx.model, ctx.att, ctx.targets[0], ctx.state, ctx.hidden)


def attach_loreft(ctx: AttachContext) -> None:
    _attach_loreft(ctx.model, ctx.att, ctx.targets[0], ctx.state, ctx.hidden)


def attach_prompt(ctx: AttachContext) -> None:
    _attach_prompt(ctx.model, ctx.att, ctx.targets[0], ctx.state, ctx.hidden)


def attach_prefix(ctx: AttachContext) -> None:
    _attach_prefix(ctx.model, ctx.att, ctx.targets[0], ctx.state, ctx.hidden, ctx.encoders, ctx.atts, ctx.prefix,
                   ctx.token_kv, width=kv_width(ctx.model, ctx.fam, ctx.hidden))


def _attach_adapter(model, att, t, state, hidden) -> None:
    host = model.get_submodule(t.path)
    if not isinstance(host, AdapterPoint):
        host = AdapterPoint(host, att.layer, att.point, state)
        set_module(model, t.path, host)
    where = where_of(host.base_layer)
    p = att.args
    reads_own = att.gate.kind == "sigmoid" and att.gate.source == att.point
    width = int(host.base_layer.normalized_shape[-1]) if hasattr(host.base_layer, "normalized_shape") else hidden
    host.add(att.instance, Adapter(width, int(p.size), p.activation, float(p.scale), att.placement,
                                   _gate(att, state, hidden, where, reads_own), **where))


def _attach_prenorm_adapter(model, att, t, state, hidden) -> None:
    """A pre-norm block (decoders): the adapter rides on a forward hook of the sub-layer module itself
    (``self_attn`` / ``mlp``), whose output is the value point before the residual add."""
    host = model.get_submodule(t.path)
    where = where_of(host)
    p = att.args
    reads_own = att.gate.kind == "sigmoid" and att.gate.source == att.point
    attach_prenorm(host, att.instance, Adapter(hidden, int(p.size), p.activation, float(p.scale), att.placement,
                                               _gate(att, state, hidden, where, reads_own), **where))


def _attach_lora(model, att, t, state, hidden) -> None:
    host = model.get_submodule(t.path)
    if not isinstance(host, LoraLinear):
        host = LoraLinear(host)
        set_module(model, t.path, host)
    lin = inner_module(host)
    where = where_of(lin)
    p = att.args
    lora = host.pelt_lora[att.instance] = LoRA(
        lin.in_features, lin.out_features, int(p.rank), float(p.alpha), float(p.dropout),
        _gate(att, state, hidden, where), rs=p.scaling == "rs", dora=bool(p.dora), init=p.init, **where)
    if state.routed:      # a shared base is never changed (s·B₀A₀ x is subtracted in the run's rows instead);
        lora.__dict__["in_base"] = p.init == "default"      # the weights come from the artifact
        return
    if p.init != "default":
        lora.set_principal(*principal_init(lin.weight, int(p.rank), lora.init_scale, p.init))
        set_residual(host)
    if lora.dora:
        lora.init_magnitude(lin.weight)


def set_residual(host: LoraLinear) -> None:
    """The base weight of a linear whose LoRAs start from a principal init (``init pissa`` / ``olora``):
    W − Σ_k s_k·B₀ₖA₀ₖ, computed in float32 from the original weight W, which is kept (by reference,
    ``host._pelt_original_weight``; the caller's tensor is never written: the base gets a new one) so
    that loading an artifact's A₀, B₀ (`restore_residuals`) gives exactly the weight training had."""
    lin = inner_module(host)
    orig = host.__dict__.setdefault("_pelt_original_weight", lin.weight.data)
    kept = [lo for lo in host.pelt_lora.values() if lo.init != "default" and lo.in_base]
    w = orig.to(device=lin.weight.device, dtype=torch.float32)    # the model may have moved since
    for lo in kept:
        w = w - lo.init_scale * (lo.B0 @ lo.A0).to(w.device)
    lin.weight.data = w.to(orig.dtype)


def restore_residuals(model: nn.Module) -> int:
    """After an artifact's tensors (A₀, B₀ included) were copied in: every principal-init linear's base
    weight recomputed from its original (`set_residual`). Returns the linears set."""
    hosts = [m for m in model.modules() if isinstance(m, LoraLinear) and "_pelt_original_weight" in m.__dict__]
    for h in hosts:
        set_residual(h)
    return len(hosts)


def _attach_bitfit(model, att, tgts, state, hidden) -> None:
    gate = None
    for t in tgts:
        mod = inner_module(model.get_submodule(t.path))
        size = bias_size(mod)
        if size is None:
            continue        # a bias-free module inside a block: nothing to tune
        where = where_of(mod)
        if gate is None and att.gate.kind != "none":
            gate = _gate(att, state, hidden, where)
            owns = True
        else:
            owns = False
        if "pelt_bitfit" not in mod._modules:
            mod.pelt_bitfit = nn.ModuleDict()
            mod.__dict__["_pelt_bitfit_hook"] = mod.register_forward_hook(bitfit_hook)
            # Ungated deltas go into the bias argument (``F.linear(x, W, b + Δb)``) by swapping the module's
            # class for its `FOLDED` subclass. The swap stays because it is what puts the train step at parity
            # with in-place BitFit: against the in-place anchor the BitFit train step went 1.02× → 1.00×
            # (MiniLM) and 1.04× → 1.02× (bert-base) with the fold (docs/results.md, "Now"; docs/results/
            # overhead-anchors.json, overhead-2026-11-29/); an output hook (the gated path) costs an extra
            # activation-sized add per biased module. An alternative without the swap (a forward
            # pre-hook, a parametrisation, a wrapper module) must be measured with
            # `bench/overhead.py --anchor-python` and show the same parity before it replaces this.
            if type(mod) in FOLDED and "forward" not in mod.__dict__:
                mod.__class__ = FOLDED[type(mod)]
        mod.pelt_bitfit[att.instance] = BiasDelta(size, gate, owns, **where)


def _attach_ia3(model, att, t, state, hidden) -> None:
    """The vector in ``pelt_ia3`` of the linear itself (inside a LoRA wrapper; E150 keeps LoRA and BitFit
    off an (IA)³ linear), scaling its output (keys, values) or its input (the down projection) by hook."""
    lin = inner_module(model.get_submodule(t.path))
    where = where_of(lin)
    vec = ia3.build(lin.in_features, lin.out_features, att.point, _gate(att, state, hidden, where), **where)
    if "pelt_ia3" not in lin._modules:
        lin.pelt_ia3 = nn.ModuleDict()
        lin.__dict__["_pelt_ia3_hooks"] = [lin.register_forward_hook(ia3.scale_output),
                                           lin.register_forward_pre_hook(ia3.scale_input)]
    lin.pelt_ia3[att.instance] = vec


def _attach_loreft(model, att, t, state, hidden) -> None:
    """The interventions in ``pelt_reft`` of the layer module, applied to its output by a forward hook."""
    layer = model.get_submodule(t.path)
    where = where_of(layer)
    p = att.args
    if "pelt_reft" not in layer._modules:
        layer.pelt_reft = nn.ModuleDict()
        layer.__dict__["_pelt_reft_hook"] = layer.register_forward_hook(reft.intervene)
    layer.pelt_reft[att.instance] = reft.build(hidden, int(p.rank), int(p.first), int(p.last), bool(p.tied),
                                               _gate(att, state, hidden, where), state, **where)
    if state.causal and callable(getattr(type(model), "generate", None)) and "generate" not in model.__dict__:
        # positions: the prompt's, generating (`reft.generate`) and training on token labels (reft.py)
        model.generate = types.MethodType(reft.generate, model)
        model.__dict__["_pelt_reft_prompt_hooks"] = [
            model.register_forward_pre_hook(partial(reft.prompt_from_labels, state), with_kwargs=True),
            model.register_forward_hook(partial(reft.prompt_done, state), always_call=True)]


def record_token_kv(model: nn.Module, fam: Family, prefix: str, atts: list[AttachmentNode]
                    ) -> dict[tuple[str, int], torch.Tensor]:
    """``(instance, layer) → (2, L, H)`` for every prefix attachment with ``init tokens``: that layer's
    key and value projections of the tokens ``token_ids(vocab_size, L)``, from one forward of the
    base model (eval mode, no grad; one sequence of the L tokens, no padding) per prefix length."""
    wanted = [a for a in atts if a.method == "prefix" and a.args.init == "tokens"]
    if not wanted:
        return {}
    base = model.get_submodule(prefix[:-1]) if prefix else model
    vocab = int(getattr(model.config, "vocab_size"))
    p = next(base.parameters())
    out: dict[tuple[str, int], torch.Tensor] = {}
    for length in sorted({int(a.args.length) for a in wanted}):
        same = [a for a in wanted if int(a.args.length) == length]
        seen: dict[tuple[int, int], torch.Tensor] = {}
        hooks = []
        for layer in sorted({a.layer for a in same}):
            for which, point in enumerate(("attention.key", "attention.value")):
                mod = model.get_submodule(tg.point_path(fam, prefix, layer, point))
                hooks.append(mod.register_forward_hook(
                    lambda m, args, output, k=(layer, which): seen.__setitem__(k, output[0].detach().clone())))
        ids = torch.tensor([token_ids(vocab, length)], device=p.device)
        modes = [(m, m.training) for m in base.modules()]
        base.eval()
        try:
            with torch.no_grad():
                base(input_ids=ids, attention_mask=torch.ones_like(ids))
        finally:
            for h in hooks:
                h.remove()
            for m, mode in modes:
                m.training = mode
        for a in same:
            out[(a.instance, a.layer)] = torch.stack([seen[(a.layer, 0)], seen[(a.layer, 1)]])
    return out


def init_encoders(encoders: dict[str, PrefixEncoder], atts: list[AttachmentNode],
                   token_kv: dict[tuple[str, int], torch.Tensor]) -> None:
    """Solve each ``init tokens`` prefix MLP so that its output is its layers' token keys and values."""
    for inst, enc in encoders.items():
        mine = sorted((a for a in atts if a.instance == inst), key=lambda a: a.layer)
        if (inst, mine[0].layer) not in token_kv:
            continue
        try:
            off = enc.init_kv(torch.stack([token_kv[(inst, a.layer)] for a in mine]))
        except ValueError as e:
            off = str(e)
        if isinstance(off, str) or off > 1e-3:
            why = off if isinstance(off, str) else f"its output is off by {off:.2g} of their scale"
            raise CompileError(f"{inst}: the prefix MLP cannot start at the tokens' keys and values: {why}",
                               code="C016", span=span_of(mine[0]),
                               help="write a wider `mlp` (at least `length`), or `mlp none`")


def attach_one(model, fam, att, tgts, state, hidden, encoders, atts, prefix, token_kv=None) -> None:
    """Attach one attachment's module(s) at its resolved targets: its method's torch step (`step_of`)."""
    step_of(att.method)(AttachContext(model, fam, att, list(tgts), state, hidden, encoders, atts, prefix, token_kv))


def _attach_prompt(model, att, t, state, hidden) -> None:
    """A soft prompt on the base model (``pelt_prompt[instance]``); its vectors start as ``init`` says.
    The hooks that prepend it are installed by ``inject`` (`prompt.prepend_hook`)."""
    base = model.get_submodule(t.path)
    words = base.get_input_embeddings()
    where = where_of(words)
    p = att.args
    length = int(p.length)
    host = base._modules.get("pelt_prompt")
    if host is None:
        host = base.pelt_prompt = nn.ModuleDict()
    prompt = soft_prompt.build(length, words.embedding_dim, _gate(att, state, hidden, where), p.encoder,
                               int(p.encoder_hidden), **where)
    host[att.instance] = prompt
    ids = soft_prompt.init_ids(p.init, length, words.num_embeddings,
                               _text_ids(model, att, p.text) if p.init == "text" else None)
    if ids is not None:
        with torch.no_grad():
            prompt.start_at(words(torch.tensor(ids, device=words.weight.device)).float())


def _text_ids(model, att: AttachmentNode, text: str) -> list[int]:
    """The token ids of ``text`` by the model's own tokenizer (loaded from its name or folder; special
    tokens included, as peft's TEXT init)."""
    from transformers import AutoTokenizer
    name = getattr(model.config, "_name_or_path", "") or ""
    try:
        ids = AutoTokenizer.from_pretrained(name)(text)["input_ids"] if name else []
    except (OSError, ValueError) as e:
        raise CompileError(f"{att.instance}: `init text` needs the tokenizer of the model ({name or 'no name'}), "
                           f"which cannot be loaded: {e}", code="C047", span=span_of(att),
                           help="load the model from a folder holding its tokenizer, or write `init vocab`") from None
    if not ids:
        raise CompileError(f"{att.instance}: `init text` found no tokens (model {name or 'without a name'})",
                           code="C047", span=span_of(att), help="load the model from a folder holding its tokenizer, "
                           "or write `init vocab`")
    return list(ids)


def _attach_prefix(model, att, t, state, hidden, encoders, atts, prefix, token_kv=None, width=None) -> None:
    attn = model.get_submodule(t.path)
    where = where_of(attn)
    width = hidden if width is None else width
    length = int(att.args.length)
    mlp = att.args.mlp
    enc, index = None, 0
    if mlp is not None:
        covered = sorted(a.layer for a in atts if a.instance == att.instance)
        enc = encoders.get(att.instance)
        if enc is None:
            enc = encoders[att.instance] = PrefixEncoder(length, hidden, int(mlp), len(covered), width=width,
                                                         **where)
            base = model.get_submodule(prefix[:-1]) if prefix else model
            if "pelt_prefix_encoders" not in base._modules:
                base.pelt_prefix_encoders = nn.ModuleDict()
            base.pelt_prefix_encoders[att.instance] = enc
            state.encoders.append(enc)
        index = covered.index(att.layer)
    if "pelt_prefix" not in attn._modules:
        attn.pelt_prefix = nn.ModuleDict()
    gate = _gate(att, state, hidden, where)
    attn.pelt_prefix[att.instance] = Prefix(length, width, gate, state, enc, index,
                                            **where)
    kv = (token_kv or {}).get((att.instance, att.layer))
    if enc is None and kv is not None:
        attn.pelt_prefix[att.instance].init_kv(kv)
