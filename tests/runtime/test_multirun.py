"""Several trained runs served on one base (`peltc predict RUN_A RUN_B … --file`, `peltc.load_runs`): run
folders of different methods, tasks and head sizes on the tiny BERT; a mixed, padded batch gives every
example the logits its run's own model (`load_run`) gives it; the CLI routes each row by its `run` field
(path or name) and writes what `peltc predict RUN --file` writes for each run alone; bad inputs are one-line
errors (exit 2 or 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from peltc.cli import main

SPECS = {
    "lora": "lora qv {\n  at layers[*].attention.{query, value}\n  rank 4\n  alpha 8\n}\nhead {\n  pool mean\n}\n",
    "adapter": "adapter ad {\n  at layers[*].ffn.output\n  size 8\n}\n",
    "apl": ("adapter ad {\n  at layers[*].ffn.output\n  size 8\n  gate sigmoid(ffn.output)\n}\n"
            "prefix kv {\n  at layers[*].attention\n  length 4\n  mlp 16\n  gate sigmoid(layer.input)\n}\n"
            "lora qv {\n  at layers[*].attention.{query, value}\n  rank 4\n  gate sigmoid(layer.input)\n}\n"
            "head {\n  pool mean\n}\n"),
    "bitfit": "bitfit biases {\n  at all\n}\n",
}
# run name → (spec, GLUE task): 2 labels, 3 labels (a pair), regression (a pair), 2 labels (a pair)
RUNS = {"sst2-lora": ("lora", "sst2"), "mnli-adapter": ("adapter", "mnli"), "stsb-apl": ("apl", "stsb"),
        "rte-bitfit": ("bitfit", "rte")}


def make_run(root: Path, name: str, spec: str, task_name: str, base_dir: Path, seed: int) -> Path:
    """A run folder as `peltc compile --train` leaves it (spec.pelt, adapter/, metrics.json), its
    trainable tensors random instead of trained."""
    import peltc
    from peltc.compiler.torch.artifact import save_artifact
    from peltc.compiler.torch.compiled import compiled
    from peltc.compiler.torch.rewrite import fold_prefix
    from peltc.runtime.models import load_base
    from peltc.compiler.archs import load_config
    from peltc.runtime.task_glue import task as get_task

    task = get_task(task_name)
    _, model = load_base(load_config(str(base_dir)), task.num_labels)
    peltc.compile_model(SPECS[spec], model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    fold_prefix(model)
    ir = compiled(model).ir
    d = root / name
    d.mkdir()
    (d / "spec.pelt").write_text(SPECS[spec], encoding="utf-8")
    save_artifact(model, d / "adapter", ir_dict=ir.to_dict(), spec_text=SPECS[spec], spec_hash=ir.settings.spec_hash,
                  base_model=str(base_dir), extra={"task": task.name, "labels": list(task.labels) if task.labels else None})
    (d / "metrics.json").write_text(json.dumps({"final": True, "settings": {"max_length": 24}}), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("multirun")
    for i, (name, (spec, task)) in enumerate(RUNS.items()):
        make_run(root, name, spec, task, tiny_dir, seed=i)
    return root


TEXTS = ["a gripping, funny film", "the plot drags and drags for nearly two hours without a single surprise",
         "fine", "a man is playing a guitar on the stage", "nobody came", "it rained all day long in the city"]


def _rows():
    """Rows for every run, interleaved; pairs for the pair tasks."""
    rows = []
    for i in range(12):
        name = list(RUNS)[i % 4]
        t = TEXTS[i % len(TEXTS)]
        task = RUNS[name][1]
        if task == "sst2":
            rows.append({"id": i, "run": name, "sentence": t})
        else:
            rows.append({"id": i, "run": name, "text": t, "text_pair": TEXTS[(i + 3) % len(TEXTS)]})
    return rows


def test_load_runs_equals_load_run_on_a_padded_mixed_batch(runs_dir):
    import peltc
    from peltc.compiler.archs import load_config
    from peltc.runtime.models import load_base
    from peltc.runtime.serve import load_run

    dirs = [runs_dir / n for n in RUNS]
    tok, model = load_base(load_config(json.loads((dirs[0] / "adapter" / "manifest.json").read_text())
                                       ["base_model"]["name"]), 2)
    runs = peltc.load_runs(dirs, model)
    assert runs.names == list(RUNS) and runs.num_labels == [2, 3, 1, 2]
    assert runs.labels[1] == ["entailment", "neutral", "contradiction"] and runs.labels[2] is None
    rows = _rows()
    route = [r["run"] for r in rows]
    enc = tok([r.get("sentence", r.get("text")) for r in rows], padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()                    # padded
    with torch.no_grad():
        out = runs(route, **enc).logits
    for i, name in enumerate(RUNS):
        own, *_ = load_run(runs_dir / name)
        idx = [b for b, r in enumerate(route) if r == name]
        with torch.no_grad():
            want = own.eval()(**{k: v[idx] for k, v in enc.items()}).logits
        assert (out[idx, :runs.num_labels[i]] - want).abs().max() <= 1e-5, name


def _predict_alone(run: Path, rows: list[dict], tmp: Path) -> list[dict]:
    f = tmp / f"alone-{run.name}.jsonl"
    f.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "run"}) + "\n" for r in rows),
                 encoding="utf-8")
    out = tmp / f"alone-{run.name}.out.jsonl"
    assert main(["predict", str(run), "--file", str(f), "--out", str(out), "--quiet"]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_cli_predict_several_runs_routes_each_row(runs_dir, tmp_path, capsys):
    rows = _rows()
    rows[5]["run"] = str(runs_dir / rows[5]["run"])               # by folder path, not name
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    args = ["predict", *[str(runs_dir / n) for n in RUNS], "--file", str(inputs), "--out", str(out), "--quiet",
            "--batch-size", "5"]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "wrote 12 predictions" in said and "sst2-lora: 3" in said
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in preds] == list(range(12)) and preds[5]["run"] == rows[5]["run"]
    for name in RUNS:
        mine = [(p, r) for p, r in zip(preds, rows) if Path(r["run"]).name == name]
        alone = _predict_alone(runs_dir / name, [r for _, r in mine], tmp_path)
        for (p, _), a in zip(mine, alone):
            if "score" in a:
                assert "label" not in p and abs(p["score"] - a["score"]) <= 1e-5
            else:
                assert p["label"] == a["label"] and abs(p["probability"] - a["probability"]) <= 1e-5
    assert {p["label"] for p in preds if Path(p["run"]).name == "mnli-adapter"} <= {"entailment", "neutral",
                                                                                     "contradiction"}


def test_cli_errors(runs_dir, tmp_path, capsys):
    two = [str(runs_dir / "sst2-lora"), str(runs_dir / "rte-bitfit")]

    def run(args, rows=None):
        if rows is not None:
            f = tmp_path / "in.jsonl"
            f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            args = [*args, "--file", str(f), "--quiet"]
        rc = main(["predict", *args])
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip().count("\nerror") == 0
        return rc, err

    ok = {"run": "sst2-lora", "sentence": "fine"}
    rc, err = run(two, [ok, {"sentence": "no run here"}])
    assert rc == 3 and "in.jsonl: row 2 (line 2), column 'run': no run given" in err and "[D112]" in err
    rc, err = run(two, [ok, {"run": "sst2-lroa", "sentence": "x"}])
    assert rc == 3 and "row 2 (line 2), column 'run': no run named 'sst2-lroa'" in err and "sst2-lora" in err
    rc, err = run(two, [{"run": "rte-bitfit", "sentence": "a pair task given one text"}])
    assert rc == 3 and "[D104]" in err and "row 1" in err
    rc, err = run([*two, "--text", "hello"])
    assert rc == 2 and "--file" in err
    (tmp_path / "not-a-run").mkdir()
    rc, err = run([two[0], str(tmp_path / "not-a-run")], [ok])
    assert rc == 3 and "not-a-run" in err and "no artifact" in err and "[A002]" in err
    rc, err = run([two[0], str(tmp_path / "missing")], [ok])
    assert rc == 2 and "[U008]" in err


def test_cli_runs_on_different_base_models(runs_dir, tmp_path, tokenizer, capsys):
    import transformers
    d = tmp_path / "other-base"
    transformers.set_seed(0)
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=37)
    transformers.BertForSequenceClassification(cfg).save_pretrained(d)
    tokenizer.save_pretrained(d)
    other = make_run(tmp_path, "other", "bitfit", "sst2", d, seed=9)
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"run": "other", "sentence": "x"}) + "\n", encoding="utf-8")
    rc = main(["predict", str(runs_dir / "sst2-lora"), str(other), "--file", str(f), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 3 and "runs on different base models" in err and "[A023]" in err and "Traceback" not in err
