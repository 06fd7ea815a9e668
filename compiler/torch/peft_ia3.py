"""peft's (IA)³ format, both ways: `export_tensors` (a run's ``ia3`` instances → peft's ``IA3`` adapter: the
config and the tensors; `peft_export` writes the files) and `read_ia3` (a peft ``IA3`` adapter → a
`peft_io.PeftAdapter` with one ``ia3`` group, whose spec `peft_io.spec_text` writes).

    adapter_config.json        peft_type IA3, task_type SEQ_CLS, target_modules and feedforward_modules
                               (full module names), modules_to_save (the task head)
    adapter_model.safetensors  base_model.model.<module>.ia3_l: (out, 1) on a key / value projection,
                               (1, in) on a feed-forward one (peft scales its input)

peltc's vector behind a constant or scalar gate is ``1 + g · (l − 1)``, exported as that vector; several
instances on one module multiply into one. A sigmoid gate depends on each input: refused (U120), as is
everything that is not (IA)³ in the run (LoRA and (IA)³ are two peft adapter types: one export each).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

import peltc.compiler.torch.targets as tg
from peltc.compiler.archs import Family, dims, family_of
from peltc.compiler.ir import IR
from peltc.compiler.torch.ia3 import FEEDFORWARD
from peltc.compiler.torch.peft_io import CONFIG, PREFIX, PeftAdapter, _linear_paths, _num_labels, _strip
from peltc.errors import ArtifactError, UsageError

POINTS = ("attention.key", "attention.value", "ffn.down")


def has_ia3(ir: IR) -> bool:
    return any(i.method == "ia3" for i in ir.instances())


def gate_value(att, key: str, tensors: dict[str, torch.Tensor]) -> float | None:
    g = att.gate
    if g.kind == "none":
        return 1.0
    if g.kind == "const":
        return float(g.value) if g.value is not None else 1.0
    if g.kind == "scalar":
        w = tensors.get(f"{key}.gate.weight")
        if w is None:
            raise ArtifactError(f"the artifact lacks the scalar gate '{key}.gate.weight'", code="A007")
        return float(torch.sigmoid(w.detach().float()).reshape(-1)[0])
    return None


def export_tensors(manifest: dict[str, Any], tensors: dict[str, torch.Tensor], ir: IR, fam: Family,
                   partial: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str], list[str]]:
    """(adapter_config, tensors to write, module paths, what was left out) of a run's (IA)³."""
    left = [f"{i.name} ({i.method}): peft's IA3 adapter holds (IA)³ vectors only" for i in ir.instances()
            if i.method != "ia3"]
    gated = sorted({a.instance for a in ir.attachments() if a.method == "ia3" and a.gate.kind == "sigmoid"})
    left += [f"{n} (ia3): a sigmoid gate depends on each input, so no single vector reproduces it" for n in gated]
    pool = (ir.settings.head or {}).get("pool")
    if pool not in (None, "pooler"):
        left.append(f"head {{ pool {pool} }}: the classifier reads the masked mean over the tokens, past the "
                    "model's pooler; a peft model's head pools as the base model does")
    if left and not partial:
        raise UsageError("cannot export to peft: peft's IA3 format cannot hold " + "; ".join(left), code="U120",
                         help="export the rest with --partial (what is left out is listed), or train a spec of "
                              "ia3 alone with gate none, const or scalar and head { pool pooler }")
    prefix = fam.base + "."
    vectors: dict[str, torch.Tensor] = {}
    points: dict[str, str] = {}
    for att in ir.attachments():
        if att.method != "ia3" or att.instance in gated:
            continue
        path = tg.point_path(fam, prefix, att.layer, att.point)
        key = f"{path}.pelt_ia3.{att.instance}"
        if f"{key}.l" not in tensors:
            raise ArtifactError(f"the artifact lacks tensor '{key}.l'", code="A007")
        f = 1 + gate_value(att, key, tensors) * (tensors[f"{key}.l"].float() - 1)
        vectors[path] = vectors[path] * f if path in vectors else f
        points[path] = att.point
    if not vectors:
        raise UsageError("nothing to export to peft: the run has no (IA)³ that peft's format can hold", code="U121")
    out = {f"{PREFIX}{p}.ia3_l": (v.view(1, -1) if points[p] in FEEDFORWARD else v.view(-1, 1)).contiguous()
           for p, v in vectors.items()}
    heads = [h for h in fam.head if any(n.startswith(h + ".") for n in tensors)]
    out.update({PREFIX + n: t.contiguous() for n, t in tensors.items() if any(n.startswith(h + ".") for h in heads)})
    config = {"peft_type": "IA3", "task_type": "SEQ_CLS",
              "base_model_name_or_path": (manifest.get("base_model") or {}).get("name"),
              "target_modules": sorted(vectors),
              "feedforward_modules": sorted(p for p in vectors if points[p] in FEEDFORWARD),
              "fan_in_fan_out": False, "init_ia3_weights": True, "modules_to_save": heads or None,
              "inference_mode": True}
    return config, out, sorted(vectors), left if partial else []


def _matches(targets: str | list[str], module: str) -> bool:
    """peft's module matching: a string is a regular expression over the whole name, a list holds names
    or name suffixes."""
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def read_ia3(peft_dir: str | Path, config: dict[str, Any], raw: dict[str, torch.Tensor],
             model_config: dict[str, Any]) -> PeftAdapter:
    """A peft IA3 adapter (SEQ_CLS) as one ``ia3`` group. A021: a vector on a module that is no (IA)³ point
    of the family, or scaling the other side than peltc does there (peft's ``feedforward_modules``: the
    input; peltc scales the input on ``ffn.down`` only)."""
    where = f"'{Path(peft_dir) / CONFIG}'"
    if config.get("task_type") not in ("SEQ_CLS", None):
        raise ArtifactError(f"{where} has task_type {config.get('task_type')!r}; peltc imports sequence-"
                            "classification adapters (SEQ_CLS)", code="A021")
    if config.get("fan_in_fan_out"):
        raise ArtifactError(f"{where} uses fan_in_fan_out (Conv1D weights), which a peltc spec cannot hold",
                            code="A021")
    fam = family_of(model_config)
    n_layers = dims(model_config, fam)["layers"]
    linears = {p: v for p, v in _linear_paths(fam, n_layers).items() if v[1] in POINTS}
    modules_to_save = config.get("modules_to_save") or []
    vecs: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    other: list[str] = []
    for key, t in raw.items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if name.endswith(".ia3_l"):
            vecs[name[:-len(".ia3_l")]] = t
            continue
        name = _strip(key)
        if any(f".{s}." in f".{name.rsplit('.', 1)[0]}." for s in modules_to_save):
            head[name] = t
        else:
            other.append(key)
    bad = sorted(m for m in vecs if m not in linears) + other
    if bad:
        raise ArtifactError(f"{where}: tensors a peltc spec cannot hold: {', '.join(bad[:4])}", code="A021",
                            help=f"peltc's ia3 attaches at layers[i].{{{', '.join(POINTS)}}}")
    if not vecs:
        raise ArtifactError(f"{where}: the adapter holds no (IA)³ vectors", code="A020")
    ff = config.get("feedforward_modules") or []
    mods, tensors = [], {}
    for module, t in sorted(vecs.items(), key=lambda kv: linears[kv[0]]):
        layer, point = linears[module]
        is_ff = _matches(ff, module)
        if is_ff != (point in FEEDFORWARD):
            raise ArtifactError(f"{where}: '{module}' scales its {'input' if is_ff else 'output'}; peltc's ia3 "
                                f"scales the {'input' if point in FEEDFORWARD else 'output'} at {point}",
                                code="A021", help="peltc scales the input at ffn.down only (peft's "
                                                  "feedforward_modules)")
        mods.append((layer, point, module))
        tensors[f"{module}.pelt_ia3.ia3.l"] = t.reshape(-1)
    tensors.update(head)
    return PeftAdapter(Path(peft_dir), config, fam, n_layers, [{"name": "ia3", "method": "ia3", "modules": mods}],
                       tensors, _num_labels(fam, head), sorted({n.rsplit(".", 1)[0] for n in head}))
