"""The front-end pipeline: text → syntax tree → IR → passes (against a model config, no weights).

    PASSES = resolve_layers → check_family → check_ranges → check_gates → check_conflicts → count_params
             → resolve_paths → check_coverage → resolve_gates

Every pass runs even after an earlier one reported errors, so one run shows all of them.

>>> r = build_ir("lora qv { at layers[*].attention.{query, value} }", model="bert-base-uncased")
>>> sum(a.trainable for a in r.ir.attachments())
294912
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peltc.compiler.archs import ModelConfig, load_config
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR
from peltc.compiler.lower import Loader, lower_text
from peltc.compiler.passes.bind_model import bind_model
from peltc.compiler.passes.check_conflicts import check_conflicts
from peltc.compiler.passes.check_coverage import check_coverage
from peltc.compiler.passes.check_family import check_family
from peltc.compiler.passes.check_gates import check_gates
from peltc.compiler.passes.check_ranges import check_ranges
from peltc.compiler.passes.count_params import count_params
from peltc.compiler.passes.resolve_gates import resolve_gates
from peltc.compiler.passes.resolve_layers import resolve_layers
from peltc.compiler.passes.resolve_paths import resolve_paths
from peltc.errors import UsageError

PASSES = (resolve_layers, check_family, check_ranges, check_gates, check_conflicts, count_params, resolve_paths,
          check_coverage, resolve_gates)
_NEEDS_DIAGS = {resolve_layers, check_family, check_ranges, check_gates, check_conflicts, check_coverage}


@dataclass
class Result:
    ir: IR
    diagnostics: Diagnostics
    model: ModelConfig | None
    defaulted: bool = False   # the model is the default (no model argument, no `model` line)

    @property
    def warnings(self):
        return self.diagnostics.warnings

    @property
    def pending(self) -> list[str]:
        return self.diagnostics.pending


ModelArg = str | ModelConfig | dict[str, Any] | None


# `--model none`: check without any model (the checks that need one are pending).
NO_MODEL = "none"


def _model_config(model: ModelArg, ir: IR, diags: Diagnostics, default: str | None = None) -> ModelConfig | None:
    if isinstance(model, ModelConfig):
        return model
    if isinstance(model, dict):
        return ModelConfig("<config>", "<config>", dict(model))
    if model == NO_MODEL:
        return None
    if isinstance(model, str):
        return load_config(model)   # a bad --model is a usage error
    ref = ir.settings.model
    if ref is None:
        return None if default is None else load_config(default)
    try:
        return load_config(ref)
    except UsageError as e:
        span = ir.settings.span.to_span() if ir.settings.span else None
        diags.error("E123", e.diagnostic.message, span, e.diagnostic.help)
        return None


def build_ir(text: str, file: str = "<string>", *, model: ModelArg = None, loader: Loader | None = None,
             default_model: str | None = None) -> Result:
    """Run the whole front end on spec text. Raises `SpecError` carrying every error found. The model:
    ``model``, else the spec's `model` line, else ``default_model`` (the CLI's: `archs.DEFAULT_MODEL`),
    else none (the checks that need one are pending); ``model="none"`` binds none."""
    ir, diags = lower_text(text, file, loader)
    diags.raise_if_errors()
    assert ir is not None
    cfg = _model_config(model, ir, diags, default_model)
    defaulted = model is None and ir.settings.model is None and cfg is not None
    diags.raise_if_errors()
    if bind_model(ir, cfg, diags):
        for p in PASSES:
            if p in _NEEDS_DIAGS:
                p(ir, diags)
            else:
                p(ir)
        diags.raise_if_errors()
    return Result(ir, diags, cfg, defaulted)


def check_file(path: str | Path, *, model: ModelArg = None, default_model: str | None = None) -> Result:
    """`build_ir` on a spec file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read spec '{path}': {getattr(e, 'strerror', None) or e}", code="U001") from None
    return build_ir(text, str(path), model=model, default_model=default_model)
