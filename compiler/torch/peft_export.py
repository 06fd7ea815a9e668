"""Export to peft's LoRA format — what vLLM, TGI, LoRAX and the Hub read (a run of (IA)³: peft's IA3 format,
`peft_ia3.export_tensors`).

    <dir>/adapter_config.json        peft_type LORA, task_type SEQ_CLS, r, lora_alpha, target_modules
                                     (full module names), rank_pattern / alpha_pattern (per module, when
                                     they differ from r / lora_alpha), modules_to_save (the task head), …
    <dir>/adapter_model.safetensors  base_model.model.<module>.lora_A.weight (r, in),
                                     base_model.model.<module>.lora_B.weight (out, r),
                                     base_model.model.<head module>.<param> (modules_to_save)

peft computes ``W x + (alpha / r) · B A x`` per module; peltc ``W x + s · B A x`` with ``s`` = alpha / rank
(gate ``none``; ``scaling rs``: alpha / √rank), the constant (``const(c)``) or σ(w) of the learned scalar
(``scalar``); so each module is written with ``lora_alpha = s · r`` (per module in ``alpha_pattern`` where
they differ) — or, when every exported LoRA is an ungated ``scaling rs`` one, ``use_rslora`` with
``lora_alpha = s · √r``. DoRA (``dora true``, ungated) is peft's ``use_dora``, its magnitude vector
``<module>.lora_magnitude_vector``. A principal init (``init pissa`` / ``olora``), whose base keeps
W − s·B₀A₀, exports as a plain delta on the original base, as peft's conversion
(``path_initial_model_for_weight_conversion``): A' = [A; A₀], B' = [B, −B₀], rank 2r, the same s.
Several LoRAs on one linear become one of rank Σ r_k (A stacked, each B scaled by its s_k, alpha = rank).
A sigmoid gate depends on each input, so no alpha reproduces it; adapters, prefixes, BitFit deltas,
full fine-tuning and the ``pool mean`` head (the classifier reads the masked token mean, past the
pooler) have no place in a peft LoRA adapter either: `export_peft` refuses them, listing each, or
with ``partial=True`` leaves them out and says so.

The file names and key prefix are `peft_io`'s (the format); import is there too.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from peltc.compiler.archs import FAMILIES
import peltc.compiler.torch.targets as tg
from peltc.compiler.ir import IR, AttachmentNode
from peltc.compiler.torch.peft_ia3 import export_tensors, gate_value, has_ia3
from peltc.compiler.torch import peft_prompt
from peltc.compiler.torch.peft_io import CONFIG, PREFIX, WEIGHTS
from peltc.errors import ArtifactError, UsageError

# error codes (see peltc/errors.py for the classes): U120 export refused, U121 nothing to export,
# U122 an output folder holding other files.


@dataclass
class ExportResult:
    out_dir: Path
    modules: list[str]                 # the adapted module paths
    left_out: list[str]                # what was not exported (partial=True), one line each
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _artifact_dir(src: str | Path) -> Path:
    p = Path(src)
    if (p / "adapter" / "manifest.json").is_file():
        return p / "adapter"
    if (p / "manifest.json").is_file() or not p.exists():
        return p
    return p / "adapter"        # a run folder without its artifact: load_tensors says what is missing


def _scale(att: AttachmentNode, lora: str, tensors: dict[str, torch.Tensor]) -> float:
    """peltc's effective scale of one LoRA attachment (compiler/torch/lora.py: alpha / rank — alpha / √rank
    with ``scaling rs`` — without a gate, the gate's value with one)."""
    g = att.gate
    if g.kind == "none":
        r = int(att.args.rank)
        return float(att.args.alpha) / (math.sqrt(r) if att.args.scaling == "rs" else r)
    v = gate_value(att, lora, tensors)      # const / scalar: the gate's value (one reader for LoRA and (IA)³)
    if v is None:
        raise ValueError(g.kind)
    return v


def _at(att: AttachmentNode) -> str:
    return att.point if att.layer is None else f"layers[{att.layer}].{att.point}"


def _left_out(ir: IR) -> tuple[list[str], set[str]]:
    """What peft's LoRA format cannot hold (one line per instance or gated attachment), and the ids of
    the LoRA attachments that can go."""
    lines, ok = _left_out_methods(ir)
    dora = {a.instance for a in ir.attachments() if a.id in ok and a.params.get("dora")}
    plain = {a.instance for a in ir.attachments() if a.id in ok and not a.params.get("dora")}
    for inst in sorted(dora):
        atts = ir.attachments(inst)
        why = None
        if any(a.gate.kind != "none" for a in atts):
            why = "DoRA under a gate (peft's DoRA has none)"
        elif any(a.params.get("init", "default") != "default" for a in atts):
            why = "DoRA on a principal init (peft converts PiSSA / OLoRA to a plain LoRA only)"
        elif plain:
            why = f"DoRA beside plain LoRA ({', '.join(sorted(plain))}): peft's use_dora is one setting per adapter"
        elif len(dora) > 1 and {(a.layer, a.point) for a in atts} & {
                (a.layer, a.point) for a in ir.attachments() if a.instance in dora - {inst}}:
            why = "two DoRAs on one linear (peft holds one magnitude per module)"
        if why:
            lines.append(f"{inst} (lora, dora true): {why}")
            ok -= {a.id for a in atts}
    return lines, ok


def _left_out_methods(ir: IR) -> tuple[list[str], set[str]]:
    lines: list[str] = []
    ok: set[str] = set()
    why = {
        "adapter": "an adapter (a bottleneck module after a sub-layer) is not a LoRA",
        "prefix": "prefix-tuning adds keys and values to the attention, which a LoRA cannot express",
        "bitfit": "BitFit trains bias deltas; a peft LoRA adapter saves no biases (bias \"none\")",
        "finetune": "full fine-tuning changes every base weight, which a LoRA adapter does not hold",
    }
    for inst in ir.instances():
        atts = ir.attachments(inst.name)
        if inst.method != "lora":
            lines.append(f"{inst.name} ({inst.method}): {why.get(inst.method, 'not a LoRA')}")
            continue
        gated = [a for a in atts if a.gate.kind == "sigmoid"]
        ok.update(a.id for a in atts if a.gate.kind != "sigmoid")
        if gated:
            where = "every attachment" if len(gated) == len(atts) else ", ".join(_at(a) for a in gated)
            lines.append(f"{inst.name} (lora, {where}): gate {gated[0].gate.text()} depends on each input, "
                         "so no lora_alpha reproduces it (none, const(c) and scalar gates export)")
    pool = (ir.settings.head or {}).get("pool")
    if pool not in (None, "pooler"):
        lines.append(f"head {{ pool {pool} }}: the classifier reads the masked mean over the tokens, past the "
                     "model's pooler; a peft model's head pools as the base model does (train with "
                     "head { pool pooler } to export)")
    return lines, ok


def export_peft(src: str | Path, out_dir: str | Path, *, partial: bool = False) -> ExportResult:
    """Write a run's (or an artifact folder's) LoRA and task head as a peft LoRA adapter in ``out_dir``.

    Raises `UsageError` U120 listing what peft's format cannot hold, unless ``partial`` (then it is
    left out, listed in ``ExportResult.left_out``); U121 when no LoRA is left to export."""
    from peltc.compiler.torch.artifact import read_artifact

    manifest, tensors, ir = read_artifact(_artifact_dir(src))
    fam = FAMILIES.get(ir.settings.family or "")
    if fam is None:
        raise ArtifactError(f"the artifact was resolved for an unknown family {ir.settings.family!r}", code="A012")
    if has_ia3(ir):                      # peft's IA3 adapter type (compiler/torch/peft_ia3.py)
        config, out, modules, left = export_tensors(manifest, tensors, ir, fam, partial)
        _write(Path(out_dir), out, config)
        return ExportResult(Path(out_dir), modules, left, config)
    if any(i.method == "prompt" for i in ir.instances()):
        return _export_prompt(manifest, tensors, ir, fam, Path(out_dir))
    left, ok = _left_out(ir)
    if left and not partial:
        raise UsageError("cannot export to peft: peft's LoRA format cannot hold " + "; ".join(left), code="U120",
                         help="export the rest with --partial (what is left out is listed), or train a spec of "
                              "LoRA with gate none, const or scalar and head { pool pooler }: the shipped "
                              "specs/lora_peft.pelt is one")
    prefix = fam.base + "."
    out: dict[str, torch.Tensor] = {}
    per_module: dict[str, list[tuple[torch.Tensor, torch.Tensor, float, AttachmentNode]]] = {}
    for att in ir.attachments():
        if att.id not in ok:
            continue
        path = tg.point_path(fam, prefix, att.layer, att.point)
        lora = f"{path}.pelt_lora.{att.instance}"
        try:
            a, b = tensors[f"{lora}.A.weight"], tensors[f"{lora}.B.weight"]
        except KeyError as e:
            raise ArtifactError(f"the artifact lacks tensor {e.args[0]!r} of {att.instance} at {_at(att)}",
                                code="A007") from None
        if att.params.get("init", "default") != "default":     # the plain delta: s·(B A − B₀A₀)
            a0, b0 = tensors[f"{lora}.A0"], tensors[f"{lora}.B0"]
            a, b = torch.cat([a, a0.to(a.dtype)]), torch.cat([b, -b0.to(b.dtype)], dim=1)
        per_module.setdefault(path, []).append((a, b, _scale(att, lora, tensors), att))
        if att.params.get("dora"):
            out[f"{PREFIX}{path}.lora_magnitude_vector"] = tensors[f"{lora}.magnitude"].contiguous()
    if not per_module:
        raise UsageError("nothing to export to peft: the run has no LoRA that peft's format can hold"
                         + (" (left out: " + "; ".join(left) + ")" if left else ""), code="U121",
                         help="peft's LoRA format holds LoRA with gate none, const(c) or scalar")

    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    notes: list[str] = []
    rs = all(len(v) == 1 and v[0][3].params.get("scaling") == "rs" and v[0][3].gate.kind == "none"
             for v in per_module.values())
    for path, loras in per_module.items():
        if len(loras) == 1:
            a, b, s, _ = loras[0]
            r = a.shape[0]
            alpha = s * (math.sqrt(r) if rs else r)
        else:       # Σ s_k B_k A_k = [s_1 B_1, …] [A_1; …] · (alpha / r) with alpha = r
            a = torch.cat([x[0] for x in loras])
            b = torch.cat([(x[1].float() * x[2]).to(x[1].dtype) for x in loras], dim=1)
            r = a.shape[0]
            alpha = float(r)
            notes.append(f"{path}: {', '.join(x[3].instance for x in loras)} summed into one LoRA of rank {r}")
        out[f"{PREFIX}{path}.lora_A.weight"] = a.contiguous()
        out[f"{PREFIX}{path}.lora_B.weight"] = b.contiguous()
        ranks[path], alphas[path] = int(r), float(alpha)
    heads = [h for h in fam.head if any(n.startswith(h + ".") for n in tensors)]
    for n, t in tensors.items():
        if any(n.startswith(h + ".") for h in heads):
            out[PREFIX + n] = t.contiguous()

    r0, a0 = Counter((ranks[p], alphas[p]) for p in ranks).most_common(1)[0][0]
    dropouts = sorted({float(x[3].args.dropout) for v in per_module.values() for x in v})
    if len(dropouts) > 1:
        notes.append(f"lora_dropout: the instances train with {', '.join(f'{d:g}' for d in dropouts)}; "
                     f"peft holds one value, {dropouts[-1]:g} written")
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "base_model_name_or_path": (manifest.get("base_model") or {}).get("name"),
        "r": r0,
        "lora_alpha": _json_number(a0),
        "target_modules": sorted(per_module),
        "lora_dropout": dropouts[-1],
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": heads or None,
        "inference_mode": True,
        "use_rslora": rs,
        "use_dora": any(x[3].params.get("dora") for v in per_module.values() for x in v),
    }
    rank_pattern = {p: r for p, r in sorted(ranks.items()) if r != r0}
    alpha_pattern = {p: _json_number(a) for p, a in sorted(alphas.items()) if a != a0}
    if rank_pattern:
        config["rank_pattern"] = rank_pattern
    if alpha_pattern:
        config["alpha_pattern"] = alpha_pattern

    _write(Path(out_dir), out, config)
    return ExportResult(Path(out_dir), sorted(per_module), left if partial else [], config, notes)


def _write(dest: Path, out: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """The adapter's two files, each written whole or not at all."""
    from safetensors.torch import save_file

    _check_out_dir(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{WEIGHTS}.tmp"
    save_file(out, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, dest / WEIGHTS)
    tmpc = dest / f".{CONFIG}.tmp"
    tmpc.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    os.replace(tmpc, dest / CONFIG)


def _export_prompt(manifest, tensors, ir: IR, fam, dest: Path) -> ExportResult:
    """A run whose one method is a prompt, as peft's prompt-tuning adapter (`peft_prompt`); U120 otherwise."""
    refused = peft_prompt.refusals(ir)
    if refused:
        raise UsageError("cannot export to peft: peft's prompt-tuning format cannot hold " + "; ".join(refused),
                         code="U120", help="export a run whose only method is one prompt, with head { pool pooler }")
    out, config, inst = peft_prompt.export_prompt(ir, fam, tensors, (manifest.get("base_model") or {}).get("name"))
    _write(dest, out, config)
    return ExportResult(dest, [inst], [], config)


def _json_number(x: float) -> int | float:
    return int(x) if float(x).is_integer() and abs(x) < 2 ** 53 else float(x)


def _check_out_dir(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"'{dest}' exists and is not a folder", code="U122")
    if dest.is_dir():
        other = sorted(p.name for p in dest.iterdir() if p.name not in (CONFIG, WEIGHTS))
        if other:
            raise UsageError(f"'{dest}' holds other files ({', '.join(other[:5])}); an export writes only into an "
                             "empty folder or over a previous export", code="U122", help="choose another folder")
