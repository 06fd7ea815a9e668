"""See inside a run: what the PELT modules and the features do at every dev evaluation.

    diag = Diagnostics(model, probe_split, tokenizer, task)     # a TrainerCallback
    ...train with callbacks=[diag]...
    diag.save(run_dir)      # diagnostics.json + diagnostics.png

At the start of training and after every evaluation, one extra forward pass (no grad, eval mode)
on a fixed probe of ``PROBE`` dev examples measures:

- ``gates``: each gate's mean per (instance / point, layer) on the probe;
- ``norms``: the L2 norm of each instance's trainable tensors (and, for prefixes, the mean norm of
  the effective prefix key/value vectors per layer: what attention actually sees);
- ``prefix_mass``: per layer, the attention mass that real tokens put on prefix positions (mean
  over heads and real query tokens) — computed by a probe observer in the prefix attention function;
- ``features``: the spread of the pooled features the head reads (mean per-dimension std across the
  probe; ``relative_std`` to the value at step 0) and the mean cosine of each example to the probe's
  mean feature — a collapse detector: all examples mapped to one point gives std → 0, cosine → 1;
- ``predictions``: the std of the scores (regression) or the share of the most predicted class.

What the head reads and what the predictions say is the task's probe (`task.Task.probe`): a generation
task (a causal LM on prompt → completion pairs) has no pooled features or classes; there ``features`` is the spread of what the LM head reads at each example's last prompt token (the state that
predicts the completion's first token: collapse means every prompt gets the same answer), and
``predictions`` holds, teacher-forced on the probe, ``majority_share`` (the share of the most predicted
first completion token), ``exact_match`` (every completion token the arg-max) and ``loss`` (the mean
cross-entropy of the completion tokens).

Cheap enough to stay on: one forward of ``PROBE`` examples per evaluation (evaluations run ~1,000).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

PROBE = 64
PROBE_BATCH = 16     # the probe runs in length-sorted batches: one padded batch of 64 cost 4× the compute


def probe_rows(n: int, size: int = PROBE) -> list[int]:
    """``size`` indices spread evenly over ``n`` rows (all when fewer)."""
    if n <= size:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, size)})


def _instance_norms(model) -> dict[str, float]:
    from peltc.compiler.torch.report import _instance_of
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.requires_grad and "pelt_" in name:
            inst = _instance_of(name)
            if inst is not None:
                sq[inst] = sq.get(inst, 0.0) + float(p.detach().float().pow(2).sum())
    return {k: math.sqrt(v) for k, v in sorted(sq.items())}


def _prefix_norms(model) -> dict[str, dict[str, float]]:
    """Mean L2 norm of the effective prefix keys and values per layer, per instance (ungated)."""
    from peltc.compiler.torch.prefix import Prefix
    out: dict[str, dict[str, float]] = {}
    layer_of = _layer_index(model)
    for name, m in model.named_modules():
        if isinstance(m, Prefix) and m.enabled:
            inst = name.rsplit(".", 1)[-1]
            kv = m.kv().detach().float()                                   # (2, L, H)
            layer = layer_of(name)
            out.setdefault(inst, {})[str(layer)] = float(kv.norm(dim=-1).mean())
    return out


def _layer_index(model):
    from peltc.compiler.archs import family_of_model
    from peltc.compiler.torch.targets import layer_of
    family = family_of_model(model)
    return (lambda name: layer_of(family, name)) if family else (lambda name: None)


class Diagnostics(TrainerCallback):
    """Records the measurements above at the start of training and after every evaluation."""

    def __init__(self, model, probe, tokenizer, task, path: str | Path | None = None):
        """``path``: a JSON file rewritten after every record, so a resumed run keeps the records made
        before its interruption (those up to the checkpoint it continues from)."""
        self.model, self.task = model, task
        self.path = Path(path) if path else None
        sub = probe.select(probe_rows(len(probe)))
        order = sorted(range(len(sub)), key=lambda i: len(sub[i]["input_ids"]))   # little padding per batch
        # the task's probe: its batches, the token whose state the head reads (an encoder's first; a decoder
        # classifier's last real one; for generation the last prompt token) and what its predictions say
        self.probe = task.probe(tokenizer, sub, [order[j:j + PROBE_BATCH] for j in range(0, len(order), PROBE_BATCH)])
        self.batches, self.labels = self.probe.batches, self.probe.labels
        self.records: list[dict[str, Any]] = []
        if self.path is not None and self.path.is_file():
            try:
                self.records = json.loads(self.path.read_text(encoding="utf-8")).get("records", [])
            except (OSError, json.JSONDecodeError):
                self.records = []

    # --- callback ---------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.records = [r for r in self.records if r["step"] <= state.global_step]
        if not self.records or self.records[-1]["step"] != state.global_step:
            self._add({"step": state.global_step, **self.measure()})

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        rec = {"step": state.global_step, **self.measure()}
        if metrics:
            rec["dev"] = {k[5:]: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, (int, float))}
        self._add(rec)

    def _add(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)
        from peltc.runtime.runfolder import is_main
        if self.path is not None and is_main():
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"probe_examples": len(self.labels), "records": self.records}), encoding="utf-8")
            tmp.replace(self.path)

    # --- measuring --------------------------------------------------------------------------
    def measure(self) -> dict[str, Any]:
        from peltc.compiler.torch.gate import read_gates
        from peltc.compiler.torch.prefix import observe_prefix_attention

        model = self.model
        was_training = model.training
        model.eval()
        feats: list[torch.Tensor] = []
        handle = self.probe.head(model).register_forward_pre_hook(lambda m, a: feats.append(a[0].detach()))
        dev = next(model.parameters()).device
        try:
            with torch.no_grad(), observe_prefix_attention(model) as mass:
                outputs = self.probe.forward(model, dev)
        finally:
            handle.remove()
            model.train(was_training)
        gates: dict[str, dict[str, float]] = {}
        for (inst, layer, point), g in sorted(read_gates(model).items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1] or -1)):
            gates.setdefault(f"{inst}/{point}", {})["all" if layer is None else str(layer)] = float(g.float().mean())
        out: dict[str, Any] = {"gates": gates, "norms": _instance_norms(model), "prefix_norms": _prefix_norms(model),
                               "prefix_mass": {str(k): v for k, v in sorted(mass.items())}}
        # a head that reads token states (dim 3): the token it reads (`read_at`; an encoder's first)
        f = torch.cat([x.float() if x.dim() == 2 else x[torch.arange(len(x)), at.to(x.device)].float()
                       for x, at in zip(feats, self.probe.read_at(model, feats))]) if feats else None
        if f is not None and f.shape[0] > 1:
            std = float(f.std(0).mean())
            mean = f.mean(0, keepdim=True)
            cos = float(torch.nn.functional.cosine_similarity(f, mean.expand_as(f), dim=-1).mean())
            base = self.records[0]["features"]["std"] if self.records and self.records[0].get("features") else std
            out["features"] = {"std": std, "relative_std": std / base if base else None, "cosine_to_mean": cos}
        out["predictions"] = self.probe.predictions(outputs)
        return out



def plot(records: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Gates over training (one panel per gated module, a line per layer), instance norms, prefix
    attention mass per layer, feature spread and the dev metric."""
    if not records:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    gate_rows = sorted({g for r in records for g in r.get("gates", {})})
    panels = [*(("gate", g) for g in gate_rows), ("norms", None), ("mass", None), ("features", None)]
    ncols = 2
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(11, 3.2 * nrows), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (kind, key) in zip(axes.flat, panels):
        if kind == "gate":
            layers = sorted({lay for r in records for lay in r["gates"].get(key, {})}, key=_layer_key)
            for i, lay in enumerate(layers):
                ax.plot(steps, [r["gates"].get(key, {}).get(lay, np.nan) for r in records], marker=".",
                        color=cmap(i / max(1, len(layers) - 1)), label=f"layer {lay}")
            ax.set_ylim(0, 1)
            ax.set_title(f"gate {key}: mean on the probe")
            ax.legend(fontsize=7, ncol=2)
        elif kind == "norms":
            insts = sorted({i for r in records for i in r.get("norms", {})})
            for inst in insts:
                ax.plot(steps, [r["norms"].get(inst, np.nan) for r in records], marker=".", label=f"{inst} (tensors)")
            for inst in sorted({i for r in records for i in r.get("prefix_norms", {})}):
                ax.plot(steps, [np.mean(list(r["prefix_norms"][inst].values())) if r.get("prefix_norms", {}).get(inst)
                                else np.nan for r in records], marker=".", linestyle="--",
                        label=f"{inst}: prefix K/V vector (mean over layers)")
            if insts:
                ax.set_yscale("log")
                ax.legend(fontsize=7)
            ax.set_title("L2 norms: instance tensors; effective prefix vectors")
        elif kind == "mass":
            layers = sorted({lay for r in records for lay in r.get("prefix_mass", {})}, key=int)
            for i, lay in enumerate(layers):
                ax.plot(steps, [r["prefix_mass"].get(lay, np.nan) for r in records], marker=".",
                        color=cmap(i / max(1, len(layers) - 1)), label=f"layer {lay}")
            ax.set_ylim(0, 1)
            ax.set_title("attention mass on prefix positions" if layers else "attention mass on prefixes (no prefix)")
            if layers:
                ax.legend(fontsize=7, ncol=2)
        else:
            ax.plot(steps, [r.get("features", {}).get("relative_std", np.nan) for r in records], marker=".",
                    label="feature std / step 0")
            ax.plot(steps, [r.get("features", {}).get("cosine_to_mean", np.nan) for r in records], marker=".",
                    label="cosine to mean feature")
            dev = [next(iter(v for k, v in r.get("dev", {}).items() if k not in ("loss", "runtime",
                   "samples_per_second", "steps_per_second")), np.nan) if r.get("dev") else np.nan for r in records]
            ax.plot(steps, dev, marker=".", label="dev metric")
            ax.set_title("pooled features (collapse: std → 0, cosine → 1)")
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the gates of the saved model (run folder: gates.json, gates.png) ----------------------------

def gates_table(gates: dict[tuple, float]) -> dict[str, dict[str, float]]:
    """{"kv": {"0": 0.51, ...}, "qv/attention.query": {...}} — one row per gated module."""
    per_inst_points: dict[str, set] = {}
    for inst, _, point in gates:
        per_inst_points.setdefault(inst, set()).add(point)
    table: dict[str, dict[str, float]] = {}
    for (inst, layer, point), v in sorted(gates.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1] or -1)):
        row = inst if len(per_inst_points[inst]) == 1 else f"{inst}/{point}"
        table.setdefault(row, {})["all" if layer is None else str(layer)] = round(v, 6)
    return table


def plot_gates(table: dict[str, dict[str, float]], path: Path, title: str) -> Path | None:
    """A heatmap, layers × gated modules: the picture UniPELT's gate analysis wants."""
    if not table:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers = sorted({k for row in table.values() for k in row}, key=_layer_key)
    rows = list(table)
    data = np.array([[table[r].get(lay, np.nan) for lay in layers] for r in rows])
    fig, ax = plt.subplots(figsize=(3.0 + 0.9 * len(layers), 1.8 + 0.6 * len(rows)))
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("layer")
    for i in range(len(rows)):
        for j in range(len(layers)):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if data[i, j] < 0.6 else "black")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="mean gate on test")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def _layer_key(layer: str):
    """Gate-table layers in order, ``all`` last."""
    return (layer == "all", int(layer) if layer != "all" else 0)
