"""The task protocol's dispatch (runtime/task.py): which kind a --train value names, which task a run's
record holds."""

import pytest

from peltc.errors import ArtifactError
from peltc.runtime import task_gen, task_glue, task_own
from peltc.runtime.task import from_record, kind_of


@pytest.mark.parametrize("ref, kind", [("gen:arith", task_gen), ("gen:jsonl:x.jsonl", task_gen),
                                       ("csv:x.csv", task_own), ("hub:glue:cola", task_own),
                                       ("glue/cola", task_glue), ("rte", task_glue), (None, task_glue)])
def test_kind_of(ref, kind):
    assert kind_of(ref) is kind


def test_from_record():
    assert from_record({"task": "cola"}) is task_glue.TASKS["cola"]
    own = task_own.CustomTask("r", ("text",), ("a", "b"), text_columns=("review",))
    assert from_record({"task": "r", "own_data": own.to_dict()}) == own
    gen = task_gen.gen_task("gen:arith")
    assert from_record({"task": "arith", "generation": gen.to_dict()}) == gen
    with pytest.raises(ArtifactError) as e:
        from_record({"task": "x", "generation": {"name": "x"}})
    assert e.value.diagnostic.code == "A012"


@pytest.mark.parametrize("task", [task_glue.TASKS["stsb"], task_own.CustomTask("r", ("text",), None, text_columns=("score_text",)),
                                  task_gen.gen_task("gen:arith")])
def test_records_round_trip(task):
    """What a run's artifact records of its task reads back as that task."""
    assert from_record(task.artifact_record()) == task
