"""The one module that mutates ``nn.Module``s: apply a resolved IR to a loaded Hugging Face model.

    report = apply(ir, model)       # attach everything, freeze the base, return a Report
    fold_prefix(model)              # prefix MLPs → plain per-layer prefixes (identical outputs)
    merge(model)                    # ungated LoRA / BitFit → base weights (zero-overhead inference)
    disable(model, "kv")            # switch one instance off (ablations, tests)
    force_gates(model, 0.0)         # pin every gate (or one instance's) to a value
    attach_runs([ir0, ir1], model, head_shapes)   # several runs on one base, each example routed (`routing`)

What ``apply`` does, in order (nothing is touched before every target resolved):

1. resolve every attachment to module paths (``targets``) and check they exist, that the family
   supports the method (prefix needs the AttentionInterface) and that gates can be computed;
2. freeze every base parameter, except the task head (``family.head``, always trained) — and
   except when the spec has ``finetune``, the only method that trains base weights;
   Then, for prefixes with ``init tokens``, one forward of the (still bare, frozen) base model on
   ``prefix.token_ids`` records each covered layer's key and value projections of those tokens;
3. attach: adapters wrap the LayerNorm of their value point (`AdapterPoint`), LoRA wraps its
   linear (`LoraLinear`), BitFit adds a delta + forward hook on its bias-holding modules, prefixes
   live on the attention modules and run through a registered attention function (starting at the
   recorded keys and values with ``init tokens``); every new
   parameter's path contains ``pelt_`` (``...output.LayerNorm.pelt_adapters.<instance>.down.weight``);
4. install the `PeltState` hooks (mask, layer inputs, gate-source values), fuse sigmoid gates that
   read the same value of the same layer, and the head-pooling hook for ``head { pool mean }``.

Prefixes also switch the attention implementation, as the last step of 1: the model first gets its
own copy of its config (the caller's config object, perhaps shared with other models, is never
changed), then each covered attention module is checked to really call the prefix attention
function (C015 otherwise, with the model put back as it was).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from peltc.compiler.archs import FAMILIES, MODEL_TYPES, Family
from peltc.compiler.ir import IR, AttachmentNode
from peltc.compiler.torch import targets as tg
from peltc.compiler.torch.adapter import PARALLEL_INPUT, Adapter, AdapterPoint, attach_prenorm
from peltc.compiler.torch.bitfit import FOLDED, UNFOLDED, BiasDelta, bias_size, bitfit_hook
from peltc.compiler.torch.gate import Gate
from peltc.compiler.torch.lora import LoRA, LoraLinear
from peltc.compiler.torch.pooling import bypass_pooler_hook, mean_pool_all_hook, mean_pool_hook
from peltc.compiler.torch.prefix import (IMPLEMENTATIONS, MIN_TRANSFORMERS, Prefix, PrefixEncoder,
                                         calls_prefix_attention, register_attention, token_ids)
from peltc.compiler.torch.state import (PeltState, begin_hook, end_hook, layer_input_hook, mask_argument_index,
                                        value_hook)
from peltc.errors import CompileError, nearest

if TYPE_CHECKING:
    from peltc.compiler.torch.report import Report


@dataclass
class Compiled:
    """What ``apply`` did to a model; kept on the model as ``model._pelt``."""

    ir: IR
    family: Family
    prefix: str                                  # "<base>." for a task model, "" for a base model
    n_layers: int
    state: PeltState
    head_paths: list[str]
    finetune: bool
    paths: dict[str, dict[int | None, list[str]]] = field(default_factory=dict)
    attachments: dict[str, list[AttachmentNode]] = field(default_factory=dict)
    hooks: list[Any] = field(default_factory=list)
    attn_implementation: str | None = None       # the implementation the prefixes wrap
    merged: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)
    runs: list[IR] = field(default_factory=list)  # several runs on one base (`attach_runs`): each run's IR


def compiled(model: nn.Module) -> Compiled:
    c = model.__dict__.get("_pelt")
    if c is None:
        raise CompileError("this model was not compiled by peltc (call peltc.compile_model first)", code="C012")
    return c


# --- apply ------------------------------------------------------------------------------------------

def apply(ir: IR, model: nn.Module) -> "Report":
    """Attach the IR's modules to ``model`` (in place) and return a `Report`.

    Raises `CompileError` (with the attachment's span) before changing anything when a target
    does not resolve or the model cannot take a method.
    """
    from peltc.compiler.torch.report import build_report

    if model.__dict__.get("_pelt") is not None:
        raise CompileError("this model is already compiled; load a fresh model to apply another spec", code="C001")
    fam = _family(ir, model)
    prefix = fam.base + "." if isinstance(getattr(model, fam.base, None), nn.Module) else ""
    layers = _get(model, prefix + fam.layers, None)
    n_layers = len(layers)
    atts = ir.attachments()

    # 1. resolve and check everything before touching the model
    plan: list[tuple[AttachmentNode, list[tg.Target]]] = []
    for att in atts:
        _check_attachment(att, fam, model)
        tgts = tg.targets(fam, prefix, att.method, att.layer, att.point, n_layers)
        if att.method == "bitfit" and not tgts:
            raise CompileError(f"{att.instance}: bitfit at '{att.point}', but the {fam.name} family has no pooler",
                               code="C006", span=_span(att), help="the task head itself is always trained")
        for t in tgts:
            mod = _get(model, t.path, att)
            _check_module(att, t, mod, fam)
        plan.append((att, tgts))
    if any(a.method == "prefix" for a in atts):
        impl = _attn_implementation(model, fam, next(a for a in atts if a.method == "prefix"))
    else:
        impl = None
    _check_prefix_uniform(atts)
    if (ir.settings.head or {}).get("pool") == "mean" and fam.pooling == "last" and fam.lm_head \
            and _has(model, fam.lm_head) and not any(_has(model, h) for h in fam.head):
        raise CompileError(f"head {{ pool mean }} on a {type(model).__name__}: a causal LM's head predicts each "
                           "next token from that token's own hidden state; a mean over the sequence would let "
                           "every position read the future", code="C017",
                           help="pool mean is for a *ForSequenceClassification model; drop `head { pool mean }`")
    if impl is not None:     # the last check, and the only change a failing check undoes
        _switch_attention(model, impl, [(a, t[0].path) for a, t in plan if a.method == "prefix"],
                          _hidden(model, fam, ir))

    # 2. freeze
    finetune = any(a.method == "finetune" for a in atts)
    for p in model.parameters():
        p.requires_grad_(finetune)
    head_paths = [prefix_free for prefix_free in fam.head if prefix and _has(model, prefix_free)]
    for hp in head_paths:
        for p in model.get_submodule(hp).parameters():
            p.requires_grad_(True)

    state = PeltState()
    state.causal = fam.causal
    state.gate_norm = fam.gate_source_norm
    state.prefix_gate = fam.prefix_gate
    state.prefix_gate_init = fam.prefix_gate_init
    c = Compiled(ir, fam, prefix, n_layers, state, head_paths, finetune, attn_implementation=impl)
    hidden = _hidden(model, fam, ir)
    token_kv = _token_kv(model, fam, prefix, atts)   # before anything attached changes the activations

    # 3. attach
    encoders: dict[str, PrefixEncoder] = {}
    for att, tgts in plan:
        c.attachments.setdefault(att.instance, []).append(att)
        c.paths.setdefault(att.instance, {}).setdefault(att.layer, []).extend(t.path for t in tgts)
        _attach(model, fam, att, tgts, state, hidden, encoders, atts, prefix, token_kv)
    _init_encoders(encoders, atts, token_kv)

    # 4. state hooks, gate fusion, attention implementation, pooling
    _state_hooks(model, c)
    if impl is not None:     # switched (and checked) in step 1
        state.attn_implementation = IMPLEMENTATIONS[impl]
    if (ir.settings.head or {}).get("pool") == "mean":
        _pool_hooks(model, c, None)

    model.__dict__["_pelt"] = c
    return build_report(model)


def _state_hooks(model: nn.Module, c: Compiled) -> None:
    """The `PeltState` hooks: begin / end on the base model, layer inputs and the value points that
    sigmoid gates and parallel adapters read; gate fusion groups."""
    fam, prefix, state = c.family, c.prefix, c.state
    base = model.get_submodule(prefix[:-1]) if prefix else model
    c.hooks.append(base.register_forward_pre_hook(begin_hook(state, mask_argument_index(base.forward)),
                                                  with_kwargs=True))
    c.hooks.append(base.register_forward_hook(end_hook(state)))
    needs: set[tuple[int, str]] = set()
    for m in model.modules():
        if isinstance(m, Gate) and m.kind == "sigmoid" and not m.reads_own:
            needs.add((m.layer, m.source))
            state.groups.setdefault((m.layer, m.source, m.pool), []).append(m)
        if isinstance(m, AdapterPoint) and any(a.placement == "parallel" for a in m.pelt_adapters.values()):
            needs.add((m.layer, PARALLEL_INPUT[m.point]))
    for layer, point in sorted(needs):
        if point == "input":
            mod = model.get_submodule(tg.point_path(fam, prefix, layer, "attention") if fam.layer_input is None
                                      else f"{tg.layer_path(fam, prefix, layer)}.{fam.layer_input}")
            c.hooks.append(mod.register_forward_pre_hook(layer_input_hook(state, layer), with_kwargs=True))
        else:
            mod = model.get_submodule(tg.point_path(fam, prefix, layer, point))
            c.hooks.append(mod.register_forward_hook(value_hook(state, layer, point)))


def _pool_hooks(model: nn.Module, c: Compiled, runs: frozenset[int] | None) -> None:
    """``head { pool mean }``: the hooks feeding the head the masked mean (with ``runs``: only for the
    examples of those runs, on a routed model)."""
    fam, prefix, state = c.family, c.prefix, c.state
    base = model.get_submodule(prefix[:-1]) if prefix else model
    if fam.pooling == "last":
        # a decoder's head reads the last non-pad token: every position of the base output gets the mean
        c.hooks.append(base.register_forward_hook(mean_pool_all_hook(state, runs)))
    else:
        enc = model.get_submodule(tg.encoder_path(fam, prefix))
        c.hooks.append(enc.register_forward_hook(mean_pool_hook(state, runs)))
        if fam.pooler and _has(model, prefix + fam.pooler.rsplit(".", 1)[0]):
            pooler = model.get_submodule(prefix + fam.pooler.rsplit(".", 1)[0])
            c.hooks.append(pooler.register_forward_hook(bypass_pooler_hook(state, runs)))


# --- several runs on one base ------------------------------------------------------------------------

def attach_runs(irs: list[IR], model: nn.Module, head_shapes: list[dict[str, tuple[int, ...]]]) -> Compiled:
    """Attach several runs' IRs to one fresh base ``model`` (in place), each example of a batch to be
    routed to its own run (`routing`): run i's instances are renamed ``r<i>_<name>``, its modules marked
    with their run, prefixes folded; each head module of the family becomes a `RoutedHead` holding one
    copy per run, shaped as ``head_shapes[i]`` says (the run's artifact: ``{tensor name: shape}``, so
    each run keeps its own number of labels). Every parameter is frozen (inference).

    Nothing is changed before every run's every target resolved. Refused (C020): ``finetune`` (it trains
    the base weights the runs share) and, on a causal family, a prefix behind a sigmoid gate (a per-token
    gate over one layer's prefixes)."""
    from peltc.compiler.torch.routing import RoutedHead, run_prefix

    if model.__dict__.get("_pelt") is not None:
        raise CompileError("this model is already compiled; load a fresh base model to put runs on", code="C001")
    if not irs:
        raise CompileError("no runs to attach", code="C023")
    fams = [_family(ir, model) for ir in irs]
    fam = fams[0]
    prefix = fam.base + "." if isinstance(getattr(model, fam.base, None), nn.Module) else ""
    n_layers = len(_get(model, prefix + fam.layers, None))
    head_paths = [hp for hp in fam.head if prefix and _has(model, hp)]
    if not head_paths:
        raise CompileError(f"several runs need a task model with its head ({', '.join(fam.head)}); "
                           f"{type(model).__name__} has none", code="C024",
                           help="load the base as AutoModelForSequenceClassification")

    # 1. resolve and check every run
    plans: list[list[tuple[AttachmentNode, list[tg.Target]]]] = []
    for i, ir in enumerate(irs):
        atts = [a.model_copy(update={"instance": run_prefix(i) + a.instance}) for a in ir.attachments()]
        plan = []
        for att in atts:
            if att.method == "finetune":
                raise CompileError(f"run {i}: finetune trains the base model's weights, which the runs would share",
                                   code="C020", help="serve a fine-tuned run on its own model (load_run)")
            if att.method == "prefix" and fam.causal and att.gate.kind == "sigmoid":
                raise CompileError(f"run {i}: a prefix behind a sigmoid gate on a causal model gates per token, "
                                   "which routing several runs does not do", code="C020",
                                   help="serve this run on its own model (load_run)")
            _check_attachment(att, fam, model)
            tgts = tg.targets(fam, prefix, att.method, att.layer, att.point, n_layers)
            for t in tgts:
                _check_module(att, t, _get(model, t.path, att), fam)
            plan.append((att, tgts))
        _check_prefix_uniform(atts)
        plans.append(plan)
        for hp in head_paths:
            for n, prm in model.get_submodule(hp).named_parameters():
                have = head_shapes[i].get(f"{hp}.{n}")
                if have is None:
                    raise CompileError(f"run {i}: its artifact has no tensor '{hp}.{n}' of the task head",
                                       code="C025")
                if len(have) != prm.dim():
                    raise CompileError(f"run {i}: the head tensor '{hp}.{n}' has shape {tuple(have)}, the model's "
                                       f"{tuple(prm.shape)}", code="C025")
    prefixed = [a for plan in plans for a, _ in plan if a.method == "prefix"]
    impl = _attn_implementation(model, fam, prefixed[0]) if prefixed else None
    if impl is not None:
        _switch_attention(model, impl, [(a, t[0].path) for plan in plans for a, t in plan if a.method == "prefix"],
                          _hidden(model, fam, irs[0]))

    # 2. freeze everything (serving)
    for prm in model.parameters():
        prm.requires_grad_(False)
    state = PeltState()
    state.causal = fam.causal
    state.gate_norm = fam.gate_source_norm
    state.prefix_gate = fam.prefix_gate
    state.prefix_gate_init = fam.prefix_gate_init
    c = Compiled(irs[0], fam, prefix, n_layers, state, head_paths, False, attn_implementation=impl,
                 runs=list(irs))
    hidden = _hidden(model, fam, irs[0])

    # 3. attach each run under its own names, and mark its modules with the run
    for i, plan in enumerate(plans):
        encoders: dict[str, PrefixEncoder] = {}
        atts = [a for a, _ in plan]
        for att, tgts in plan:
            c.attachments.setdefault(att.instance, []).append(att)
            c.paths.setdefault(att.instance, {}).setdefault(att.layer, []).extend(t.path for t in tgts)
            _attach(model, fam, att, tgts, state, hidden, encoders, atts, prefix)
    for m in list(model.modules()):
        for key in ("pelt_adapters", "pelt_lora", "pelt_bitfit", "pelt_prefix"):
            d = m._modules.get(key)
            for name, mod in (d.items() if d is not None else ()):
                mod.__dict__["_pelt_run"] = int(name[1:name.index("_")])
                mod.__dict__["_pelt_route_state"] = state

    # 4. hooks, each run's head pooling, one head per run
    _state_hooks(model, c)
    if impl is not None:
        state.attn_implementation = IMPLEMENTATIONS[impl]
    mean = frozenset(i for i, ir in enumerate(irs) if (ir.settings.head or {}).get("pool") == "mean")
    if mean:
        _pool_hooks(model, c, None if len(mean) == len(irs) else mean)
    for hp in head_paths:
        heads = {f"r{i}": _run_head(model.get_submodule(hp), hp, head_shapes[i]) for i in range(len(irs))}
        widths = {_out_width(h) for h in heads.values()} - {None}
        _set(model, hp, RoutedHead(heads, state, max(widths) if widths else None))
    for prm in model.parameters():
        prm.requires_grad_(False)
    state.routed = True
    model.__dict__["_pelt"] = c
    fold_prefix(model)
    return c


def _run_head(head: nn.Module, path: str, shapes: dict[str, tuple[int, ...]]) -> nn.Module:
    """A copy of a head module whose Linears have the shapes of a run's artifact (its number of labels)."""
    new = copy.deepcopy(head)
    for name, mod in list(new.named_modules()):
        if not isinstance(mod, nn.Linear):
            continue
        w = shapes.get(f"{path}.{name}.weight" if name else f"{path}.weight")
        if w is not None and tuple(w) != tuple(mod.weight.shape):
            lin = nn.Linear(int(w[1]), int(w[0]), bias=mod.bias is not None, **_where(mod))
            if name:
                _set(new, name, lin)
            else:
                new = lin
    return new


def _out_width(head: nn.Module) -> int | None:
    lins = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return lins[-1].out_features if lins else None


# --- checks -------------------------------------------------------------------------------------------

def _span(att: AttachmentNode):
    return att.span.to_span() if att.span else None


def _family(ir: IR, model: nn.Module) -> Family:
    name = ir.settings.family
    if name not in FAMILIES:
        raise CompileError(f"the spec was resolved for an unknown family {name!r}", code="C002",
                           help="build the IR against the model's config (peltc.compile_model does)")
    fam = FAMILIES[name]
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt is not None and MODEL_TYPES.get(mt) != name:
        raise CompileError(f"the spec was resolved for the {name} family, but the model is {mt!r}", code="C002",
                           help="check the spec against this model's config")
    return fam


def _has(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def _get(model: nn.Module, path: str, att: AttachmentNode | None) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = nearest(path, names, n=3)
        parent = path
        while parent and not _has(model, parent):
            parent = parent.rpartition(".")[0]
        children = [n for n, _ in model.get_submodule(parent).named_children()] if parent else []
        where = f" (for {att.instance} at {att.point})" if att is not None else ""
        help = (f"nearest module names: {', '.join(close)}" if close else
                f"'{parent or type(model).__name__}' has: {', '.join(children[:12])}")
        raise CompileError(f"module path '{path}' not found in {type(model).__name__}{where}", code="C003",
                           span=_span(att) if att is not None else None, help=help) from None


def _check_attachment(att: AttachmentNode, fam: Family, model: nn.Module) -> None:
    if att.method == "prefix" and not fam.attention_interface:
        raise CompileError(
            f"{att.instance}: prefix-tuning at layers[{att.layer}].attention is not supported for the "
            f"{fam.name} family: its attention does not go through transformers' AttentionInterface",
            code="C004", span=_span(att), help="use adapter, lora or bitfit on this family")
    if att.gate.kind == "sigmoid" and att.layer is None:
        raise CompileError(f"{att.instance}: a sigmoid gate needs a layer value, '{att.point}' is global",
                           code="C007", span=_span(att), help="use `gate scalar` or `gate const(<value>)`")
    if att.method not in ("adapter", "lora", "bitfit", "prefix", "finetune"):
        raise CompileError(f"{att.instance}: the torch back end has no method {att.method!r}", code="C021")


def _check_module(att: AttachmentNode, t: tg.Target, mod: nn.Module, fam: Family | None = None) -> None:
    inner = _inner(mod)
    if att.method == "lora" and not isinstance(inner, nn.Linear):
        raise CompileError(f"{att.instance}: LoRA needs an nn.Linear at '{t.path}', found {type(inner).__name__}",
                           code="C008", span=_span(att))
    if att.method == "bitfit" and bias_size(inner) is None and len(tg.BLOCKS.get(att.point, ())) == 0 \
            and att.point != "all":
        raise CompileError(f"{att.instance}: bitfit at '{t.path}', but {type(inner).__name__} has no bias",
                           code="C006", span=_span(att))
    if att.method == "adapter" and not (isinstance(inner, nn.LayerNorm) or hasattr(inner, "normalized_shape")) \
            and not (fam is not None and fam.pre_norm):      # pre-norm: a hook on the sub-layer module
        raise CompileError(f"{att.instance}: an adapter at {att.point} wraps the LayerNorm producing it; "
                           f"'{t.path}' is a {type(inner).__name__}", code="C008", span=_span(att))


def _attn_implementation(model: nn.Module, fam: Family, att: AttachmentNode) -> str:
    from transformers import PreTrainedModel
    if not isinstance(model, PreTrainedModel):
        raise CompileError("prefix-tuning switches the model's attention implementation, which needs a "
                           "transformers PreTrainedModel", code="C005", span=_span(att))
    impl = model.config._attn_implementation
    if impl not in IMPLEMENTATIONS:
        raise CompileError(f"{att.instance}: prefix-tuning wraps the 'sdpa' or 'eager' attention; "
                           f"this model uses {impl!r}", code="C005", span=_span(att),
                           help="load the model with attn_implementation='sdpa' or 'eager'")
    return impl


def _transformers_version() -> str:
    import transformers
    return transformers.__version__


def _own_config(model: nn.Module) -> Callable[[], None]:
    """Give ``model`` its own copy of its config (sub-configs included), so that switching its attention
    implementation changes no config object the caller may share with other models; returns an undo.

    A HF model's config is one object held by several of its modules (the task model, the base model,
    the encoder, each attention module): every module attribute holding the config or one of its
    sub-configs is pointed at the matching copy."""
    from transformers import PretrainedConfig
    config = getattr(model, "config", None)
    if not isinstance(config, PretrainedConfig):
        return lambda: None
    memo: dict[int, Any] = {}
    copy.deepcopy(config, memo)
    swapped = []
    for m in model.modules():
        for k, v in list(vars(m).items()):
            new = memo.get(id(v)) if isinstance(v, PretrainedConfig) else None
            if isinstance(new, PretrainedConfig):
                swapped.append((m, k, v))
                m.__dict__[k] = new

    def undo() -> None:
        for m, k, v in swapped:
            m.__dict__[k] = v
    return undo


def _switch_attention(model: nn.Module, impl: str, prefixes: list[tuple[AttachmentNode, str]],
                      hidden: int) -> None:
    """Switch the model (its own config copy) to the prefix attention function wrapping ``impl`` and
    check, on every covered attention module, that its forward really calls it; otherwise put the
    model back as it was and raise C015.

    transformers 4.x BERT-style encoders pick their attention class when the model is built:
    ``set_attn_implementation`` only logs a warning there, and the prefixes would be skipped."""
    name = IMPLEMENTATIONS[impl]
    register_attention()
    undo = _own_config(model)
    try:
        model.set_attn_implementation(name)
        seen: set[str] = set()
        for att, path in prefixes:
            if path in seen:
                continue
            seen.add(path)
            mod = model.get_submodule(path)
            called = calls_prefix_attention(mod, hidden)
            have = getattr(getattr(mod, "config", None) or model.config, "_attn_implementation", None)
            if called is None:      # cannot be run on its own: go by the configs it reads
                called = have == name and model.config._attn_implementation == name
            if called:
                continue
            if have != name or model.config._attn_implementation != name:
                why = (f"model.set_attn_implementation({name!r}) did not take effect (the implementation is "
                       f"still {model.config._attn_implementation!r})")
            else:
                why = f"its forward computes attention itself instead of calling the function {have!r} names"
            ver = _transformers_version()
            raise CompileError(
                f"{att.instance}: prefix-tuning needs the attention of layers[{att.layer}] "
                f"({type(mod).__name__} at '{path}') to call transformers' AttentionInterface, but with "
                f"transformers {ver} it does not: {why}; the prefixes would be skipped", code="C015",
                span=_span(att),
                help=f"prefix-tuning needs transformers >= {MIN_TRANSFORMERS} (installed: {ver}): "
                     f"pip install 'transformers>={MIN_TRANSFORMERS}'")
    except BaseException:
        undo()
        raise


def _check_prefix_uniform(atts: list[AttachmentNode]) -> None:
    seen: dict[str, tuple] = {}
    for a in atts:
        if a.method != "prefix" or a.params.get("mlp") is None:
            continue
        key = (a.params.get("length"), a.params.get("mlp"))
        if seen.setdefault(a.instance, key) != key:
            raise CompileError(f"{a.instance}: one reparameterisation MLP serves every layer of a prefix, "
                               "so length and mlp must not vary per layer", code="C011", span=_span(a),
                               help="declare a second prefix instance for the other layers, or `mlp none`")


# --- attaching -------------------------------------------------------------------------------------------

def _inner(mod: nn.Module) -> nn.Module:
    while isinstance(mod, (LoraLinear, AdapterPoint)):
        mod = mod.base_layer
    return mod


def _where(mod: nn.Module) -> dict[str, Any]:
    p = next(mod.parameters(), None)
    return {"device": p.device, "dtype": p.dtype} if p is not None else {}


def _hidden(model: nn.Module, fam: Family, ir: IR) -> int:
    cfg = getattr(model, "config", None)
    v = getattr(cfg, fam.keys["hidden"], None) if cfg is not None else None
    return int(v if v is not None else ir.settings.dims["hidden"])


def _set(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def _gate(att: AttachmentNode, state: PeltState, hidden: int, where: dict, reads_own: bool = False,
          default_init: float | None = None) -> Gate | None:
    """The attachment's gate module (None for ``gate none``). ``default_init``: the starting bias of a
    sigmoid gate whose spec writes no ``init=`` (the family's ``prefix_gate_init`` for prefixes)."""
    if att.gate.kind == "none":
        return None
    return Gate(att.gate.with_default(default_init), hidden, (att.instance, att.layer, att.point), state,
                reads_own=reads_own, **where)


def _attach_adapter(model, att, t, state, hidden) -> None:
    host = model.get_submodule(t.path)
    if not isinstance(host, AdapterPoint):
        host = AdapterPoint(host, att.layer, att.point, state)
        _set(model, t.path, host)
    where = _where(host.base_layer)
    p = att.params
    reads_own = att.gate.kind == "sigmoid" and att.gate.source == att.point
    width = int(host.base_layer.normalized_shape[-1]) if hasattr(host.base_layer, "normalized_shape") else hidden
    host.add(att.instance, Adapter(width, int(p.get("size", 48)), p.get("activation", "relu"),
                                   float(p.get("scale", 1.0)), att.placement,
                                   _gate(att, state, hidden, where, reads_own), **where))


def _attach_prenorm_adapter(model, att, t, state, hidden) -> None:
    """A pre-norm block (decoders): the adapter rides on a forward hook of the sub-layer module itself
    (``self_attn`` / ``mlp``), whose output is the value point before the residual add."""
    host = model.get_submodule(t.path)
    where = _where(host)
    p = att.params
    reads_own = att.gate.kind == "sigmoid" and att.gate.source == att.point
    attach_prenorm(host, att.instance, Adapter(hidden, int(p.get("size", 48)), p.get("activation", "relu"),
                                               float(p.get("scale", 1.0)), att.placement,
                                               _gate(att, state, hidden, where, reads_own), **where))


def _kv_width(model: nn.Module, fam: Family, hidden: int) -> int:
    """The width of one layer's keys (values) from the model's config: num_key_value_heads × head_dim
    on a decoder (grouped KV heads; Qwen3's head_dim is its own), hidden on an encoder."""
    kv_key = fam.keys.get("kv_heads")
    cfg = getattr(model, "config", None)
    if kv_key is None or cfg is None:
        return hidden
    heads = int(getattr(cfg, fam.keys["heads"]))
    kv = getattr(cfg, kv_key, None) or heads
    hd = getattr(cfg, fam.keys["head_dim"], None) or hidden // heads
    return int(kv) * int(hd)


def _attach_lora(model, att, t, state, hidden) -> None:
    host = model.get_submodule(t.path)
    if not isinstance(host, LoraLinear):
        host = LoraLinear(host)
        _set(model, t.path, host)
    lin = _inner(host)
    where = _where(lin)
    p = att.params
    host.pelt_lora[att.instance] = LoRA(lin.in_features, lin.out_features, int(p.get("rank", 8)),
                                        float(p.get("alpha", 16.0)), float(p.get("dropout", 0.0)),
                                        _gate(att, state, hidden, where), **where)


def _attach_bitfit(model, att, tgts, state, hidden) -> None:
    gate = None
    for t in tgts:
        mod = _inner(model.get_submodule(t.path))
        size = bias_size(mod)
        if size is None:
            continue        # a bias-free module inside a block: nothing to tune
        where = _where(mod)
        if gate is None and att.gate.kind != "none":
            gate = _gate(att, state, hidden, where)
            owns = True
        else:
            owns = False
        if "pelt_bitfit" not in mod._modules:
            mod.pelt_bitfit = nn.ModuleDict()
            mod.__dict__["_pelt_bitfit_hook"] = mod.register_forward_hook(bitfit_hook)
            if type(mod) in FOLDED and "forward" not in mod.__dict__:   # ungated deltas: into the bias argument
                mod.__class__ = FOLDED[type(mod)]
        mod.pelt_bitfit[att.instance] = BiasDelta(size, gate, owns, **where)


def _token_kv(model: nn.Module, fam: Family, prefix: str, atts: list[AttachmentNode]
              ) -> dict[tuple[str, int], torch.Tensor]:
    """``(instance, layer) → (2, L, H)`` for every prefix attachment with ``init tokens``: that layer's
    key and value projections of the tokens ``token_ids(vocab_size, L)``, from one forward of the
    base model (eval mode, no grad; one sequence of the L tokens, no padding) per prefix length."""
    wanted = [a for a in atts if a.method == "prefix" and a.params.get("init") == "tokens"]
    if not wanted:
        return {}
    base = model.get_submodule(prefix[:-1]) if prefix else model
    vocab = int(getattr(model.config, "vocab_size"))
    p = next(base.parameters())
    out: dict[tuple[str, int], torch.Tensor] = {}
    for length in sorted({int(a.params.get("length", 10)) for a in wanted}):
        same = [a for a in wanted if int(a.params.get("length", 10)) == length]
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


def _init_encoders(encoders: dict[str, PrefixEncoder], atts: list[AttachmentNode],
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
                               code="C016", span=_span(mine[0]),
                               help="write a wider `mlp` (at least `length`), or `mlp none`")


def _attach(model, fam, att, tgts, state, hidden, encoders, atts, prefix, token_kv=None) -> None:
    """Attach one attachment's module(s) at its resolved targets, by method (and the family's block form)."""
    if att.method == "adapter" and fam.pre_norm:
        _attach_prenorm_adapter(model, att, tgts[0], state, hidden)
    elif att.method == "adapter":
        _attach_adapter(model, att, tgts[0], state, hidden)
    elif att.method == "lora":
        _attach_lora(model, att, tgts[0], state, hidden)
    elif att.method == "bitfit":
        _attach_bitfit(model, att, tgts, state, hidden)
    elif att.method == "prefix":
        _attach_prefix(model, att, tgts[0], state, hidden, encoders, atts, prefix, token_kv,
                       width=_kv_width(model, fam, hidden))


def _attach_prefix(model, att, t, state, hidden, encoders, atts, prefix, token_kv=None, width=None) -> None:
    attn = model.get_submodule(t.path)
    where = _where(attn)
    width = hidden if width is None else width
    length = int(att.params.get("length", 10))
    mlp = att.params.get("mlp")
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
    gate = _gate(att, state, hidden, where, default_init=getattr(state, "prefix_gate_init", None))
    attn.pelt_prefix[att.instance] = Prefix(length, width, gate, state, enc, index,
                                            **where)
    kv = (token_kv or {}).get((att.instance, att.layer))
    if enc is None and kv is not None:
        attn.pelt_prefix[att.instance].init_kv(kv)


# --- after training ------------------------------------------------------------------------------------

def fold_prefix(model: nn.Module) -> list[str]:
    """Replace every prefix MLP by its output as plain per-layer parameters; returns the instances folded.

    Outputs are identical (the folded values are what the MLP computes in every forward).
    """
    c = compiled(model)
    base = model.get_submodule(c.prefix[:-1]) if c.prefix else model
    encs = base._modules.get("pelt_prefix_encoders")
    if not encs:
        return []
    folded = []
    with torch.no_grad():
        outs = {name: enc() for name, enc in encs.items()}
        for m in model.modules():
            if isinstance(m, Prefix) and m.encoder is not None:
                for name, enc in encs.items():
                    if m.encoder is enc:
                        m.prefix = nn.Parameter(outs[name][m.index].detach().clone(),
                                                requires_grad=enc.embedding.weight.requires_grad)
                        m.__dict__["_encoder"] = None
    for name in list(encs):
        folded.append(name)
        del encs[name]
    del base.pelt_prefix_encoders
    c.state.encoders.clear()
    c.state.prefix_kv.clear()
    c.folded += folded
    return folded


def _static_gate_value(gate: Gate | None) -> float | None:
    """The constant a gate multiplies by, if it does not depend on the input (None: it does)."""
    if gate is None:
        return 1.0
    if gate.forced is not None:
        return float(gate.forced)
    if gate.kind == "const":
        return gate.const
    if gate.kind == "scalar":
        return float(torch.sigmoid(gate.weight.detach().float()).item())
    return None


def merge(model: nn.Module, *, skip_gated: bool = False) -> list[str]:
    """Fold LoRA and BitFit into the base weights for zero-overhead inference.

    Returns what was merged, as ``"<instance>@<module path>"``. Input-dependent (sigmoid) gates
    cannot be folded into a weight: by default that raises `CompileError` before anything changes;
    with ``skip_gated`` those stay unmerged. Constant and scalar gates merge as their value.
    Merged output equals the unmerged output (eval mode) within float rounding.
    """
    c = compiled(model)
    if c.runs:
        raise CompileError(f"this model routes {len(c.runs)} runs on one base (peltc.load_runs): merging one run's "
                           "LoRA or BitFit into the shared weights would change every other run", code="C019",
                           help="merge a single run's own model (peltc.runtime.run.load_run), not a routed one")
    loras = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLinear)]
    biases = [(n, m) for n, m in model.named_modules() if "pelt_bitfit" in m._modules]
    refused = [f"{i}@{n} (lora)" for n, m in loras for i, l in m.pelt_lora.items()
               if _static_gate_value(l.gate) is None]
    refused += [f"{i}@{n} (bitfit)" for n, m in biases for i, d in m.pelt_bitfit.items()
                if _static_gate_value(d.the_gate) is None]
    if refused and not skip_gated:
        raise CompileError(
            "cannot merge modules behind a sigmoid gate: the gate depends on each input, so no single "
            "weight reproduces it: " + ", ".join(refused), code="C009",
            help="keep them unmerged, or call merge(model, skip_gated=True) to merge the others")
    merged = []
    with torch.no_grad():
        for n, m in loras:
            lin = _inner(m)
            for i in list(m.pelt_lora):
                lora = m.pelt_lora[i]
                g = _static_gate_value(lora.gate)
                if g is None:
                    continue
                s = lora.scaling if lora.gate is None else g
                if lora.enabled:
                    lin.weight += (s * lora.delta_weight().to(torch.float32)).to(lin.weight.dtype)
                del m.pelt_lora[i]
                merged.append(f"{i}@{n}")
            if len(m.pelt_lora) == 0:
                _set(model, n, m.base_layer)
        for n, m in biases:
            for i in list(m.pelt_bitfit):
                d = m.pelt_bitfit[i]
                g = _static_gate_value(d.the_gate)
                if g is None:
                    continue
                if d.enabled:
                    m.bias += (g * d.delta.to(torch.float32)).to(m.bias.dtype)
                del m.pelt_bitfit[i]
                merged.append(f"{i}@{n}")
            if len(m.pelt_bitfit) == 0:
                m.__dict__.pop("_pelt_bitfit_hook").remove()
                if type(m) in UNFOLDED:
                    m.__class__ = UNFOLDED[type(m)]           # the plain module again
                del m.pelt_bitfit
    live = {id(g) for g in model.modules() if isinstance(g, Gate)}
    for groups in c.state.groups.values():     # drop merged gates from fused groups
        groups[:] = [g for g in groups if id(g) in live]
    c.state.cache.clear()
    c.merged += merged
    return merged


# --- switches (tests, ablations) ------------------------------------------------------------------------

def _instance_modules(model: nn.Module, instance: str):
    for m in model.modules():
        for key in ("pelt_adapters", "pelt_lora", "pelt_bitfit", "pelt_prefix"):
            d = m._modules.get(key)
            if d is not None and instance in d._modules:
                yield d[instance]


def disable(model: nn.Module, instance: str, disabled: bool = True) -> int:
    """Switch one instance off (its modules pass through) or back on; returns the modules switched."""
    compiled(model)
    mods = list(_instance_modules(model, instance))
    if not mods:
        raise CompileError(f"no instance named {instance!r} in this compiled model", code="C013",
                           help=f"instances: {', '.join(sorted(compiled(model).attachments))}")
    for m in mods:
        m.enabled = not disabled
    return len(mods)


def force_gates(model: nn.Module, value: float | None, instance: str | None = None) -> int:
    """Pin every gate (or one instance's) to ``value``; ``None`` releases them. Returns the gates set."""
    compiled(model)
    n = 0
    for m in model.modules():
        if isinstance(m, Gate) and (instance is None or m.key[0] == instance):
            m.forced = None if value is None else float(value)
            n += 1
    for d in (m for m in model.modules() if isinstance(m, BiasDelta)):
        g = d.the_gate
        if g is not None and (instance is None or g.key[0] == instance):
            g.forced = None if value is None else float(value)
    return n
