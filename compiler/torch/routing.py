"""Several trained runs on one base model: each example of a batch goes through its own run.

``rewrite.attach_runs`` compiles each run's IR onto the shared model with its instance names prefixed by
``r<index>_`` (``pelt_lora.r0_qv``, ``pelt_adapters.r2_ffn_adapter``; module paths otherwise unchanged),
and marks every PELT module with its run. Before a forward the entry point (`peltc.api.Runs`) sets
``PeltState.route``, the run index of each example (batch,); then

- adapters, LoRA and BitFit deltas multiply their contribution by ``route == run`` per example (their
  gates included), and skip themselves when their run has no example in the batch;
- a prefix's key/value columns are visible only to its run's examples (the other runs' prefix columns
  are masked out of the attention mask: ``prefix.routed_mask``), so each example attends to exactly
  the prefix it would see alone;
- ``head { pool mean }`` (per run) replaces the pooled token only for the examples of runs that pool so;
- each run keeps its own task head: every head module of the family (``classifier``, DistilBERT's
  ``pre_classifier``, DeBERTa's ``pooler`` …) becomes a `RoutedHead` holding one copy per run
  (``classifier.pelt_heads.r0.weight``), each computing its run's rows; the last one's outputs are
  padded to the widest run with ``-inf`` (`PAD`), so a softmax or an argmax over a row is its run's.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from peltc.compiler.torch.state import PeltState

PAD = float("-inf")
KINDS = ("pelt_adapters", "pelt_lora", "pelt_bitfit", "pelt_prefix", "pelt_ia3", "pelt_reft", "pelt_prefix_encoders",
         "pelt_delta")
_KIND_RE = re.compile(r"(^|\.)(" + "|".join(KINDS) + r")\.([^.]+)\.")


def run_prefix(index: int) -> str:
    """The prefix of run ``index``'s instance names on a routed model."""
    return f"r{index}_"


def routed_name(index: int, name: str, head_paths: list[str]) -> str | None:
    """The name on the routed model of parameter ``name`` of run ``index``'s artifact (its PELT instance
    renamed, or its head under ``pelt_heads.r<index>``); None for a name that is neither (a base weight)."""
    for hp in head_paths:
        if name.startswith(hp + "."):
            return f"{hp}.pelt_heads.r{index}.{name[len(hp) + 1:]}"
    m = _KIND_RE.search(name)
    if m is None:
        return None
    return f"{name[:m.start(3)]}{run_prefix(index)}{name[m.start(3):]}"


_HEAD_RE = re.compile(r"\.pelt_heads\.r(\d+)\.")


def run_of(name: str) -> int | None:
    """The run a routed model's parameter belongs to (None: a base weight)."""
    m = _HEAD_RE.search(name)
    if m is not None:
        return int(m.group(1))
    m = _KIND_RE.search(name)
    if m is not None and re.match(r"r\d+_", m.group(3)):
        return int(m.group(3)[1:m.group(3).index("_")])
    return None


class RoutedHead(nn.Module):
    """One task-head module per run (``pelt_heads["r<i>"]``): row b of the output is run ``route[b]``'s
    module applied to row b of the input. Outputs narrower than the widest run's are padded with `PAD`."""

    def __init__(self, heads: dict[str, nn.Module], state: PeltState, width: int | None = None):
        super().__init__()
        self.pelt_heads = nn.ModuleDict(heads)
        self.width = width          # the widest run's output (every batch is padded to it)
        self.__dict__["_state"] = state

    def extra_repr(self) -> str:
        return f"runs={len(self.pelt_heads)}, width={self.width}"

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        route = self.__dict__["_state"].route
        if route is None:
            from peltc.errors import CompileError
            raise CompileError("this model carries several runs (peltc.load_runs) and was called without a route",
                               code="C018", help="call it through the Runs object load_runs returned")
        route = route.to(x.device)
        out, width, parts = None, self.width or 0, []
        for key, head in self.pelt_heads.items():
            idx = (route == int(key[1:])).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            y = head(x.index_select(0, idx), *args, **kwargs)
            parts.append((idx, y))
            width = max(width, y.shape[-1])
        if not parts:
            raise RuntimeError("no example of the batch belongs to a run of this model")
        y0 = parts[0][1]
        out = y0.new_full((x.shape[0], *y0.shape[1:-1], width), PAD)
        for idx, y in parts:
            if y.shape[-1] == width:
                out.index_copy_(0, idx, y)
            else:
                pad = y.new_full((*y.shape[:-1], width - y.shape[-1]), PAD)
                out.index_copy_(0, idx, torch.cat([y, pad], dim=-1))
        return out
