"""After training and for experiments: fold prefix MLPs, merge LoRA / BitFit / (IA)³ into base weights,
switch an instance off, pin gates, switch the serving fast paths. (LoReFT does not merge: it stays, as
adapters and prefixes do.)"""

from __future__ import annotations

import torch
from torch import nn

from peltc.compiler.torch import ia3
from peltc.compiler.torch.bitfit import UNFOLDED, BiasDelta
from peltc.compiler.torch.compiled import compiled
from peltc.compiler.torch.delta import DeltaLinear
from peltc.compiler.torch.gate import Gate
from peltc.compiler.torch.lora import LoraLinear
from peltc.compiler.torch.plan import inner_module, static_gate_value
from peltc.compiler.torch.prefix import Prefix
from peltc.compiler.torch import prompt as soft_prompt
from peltc.compiler.torch.rewrite.attach import set_module
from peltc.errors import CompileError


# --- after training ------------------------------------------------------------------------------------

def fold_prefix(model: nn.Module) -> list[str]:
    """Replace every reparameterisation by its output: prefix MLPs by plain per-layer parameters, P-tuning
    encoders by plain prompt vectors (`fold_prompt`); returns the instances folded.

    Outputs are identical (the folded values are what the MLP computes in every forward).
    """
    c = compiled(model)
    base = model.get_submodule(c.prefix[:-1]) if c.prefix else model
    prompts = fold_prompt(model)
    encs = base._modules.get("pelt_prefix_encoders")
    if not encs:
        return prompts
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
    return prompts + folded


def fold_prompt(model: nn.Module) -> list[str]:
    """Replace every P-tuning encoder by its output as the prompt's plain vectors (`prompt.fold`); returns
    the instances folded."""
    c = compiled(model)
    base = model.get_submodule(c.prefix[:-1]) if c.prefix else model
    host = base._modules.get("pelt_prompt")
    folded = [name for name, p in (host.items() if host is not None else ()) if soft_prompt.fold(p)]
    c.folded += folded
    return folded


def merge(model: nn.Module, *, skip_gated: bool = False) -> list[str]:
    """Fold LoRA (DoRA too), BitFit and (IA)³ into the base weights for zero-overhead inference.

    Returns what was merged, as ``"<instance>@<module path>"``. Input-dependent (sigmoid) gates
    cannot be folded into a weight: by default that raises `CompileError` before anything changes;
    with ``skip_gated`` those stay unmerged. Constant and scalar gates merge as their value.
    Merged output equals the unmerged output (eval mode) within float rounding.
    """
    c = compiled(model)
    if c.runs:
        raise CompileError(f"this model routes {len(c.runs)} runs on one base (peltc.load_runs): merging one run's "
                           "LoRA or BitFit into the shared weights would change every other run", code="C019",
                           help="merge a single run's own model (peltc.runtime.serve.load_run), not a routed one")
    loras = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLinear)]
    biases = [(n, m) for n, m in model.named_modules() if "pelt_bitfit" in m._modules]
    deltas = [(n, m) for n, m in model.named_modules() if isinstance(m, DeltaLinear)]
    refused = [f"{i}@{n} (lora)" for n, m in loras for i, l in m.pelt_lora.items()
               if static_gate_value(l.gate) is None]
    refused += [f"{i}@{n} (bitfit)" for n, m in biases for i, d in m.pelt_bitfit.items()
                if static_gate_value(d.the_gate) is None]
    refused += [f"{i}@{n}" for n, m in deltas for i, d in m.pelt_delta.items()
                if d.merges and static_gate_value(d.gate) is None]
    scaled = [(n, m) for n, m in model.named_modules() if "pelt_ia3" in m._modules]
    refused += [f"{i}@{n} (ia3)" for n, m in scaled for i, v in m.pelt_ia3.items()
                if static_gate_value(v.gate) is None]
    if refused and not skip_gated:
        raise CompileError(
            "cannot merge modules behind a sigmoid gate: the gate depends on each input, so no single "
            "weight reproduces it: " + ", ".join(refused), code="C009",
            help="keep them unmerged, or call merge(model, skip_gated=True) to merge the others")
    merged = []
    with torch.no_grad():
        for n, m in loras:
            lin = inner_module(m)
            w0 = lin.weight.detach().to(torch.float32)      # each LoRA's change is against the unmerged base
            add = torch.zeros_like(w0)
            for i in list(m.pelt_lora):
                lora = m.pelt_lora[i]
                g = static_gate_value(lora.gate)
                if g is None:
                    continue
                if lora.enabled:
                    add += lora.merged_delta(w0, g)
                del m.pelt_lora[i]
                merged.append(f"{i}@{n}")
            lin.weight.copy_((w0 + add).to(lin.weight.dtype))
            if len(m.pelt_lora) == 0:
                set_module(model, n, m.base_layer)
        for n, m in biases:
            for i in list(m.pelt_bitfit):
                d = m.pelt_bitfit[i]
                g = static_gate_value(d.the_gate)
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
        for n, m in deltas:         # plug-in methods on linears whose module has delta_weight()
            merged += _merge_deltas(model, n, m)
        for n, m in scaled:
            merged += _merge_ia3(n, m)
    live = {id(g) for g in model.modules() if isinstance(g, Gate)}
    for groups in c.state.groups.values():     # drop merged gates from fused groups
        groups[:] = [g for g in groups if id(g) in live]
    live = {id(m) for m in model.modules()}
    for group in c.state.lora_groups.values():   # and merged LoRAs from the served down-projections
        group[:] = [m for m in group if id(m) in live]
    c.state.packs.clear()
    c.state.cache.clear()
    c.merged += merged
    return merged


def _merge_deltas(model: nn.Module, path: str, host: DeltaLinear) -> list[str]:
    """Add each mergeable plug-in delta (``g · delta_weight()``) to the base weight (in no_grad)."""
    lin, out = inner_module(host), []
    for i in list(host.pelt_delta):
        d = host.pelt_delta[i]
        g = static_gate_value(d.gate)
        if not d.merges or g is None:
            continue
        if d.enabled:
            lin.weight += (g * d.fn.delta_weight().to(torch.float32)).to(lin.weight.dtype)
        del host.pelt_delta[i]
        out.append(f"{i}@{path}")
    if len(host.pelt_delta) == 0:
        set_module(model, path, host.base_layer)
    return out


def _merge_ia3(name: str, lin: nn.Module) -> list[str]:
    """Fold ``lin``'s (IA)³ vectors whose gates are constant into its weight (and bias); its hooks go
    with the last one."""
    done = []
    for i in list(lin.pelt_ia3):
        v = lin.pelt_ia3[i]
        g = static_gate_value(v.gate)
        if g is None:
            continue
        ia3.merge_into(lin, v, g)
        del lin.pelt_ia3[i]
        done.append(f"{i}@{name}")
    if len(lin.pelt_ia3) == 0:
        for h in lin.__dict__.pop("_pelt_ia3_hooks"):
            h.remove()
        del lin.pelt_ia3
    return done


# --- switches (tests, ablations) ------------------------------------------------------------------------

def serve_fused(model: nn.Module, on: bool = True) -> bool:
    """Switch the serving fast paths (``compiler/torch/served.py``: fused matmuls in no-grad forwards) on or
    off; returns the previous setting. Off, a forward runs exactly the training path (benchmarks: before /
    after)."""
    state = compiled(model).state
    before, state.fuse = state.fuse, bool(on)
    state.packs.clear()
    return before


def _instance_modules(model: nn.Module, instance: str):
    for m in model.modules():
        for key in ("pelt_adapters", "pelt_lora", "pelt_bitfit", "pelt_prefix", "pelt_prompt", "pelt_ia3", "pelt_reft",
                    "pelt_delta"):
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


def compile_forward(model: nn.Module, *, fullgraph: bool = False, dynamic: bool | None = True,
                    backend: str = "inductor") -> nn.Module:
    """``torch.compile`` the model's forward in place (``nn.Module.compile``): the module, its parameters,
    its state and every ``model(...)`` call — ``generate``'s steps included — stay as they are, only compiled.
    ``dynamic=True`` traces batch and sequence lengths as symbols, so new shapes reuse the graph."""
    model.compile(fullgraph=fullgraph, dynamic=dynamic, backend=backend)
    return model
