"""The library API: compile a spec onto a loaded model.

    import peltc
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    report = peltc.compile_model("specs/unipelt_apl.pelt", model)
    print(report.render())
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

from peltc.compiler.ir import IR
from peltc.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from peltc.compiler.torch.report import Report

Spec = Union[str, Path, IR]


def _looks_like_path(spec: str) -> bool:
    return "\n" not in spec and "{" not in spec and (spec.endswith(".pelt") or Path(spec).is_file())


def build_spec_ir(spec: Spec, model: "nn.Module") -> IR:
    """The resolved IR of ``spec`` (a path, .pelt text or an IR) against ``model``'s config."""
    if isinstance(spec, IR):
        return spec
    from peltc.compiler.pipeline import build_ir
    config = model.config.to_dict()
    if isinstance(spec, Path) or _looks_like_path(spec):
        p = Path(spec)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read spec '{spec}': {getattr(e, 'strerror', None) or e}", code="U001") from None
        return build_ir(text, str(p), model=config).ir
    return build_ir(spec, "<string>", model=config).ir


def compile_model(spec: Spec, model: "nn.Module") -> "Report":
    """Rewrite ``model`` in place as ``spec`` says; return the rewrite `Report`.

    ``spec`` is a path to a .pelt file, .pelt text, or an already resolved IR. The spec is checked
    against ``model.config`` (raises `SpecError`), then applied (raises `CompileError` when the
    loaded model cannot take it). Afterwards only PELT parameters and the task head train.
    """
    from peltc.compiler.torch.rewrite import apply
    return apply(build_spec_ir(spec, model), model)
