"""The library API: compile a spec onto a loaded model, save its trained PELT parameters, load them
onto a fresh copy of the base model.

    import peltc
    from peltc.api import load_adapter, save_adapter
    from peltc.compiler.archs import packaged_model_dir
    path = packaged_model_dir()        # the packaged MiniLM, or any model directory / Hub name
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    report = peltc.compile_model("specs/unipelt_apl.pelt", model)
    print(report.render())
    ...                                # train
    save_adapter(model, "adapter/")
    fresh = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    load_adapter(fresh, "adapter/")
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from peltc.compiler.ir import IR
from peltc.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from peltc.compiler.torch.report import Report

Spec = Union[str, Path, IR]


def _looks_like_path(spec: str) -> bool:
    return "\n" not in spec and "{" not in spec and (spec.endswith(".pelt") or Path(spec).is_file())


# The spec text each compiled model was built from (saved into its artifact's manifest).
_SPEC_TEXT: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def _spec_text(spec: Spec) -> tuple[str, str]:
    """(text, file name) of a spec given as a path or as .pelt text."""
    if isinstance(spec, Path) or _looks_like_path(spec):
        p = Path(spec)
        try:
            return p.read_text(encoding="utf-8"), str(p)
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read spec '{spec}': {getattr(e, 'strerror', None) or e}", code="U001") from None
    return spec, "<string>"


def build_spec_ir(spec: Spec, model: "nn.Module") -> IR:
    """The resolved IR of ``spec`` (a path, .pelt text or an IR) against ``model``'s config."""
    if isinstance(spec, IR):
        return spec
    from peltc.compiler.pipeline import build_ir
    text, file = _spec_text(spec)
    return build_ir(text, file, model=model.config.to_dict()).ir


def compile_model(spec: Spec, model: "nn.Module") -> "Report":
    """Rewrite ``model`` in place as ``spec`` says; return the rewrite `Report`.

    ``spec`` is a path to a .pelt file, .pelt text, or an already resolved IR. The spec is checked
    against ``model.config`` (raises `SpecError`), then applied (raises `CompileError` when the
    loaded model cannot take it). Afterwards only PELT parameters and the task head train.
    """
    from peltc.compiler.torch.rewrite import apply
    report = apply(build_spec_ir(spec, model), model)
    if not isinstance(spec, IR):
        _SPEC_TEXT[model] = _spec_text(spec)[0]
    return report


def save_adapter(model: "nn.Module", out_dir: Union[str, Path]) -> Path:
    """Save what ``model`` trains — its PELT parameters and the task head — to ``out_dir``: one
    safetensors file and a manifest (names, shapes, sha256, the spec and its resolved IR, the base
    model, versions), written atomically. ``model`` must have been compiled by `compile_model`.
    A prefix's reparameterisation MLP is folded into plain prefixes first (identical outputs).
    Returns ``out_dir``."""
    from peltc.compiler.torch.artifact import save_artifact
    from peltc.compiler.torch.rewrite import compiled, fold_prefix
    ir = compiled(model).ir
    fold_prefix(model)
    base = getattr(model.config, "_name_or_path", "") or ir.settings.model or "<model>"
    return save_artifact(model, out_dir, ir_dict=ir.to_dict(), spec_text=_SPEC_TEXT.get(model, ""),
                         spec_hash=ir.settings.spec_hash or "", base_model=str(base))


def load_adapter(model: "nn.Module", adapter_dir: Union[str, Path]) -> "Report":
    """Apply a saved artifact to ``model``, a freshly loaded copy of the base model it was trained
    on: the artifact's spec (its resolved IR) is compiled onto ``model`` and every saved tensor is
    loaded strictly (same names, shapes and dtypes, nothing missing or extra; the checksum and the
    base model's config are checked — `ArtifactError` otherwise). Returns the rewrite `Report`."""
    from peltc.compiler.torch.artifact import load_into, load_tensors
    from peltc.compiler.torch.rewrite import apply, fold_prefix
    from peltc.errors import ArtifactError
    manifest, tensors = load_tensors(adapter_dir)
    try:
        ir = IR.from_dict(manifest["ir"])
    except Exception as e:   # pydantic / key errors: the manifest's IR is not ours
        raise ArtifactError(f"the artifact's IR cannot be read: {e}", code="A012") from None
    report = apply(ir, model)
    fold_prefix(model)
    load_into(model, manifest, tensors, spec_hash=ir.settings.spec_hash)
    if manifest.get("spec"):
        _SPEC_TEXT[model] = manifest["spec"]
    return report
