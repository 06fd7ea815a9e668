"""A run's learning curves: the training loss, the dev loss and the dev metric per evaluation, read from
the Trainer's log history (``trainer_log.json``), as numbers (`curves`) and as ``curves.png`` in the run
folder beside ``gates.png`` (`plot_curves`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


def curves(log_history: Iterable[dict[str, Any]], main_metric: str) -> dict[str, list[tuple[int, float]]]:
    """``{"train_loss": [(step, loss)…], "dev_loss": […], "dev_<metric>": […]}`` from the Trainer's
    ``log_history`` (its training-loss entries carry ``loss``, its evaluations ``eval_loss`` and
    ``eval_<metric>``); a series the history lacks is empty."""
    out: dict[str, list[tuple[int, float]]] = {"train_loss": [], "dev_loss": [], f"dev_{main_metric}": []}
    for h in log_history:
        step = h.get("step")
        if not isinstance(step, int):
            continue
        for key, series in (("loss", "train_loss"), ("eval_loss", "dev_loss"),
                            (f"eval_{main_metric}", f"dev_{main_metric}")):
            v = h.get(key)
            if isinstance(v, (int, float)):
                out[series].append((step, float(v)))
    return out


def plot_curves(log_history: Iterable[dict[str, Any]], main_metric: str, path: Path, title: str,
                best_step: int | None = None) -> Path | None:
    """``path`` (a PNG): losses on the left axis, the dev metric on the right, the restored checkpoint's
    step marked. None (nothing written) when the history holds no point."""
    c = curves(log_history, main_metric)
    if not any(c.values()):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for series, style in (("train_loss", "-"), ("dev_loss", "--")):
        if c[series]:
            steps, values = zip(*c[series])
            ax.plot(steps, values, style, marker=".", label=series.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    metric = c[f"dev_{main_metric}"]
    if metric:
        right = ax.twinx()
        steps, values = zip(*metric)
        line, = right.plot(steps, values, ":", marker="o", color="tab:green", label=f"dev {main_metric}")
        right.set_ylabel(f"dev {main_metric}")
        handles.append(line)
        labels.append(line.get_label())
    if best_step is not None:
        ax.axvline(best_step, color="grey", linewidth=0.8)
    ax.legend(handles, labels, fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
