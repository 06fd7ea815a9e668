import pytest

from peltc.errors import UsageError
from peltc.runtime.tasks import HUB_ID, TASKS, task


def test_the_paper_s_eight_tasks():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"}
    assert HUB_ID == "nyu-mll/glue"


@pytest.mark.parametrize("name, main", [
    ("cola", "matthews_correlation"), ("sst2", "accuracy"), ("mrpc", "f1"), ("qqp", "f1"),
    ("stsb", "spearmanr"), ("mnli", "accuracy"), ("qnli", "accuracy"), ("rte", "accuracy")])
def test_main_metric_is_the_paper_s(name, main):
    t = TASKS[name]
    assert t.main_metric == main and main in t.metrics


def test_task_facts():
    assert TASKS["stsb"].is_regression and TASKS["stsb"].num_labels == 1
    assert TASKS["mnli"].num_labels == 3
    assert TASKS["mnli"].dev_split == "validation_matched" and TASKS["mnli"].dev_file == "dev_matched.tsv"
    assert not TASKS["cola"].tsv_header and TASKS["cola"].tsv_ncols == 4
    assert [t.is_pair for t in TASKS.values()] == [len(t.columns) == 2 for t in TASKS.values()]
    for t in TASKS.values():
        assert len(t.tsv_columns) == len(t.columns)
        assert (t.labels is None) == (t.tsv_labels is None)
        if t.labels:
            assert len(t.labels) == len(t.tsv_labels)


@pytest.mark.parametrize("ref, name", [
    ("cola", "cola"), ("glue/cola", "cola"), ("CoLA", "cola"), ("SST-2", "sst2"), ("glue/sst-2", "sst2"),
    ("sts-b", "stsb"), ("STSB", "stsb"), ("glue/MNLI", "mnli")])
def test_task_lookup(ref, name):
    assert task(ref).name == name


def test_unknown_task_suggests():
    with pytest.raises(UsageError) as e:
        task("glue/colla")
    assert e.value.diagnostic.code == "U113"
    assert "cola" in e.value.diagnostic.help
