"""The project's evaluate metric against scikit-learn / scipy directly, and degenerate-run checks."""

import evaluate
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction

from peltc.errors import UsageError
from peltc.runtime.metrics import (GlueMetric, compute_metrics, degenerate_warning, glue_metric,
                                   is_degenerate, to_predictions)
from peltc.runtime.task_glue import task

rng = np.random.default_rng(0)
P, R = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
P3, R3 = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
S, T = rng.uniform(0, 5, 200), rng.uniform(0, 5, 200)


def test_is_an_evaluate_metric_built_offline():
    m = glue_metric("cola")
    assert isinstance(m, evaluate.Metric) and isinstance(m, GlueMetric)
    assert m.config_name == "cola"


@pytest.mark.parametrize("name, p, r, expected", [
    ("cola", P, R, {"matthews_correlation": matthews_corrcoef(R, P)}),
    ("mrpc", P, R, {"f1": f1_score(R, P), "accuracy": accuracy_score(R, P)}),
    ("qqp", P, R, {"f1": f1_score(R, P), "accuracy": accuracy_score(R, P)}),
    ("sst2", P, R, {"accuracy": accuracy_score(R, P)}),
    ("rte", P, R, {"accuracy": accuracy_score(R, P)}),
    ("qnli", P, R, {"accuracy": accuracy_score(R, P)}),
    ("mnli", P3, R3, {"accuracy": accuracy_score(R3, P3)}),
    ("stsb", S, T, {"pearson": stats.pearsonr(S, T)[0], "spearmanr": stats.spearmanr(S, T)[0]}),
])
def test_against_sklearn_and_scipy(name, p, r, expected):
    got = glue_metric(name).compute(predictions=p, references=r)
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-6)
        assert isinstance(got[k], float)


def test_batches_add_up():
    m = glue_metric("mrpc")
    for i in range(0, 200, 50):
        m.add_batch(predictions=P[i:i + 50], references=R[i:i + 50])
    assert m.compute()["f1"] == pytest.approx(f1_score(R, P))


def test_constant_predictions_give_zero_not_nan():
    assert glue_metric("cola").compute(predictions=[1] * 5, references=[0, 1, 1, 0, 1]) == {
        "matthews_correlation": 0.0}
    out = glue_metric("stsb").compute(predictions=[2.0] * 5, references=[0, 1, 2, 3, 4])
    assert out == {"pearson": 0.0, "spearmanr": 0.0}
    assert glue_metric("mrpc").compute(predictions=[0] * 4, references=[1, 1, 0, 0])["f1"] == 0.0


def test_unknown_task_metric():
    with pytest.raises(UsageError):
        GlueMetric("colla", keep_in_memory=True)


def test_compute_metrics_from_logits():
    fn = compute_metrics(task("sst2"))
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0]])
    assert fn(EvalPrediction(predictions=logits, label_ids=np.array([1, 0, 0]))) == {
        "accuracy": pytest.approx(2 / 3)}
    reg = compute_metrics(task("stsb"))(EvalPrediction(predictions=S[:, None], label_ids=T))
    assert reg["spearmanr"] == pytest.approx(stats.spearmanr(S, T)[0])
    assert to_predictions(task("stsb"), S[:, None]).shape == (200,)


def test_degenerate_detection():
    assert is_degenerate([1, 1, 1]) and not is_degenerate([1, 0, 1])
    assert is_degenerate(np.full(10, 2.5)) and not is_degenerate(S)
    assert degenerate_warning(task("cola"), P) is None
    w = degenerate_warning(task("cola"), np.ones(1043, dtype=int), metrics={"matthews_correlation": 0.0})
    assert "acceptable" in w and "1043" in w and "matthews_correlation" in w
    assert "near-constant" in degenerate_warning(task("stsb"), np.full(10, 2.5))
