"""VeRA (Kopiczko et al. 2024) as a peltc plug-in, defined only here (docs/extending.md walks through it).

On a linear W (out × in): ``y = W x + Λ_b B Λ_d A x`` with A (r × in) and B (out × r) frozen random
matrices drawn from ``seed`` for each shape (so every linear of one shape shares them), and learned
vectors d (r, initialised to ``d_init``) and b (out, initialised to 0: the model is unchanged at init).
Trainable per attachment: r + out. Merges into W as ``diag(b) B diag(d) A``.
"""

from __future__ import annotations

import math

from peltc.methods import Drawing, Method, ParamSpec

LINEARS = frozenset({"attention.query", "attention.key", "attention.value", "attention.out", "ffn.gate",
                     "ffn.up", "ffn.down"})


def vera_count(ctx) -> int:
    return int(ctx.params.rank) + ctx.fan_out


def projections(fan_in: int, fan_out: int, rank: int, seed: int):
    """The frozen A (rank × in) and B (out × rank) of one shape, drawn from ``seed`` (kaiming-uniform bounds)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(rank, fan_in, generator=g) * 2 - 1) / math.sqrt(fan_in)
    b = (torch.rand(fan_out, rank, generator=g) * 2 - 1) / math.sqrt(rank)
    return a, b


def vera_build(ctx):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class VeRA(nn.Module):
        def __init__(self, fan_in: int, fan_out: int, rank: int, d_init: float, seed: int):
            super().__init__()
            a, b = projections(fan_in, fan_out, rank, seed)
            self.register_buffer("A", a, persistent=False)
            self.register_buffer("B", b, persistent=False)
            self.d = nn.Parameter(torch.full((rank,), float(d_init)))
            self.b = nn.Parameter(torch.zeros(fan_out))

        def forward(self, x):
            return self.b * F.linear(self.d * F.linear(x, self.A.to(x.dtype)), self.B.to(x.dtype))

        def delta_weight(self):
            return (self.b[:, None] * self.B) @ (self.d[:, None] * self.A)

    p = ctx.args
    return VeRA(ctx.fan_in, ctx.fan_out, int(p.rank), float(p.d_init), int(p.seed))


VERA = Method(
    "vera", "VeRA: frozen shared random A, B per shape; learned scaling vectors d (rank) and b (out)",
    {
        "rank": ParamSpec("int", 256, "rank r of the frozen random projections", min=1),
        "d_init": ParamSpec("float", 0.1, "initial value of every entry of d", min=0.0),
        "seed": ParamSpec("int", 0, "seed of the frozen projections A and B", min=0),
    },
    LINEARS, host="linear", count=vera_count, build=vera_build, merges=True,
    drawing=Drawing("#e3dcf7", "#5b3cc4", edge="parallel", label="+"),
    text=lambda p: f"r {p.rank} · d₀ {p.d_init:g} · seed {p.seed}",
)
