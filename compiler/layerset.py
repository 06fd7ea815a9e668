"""Layer sets: expanding selectors over a model's layers and printing sets of layers compactly."""

from __future__ import annotations


def expand_selector(items, n_layers: int) -> tuple[list[int], list[int]]:
    """Layers selected (sorted, unique) and the indices of items that are out of range."""
    layers: set[int] = set()
    bad: list[int] = []
    for k, (start, stop, step) in enumerate(items):
        if start is None and stop is None:
            layers.update(range(n_layers))
            continue
        s = start + n_layers if start is not None and start < 0 else (start or 0)
        e = (n_layers - 1) if stop is None else (stop + n_layers if stop < 0 else stop)
        if not (0 <= s < n_layers) or not (0 <= e < n_layers):
            bad.append(k)
            continue
        layers.update(range(s, e + 1, step))
    return sorted(layers), bad


def compact_layers(layers: list[int], sep: str = "..", steps: bool = False) -> str:
    """``[0, 1, 2, 5]`` → ``0..2, 5``; with ``steps``, an arithmetic run prints as ``0..10 by 2``."""
    if not layers:
        return "none"
    if len(layers) == 1:
        return str(layers[0])
    gaps = {b - a for a, b in zip(layers, layers[1:])}
    if steps and len(gaps) == 1:
        step = gaps.pop()
        return f"{layers[0]}{sep}{layers[-1]}" + ("" if step == 1 else f" by {step}")
    runs, start, prev = [], layers[0], layers[0]
    for x in layers[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        runs.append(str(start) if start == prev else f"{start}{sep}{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(runs)
