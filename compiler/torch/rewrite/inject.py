"""``apply`` (one run) and ``attach_runs`` (several runs on one base): plan each run (`plan.plan_run`),
check, freeze, then inject each run's plan with the one routine ``_inject``; hooks last."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

import peltc.compiler.torch.targets as tg
from peltc.compiler.archs import Family
from peltc.compiler.ir import IR, AttachmentNode
from peltc.compiler.passes.resolve_gates import resolved
from peltc.compiler.schema import host_of
from peltc.compiler.torch.adapter import PARALLEL_INPUT, AdapterPoint
from peltc.compiler.torch.compiled import Compiled
from peltc.compiler.torch.gate import Gate
from peltc.compiler.torch.lora import LoraLinear
from peltc.compiler.torch.plan import (Plan, attn_implementation, check_prefix_uniform, family_for, get_module,
                                       has_module, hidden_size, plan_run, span_of, where_of)
from peltc.compiler.torch.pooling import bypass_pooler_hook, mean_pool_all_hook, mean_pool_hook
from peltc.compiler.torch.prefix import (IMPLEMENTATIONS, MIN_TRANSFORMERS, PrefixEncoder, calls_prefix_attention,
                                         register_attention)
from peltc.compiler.torch import prompt as prompt_hooks
from peltc.compiler.torch.report import Report, build_report
from peltc.compiler.torch.rewrite.after import fold_prefix
from peltc.compiler.torch.rewrite.attach import attach_one, init_encoders, record_token_kv, set_module
from peltc.compiler.torch.routing import RoutedHead
from peltc.compiler.torch.state import PeltState, begin_hook, end_hook, layer_input_hook, mask_argument_index, value_hook
from peltc.errors import CompileError


# --- apply ------------------------------------------------------------------------------------------

def apply(ir: IR, model: nn.Module) -> Report:
    """Attach the IR's modules to ``model`` (in place) and return a `Report`.

    Raises `CompileError` (with the attachment's span) before changing anything when a target
    does not resolve or the model cannot take a method.
    """
    if model.__dict__.get("_pelt") is not None:
        raise CompileError("this model is already compiled; load a fresh model to apply another spec", code="C001")
    fam = family_for(ir, model)
    ir = resolved(ir)        # an IR built without the pass (an old artifact's): the family's gate behaviour
    prefix = fam.base + "." if isinstance(getattr(model, fam.base, None), nn.Module) else ""
    n_layers = len(get_module(model, prefix + fam.layers, None))

    # 1. resolve and check everything before touching the model
    plan = plan_run(ir, model, fam, prefix, n_layers)
    atts = [a for a, _ in plan]
    if any(host_of(a.method) == "attention" for a in atts):
        impl = attn_implementation(model, fam, next(a for a in atts if host_of(a.method) == "attention"))
    else:
        impl = None
    check_prefix_uniform(atts)
    if (ir.settings.head or {}).get("pool") == "mean" and fam.pooling == "last" and fam.lm_head \
            and has_module(model, fam.lm_head) and not any(has_module(model, h) for h in fam.head):
        raise CompileError(f"head {{ pool mean }} on a {type(model).__name__}: a causal LM's head predicts each "
                           "next token from that token's own hidden state; a mean over the sequence would let "
                           "every position read the future", code="C017",
                           help="pool mean is for a *ForSequenceClassification model; drop `head { pool mean }`")
    if impl is not None:     # the last check, and the only change a failing check undoes
        _switch_attention(model, impl, [(a, t[0].path) for a, t in plan if host_of(a.method) == "attention"],
                          hidden_size(model, fam, ir))

    # 2. freeze
    finetune = any(host_of(a.method) == "model" for a in atts)
    for p in model.parameters():
        p.requires_grad_(finetune)
    head_paths = [prefix_free for prefix_free in fam.head if prefix and has_module(model, prefix_free)]
    for hp in head_paths:
        for p in model.get_submodule(hp).parameters():
            p.requires_grad_(True)

    c = Compiled(ir, fam, prefix, n_layers, _state(fam, ir), head_paths, finetune, attn_implementation=impl)
    hidden = hidden_size(model, fam, ir)
    token_kv = record_token_kv(model, fam, prefix, atts)   # before anything attached changes the activations

    # 3. attach
    _inject(model, c, plan, hidden, token_kv)

    # 4. state hooks, gate fusion, attention implementation, pooling
    _state_hooks(model, c)
    if impl is not None:     # switched (and checked) in step 1
        c.state.attn_implementation = IMPLEMENTATIONS[impl]
    if (ir.settings.head or {}).get("pool") == "mean":
        _pool_hooks(model, c, None)
    _prompt_hooks(model, c)

    model.__dict__["_pelt"] = c
    return build_report(model)


def _state(fam: Family, ir: IR) -> PeltState:
    """The per-forward state of a model of family ``fam``, before any hook is installed; its gates
    behave as the IR's resolved `GateBehaviour` says."""
    state = PeltState()
    state.causal = fam.causal
    state.gate_norm = ir.settings.gate_behaviour.gate_source_norm
    state.prefix_gate = ir.settings.gate_behaviour.prefix_gate
    return state


def _inject(model: nn.Module, c: Compiled, plan: Plan, hidden: int,
            token_kv: dict[tuple[str, int], torch.Tensor]) -> None:
    """Attach one run's checked plan to ``model`` and record it in ``c`` (peft's ``inject_adapter``
    shape: ``apply`` calls it once, ``attach_runs`` once per run). ``token_kv``: the recorded keys and
    values ``init tokens`` prefixes start from (empty: none)."""
    encoders: dict[str, PrefixEncoder] = {}
    atts = [a for a, _ in plan]
    for att, tgts in plan:
        c.attachments.setdefault(att.instance, []).append(att)
        c.paths.setdefault(att.instance, {}).setdefault(att.layer, []).extend(t.path for t in tgts)
        attach_one(model, c.family, att, tgts, c.state, hidden, encoders, atts, c.prefix, token_kv)
    init_encoders(encoders, atts, token_kv)


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
    lora_groups(model, c)
    for layer, point in sorted(needs):
        if point == "input":
            mod = model.get_submodule(tg.point_path(fam, prefix, layer, "attention") if fam.layer_input is None
                                      else f"{tg.layer_path(fam, prefix, layer)}.{fam.layer_input}")
            c.hooks.append(mod.register_forward_pre_hook(layer_input_hook(state, layer), with_kwargs=True))
        else:
            mod = model.get_submodule(tg.point_path(fam, prefix, layer, point))
            c.hooks.append(mod.register_forward_hook(value_hook(state, layer, point)))


def _prompt_hooks(model: nn.Module, c: Compiled) -> None:
    """Soft prompts: prepend them before every other hook of the base model runs (so `PeltState` records
    the extended mask), and on a decoder cut their positions from the base model's output, after the
    pooling hooks (`prompt`)."""
    base = model.get_submodule(c.prefix[:-1]) if c.prefix else model
    host = base._modules.get("pelt_prompt")
    if host is None:
        return
    c.hooks.append(base.register_forward_pre_hook(prompt_hooks.prepend_hook(host, base.forward), with_kwargs=True,
                                                  prepend=True))
    if c.family.causal:
        c.hooks.append(base.register_forward_hook(prompt_hooks.slice_hook(host), with_kwargs=True))


def lora_groups(model: nn.Module, c: Compiled) -> None:
    """Group the LoRAs of one block's linears (siblings: an attention block's query / key / value) for the
    served down-projection (`served.lora_down`; whether they read the same tensor is checked per forward)."""
    state = c.state
    state.lora_groups.clear()
    for name, m in model.named_modules():
        if isinstance(m, LoraLinear):
            key = (tg.layer_of(c.family, name), name.rpartition(".")[0])
            for lora in m.pelt_lora.values():
                if lora.dora:        # DoRA rescales the base output: not a plain down-projection
                    continue
                lora.__dict__["_pelt_state"] = state
                lora.__dict__["_pelt_group"] = key
                state.lora_groups.setdefault(key, []).append(lora)


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
        if fam.pooler and has_module(model, prefix + fam.pooler.rsplit(".", 1)[0]):
            pooler = model.get_submodule(prefix + fam.pooler.rsplit(".", 1)[0])
            c.hooks.append(pooler.register_forward_hook(bypass_pooler_hook(state, runs)))



# --- several runs on one base ------------------------------------------------------------------------

def attach_runs(irs: list[IR], model: nn.Module, head_shapes: list[dict[str, tuple[int, ...]]]) -> Compiled:
    """Attach several runs' IRs to one fresh base ``model`` (in place), each example of a batch to be
    routed to its own run (`routing`): run i's instances are renamed ``r<i>_<name>``, its modules marked
    with their run, prefixes folded; each head module of the family becomes a `RoutedHead` holding one
    copy per run, shaped as ``head_shapes[i]`` says (the run's artifact: ``{tensor name: shape}``, so
    each run keeps its own number of labels). Every parameter is frozen (inference).

    The single-run routine in a loop: each run is planned (`plan.plan_run`) and then injected
    (``_inject``) as ``apply`` does one. Nothing is changed before every run's every target resolved.
    Refused (C020): ``finetune`` (it trains the base weights the runs share) and, on a causal family, a
    prefix behind a sigmoid gate (a per-token gate over one layer's prefixes)."""
    if model.__dict__.get("_pelt") is not None:
        raise CompileError("this model is already compiled; load a fresh base model to put runs on", code="C001")
    if not irs:
        raise CompileError("no runs to attach", code="C023")
    fams = [family_for(ir, model) for ir in irs]
    fam = fams[0]
    irs = [resolved(ir) for ir in irs]
    prefix = fam.base + "." if isinstance(getattr(model, fam.base, None), nn.Module) else ""
    n_layers = len(get_module(model, prefix + fam.layers, None))
    head_paths = [hp for hp in fam.head if prefix and has_module(model, hp)]
    if not head_paths:
        raise CompileError(f"several runs need a task model with its head ({', '.join(fam.head)}); "
                           f"{type(model).__name__} has none", code="C024",
                           help="load the base as AutoModelForSequenceClassification")

    # 1. resolve and check every run
    plans: list[Plan] = []
    for i, ir in enumerate(irs):
        plan = plan_run(ir, model, fam, prefix, n_layers, run=i)
        check_prefix_uniform([a for a, _ in plan])
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
    prefixed = [a for plan in plans for a, _ in plan if host_of(a.method) == "attention"]
    impl = attn_implementation(model, fam, prefixed[0]) if prefixed else None
    if impl is not None:
        _switch_attention(model, impl, [(a, t[0].path) for plan in plans for a, t in plan if host_of(a.method) == "attention"],
                          hidden_size(model, fam, irs[0]))

    # 2. freeze everything (serving)
    for prm in model.parameters():
        prm.requires_grad_(False)
    c = Compiled(irs[0], fam, prefix, n_layers, _state(fam, irs[0]), head_paths, False, attn_implementation=impl,
                 runs=list(irs))
    state = c.state
    hidden = hidden_size(model, fam, irs[0])

    # 3. attach each run under its own names (its weights come from its artifact: no `init tokens`
    # forward, no principal init changing the shared base), and mark its modules with the run
    state.routed = True
    for plan in plans:
        _inject(model, c, plan, hidden, {})
    for m in list(model.modules()):
        for key in ("pelt_adapters", "pelt_lora", "pelt_bitfit", "pelt_prefix", "pelt_ia3", "pelt_reft", "pelt_delta"):
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
        set_module(model, hp, RoutedHead(heads, state, max(widths) if widths else None))
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
            lin = nn.Linear(int(w[1]), int(w[0]), bias=mod.bias is not None, **where_of(mod))
            if name:
                set_module(new, name, lin)
            else:
                new = lin
    return new


def _out_width(head: nn.Module) -> int | None:
    lins = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return lins[-1].out_features if lins else None


# --- the attention implementation prefixes need -------------------------------------------------------------------------------------------

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
                span=span_of(att),
                help=f"prefix-tuning needs transformers >= {MIN_TRANSFORMERS} (installed: {ver}): "
                     f"pip install 'transformers>={MIN_TRANSFORMERS}'")
    except BaseException:
        undo()
        raise
