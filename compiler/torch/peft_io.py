"""peft's LoRA format (file names, key prefix) and import from it; export is `peft_export`. peft's
prompt-tuning and P-tuning adapters import as one `prompt` instance (`peft_prompt`).

Import: each (rank, alpha) group of a peft LoRA adapter becomes one `lora`
instance of a spec (module paths mapped back to canonical points through the family tables of
`peltc.compiler.archs`), and its tensors are renamed to the parameters `rewrite.apply` creates for that
spec; `build_artifact` loads them into a freshly compiled model through the artifact path
(`artifact.load_into`) and saves a peltc artifact. This module reads tensors and writes files; it
changes no ``nn.Module`` itself.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from peltc.compiler.archs import Family, dims, family_of
from peltc.compiler.ir import IR
from peltc.compiler.layerset import compact_layers
from peltc.compiler.schema import LAYER_POINTS
from peltc.compiler.torch import peft_prompt
from peltc.compiler.torch import targets as tg
from peltc.errors import ArtifactError, UsageError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
WEIGHTS_BIN = "adapter_model.bin"
PREFIX = "base_model.model."

# error codes (see peltc/errors.py for the classes): U120 export refused, U121 nothing to export,
# U122 an output folder holding other files; A020 not a peft LoRA adapter, A021 a peft adapter that a
# peltc spec cannot hold, A022 an adapter that does not fit the base model.


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


_MAGNITUDE_KEY = re.compile(r"^(?P<module>.+)\.lora_magnitude_vector(?:\.[A-Za-z0-9_-]+)?(?:\.weight)?$")
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
    family (``use_rslora`` → ``scaling rs``, ``use_dora`` → ``dora true`` with its magnitude vectors).
    Raises `ArtifactError` A020 / A021 for what is not a peft LoRA adapter or what a peltc spec cannot hold
    (LoRA biases, bias training, LoRA on a module that is no canonical point, a PiSSA / OLoRA adapter saved
    without conversion, …)."""
    config, raw = read_peft_dir(peft_dir)
    where = f"'{Path(peft_dir) / CONFIG}'"
    if config.get("peft_type") in peft_prompt.PROMPT_TYPES:
        fam = family_of(model_config)
        n, tensors, head = peft_prompt.read_prompt(config, raw, where, fam)
        return PeftAdapter(Path(peft_dir), config, fam, dims(model_config, fam)["layers"],
                           [{"name": peft_prompt.INSTANCE, "prompt": n}], tensors, _num_labels(fam, head),
                           sorted({k.rsplit(".", 1)[0] for k in head}))
    if config.get("peft_type") != "LORA":
        raise ArtifactError(f"{where} is a {config.get('peft_type')!r} adapter; peltc imports LoRA and prompt-"
                            "tuning adapters only", code="A020")
    if config.get("task_type") not in ("SEQ_CLS", None):
        raise ArtifactError(f"{where} has task_type {config.get('task_type')!r}; peltc imports sequence-"
                            "classification adapters (SEQ_CLS)", code="A021")
    refused = []
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(("pissa", "olora", "corda", "loftq")):
        refused.append(f"init_lora_weights {init!r} saved without conversion (its A, B need the base weight "
                       "that init changed; save with peft's path_initial_model_for_weight_conversion)")
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
    dora = bool(config.get("use_dora"))

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    head: dict[str, torch.Tensor] = {}
    other: list[str] = []
    for key, t in raw.items():
        m = _LORA_KEY.match(key[len(PREFIX):] if key.startswith(PREFIX) else key)
        if m:
            pairs.setdefault(m["module"], {})[m["ab"]] = t
            continue
        m = _MAGNITUDE_KEY.match(key[len(PREFIX):] if key.startswith(PREFIX) else key)
        if m and dora:
            pairs.setdefault(m["module"], {})["m"] = t
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
        if set(ab) != {"A", "B"} | ({"m"} if dora else set()):
            have = ", ".join(sorted(ab))
            raise ArtifactError(f"{where}: '{module}' has {have} of lora_A, lora_B"
                                + (", lora_magnitude_vector (use_dora)" if dora else "") + ", not all",
                                code="A020")
        r = int(ab["A"].shape[0])
        if ab["B"].dim() != 2 or int(ab["B"].shape[1]) != r:
            raise ArtifactError(f"{where}: '{module}' has lora_A {tuple(ab['A'].shape)} and lora_B "
                                f"{tuple(ab['B'].shape)}, not (r, in) and (out, r)", code="A020")
        alpha_p = float(_pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8)))
        scale = alpha_p / (math.sqrt(r) if rslora else r)
        alpha = alpha_p if rslora else scale * r     # rsLoRA stays `scaling rs` with peft's alpha
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
        out_groups.append({"name": name, "rank": r, "alpha": alpha, "modules": mods, "rs": rslora, "dora": dora})
        for _, _, module in mods:
            tensors[f"{module}.pelt_lora.{name}.A.weight"] = pairs[module]["A"]
            tensors[f"{module}.pelt_lora.{name}.B.weight"] = pairs[module]["B"]
            if dora:
                tensors[f"{module}.pelt_lora.{name}.magnitude"] = pairs[module]["m"].reshape(-1)
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
    lines = [f"# Imported from the peft {c.get('peft_type', 'LORA')} adapter {adapter.path}"
             + (f" (peft {c['peft_version']})" if c.get("peft_version") else "") + "."]
    if model_ref:
        lines.append(f'model "{model_ref}"' if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_./:@+-]*", model_ref)
                     or model_ref in ("model", "extends", "import", "remove") else f"model {model_ref}")
    dropout = float(c.get("lora_dropout") or 0.0)
    for g in adapter.groups:
        lines.append("")
        if g.get("method") == "ia3":         # peft_ia3.read_ia3's group: no parameters
            lines += [f"ia3 {g['name']} {{", f"  at {', '.join(_targets(g['modules'], adapter.n_layers))}", "}"]
            continue
        if "prompt" in g:
            lines += peft_prompt.spec_lines(g["prompt"])
            continue
        lines.append(f"lora {g['name']} {{")
        lines.append(f"  at {', '.join(_targets(g['modules'], adapter.n_layers))}")
        lines.append(f"  rank {g['rank']}")
        lines.append(f"  alpha {_num(g['alpha'])}")
        if g.get("rs"):
            lines.append("  scaling rs")
        if g.get("dora"):
            lines.append("  dora true")
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
