"""GLUE metrics as an ``evaluate`` module defined here (scikit-learn / scipy; no Hub, works offline),
the Trainer's ``compute_metrics`` built on it, and the check for degenerate (constant) predictors.

>>> glue_metric("mrpc").compute(predictions=[1, 0, 1], references=[1, 1, 1])
{'f1': 0.8, 'accuracy': 0.6666666666666666}

Your own data (`task_own.CustomTask`) has two more configs: ``custom-classification`` (accuracy, which
selects checkpoints, and macro-F1) and ``custom-regression`` (Pearson, Spearman).
"""

from __future__ import annotations

from typing import Callable, Sequence

import datasets
import evaluate
import numpy as np

from peltc.errors import UsageError, did_you_mean


class _Metrics:
    """What `compute` reads of a metric config: the metrics it reports, and whether it scores numbers."""

    def __init__(self, metrics: tuple[str, ...], is_regression: bool = False):
        self.metrics = metrics
        self.is_regression = is_regression


# metric config → what it reports: one per GLUE task (its Hub name; `task_glue.TASKS` names the main metric)
# and `custom-<task type>` for your own data (`task_own.CUSTOM_METRICS` names the main metric). The task
# modules read their metric lists here; this module imports none of them.
CONFIGS: dict[str, _Metrics] = {
    "cola": _Metrics(("matthews_correlation",)),
    "sst2": _Metrics(("accuracy",)),
    "mrpc": _Metrics(("f1", "accuracy")),
    "qqp": _Metrics(("f1", "accuracy")),
    "stsb": _Metrics(("pearson", "spearmanr"), is_regression=True),
    "mnli": _Metrics(("accuracy",)),
    "qnli": _Metrics(("accuracy",)),
    "rte": _Metrics(("accuracy",)),
    "custom-classification": _Metrics(("accuracy", "f1_macro")),
    "custom-regression": _Metrics(("pearson", "spearmanr"), is_regression=True),
}


class GlueMetric(evaluate.Metric):
    """The paper's GLUE metrics; the config name is the task (``GlueMetric("cola")``), or
    ``custom-classification`` / ``custom-regression`` for your own data.

    Matthews correlation (CoLA), F1 + accuracy (MRPC, QQP), Pearson + Spearman (STS-B), accuracy
    (the rest). A correlation that is undefined because one side is constant is reported as 0.0
    (as scikit-learn does for Matthews), never NaN: NaN would stop checkpoint selection comparing.
    """

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in CONFIGS:
            raise UsageError(f"no GLUE metric for task '{self.config_name}'", code="U113",
                             help=did_you_mean(self.config_name, CONFIGS, "tasks"))
        dtype = "float32" if CONFIGS[self.config_name].is_regression else "int64"
        return evaluate.MetricInfo(
            description="GLUE metrics computed locally with scikit-learn and scipy.",
            citation="Wang et al., GLUE: A Multi-Task Benchmark and Analysis Platform for NLU, 2019.",
            inputs_description="predictions: label ids (scores for stsb); references: the same.",
            features=datasets.Features({"predictions": datasets.Value(dtype),
                                        "references": datasets.Value(dtype)}),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        return compute(CONFIGS[self.config_name], predictions, references)


def glue_metric(task, **kwargs) -> GlueMetric:
    """An in-memory GlueMetric for ``task`` (a task: its ``metric_config``; or a config name; no cache files)."""
    name = task if isinstance(task, str) else task.metric_config
    return GlueMetric(name, keep_in_memory=True, **kwargs)


def compute(task, predictions: Sequence, references: Sequence) -> dict[str, float]:
    """The task's metrics of label ids (scores for regression), as plain floats."""
    from scipy import stats
    from sklearn.metrics import f1_score, matthews_corrcoef

    p, r = np.asarray(predictions), np.asarray(references)
    out: dict[str, float] = {}
    for name in task.metrics:
        if name == "accuracy":
            out[name] = float((p == r).mean()) if len(p) else 0.0
        elif name == "f1":
            out[name] = float(f1_score(r, p, zero_division=0.0))
        elif name == "f1_macro":   # the mean F1 over the classes the references or predictions hold
            out[name] = float(f1_score(r, p, average="macro", zero_division=0.0)) if len(p) else 0.0
        elif name == "matthews_correlation":
            out[name] = float(matthews_corrcoef(r, p))
        elif name in ("pearson", "spearmanr"):
            if len(p) < 2 or np.ptp(p) == 0 or np.ptp(r) == 0:
                out[name] = 0.0   # undefined for a constant side
            else:
                fn = stats.pearsonr if name == "pearson" else stats.spearmanr
                out[name] = float(fn(p, r)[0])
        else:  # pragma: no cover - the task table names only the metrics above
            raise ValueError(f"unknown metric {name!r}")
    return out


def to_predictions(task, logits) -> np.ndarray:
    """Model outputs → what the metric takes: arg-max label ids, or the score for regression."""
    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits)
    if task.is_regression:
        return logits.reshape(len(logits), -1)[:, 0]
    return logits.argmax(axis=-1)


def compute_metrics(task) -> Callable:
    """The Trainer's ``compute_metrics``: ``EvalPrediction`` → the task's metrics."""
    metric = glue_metric(task)

    def fn(eval_pred) -> dict[str, float]:
        preds = to_predictions(task, eval_pred.predictions)
        return metric.compute(predictions=preds, references=np.asarray(eval_pred.label_ids))

    return fn


def is_degenerate(predictions: Sequence, tol: float = 1e-3) -> bool:
    """A constant predictor: one label id for every example, or regression scores whose standard
    deviation is below ``tol`` (STS-B scores span 0–5)."""
    p = np.asarray(predictions)
    if p.size == 0:
        return False
    if np.issubdtype(p.dtype, np.floating):
        return bool(np.std(p) < tol)
    return bool(np.all(p == p.flat[0]))


def degenerate_warning(task, predictions: Sequence, split: str = "test",
                       metrics: dict[str, float] | None = None, pool: str | None = None) -> str | None:
    """A warning text when ``predictions`` come from a constant predictor, else None. ``pool``: the run's
    head pooling (``mean`` / ``pooler``; None: not known), so the advice fits the run (`degenerate_advice`)."""
    if not is_degenerate(predictions):
        return None
    p = np.asarray(predictions)
    if task.is_regression:
        what = f"a near-constant score (mean {float(np.mean(p)):.3f}, std {float(np.std(p)):.1e})"
    else:
        label = task.labels[int(p.flat[0])] if 0 <= int(p.flat[0]) < len(task.labels) else int(p.flat[0])
        what = f"'{label}'"
    value = ""
    if metrics and task.main_metric in metrics:
        value = f" ({task.main_metric} = {metrics[task.main_metric]:.4f})"
    return (f"degenerate run: the model predicts {what} for all {p.size} {split} examples{value}; "
            f"it learned a constant predictor. Try {degenerate_advice(pool)}.")


def degenerate_advice(pool: str | None = None) -> str:
    """What to try after a constant predictor, given the run's head pooling: mean pooling is suggested only
    to a run whose head reads the model's pooler (``head { pool pooler }``), never to one that pools by mean
    already (the recipe's default)."""
    tips = ["more optimiser steps (min_steps, epochs)", "another learning rate"]
    if pool == "pooler":
        tips.append("mean pooling in the head (head { pool mean }: the pooler reads the first token only)")
    return ", ".join(tips[:-1]) + " or " + tips[-1]


def near_constant(task, predictions, labels, split: str = "dev") -> str | None:
    """A warning when predictions are *near*-constant, not only exactly constant: for regression the
    predictions' variance below 10 % of the labels' (their MSE then ≈ the label variance); for
    classification one class for ≥ 95 % of the examples while the labels' majority is below 90 %."""
    p = np.asarray(predictions, dtype=float).ravel()
    y = np.asarray(labels, dtype=float).ravel()
    if p.size < 2:
        return None
    if task.is_regression:
        ratio = float(p.var() / y.var()) if y.var() > 0 else float("inf")
        if ratio < 0.1:
            return (f"near-constant predictor on {split}: the predictions' variance is {100 * ratio:.1f}% of the "
                    f"labels' (std {p.std():.3f} vs {y.std():.3f})")
        return None
    share = float(np.bincount(p.astype(int)).max() / p.size)
    label_share = float(np.bincount(y.astype(int)).max() / y.size)
    if share >= 0.95 and label_share < 0.9:
        return (f"near-constant predictor on {split}: one class for {100 * share:.0f}% of the examples "
                f"(the labels' majority is {100 * label_share:.0f}%)")
    return None
