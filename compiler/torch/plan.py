"""Resolve and check one run's IR against a model, changing nothing: the first step of the rewrite.

    plan = plan_run(ir, model, family, prefix, n_layers)     # [(attachment, its targets)], in order

Every check the rewrite makes before it touches a model lives here (C002–C008, C011, C020), with the
read-only look-ups it shares with the rewrite (module paths, sizes, devices, a gate's static value).
`rewrite` calls `plan_run` once per run: one run for ``apply``, each run for ``attach_runs``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import peltc.compiler.torch.targets as tg
from peltc.compiler.archs import FAMILIES, MODEL_TYPES, Family
from peltc.compiler.ir import IR, AttachmentNode
from peltc.compiler import schema
from peltc.compiler.torch.adapter import AdapterPoint
from peltc.compiler.torch.bitfit import bias_size
from peltc.compiler.torch.gate import Gate
from peltc.compiler.torch.host import LinearHost
from peltc.compiler.torch.prefix import IMPLEMENTATIONS
from peltc.compiler.torch.routing import run_prefix
from peltc.errors import CompileError, nearest

Plan = list[tuple[AttachmentNode, list[tg.Target]]]


def plan_run(ir: IR, model: nn.Module, fam: Family, prefix: str, n_layers: int, run: int | None = None) -> Plan:
    """Each attachment of ``ir`` with its resolved targets, every one checked against ``model``.

    ``run``: the run's index on a model routing several runs (`rewrite.attach_runs`): its instances are
    renamed ``r<run>_<name>`` and what routing cannot serve is refused (C020)."""
    atts = ir.attachments()
    if run is not None:
        atts = [a.model_copy(update={"instance": run_prefix(run) + a.instance}) for a in atts]
    plan: Plan = []
    for att in atts:
        if run is not None:
            check_routable(att, fam, run)
        check_attachment(att, fam, model)
        tgts = tg.targets(fam, prefix, host_of(att), att.layer, att.point, n_layers)
        if host_of(att) == "biases" and not tgts:
            raise CompileError(f"{att.instance}: bitfit at '{att.point}', but the {fam.name} family has no pooler",
                               code="C006", span=span_of(att), help="the task head itself is always trained")
        for t in tgts:
            check_module(att, t, get_module(model, t.path, att), fam)
        plan.append((att, tgts))
    return plan


def check_routable(att: AttachmentNode, fam: Family, run: int) -> None:
    """What one model routing several runs cannot serve (C020)."""
    if host_of(att) == "model":
        raise CompileError(f"run {run}: {att.method} trains the base model's weights, which the runs would share",
                           code="C020", help="serve a fine-tuned run on its own model (load_run)")
    if host_of(att) == "input":
        raise CompileError(f"run {run}: {att.instance} is a soft prompt, which shifts every position of its "
                           "examples; routing several runs on one base cannot serve it exactly", code="C045",
                           help="serve this run on its own model (load_run)")
    if host_of(att) == "attention" and fam.causal and att.gate.kind == "sigmoid":
        raise CompileError(f"run {run}: a prefix behind a sigmoid gate on a causal model gates per token, "
                           "which routing several runs does not do", code="C020",
                           help="serve this run on its own model (load_run)")


def host_of(att: AttachmentNode) -> str:
    """What the attachment's method changes at its point (`method.HOSTS`), from the method registry."""
    return schema.METHODS[att.method].host


def span_of(att: AttachmentNode):
    return att.span.to_span() if att.span else None


def family_for(ir: IR, model: nn.Module) -> Family:
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


def has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def get_module(model: nn.Module, path: str, att: AttachmentNode | None) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = nearest(path, names, n=3)
        parent = path
        while parent and not has_module(model, parent):
            parent = parent.rpartition(".")[0]
        children = [n for n, _ in model.get_submodule(parent).named_children()] if parent else []
        where = f" (for {att.instance} at {att.point})" if att is not None else ""
        help = (f"nearest module names: {', '.join(close)}" if close else
                f"'{parent or type(model).__name__}' has: {', '.join(children[:12])}")
        raise CompileError(f"module path '{path}' not found in {type(model).__name__}{where}", code="C003",
                           span=span_of(att) if att is not None else None, help=help) from None


def check_attachment(att: AttachmentNode, fam: Family, model: nn.Module) -> None:
    if att.method not in schema.METHODS:
        raise CompileError(f"{att.instance}: the torch back end has no method {att.method!r}", code="C021",
                           help="load the plug-in that defines it (--plugin FILE, or its installed package)")
    if host_of(att) == "attention" and not fam.attention_interface:
        raise CompileError(
            f"{att.instance}: prefix-tuning at layers[{att.layer}].attention is not supported for the "
            f"{fam.name} family: its attention does not go through transformers' AttentionInterface",
            code="C004", span=span_of(att), help="use adapter, lora or bitfit on this family")
    if att.gate.kind == "sigmoid" and att.layer is None:
        raise CompileError(f"{att.instance}: a sigmoid gate needs a layer value, '{att.point}' is global",
                           code="C007", span=span_of(att), help="use `gate scalar` or `gate const(<value>)`")


def check_module(att: AttachmentNode, t: tg.Target, mod: nn.Module, fam: Family | None = None) -> None:
    inner = inner_module(mod)
    host = host_of(att)
    if host == "linear" and not isinstance(inner, nn.Linear):
        raise CompileError(f"{att.instance}: {att.method} needs an nn.Linear at '{t.path}', found {type(inner).__name__}",
                           code="C008", span=span_of(att))
    if host == "biases" and bias_size(inner) is None and len(tg.BLOCKS.get(att.point, ())) == 0 \
            and att.point != "all":
        raise CompileError(f"{att.instance}: bitfit at '{t.path}', but {type(inner).__name__} has no bias",
                           code="C006", span=span_of(att))
    if host == "value" and not (isinstance(inner, nn.LayerNorm) or hasattr(inner, "normalized_shape")) \
            and not (fam is not None and fam.pre_norm):      # pre-norm: a hook on the sub-layer module
        raise CompileError(f"{att.instance}: an adapter at {att.point} wraps the LayerNorm producing it; "
                           f"'{t.path}' is a {type(inner).__name__}", code="C008", span=span_of(att))


def attn_implementation(model: nn.Module, fam: Family, att: AttachmentNode) -> str:
    from transformers import PreTrainedModel
    if not isinstance(model, PreTrainedModel):
        raise CompileError("prefix-tuning switches the model's attention implementation, which needs a "
                           "transformers PreTrainedModel", code="C005", span=span_of(att))
    impl = model.config._attn_implementation
    if impl not in IMPLEMENTATIONS:
        raise CompileError(f"{att.instance}: prefix-tuning wraps the 'sdpa' or 'eager' attention; "
                           f"this model uses {impl!r}", code="C005", span=span_of(att),
                           help="load the model with attn_implementation='sdpa' or 'eager'")
    return impl


def check_prefix_uniform(atts: list[AttachmentNode]) -> None:
    seen: dict[str, tuple] = {}
    for a in atts:
        if a.method != "prefix" or a.params.get("mlp") is None:
            continue
        key = (a.params.get("length"), a.params.get("mlp"))
        if seen.setdefault(a.instance, key) != key:
            raise CompileError(f"{a.instance}: one reparameterisation MLP serves every layer of a prefix, "
                               "so length and mlp must not vary per layer", code="C011", span=span_of(a),
                               help="declare a second prefix instance for the other layers, or `mlp none`")


def inner_module(mod: nn.Module) -> nn.Module:
    while isinstance(mod, (LinearHost, AdapterPoint)):
        mod = mod.base_layer
    return mod


def where_of(mod: nn.Module) -> dict[str, Any]:
    p = next(mod.parameters(), None)
    return {"device": p.device, "dtype": p.dtype} if p is not None else {}


def hidden_size(model: nn.Module, fam: Family, ir: IR) -> int:
    cfg = getattr(model, "config", None)
    v = getattr(cfg, fam.keys["hidden"], None) if cfg is not None else None
    return int(v if v is not None else ir.settings.dims["hidden"])


def kv_width(model: nn.Module, fam: Family, hidden: int) -> int:
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


def static_gate_value(gate: Gate | None) -> float | None:
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
