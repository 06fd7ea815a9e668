"""Where and how fast a run computes: the device (``--device auto|cpu|cuda[:N]``), the precision
(``--precision fp32|bf16|fp16``: autocast) and ``--torch-compile`` — one `Speed` for training (`compile`,
`grid`) and serving (`eval`, `predict`, `generate`, several runs on one base) and the library.

- Precision is autocast only: every parameter stays fp32 (the base's and the trainable PELT parameters —
  gates, LoRA, prefixes, adapters — are fp32 master weights; the optimiser steps them in fp32), matmuls run
  in bf16 / fp16 where autocast says so. The artifact is therefore always saved in fp32.
  Training hands the precision to the HF Trainer (``TrainingArguments(bf16=…, fp16=…, use_cpu=…)``);
  serving enters ``torch.autocast`` itself (`autocast`).
- A precision the device cannot run is refused before anything loads (U197): fp16 on a CPU, bf16 on a GPU
  without bf16. A device that is not there is refused too (U196).
- ``--torch-compile``: the Trainer's ``torch_compile`` (inductor) for training, `compiled` for serving;
  every batch's batch and sequence dimensions are marked dynamic (`mark_dynamic`) so that varying lengths and
  batch sizes compile once instead of once per shape (bench/overhead.py counts the recompilations).

No torch at import: the flags are parsed and their syntax checked before the training stack loads.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from peltc.errors import UsageError

PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_BACKEND = "inductor"     # torch.compile's backend, training and serving (tests use aot_eager: time)
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Speed:
    """``device``: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N; ``precision``: fp32, bf16
    or fp16 (autocast; None before serving: the run's own, `serve.run_speed`); ``torch_compile``: compile the
    model (dynamic shapes)."""

    device: str = "auto"
    precision: str = "fp32"
    torch_compile: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]


DEFAULT = Speed()


def check_syntax(speed: Speed) -> None:
    """The flags' spelling (no torch): U196 for a device that is not auto, cpu, cuda or cuda:N; U106 for a
    precision that is not one of `PRECISIONS`."""
    if not _DEVICE.match(speed.device):
        raise UsageError(f"--device {speed.device!r} is not a device", code="U196",
                         help="--device auto (default: CUDA when present, else the CPU), cpu, cuda or cuda:N")
    if speed.precision is not None and speed.precision not in PRECISIONS:
        raise UsageError(f"--precision {speed.precision!r} is not a valid choice", code="U106",
                         help=f"--precision takes {', '.join(PRECISIONS)}")


def resolve(speed: Speed | None) -> Speed:
    """``speed`` with ``auto`` replaced by the device that is there, checked against it: a CUDA device that
    is not present (U196), a precision the device cannot run (U197: fp16 on a CPU, bf16 on a GPU without
    bf16 support)."""
    import torch

    speed = speed or DEFAULT
    check_syntax(speed)
    device = speed.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= n:
            there = f"{n} CUDA device{'s' * (n != 1)} here" if n else "no CUDA device here (torch " \
                    f"{torch.__version__}{'' if torch.version.cuda else ', built without CUDA'})"
            raise UsageError(f"--device {device}: {there}", code="U196",
                             help="--device cpu, or --device auto (the best available)")
        if speed.precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise UsageError(f"--precision bf16: {torch.cuda.get_device_name(index)} ({device}) does not support "
                             "bfloat16", code="U197", help="--precision fp16 (autocast with loss scaling) or fp32")
    elif speed.precision == "fp16":
        raise UsageError("--precision fp16 is not supported on the CPU (device cpu): autocast runs fp16 on CUDA "
                         "only", code="U197", help="--precision bf16 (CPU autocast) or fp32, or --device cuda")
    return replace(speed, device=device)


def training_arguments(speed: Speed) -> dict[str, Any]:
    """The ``TrainingArguments`` of a resolved `Speed`: the Trainer does the autocast (its parameters stay
    fp32), the device (``use_cpu``) and ``torch.compile`` (inductor)."""
    return {"use_cpu": speed.device == "cpu", "bf16": speed.precision == "bf16",
            "fp16": speed.precision == "fp16", "torch_compile": speed.torch_compile,
            **({"torch_compile_backend": COMPILE_BACKEND} if speed.torch_compile else {}),
            "bf16_full_eval": False, "fp16_full_eval": False}


def autocast(speed: Speed | None):
    """The autocast context of a resolved `Speed` (a null context in fp32)."""
    if speed is None or speed.precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if speed.precision == "bf16" else torch.float16
    return torch.autocast(device_type=speed.device_type, dtype=dtype)


def mark_dynamic(batch: dict) -> dict:
    """Mark every tensor's batch and sequence dimensions dynamic for ``torch.compile``, so a new length or
    batch size reuses the compiled graph instead of compiling another (``maybe_mark_dynamic``: a dimension
    the model specialises stays static instead of failing). Returns ``batch``."""
    import torch

    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim() >= 1:
            for d in range(min(v.dim(), 2)):
                if v.shape[d] > 1:
                    torch._dynamo.maybe_mark_dynamic(v, d)
    return batch


class DynamicCollator:
    """A data collator whose batches have their batch and sequence dimensions marked dynamic (`mark_dynamic`)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, features):
        return mark_dynamic(self.collate(features))


def to_device(batch: dict, model) -> dict:
    """``batch``'s tensors on ``model``'s device."""
    import torch

    dev = next(model.parameters()).device
    return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def record(speed: Speed | None) -> dict[str, Any]:
    """What a run records of how it computed (run.json, metrics.json)."""
    return (speed or DEFAULT).to_dict()


def add_flags(p: argparse.ArgumentParser, *, training: bool) -> None:
    """``--device``, ``--precision`` and ``--torch-compile`` on a command's parser."""
    g = p.add_argument_group("device and speed")
    g.add_argument("--device", default="auto", help="auto (default: CUDA when present, else the CPU), cpu, cuda, "
                                                    "cuda:N")
    g.add_argument("--precision", default=None if not training else "fp32", choices=PRECISIONS,
                   help="autocast precision (parameters stay fp32; artifacts are saved in fp32): fp32 (default"
                        f"{'' if training else ': the run’s own'}), bf16, fp16 (CUDA only)")
    g.add_argument("--torch-compile", action="store_true",
                   help="torch.compile the model (dynamic shapes: compiles once, not per length); pays on GPUs, "
                        "often loses on CPUs (docs/results.md)")


def from_args(a, default_precision: str = "fp32") -> Speed:
    """The `Speed` of parsed flags (see `add_flags`), its spelling checked."""
    s = Speed(device=a.device, precision=a.precision or default_precision, torch_compile=bool(a.torch_compile))
    check_syntax(s)
    return s


def to_device_model(model, speed: Speed | None):
    """``model`` on the resolved device of ``speed`` (the CPU when None). Returns ``model``."""
    return model.to(speed.device if speed is not None else "cpu")


def serving(model, speed: Speed | None):
    """A loaded run's model ready to serve: on the device, and with ``torch_compile`` its forward compiled
    (dynamic shapes, in place: `compiler.torch.rewrite.compile_forward`). Returns ``model``."""
    to_device_model(model, speed)
    if speed is not None and speed.torch_compile:
        from peltc.compiler.torch.rewrite import compile_forward
        compile_forward(model, dynamic=True, backend=COMPILE_BACKEND)
    return model


def recorded(run: dict[str, Any]) -> str:
    """The precision a run folder's ``run.json`` (as read) says the run was trained and scored in."""
    p = (run.get("speed") or {}).get("precision") or run.get("precision")
    return p if p in PRECISIONS else "fp32"


def flags(speed: Speed | None) -> list[str]:
    """The command-line flags that say ``speed`` (none for the defaults): what `peltc grid` hands each run."""
    s = speed or DEFAULT
    return ([*(["--device", s.device] if s.device != DEFAULT.device else []),
             *(["--precision", s.precision] if s.precision not in (None, DEFAULT.precision) else []),
             *(["--torch-compile"] if s.torch_compile else [])])
