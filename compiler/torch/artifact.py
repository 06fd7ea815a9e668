"""Adapter-only artifacts: the trainable tensors (safetensors) plus a manifest, written atomically
and loaded strictly.

    <dir>/manifest.json                 names, shapes, dtypes, sha256 of the weights file, the spec
                                        text and hash, the resolved IR, base model name and config
                                        hash, peltc / torch / transformers versions
    <dir>/weights-<sha12>.safetensors   the tensors (the manifest names the file it belongs to)

Atomicity: a save writes a *new* weights file under a content-addressed name, fsyncs it, then
replaces ``manifest.json`` in one ``os.replace``; only then is the previous weights file removed.
A save killed at any point leaves either the previous artifact or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from peltc.compiler.methods import PluginProblem, find_method, plugin_record, source_digest
from peltc.errors import ArtifactError

MANIFEST = "manifest.json"
FORMAT = "peltc-artifact/1"


def config_hash(config: Mapping[str, Any]) -> str:
    """A hash of the architecture-defining part of a HF config (ignores bookkeeping keys)."""
    skip = {"_name_or_path", "transformers_version", "architectures", "id2label", "label2id", "num_labels",
            "problem_type", "torch_dtype", "dtype", "_attn_implementation", "_attn_implementation_autoset",
            "finetuning_task", "output_attentions", "output_hidden_states", "return_dict", "use_cache",
            "_commit_hash", "auto_map", "_attn_implementation_internal"}
    core = {k: v for k, v in sorted(config.items()) if k not in skip and not k.startswith("_")}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()


def kept_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The buffers an artifact keeps: a principal-init LoRA's starting A₀, B₀ (``…pelt_lora.<name>.A0``),
    from which loading restores the base weight's residual W − s·B₀A₀ exactly."""
    return {n: b for n, b in model.named_buffers() if ".pelt_lora." in n and n.rsplit(".", 1)[1] in ("A0", "B0")}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that trains: PELT parameters and the task head (finetune: everything), and the
    `kept_buffers`; on the CPU and in fp32 whatever the training precision (a floating-point parameter cast to
    bf16 / fp16 is saved as fp32)."""
    return {n: (p.detach().float() if p.is_floating_point() else p.detach()).to("cpu").contiguous() for n, p in
            [*((n, p) for n, p in model.named_parameters() if p.requires_grad), *kept_buffers(model).items()]}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from peltc.version import __version__
    try:
        tf = version("transformers")
    except PackageNotFoundError:
        tf = "absent"
    return {"peltc": __version__, "torch": torch.__version__, "transformers": tf}


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_artifact(model: torch.nn.Module, out_dir: str | Path, *, ir_dict: dict[str, Any], spec_text: str,
                  spec_hash: str, base_model: str, extra: dict[str, Any] | None = None) -> Path:
    """Write the model's trainable tensors and a manifest to ``out_dir`` atomically."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = trainable_state(model)
    if not tensors:
        raise ArtifactError("nothing to save: the model has no trainable parameters", code="A001")
    fd, tmp = tempfile.mkstemp(prefix=".weights-", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": FORMAT})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        digest = _sha256(Path(tmp))
        weights = out / f"weights-{digest[:12]}.safetensors"
        os.replace(tmp, weights)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    cfg = model.config.to_dict() if hasattr(model, "config") else {}
    manifest = {
        "format": FORMAT,
        "weights": weights.name,
        "sha256": {weights.name: digest},
        "tensors": {n: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")} for n, t in tensors.items()},
        "num_parameters": sum(t.numel() for t in tensors.values()),
        "spec": spec_text,
        "spec_hash": spec_hash,
        "ir": ir_dict,
        "base_model": {"name": base_model, "model_type": cfg.get("model_type"), "config_hash": config_hash(cfg),
                       "num_labels": cfg.get("num_labels")},
        "versions": _versions(),
        "gate_semantics": gate_semantics(model),
        **(extra or {}),
    }
    used = plugin_record(n.get("method") for n in ir_dict.get("nodes", []) if n.get("kind") == "instance")
    if used:    # which plug-in methods loading it needs (built-in-only manifests stay as they were)
        manifest["plugins"] = used
    fd, tmpm = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmpm, out / MANIFEST)
    _fsync_dir(out)
    # Now the new artifact is complete; drop what the previous one referenced and stale temp files.
    for p in out.iterdir():
        if p.name.startswith((".weights-", ".manifest-")) or (
                p.name.startswith("weights-") and p.name != weights.name):
            p.unlink(missing_ok=True)
    return out


def _read_manifest(d: Path, missing_ok: bool = False) -> dict[str, Any] | None:
    p = d / MANIFEST
    if not p.exists():
        if missing_ok:
            return None
        raise ArtifactError(f"no artifact in '{d}': {MANIFEST} is missing", code="A002",
                            help="point at a run's adapter directory (it holds manifest.json)")
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        if missing_ok:
            return None
        raise ArtifactError(f"corrupt manifest '{p}': {e}", code="A003") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        if missing_ok:
            return None
        raise ArtifactError(f"'{p}' is not a peltc artifact manifest (format {m.get('format') if isinstance(m, dict) else '?'!r})",
                            code="A003")
    return m


def read_manifest(d: str | Path) -> dict[str, Any]:
    return _read_manifest(Path(d))


def load_tensors(d: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify an artifact: manifest, checksum, tensor names/shapes/dtypes against the manifest."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(d)
    m = _read_manifest(d)
    w = d / m["weights"]
    if not w.exists():
        raise ArtifactError(f"artifact weights file '{w}' is missing", code="A004")
    actual = _sha256(w)
    expected = m["sha256"].get(w.name)
    if actual != expected:
        raise ArtifactError(f"checksum mismatch for '{w}': manifest says sha256 {expected}, file has {actual}",
                            code="A005", help="the file is corrupt or was changed after saving")
    try:
        tensors = load_file(str(w))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"cannot read '{w}': {e}", code="A006") from None
    listed = m["tensors"]
    for n in listed.keys() - tensors.keys():
        raise ArtifactError(f"weights file lacks tensor '{n}' listed in the manifest", code="A007")
    for n in tensors.keys() - listed.keys():
        raise ArtifactError(f"weights file has tensor '{n}' not listed in the manifest", code="A007")
    return m, tensors


def read_ir(manifest: dict[str, Any], where: str | Path | None = None):
    """The one manifest → IR reader: the resolved IR an artifact's manifest records. An IR that does not
    parse (not ours, or damaged) is ArtifactError A012; ``where`` names the artifact in the message."""
    from peltc.compiler.ir import IR
    need_plugins(manifest, where)
    try:
        return IR.from_dict(manifest["ir"])
    except Exception as e:  # pydantic / key errors: the manifest's IR is not ours
        what = f"the IR of '{where}'" if where is not None else "the artifact's IR"
        raise ArtifactError(f"{what} cannot be read: {e}", code="A012") from None


def need_plugins(manifest: dict[str, Any], where: str | Path | None = None) -> None:
    """A030 unless every method the manifest's IR uses is registered (an installed entry point of that
    name is loaded here); the message names the plug-in the run was saved with. A031 when the method comes
    from a plug-in file whose content differs from the one the run was saved with (the sha256 the manifest
    records): a changed method may compute something else with the same weights."""
    nodes = (manifest.get("ir") or {}).get("nodes", []) if isinstance(manifest.get("ir"), dict) else []
    recorded = {r.get("method"): r for r in manifest.get("plugins") or [] if isinstance(r, dict)}
    for name in sorted({n.get("method") for n in nodes if isinstance(n, dict) and n.get("kind") == "instance"}):
        try:
            method = find_method(name)
            known = method is not None
        except PluginProblem as e:
            raise ArtifactError(f"the run needs plug-in method '{name}': {e.message}", code="A030",
                                help=e.help) from None
        if not known:
            origin = recorded.get(name, {}).get("origin", "a plug-in")
            what = f" '{where}'" if where is not None else ""
            raise ArtifactError(f"the run{what} needs the plug-in method '{name}' (saved with {origin}), which is "
                                "not loaded", code="A030",
                                help=f"pass --plugin {Path(origin).name if origin.endswith('.py') else 'FILE'} "
                                     "(peltc.methods.load_plugin in Python), or install the package providing it")
        saved = recorded.get(name, {}).get("sha256")
        now = None if method.builtin else source_digest(method.origin)
        if saved and now is not None and now != saved:
            what = f" '{where}'" if where is not None else ""
            raise ArtifactError(f"the plug-in method '{name}' is loaded from {method.origin}, whose content differs "
                                f"from the file the run{what} was saved with (sha256 {saved[:12]}…)", code="A031",
                                help="load the plug-in file the run was saved with; a changed method may compute "
                                     "something else with the same weights")


def read_task_record(manifest: dict[str, Any], key: str, build):
    """The task an artifact's manifest records under ``key`` (``own_data``, ``generation``), built by
    ``build`` (a task class's ``from_dict``), or None when it records none. A record that does not build
    is ArtifactError A012, as an unreadable IR is."""
    if not manifest.get(key):
        return None
    try:
        return build(manifest[key])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"the artifact's task record cannot be read: {e}", code="A012") from None


def read_artifact(d: str | Path):
    """An artifact read and verified (`load_tensors`) with its IR (`read_ir`): ``(manifest, tensors, ir)``."""
    manifest, tensors = load_tensors(d)
    return manifest, tensors, read_ir(manifest)


# What a family's gates compute beyond the spec (`ir.GateBehaviour`, resolved into the IR by
# `passes.resolve_gates`): an artifact's IR records it (and the manifest's ``gate_semantics`` repeats it, for
# a peltc that predates the record in the IR), and one whose sigmoid gates were trained under another
# behaviour is refused (A015) — its gate weights would be read as something else. Artifacts written before
# either record existed had the encoder behaviour everywhere (`GateBehaviour()`).
_GATE_FIELDS = ("gate_source_norm", "prefix_gate", "prefix_gate_init")


def gate_semantics(model: torch.nn.Module) -> dict[str, Any]:
    """The gate behaviour an IR resolves to on ``model`` now (`passes.resolve_gates`: its family's; an
    unknown family: the encoders')."""
    from peltc.compiler.archs import family_of_model
    from peltc.compiler.ir import GateBehaviour

    fam = family_of_model(model)
    return (fam.gates if fam is not None else GateBehaviour()).model_dump()


def saved_gate_semantics(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The gate behaviour the artifact's IR was resolved under: its IR's record, else (an artifact written
    before the IR carried it) the manifest's ``gate_semantics``, else (before that) the encoders'."""
    from peltc.compiler.ir import GateBehaviour

    settings = next((n for n in (manifest.get("ir") or {}).get("nodes", []) if n.get("kind") == "settings"), {})
    saved = settings.get("gate_behaviour") or manifest.get("gate_semantics")
    return GateBehaviour(**saved).model_dump() if saved else GateBehaviour().model_dump()


def _has_sigmoid_gate(ir: Mapping[str, Any] | None) -> bool:
    return any(n.get("kind") == "gate" and (n.get("gate") or {}).get("kind") == "sigmoid"
               for n in (ir or {}).get("nodes", []))


def check_gate_semantics(model: torch.nn.Module, manifest: dict[str, Any]) -> None:
    """An artifact with sigmoid gates loads only where its gates compute what they computed in training:
    the saved IR's resolved gate behaviour against the one resolved for ``model`` now."""
    if not _has_sigmoid_gate(manifest.get("ir")):
        return
    saved, now = saved_gate_semantics(manifest), gate_semantics(model)
    diff = [f"{k}: {saved.get(k)!r} when saved, {now[k]!r} now" for k in _GATE_FIELDS if saved.get(k) != now[k]]
    if diff:
        v = (manifest.get("versions") or {}).get("peltc", "?")
        raise ArtifactError("the artifact's sigmoid gates were trained under other gate semantics for this "
                            "model family than this peltc applies (" + "; ".join(diff) + ")", code="A015",
                            help=f"retrain it with this peltc, or load it with the peltc that saved it ({v})")


def check_base(model: torch.nn.Module, manifest: dict[str, Any]) -> None:
    """The artifact was trained on this base model's architecture (model_type and config hash): A008;
    its gates compute here what they computed in training: A015."""
    cfg = model.config.to_dict() if hasattr(model, "config") else {}
    base = manifest["base_model"]
    if base.get("model_type") != cfg.get("model_type"):
        raise ArtifactError(f"base architecture mismatch: artifact was trained on model_type "
                            f"{base.get('model_type')!r}, this model is {cfg.get('model_type')!r}", code="A008")
    if base.get("config_hash") != config_hash(cfg):
        raise ArtifactError(f"base model config mismatch: artifact config hash {base.get('config_hash')[:12]}…, "
                            f"this model's {config_hash(cfg)[:12]}…", code="A008",
                            help=f"load it on the base model it was trained on: {base.get('name')}")
    check_gate_semantics(model, manifest)


def load_into(model: torch.nn.Module, manifest: dict[str, Any], tensors: dict[str, torch.Tensor],
              *, spec_hash: str | None = None) -> None:
    """Copy an artifact's tensors into a model prepared with the same spec. Strict: every trainable
    parameter must be present with the same shape and dtype, and nothing else may be."""
    check_base(model, manifest)
    if spec_hash is not None and spec_hash != manifest["spec_hash"]:
        raise ArtifactError(f"spec mismatch: artifact spec hash {manifest['spec_hash'][:12]}…, "
                            f"given spec {spec_hash[:12]}…", code="A009")
    from peltc.compiler.torch.rewrite.attach import restore_residuals

    _copy_strict({n: p for n, p in model.named_parameters() if p.requires_grad} | kept_buffers(model), tensors)
    restore_residuals(model)


def load_run_into(model: torch.nn.Module, index: int, manifest: dict[str, Any],
                  tensors: dict[str, torch.Tensor]) -> None:
    """Copy run ``index``'s artifact into a model that `rewrite.attach_runs` prepared: each tensor under its
    routed name (`routing.routed_name`), strictly — every parameter of that run present with the same shape
    and dtype, nothing else."""
    from peltc.compiler.torch.compiled import compiled
    from peltc.compiler.torch.routing import run_of, routed_name

    check_base(model, manifest)
    heads = compiled(model).head_paths

    def canonical(name: str) -> str:     # another run's wrapper (LoRA, adapter) may sit around a module
        return name.replace(".base_layer.", ".")

    renamed = {}
    for n, t in tensors.items():
        r = routed_name(index, n, heads)
        if r is None:
            raise ArtifactError(f"artifact tensor '{n}' is neither a PELT parameter nor the task head (a base "
                                "weight, as full fine-tuning trains): it cannot share the base model", code="A010")
        renamed[canonical(r)] = t
    _copy_strict({canonical(n): p for n, p in [*model.named_parameters(), *kept_buffers(model).items()]
                  if run_of(n) == index}, renamed)


def _copy_strict(params: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> None:
    missing = sorted(params.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - params.keys())
    if missing:
        raise ArtifactError(f"artifact is missing key '{missing[0]}'" +
                            (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""), code="A010")
    if unexpected:
        raise ArtifactError(f"artifact has unexpected key '{unexpected[0]}'" +
                            (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""), code="A010")
    for n, p in params.items():
        t = tensors[n]
        if tuple(t.shape) != tuple(p.shape):
            raise ArtifactError(f"shape mismatch for '{n}': expected {tuple(p.shape)}, artifact has {tuple(t.shape)}",
                                code="A011")
        if t.dtype != p.dtype:
            raise ArtifactError(f"dtype mismatch for '{n}': expected {p.dtype}, artifact has {t.dtype}", code="A011")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[n])
