"""What a peft user expects around a finished run (issue 22, item 13): learning curves in the run folder,
``--report-to tensorboard``, `peltc eval` comparing with the recorded metrics, `peltc predict --probs`,
`peltc runs` and `peltc merge` — on one tiny run of the shipped peft-exportable spec (specs/lora_peft.pelt)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from peltc.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "lora_peft.pelt"
FAST = ["--k", "32", "--dev-size", "40", "--epochs", "2", "--batch-size", "16", "--min-steps", "0",
        "--eval-steps", "2", "--max-length", "32", "--quiet", "--no-render"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dir, small_glue):
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("runs") / "lora_peft"
    assert main(["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir", str(small_glue),
                 "--out", str(out), "--report-to", "tensorboard", *FAST]) == 0
    return out


def test_curves_png_and_tensorboard_events(run):
    from peltc.runtime.curves import curves
    log = json.loads((run / "trainer_log.json").read_text())
    c = curves(log, "accuracy")
    assert len(c["train_loss"]) >= 2 and len(c["dev_loss"]) >= 2 and len(c["dev_accuracy"]) >= 2
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "tensorboard").glob("events.out.tfevents.*")), "tensorboard wrote its event file"


def test_report_to_without_the_package_is_a_clear_error(tmp_path, tiny_dir, small_glue, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = tmp_path / "r"
    assert main(["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir", str(small_glue),
                 "--out", str(out), "--report-to", "tensorboard", *FAST]) == 2
    err = capsys.readouterr().err
    assert "[U160]" in err and "Traceback" not in err and not out.exists()


def test_eval_compares_with_the_recorded_metrics(run, small_glue, capsys):
    from peltc.runtime.serve import eval_run
    r = eval_run(run, str(small_glue))
    assert r["agree"] is True and r["recorded"] == r["test"] and r["differences"] == []
    capsys.readouterr()
    assert main(["eval", str(run), "--data-dir", str(small_glue)]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out.split("\nwarning")[0]) == r["test"]   # stdout: the metrics, as before
    assert "agree: yes" in cap.err
    # a record that disagrees is said, metric by metric
    m = json.loads((run / "metrics.json").read_text())
    tampered = run.parent / "tampered"
    shutil.copytree(run, tampered)
    (tampered / "metrics.json").write_text(json.dumps({**m, "test": {**m["test"], "accuracy": 0.123}}))
    r = eval_run(tampered, str(small_glue))
    assert r["agree"] is False and [d[0] for d in r["differences"]] == ["accuracy"]
    assert r["differences"][0][2] == 0.123
    assert main(["eval", str(tampered), "--data-dir", str(small_glue)]) == 0
    assert "agree: no" in capsys.readouterr().err
    shutil.rmtree(tampered)


def test_predict_probs(run, tmp_path, capsys):
    from peltc.runtime.serve import predict_text
    r = predict_text(run, "A man is walking.", "Someone walks.", probs=True)
    assert list(r["probabilities"]) == ["entailment", "not_entailment"]
    assert abs(sum(r["probabilities"].values()) - 1) < 1e-6
    assert r["probabilities"][r["label"]] == pytest.approx(r["probability"])
    assert "probabilities" not in predict_text(run, "A man is walking.", "Someone walks.")
    capsys.readouterr()
    assert main(["predict", str(run), "--text", "A man is walking.", "--text-pair", "Someone walks.", "--probs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].split(":")[0].strip() == "entailment"
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"text": "a", "text_pair": "b"}) + "\n")
    assert main(["predict", str(run), "--file", str(f), "--out", str(tmp_path / "p.jsonl"), "--probs", "--quiet"]) == 0
    row = json.loads((tmp_path / "p.jsonl").read_text())
    assert set(row["probabilities"]) == {"entailment", "not_entailment"}


def test_runs_lists_spec_task_metric_and_state(run, tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(run, root / "done")
    (root / "empty").mkdir()
    (root / "empty" / "run.json").write_text(json.dumps({"spec": "specs/lora.pelt", "task_name": "sst2"}))
    ck = root / "stopped" / "trainer" / "checkpoint-4"
    ck.mkdir(parents=True)
    (ck / "peltc-complete.json").write_text("{}")
    (root / "stopped" / "run.json").write_text(json.dumps({"spec": "specs/adapter.pelt", "task_name": "rte"}))
    (root / "notes").mkdir()                                  # not a run folder: not listed
    from peltc.runtime.runfolder import find_runs, run_summary
    rows = {Path(r["path"]).name: r for r in map(run_summary, find_runs(root))}
    assert set(rows) == {"done", "empty", "stopped"}
    m = json.loads((run / "metrics.json").read_text())
    assert rows["done"]["state"] == "finished" and rows["done"]["spec"] == "lora_peft.pelt"
    assert rows["done"]["task"] == "rte" and rows["done"]["value"] == m["test"]["accuracy"]
    assert rows["empty"]["state"] == "empty" and rows["empty"]["value"] is None
    assert rows["stopped"]["state"] == "resumable" and rows["stopped"]["resume_from"] == "checkpoint-4"
    capsys.readouterr()
    assert main(["runs", str(root), "--json"]) == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)] == ["finished", "empty", "resumable"]
    assert main(["runs", str(root)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert main(["runs", str(tmp_path / "nope")]) == 2


def test_merge_writes_a_plain_transformers_model(run, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from peltc.runtime.serve import load_run
    out = tmp_path / "merged"
    assert main(["merge", str(run), str(out)]) == 0
    merged = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert not any("pelt" in n for n in merged.state_dict())
    assert merged.config.id2label == {0: "entailment", 1: "not_entailment"}
    tok = AutoTokenizer.from_pretrained(str(out))
    batch = tok(["A man is walking.", "Nobody"], ["Someone walks.", "is here"], padding=True, return_tensors="pt")
    model = load_run(run)[0].eval()
    with torch.no_grad():
        assert (merged(**batch).logits - model(**batch).logits).abs().max() <= 1e-5
    assert main(["merge", str(run), str(out)]) == 2           # never written over
    assert "[U010]" in capsys.readouterr().err


def test_merge_refuses_what_does_not_merge(tmp_path, tiny_dir, capsys):
    import peltc
    from peltc.api import save_adapter
    model = AutoModel(tiny_dir)
    peltc.compile_model(str(ROOT / "specs" / "unipelt_apl.pelt"), model)
    run = tmp_path / "apl"
    save_adapter(model, run / "adapter")
    from peltc.errors import UsageError
    from peltc.runtime.serve import merge_run
    with pytest.raises(UsageError) as e:
        merge_run(run, tmp_path / "out")
    assert e.value.diagnostic.code == "U161"
    msg = str(e.value)
    assert all(n in msg for n in ("ffn_adapter (adapter)", "kv (prefix)", "qv: a sigmoid gate"))
    assert main(["merge", str(run), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "[U161]" in err and "Traceback" not in err and not (tmp_path / "out").exists()


def AutoModel(d):
    from transformers import AutoModelForSequenceClassification
    return AutoModelForSequenceClassification.from_pretrained(str(d), num_labels=2)
