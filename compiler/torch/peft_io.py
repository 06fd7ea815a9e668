"""Export to and import from peft's LoRA format — what vLLM, TGI, LoRAX and the Hub read.

    <dir>/adapter_config.json        peft_type LORA, task_type SEQ_CLS, r, lora_alpha, target_modules
                                     (full module names), rank_pattern / alpha_pattern (per module, when
                                     they differ from r / lora_alpha), modules_to_save (the task head), …
    <dir>/adapter_model.safetensors  base_model.model.<module>.lora_A.weight (r, in),
                                     base_model.model.<module>.lora_B.weight (out, r),
                                     base_model.model.<head module>.<param> (modules_to_save)

peft computes ``W x + (alpha / r) · B A x`` per module; peltc ``W x + s · B A x`` with ``s`` = alpha / rank
(gate ``none``), the constant (``const(c)``) or σ(w) of the learned scalar (``scalar``); so each
module is written with ``lora_alpha = s · r`` (per module in ``alpha_pattern`` where they differ).
Several LoRAs on one linear become one of rank Σ r_k (A stacked, each B scaled by its s_k, alpha = rank).
A sigmoid gate depends on each input, so no alpha reproduces it; adapters, prefixes, BitFit deltas,
full fine-tuning and the ``pool mean`` head (the classifier reads the masked token mean, past the
pooler) have no place in a peft LoRA adapter either: `export_peft` refuses them, listing each, or
with ``partial=True`` leaves them out and says so.

Import goes the other way: each (rank, alpha) group of a peft LoRA adapter becomes one `lora`
instance of a spec (module paths mapped back to canonical points through the family tables of
`peltc.compiler.archs`), and its tensors are renamed to the parameters `rewrite.apply` creates for that
spec; `build_artifact` loads them into a freshly compiled model through the artifact path
(`artifact.load_into`) and saves a peltc artifact. This module reads tensors and writes files; it
changes no ``nn.Module`` itself.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from peltc.compiler.archs import FAMILIES, Family, dims, family_of
from peltc.compiler.ir import IR, AttachmentNode
from peltc.compiler.layerset import compact_layers
from peltc.compiler.schema import LAYER_POINTS
from peltc.compiler.torch import targets as tg
from peltc.errors import ArtifactError, UsageError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
WEIGHTS_BIN = "adapter_model.bin"
PREFIX = "base_model.model."

# error codes (see peltc/errors.py for the classes): U120 export refused, U121 nothing to export,
# U122 an output folder holding other files; A020 not a peft LoRA adapter, A021 a peft adapter that a
# peltc spec cannot hold, A022 an adapter that does not fit the base model.


# --- export ------------------------------------------------------------------------------------------

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
    """peltc's effective scale of one LoRA attachment (compiler/torch/lora.py: alpha / rank without a
    gate, the gate's value with one)."""
    g = att.gate
    if g.kind == "none":
        return float(att.args.alpha) / int(att.args.rank)
    if g.kind == "const":
        return float(g.value) if g.value is not None else 1.0
    if g.kind == "scalar":
        w = tensors.get(f"{lora}.gate.weight")
        if w is None:
            raise ArtifactError(f"the artifact lacks the scalar gate '{lora}.gate.weight'", code="A007")
        return float(torch.sigmoid(w.detach().float()).reshape(-1)[0])
    raise ValueError(g.kind)


def _at(att: AttachmentNode) -> str:
    return att.point if att.layer is None else f"layers[{att.layer}].{att.point}"


def _left_out(ir: IR) -> tuple[list[str], set[str]]:
    """What peft's LoRA format cannot hold (one line per instance or gated attachment), and the ids of
    the LoRA attachments that can go."""
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
    from safetensors.torch import save_file

    from peltc.compiler.torch.artifact import load_tensors

    manifest, tensors = load_tensors(_artifact_dir(src))
    try:
        ir = IR.from_dict(manifest["ir"])
    except Exception as e:  # pydantic / key errors: the manifest's IR is not ours
        raise ArtifactError(f"the artifact's IR cannot be read: {e}", code="A012") from None
    fam = FAMILIES.get(ir.settings.family or "")
    if fam is None:
        raise ArtifactError(f"the artifact was resolved for an unknown family {ir.settings.family!r}", code="A012")
    left, ok = _left_out(ir)
    if left and not partial:
        raise UsageError("cannot export to peft: peft's LoRA format cannot hold " + "; ".join(left), code="U120",
                         help="export the rest with --partial (what is left out is listed), or train a spec of "
                              "LoRA with gate none, const or scalar and head { pool pooler }")
    prefix = fam.base + "."
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
        per_module.setdefault(path, []).append((a, b, _scale(att, lora, tensors), att))
    if not per_module:
        raise UsageError("nothing to export to peft: the run has no LoRA that peft's format can hold"
                         + (" (left out: " + "; ".join(left) + ")" if left else ""), code="U121",
                         help="peft's LoRA format holds LoRA with gate none, const(c) or scalar")

    out: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    notes: list[str] = []
    for path, loras in per_module.items():
        if len(loras) == 1:
            a, b, s, _ = loras[0]
            r = a.shape[0]
            alpha = s * r
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
    }
    rank_pattern = {p: r for p, r in sorted(ranks.items()) if r != r0}
    alpha_pattern = {p: _json_number(a) for p, a in sorted(alphas.items()) if a != a0}
    if rank_pattern:
        config["rank_pattern"] = rank_pattern
    if alpha_pattern:
        config["alpha_pattern"] = alpha_pattern

    dest = Path(out_dir)
    _check_out_dir(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{WEIGHTS}.tmp"
    save_file(out, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, dest / WEIGHTS)
    tmpc = dest / f".{CONFIG}.tmp"
    tmpc.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    os.replace(tmpc, dest / CONFIG)
    return ExportResult(dest, sorted(per_module), left if partial else [], config, notes)


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


# --- import ------------------------------------------------------------------------------------------

@dataclass
class PeftAdapter:
    """A peft LoRA adapter read from disk, mapped onto canonical points."""

    path: Path
    config: dict[str, Any]
    family: Family
    n_layers: int
    groups: list[dict[str, Any]]            # name, rank, alpha, modules [(layer, point, path)]
    tensors: dict[str, torch.Tensor]        # by the parameter names `rewrite.apply` gives `spec_text`'s spec
    num_labels: int | None
    head: list[str]                         # the head modules saved (modules_to_save)


def read_peft_config(peft_dir: str | Path) -> dict[str, Any]:
    """adapter_config.json of a peft adapter folder."""
    d = Path(peft_dir)
    if not d.is_dir():
        raise UsageError(f"peft adapter folder '{d}' does not exist", code="U008")
    cfg_path = d / CONFIG
    if not cfg_path.is_file():
        raise ArtifactError(f"'{d}' is not a peft adapter: {CONFIG} is missing", code="A020",
                            help="point at the folder peft's save_pretrained wrote")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"cannot read '{cfg_path}': {e}", code="A020") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"'{cfg_path}' is not a JSON object", code="A020")
    return config


def read_peft_dir(peft_dir: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """adapter_config.json and the adapter's tensors (safetensors, or a legacy adapter_model.bin)."""
    config = read_peft_config(peft_dir)
    d = Path(peft_dir)
    if (d / WEIGHTS).is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            tensors = load_file(str(d / WEIGHTS))
        except (SafetensorError, OSError, ValueError) as e:
            raise ArtifactError(f"cannot read '{d / WEIGHTS}': {e}", code="A020") from None
    elif (d / WEIGHTS_BIN).is_file():
        try:
            tensors = torch.load(d / WEIGHTS_BIN, map_location="cpu", weights_only=True)
        except Exception as e:   # pickle / zip errors
            raise ArtifactError(f"cannot read '{d / WEIGHTS_BIN}': {e}", code="A020") from None
    else:
        raise ArtifactError(f"'{d}' holds no adapter weights ({WEIGHTS} or {WEIGHTS_BIN})", code="A020")
    return config, tensors


def _pattern_value(patterns: dict[str, Any], name: str, default: Any) -> Any:
    """peft's ``get_pattern_key``: the first pattern ``k`` with ``(.*\\.)?(k)$`` matching the module name."""
    for k, v in (patterns or {}).items():
        try:
            if re.match(rf"(.*\.)?({k})$", name):
                return v
        except re.error:
            if name == k or name.endswith("." + k):
                return v
    return default


_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[A-Za-z0-9_-]+))?\.weight$")


def _strip(name: str) -> str:
    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    # peft writes a head's tensors under their own names; wrappers' names are dropped if present
    return name.replace(".modules_to_save.default.", ".").replace(".modules_to_save.", ".")


def _linear_paths(fam: Family, n_layers: int) -> dict[str, tuple[int, str]]:
    prefix = fam.base + "."
    return {tg.point_path(fam, prefix, i, p): (i, p) for i in range(n_layers)
            for p, kind in LAYER_POINTS.items() if kind == "linear" and p in fam.points}


def read_peft(peft_dir: str | Path, model_config: dict[str, Any]) -> PeftAdapter:
    """Read a peft LoRA adapter (SEQ_CLS) and map it onto the canonical points of ``model_config``'s
    family. Raises `ArtifactError` A020 / A021 for what is not a peft LoRA adapter or what a peltc spec
    cannot hold (DoRA, LoRA biases, bias training, LoRA on a module that is no canonical point, …)."""
    config, raw = read_peft_dir(peft_dir)
    where = f"'{Path(peft_dir) / CONFIG}'"
    if config.get("peft_type") != "LORA":
        raise ArtifactError(f"{where} is a {config.get('peft_type')!r} adapter; peltc imports LoRA adapters only",
                            code="A020")
    if config.get("task_type") not in ("SEQ_CLS", None):
        raise ArtifactError(f"{where} has task_type {config.get('task_type')!r}; peltc imports sequence-"
                            "classification adapters (SEQ_CLS)", code="A021")
    refused = []
    if config.get("use_dora"):
        refused.append("use_dora (DoRA's magnitude vectors)")
    if config.get("bias", "none") != "none":
        refused.append(f"bias {config.get('bias')!r} (trained base biases)")
    if config.get("lora_bias"):
        refused.append("lora_bias (a bias on lora_B)")
    if config.get("fan_in_fan_out"):
        refused.append("fan_in_fan_out (Conv1D weights)")
    for k in ("layer_replication", "trainable_token_indices", "target_parameters"):
        if config.get(k):
            refused.append(k)
    if refused:
        raise ArtifactError(f"{where} uses what a peltc spec cannot hold: {', '.join(refused)}", code="A021")
    fam = family_of(model_config)
    n_layers = dims(model_config, fam)["layers"]
    linears = _linear_paths(fam, n_layers)
    modules_to_save = config.get("modules_to_save") or []
    rslora = bool(config.get("use_rslora"))

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    head: dict[str, torch.Tensor] = {}
    other: list[str] = []
    for key, t in raw.items():
        m = _LORA_KEY.match(key[len(PREFIX):] if key.startswith(PREFIX) else key)
        if m:
            pairs.setdefault(m["module"], {})[m["ab"]] = t
            continue
        name = _strip(key)
        module = name.rsplit(".", 1)[0]
        if any(f".{s}." in f".{module}." for s in modules_to_save):
            head[name] = t
        else:
            other.append(key)
    if other:
        raise ArtifactError(f"{where}: tensors a peltc spec cannot hold: {', '.join(sorted(other)[:4])}"
                            + (f" (and {len(other) - 4} more)" if len(other) > 4 else ""), code="A021",
                            help="peltc imports LoRA on linears (lora_A / lora_B) and the task head")
    if not pairs:
        raise ArtifactError(f"{where}: the adapter holds no LoRA weights", code="A020")
    not_points = sorted(m for m in pairs if m not in linears)
    if not_points:
        canon = sorted({p for _, p in linears.values()})
        raise ArtifactError(f"{where}: LoRA on module(s) that are no canonical point of the {fam.name} family: "
                            f"{', '.join(not_points[:4])}" + (f" (and {len(not_points) - 4} more)"
                                                              if len(not_points) > 4 else ""),
                            code="A021", help=f"peltc's LoRA attaches at layers[i].{{{', '.join(canon)}}}, "
                                              f"e.g. '{next(iter(linears))}'")
    groups: dict[tuple[int, float], list[tuple[int, str, str]]] = {}
    for module, ab in sorted(pairs.items(), key=lambda kv: linears[kv[0]]):
        if set(ab) != {"A", "B"}:
            raise ArtifactError(f"{where}: '{module}' has lora_{next(iter(ab))} but no "
                                f"lora_{'B' if 'A' in ab else 'A'}", code="A020")
        r = int(ab["A"].shape[0])
        if ab["B"].dim() != 2 or int(ab["B"].shape[1]) != r:
            raise ArtifactError(f"{where}: '{module}' has lora_A {tuple(ab['A'].shape)} and lora_B "
                                f"{tuple(ab['B'].shape)}, not (r, in) and (out, r)", code="A020")
        alpha_p = float(_pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8)))
        scale = alpha_p / (math.sqrt(r) if rslora else r)
        alpha = scale * r
        if not math.isfinite(alpha) or alpha < 0:
            raise ArtifactError(f"{where}: '{module}' has scale {scale:g}; peltc's alpha is ≥ 0", code="A021")
        groups.setdefault((r, alpha), []).append((*linears[module], module))
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), -kv[0][0], kv[0][1]))
    names: list[str] = []
    out_groups = []
    tensors: dict[str, torch.Tensor] = {}
    for (r, alpha), mods in ordered:
        name, k = f"lora_r{r}", 1
        while name in names:
            k += 1
            name = f"lora_r{r}_{k}"
        names.append(name)
        out_groups.append({"name": name, "rank": r, "alpha": alpha, "modules": mods})
        for _, _, module in mods:
            tensors[f"{module}.pelt_lora.{name}.A.weight"] = pairs[module]["A"]
            tensors[f"{module}.pelt_lora.{name}.B.weight"] = pairs[module]["B"]
    tensors.update(head)
    return PeftAdapter(Path(peft_dir), config, fam, n_layers, out_groups, tensors, _num_labels(fam, head),
                       sorted({n.rsplit(".", 1)[0] for n in head}))


def _num_labels(fam: Family, head: dict[str, torch.Tensor]) -> int | None:
    """The output size of the family's last head module (BERT: classifier.weight; RoBERTa:
    classifier.out_proj.weight)."""
    last = fam.head[-1]
    for n in (f"{last}.out_proj.weight", f"{last}.weight"):
        if n in head and head[n].dim() == 2:
            return int(head[n].shape[0])
    return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 2 ** 53 else repr(float(x))


def _selector(layers: list[int], n_layers: int) -> str:
    return "*" if layers == list(range(n_layers)) else compact_layers(layers, steps=len(layers) > 2)


def _targets(mods: list[tuple[int, str, str]], n_layers: int) -> list[str]:
    """``layers[SEL].attention.{query, value}`` lines: points grouped by the layers they cover."""
    by_point: dict[str, list[int]] = {}
    for layer, point, _ in mods:
        by_point.setdefault(point, []).append(layer)
    by_layers: dict[tuple[int, ...], list[str]] = {}
    for point in sorted(by_point, key=lambda p: list(LAYER_POINTS).index(p)):
        by_layers.setdefault(tuple(sorted(by_point[point])), []).append(point)
    out = []
    for layers, points in by_layers.items():
        sel = _selector(list(layers), n_layers)
        if len(points) == 1:
            out.append(f"layers[{sel}].{points[0]}")
        elif len({p.split('.')[0] for p in points}) == 1:
            out.append(f"layers[{sel}].{points[0].split('.')[0]}.{{{', '.join(p.split('.', 1)[1] for p in points)}}}")
        else:
            out.append(f"layers[{sel}].{{{', '.join(points)}}}")
    return out


def spec_text(adapter: PeftAdapter, model_ref: str | None) -> str:
    """The .pelt spec of an imported adapter: one lora instance per (rank, alpha) group, the model's own
    head pooling (``head { pool pooler }``, as peft's model pools)."""
    c = adapter.config
    lines = [f"# Imported from the peft LoRA adapter {adapter.path}"
             + (f" (peft {c['peft_version']})" if c.get("peft_version") else "") + "."]
    if model_ref:
        lines.append(f'model "{model_ref}"' if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_./:@+-]*", model_ref)
                     or model_ref in ("model", "extends", "import", "remove") else f"model {model_ref}")
    dropout = float(c.get("lora_dropout") or 0.0)
    for g in adapter.groups:
        lines.append("")
        lines.append(f"lora {g['name']} {{")
        lines.append(f"  at {', '.join(_targets(g['modules'], adapter.n_layers))}")
        lines.append(f"  rank {g['rank']}")
        lines.append(f"  alpha {_num(g['alpha'])}")
        if dropout > 0:
            lines.append(f"  dropout {_num(dropout)}")
        lines.append("}")
    lines += ["", "head {", "  pool pooler", "}", ""]
    return "\n".join(lines)


def build_artifact(model: torch.nn.Module, ir: IR, adapter: PeftAdapter, out_dir: str | Path, *, spec: str,
                   base_model: str, extra: dict[str, Any] | None = None) -> Path:
    """Compile ``ir`` onto ``model`` (a fresh sequence classifier of the base model), load the adapter's
    tensors through the artifact path and save a peltc artifact in ``out_dir``."""
    from peltc.compiler.torch.artifact import config_hash, load_into, save_artifact
    from peltc.compiler.torch.rewrite import apply

    apply(ir, model)
    wanted = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(wanted.keys() - adapter.tensors.keys())
    extra_t = sorted(adapter.tensors.keys() - wanted.keys())
    if missing:
        heads = sorted({n.rsplit(".", 1)[0] for n in missing if ".pelt_" not in n})
        raise ArtifactError(f"'{adapter.path}' does not hold all the model trains: "
                            + (f"the task head {', '.join(heads)} is not saved (modules_to_save)" if heads
                               else f"'{missing[0]}' is missing"), code="A022",
                            help=f"the {adapter.family.name} family's task head is {' + '.join(adapter.family.head)}; "
                                 "save the adapter with those in modules_to_save")
    if extra_t:
        raise ArtifactError(f"'{adapter.path}' holds tensors this model has no place for: "
                            f"{', '.join(extra_t[:4])}", code="A021")
    tensors = {}
    for n, p in wanted.items():
        t = adapter.tensors[n]
        if tuple(t.shape) != tuple(p.shape):
            raise ArtifactError(f"'{adapter.path}': '{n}' has shape {tuple(t.shape)}, the base model wants "
                                f"{tuple(p.shape)}", code="A022",
                                help="import onto the base model the adapter was trained on (--model)")
        tensors[n] = t.to(p.dtype)
    cfg = model.config.to_dict()
    load_into(model, {"base_model": {"model_type": cfg.get("model_type"), "config_hash": config_hash(cfg)},
                      "spec_hash": ir.settings.spec_hash}, tensors)
    return save_artifact(model, out_dir, ir_dict=ir.to_dict(), spec_text=spec,
                         spec_hash=ir.settings.spec_hash or "", base_model=base_model, extra=extra)
