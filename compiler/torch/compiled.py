"""The record of what the rewrite did to a model, kept on it as ``model._pelt``.

`rewrite` writes it (``apply``, ``attach_runs``) and updates it (folding, merging); `report`,
`artifact` and the runtime read it. It holds no behaviour, so readers need not import the mutator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from peltc.compiler.archs import Family
from peltc.compiler.ir import IR, AttachmentNode
from peltc.compiler.torch.state import PeltState
from peltc.errors import CompileError


@dataclass
class Compiled:
    """What ``apply`` did to a model; kept on the model as ``model._pelt``."""

    ir: IR
    family: Family
    prefix: str                                  # "<base>." for a task model, "" for a base model
    n_layers: int
    state: PeltState
    head_paths: list[str]
    finetune: bool
    paths: dict[str, dict[int | None, list[str]]] = field(default_factory=dict)
    attachments: dict[str, list[AttachmentNode]] = field(default_factory=dict)
    hooks: list[Any] = field(default_factory=list)
    attn_implementation: str | None = None       # the implementation the prefixes wrap
    merged: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)
    runs: list[IR] = field(default_factory=list)  # several runs on one base (`attach_runs`): each run's IR


def compiled(model: nn.Module) -> Compiled:
    """The `Compiled` record of a model the rewrite changed (C012 for any other model)."""
    c = model.__dict__.get("_pelt")
    if c is None:
        raise CompileError("this model was not compiled by peltc (call peltc.compile_model first)", code="C012")
    return c
