"""`LinearHost`: the wrapper a method puts around a base linear (wrap, don't subclass).

The base ``nn.Linear`` stays as ``base_layer`` (its parameter names ``…base_layer.weight``, as peft's);
the host answers for it where code reads a linear (``in_features``, ``out_features``, ``weight``,
``bias``). `lora.LoraLinear` and `delta.DeltaLinear` are hosts; what they add lives in their own
`nn.ModuleDict`.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearHost(nn.Module):
    """A base linear (``base_layer``) that methods add to; reads like the linear it wraps."""

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias
