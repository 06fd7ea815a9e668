"""Your own data: `--train csv:PATH | json:PATH | disk:DIR | hub:NAME[:CONFIG]`, its checks (DataErrors
naming file, row and column), the split protocol, the custom metrics, and a tiny model end to end
(compile, then eval and predict --file reproduce)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from peltc.cli import main
from peltc.errors import DataError, UsageError
from peltc.runtime import data, own_files, task_own
from peltc.runtime.metrics import compute, glue_metric
from peltc.runtime.task_own import CustomTask

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "lora.pelt"
FAST = ["--k", "32", "--dev-size", "40", "--epochs", "1", "--batch-size", "16", "--min-steps", "0",
        "--max-length", "32", "--quiet", "--no-render"]

POS, NEG = ("good", "great", "fine", "lovely"), ("bad", "awful", "poor", "dull")


def _rows(n=120, labels=("neg", "pos"), seed=0, text="text", label="label", extra=True):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = labels[int(rng.integers(len(labels)))]
        words = POS if labels.index(y) % 2 else NEG
        row = {text: f"a {words[int(rng.integers(4))]} film, really {words[int(rng.integers(4))]}", label: y}
        if extra:
            row = {"id": i, **row}
        out.append(row)
    return out


def write(path: Path, rows: list[dict], fmt: str | None = None) -> Path:
    """rows as CSV, JSON Lines, a JSON array, or a save_to_disk folder (by ``fmt`` or the suffix)."""
    fmt = fmt or path.suffix.lstrip(".")
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt == "disk":
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    else:
        raise ValueError(fmt)
    return path


def load(ref: str, **kw):
    return task_own.load_own(own_files.OwnData(train=own_files.parse_source(ref), **kw))


# --- formats and labels ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, prefix", [("csv", "csv"), ("json", "json"), ("jsonl", "json"), ("disk", "disk")])
@pytest.mark.parametrize("labels", [("neg", "pos"), (0, 1, 2)])
def test_formats_with_string_and_int_labels(tmp_path, fmt, prefix, labels):
    rows = _rows(60, labels)
    p = write(tmp_path / f"reviews.{fmt}" if fmt != "disk" else tmp_path / "reviews", rows, fmt)
    ds, task, hashes = load(f"{prefix}:{p}")
    assert isinstance(task, CustomTask) and task.name == "reviews"
    assert task.labels == tuple(sorted(set(r["label"] for r in rows))) and task.task_type == "classification"
    assert (task.main_metric, task.metrics, task.num_labels) == ("accuracy", ("accuracy", "f1_macro"), len(task.labels))
    assert list(ds) == ["train"] and ds["train"].column_names == ["text", "label", "idx"]
    assert ds["train"]["text"] == [r["text"] for r in rows]
    assert [task.labels[i] for i in ds["train"]["label"]] == [r["label"] for r in rows]
    assert set(hashes) == {"train"} and len(hashes["train"]) == 64
    assert task.data["train"]["kind"] == prefix and task.data["label_kind"] == ("str" if labels[0] == "neg" else "int")


def test_int_labels_sort_as_numbers_and_round_trip(tmp_path):
    rows = [{"text": f"t{i}", "label": y} for i, y in enumerate([10, 2, 1, 2, 10, 1])]
    _, task, _ = load(f"json:{write(tmp_path / 'd.jsonl', rows)}")
    assert task.labels == (1, 2, 10)
    assert CustomTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task


def test_regression_from_float_labels_and_task_type(tmp_path):
    rows = [{"text": f"t{i}", "label": v} for i, v in enumerate([0.5, 1.25, 3.0, 4.75, 2.0, 0.0])]
    p = write(tmp_path / "scores.csv", rows)
    ds, task, _ = load(f"csv:{p}")
    assert task.is_regression and task.labels is None and task.num_labels == 1
    assert (task.main_metric, task.metrics) == ("spearmanr", ("pearson", "spearmanr"))
    assert ds["train"]["label"] == pytest.approx([r["label"] for r in rows])
    assert ds["train"].features["label"] == datasets.Value("float32")
    # forced: the same numbers as classes
    _, cls, _ = load(f"csv:{p}", task_type="classification")
    assert cls.labels == (0.0, 0.5, 1.25, 2.0, 3.0, 4.75)
    # integral floats are classes (a CSV column with 1.0, 2.0 …), unless forced to regression
    q = write(tmp_path / "stars.jsonl", [{"text": f"t{i}", "label": float(v)} for i, v in enumerate([1, 2, 3, 1])])
    assert load(f"json:{q}")[1].labels == (1, 2, 3)
    assert load(f"json:{q}", task_type="regression")[1].is_regression


def test_column_defaults_pairs_and_names(tmp_path):
    rows = [{"sentence": f"s{i}", "other": f"o{i}", "y": "ab"[i % 2]} for i in range(6)]
    p = write(tmp_path / "pairs.jsonl", rows)
    ds, task, _ = load(f"json:{p}", label_column="y")                 # text, else sentence
    assert task.text_columns == ("sentence",) and ds["train"]["text"][0] == "s0"
    ds, task, _ = load(f"json:{p}", text_pair_column="other", label_column="y")
    assert task.is_pair and task.columns == ("text", "text_pair") and task.text_columns == ("sentence", "other")
    assert ds["train"]["text_pair"][1] == "o1" and task.label_column == "y"


# --- the split protocol ----------------------------------------------------------------------------

def test_held_out_test_is_fixed_and_train_dev_per_seed(tmp_path):
    ds, _, _ = load(f"csv:{write(tmp_path / 'r.csv', _rows(200))}")
    s1, s1b, s2 = (data.sample_own(ds, 50, seed=s, dev_size=60) for s in (1, 1, 2))
    assert {k: len(v) for k, v in s1.items()} == {"train": 50, "dev": 60, "test": 40}   # ⌊200/5⌋
    assert s1["test"]["idx"] == s2["test"]["idx"]                    # the same test set for every seed
    assert s1["train"]["idx"] == s1b["train"]["idx"] and s1["dev"]["idx"] == s1b["dev"]["idx"]
    assert s1["train"]["idx"] != s2["train"]["idx"]
    for s in (s1, s2):
        assert not (set(s["train"]["idx"]) | set(s["dev"]["idx"])) & set(s["test"]["idx"])
        assert not set(s["train"]["idx"]) & set(s["dev"]["idx"])
    small, every = data.sample_own(ds, 20, seed=1, dev_size=60), data.sample_own(ds, "all", seed=1, dev_size=60)
    assert set(small["train"]["idx"]) <= set(s1["train"]["idx"]) <= set(every["train"]["idx"])
    assert len(every["train"]) == 100
    test, _, _ = task_own.own_test_split(own_files.OwnData(train=own_files.parse_source(f"csv:{tmp_path / 'r.csv'}")))
    assert test["idx"] == s1["test"]["idx"]                          # what peltc eval scores
    with pytest.raises(DataError) as e:
        data.sample_own(ds, 150, seed=1, dev_size=60)
    assert e.value.diagnostic.code == "D106" and "--dev-size" in e.value.diagnostic.help


def test_validation_and_test_files(tmp_path):
    train = write(tmp_path / "train.csv", _rows(80, seed=1))
    dev = write(tmp_path / "dev.csv", _rows(15, seed=2))
    test = write(tmp_path / "test.csv", _rows(25, seed=3))
    ds, task, hashes = task_own.load_own(own_files.OwnData(train=own_files.parse_source(f"csv:{train}"),
                                            validation=own_files.parse_source(str(dev), "--validation", like=own_files.parse_source(f"csv:{train}")),
                                            test=own_files.parse_source(f"csv:{test}", "--test")))
    assert set(ds) == {"train", "validation", "test"} and set(hashes) == {"train", "validation", "test"}
    s = data.sample_own(ds, 32, seed=1, dev_size=1000)                  # --dev-size does not apply
    assert {k: len(v) for k, v in s.items()} == {"train": 32, "dev": 15, "test": 25}
    assert s["test"]["text"] == ds["test"]["text"] and s["dev"]["text"] == ds["validation"]["text"]
    assert task.data["validation"]["path"] == str(dev) and task.data["test"]["path"] == str(test)
    every = data.sample_own(ds, "all", seed=1)
    assert len(every["train"]) == 80


def test_disk_datasetdict_splits_and_class_labels(tmp_path):
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["pos", "neg"])})   # not sorted: kept
    mk = lambda n, lab: datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(n)],
                                                    "label": [lab(i) for i in range(n)]}, features=feats)
    dd = datasets.DatasetDict({"train": mk(30, lambda i: i % 2), "validation": mk(6, lambda i: i % 2),
                               "test": mk(5, lambda i: -1)})         # the Hub's unlabelled test set
    dd.save_to_disk(str(tmp_path / "dd"))
    notes = []
    ds, task, _ = task_own.load_own(own_files.OwnData(train=own_files.parse_source(f"disk:{tmp_path / 'dd'}")), notes)
    assert task.labels == ("pos", "neg") and set(ds) == {"train", "validation"}
    assert notes and "'test' has no labels" in notes[0]
    assert task.data["train"]["split"] == "train" and task.data["validation"]["split"] == "validation"
    # a split named by --test
    train = own_files.parse_source(f"disk:{tmp_path / 'dd'}")
    ds, _, _ = task_own.load_own(own_files.OwnData(train=train, test=own_files.parse_source("validation", "--test", like=train)))
    assert len(ds["test"]) == 6


def test_hub_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not try the network"))
    t = time.time()
    with pytest.raises(DataError) as e:
        load("hub:someone/reviews:plain")
    assert time.time() - t < 1.0
    assert e.value.diagnostic.code == "D107" and "HF_DATASETS_OFFLINE" in str(e.value)
    assert "disk:DIR" in e.value.diagnostic.help


def test_hub_loads_through_datasets(monkeypatch):
    from peltc.runtime import models
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=1.0: True)
    seen = []
    fake = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [1, 0, 1]}),
                                 "test": datasets.Dataset.from_dict({"text": ["d"], "label": [0]})})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: seen.append(a) or fake)
    ds, task, hashes = load("hub:someone/reviews:plain")
    assert seen == [("someone/reviews", "plain")]
    assert task.name == "reviews-plain" and task.labels == (0, 1) and set(ds) == {"train", "test"}
    assert hashes["train"].startswith("fingerprint:")


# --- bad data: DataErrors naming file, row and column, through the CLI -----------------------------

def _compile(tmp_path, tiny_dir, *args):
    return main(["compile", str(SPEC), "--model", str(tiny_dir), "--out", str(tmp_path / "run"), *FAST, *args])


@pytest.mark.parametrize("name, text, args, code, words", [
    ("r.csv", "review,label\ngood,pos\n", [], "D104", ["'text' or 'sentence'", "did you mean --text-column review"]),
    ("r.csv", "text,sentimnet\ngood,pos\n", ["--label-column", "sentiment"], "D104",
     ["'sentiment'", "did you mean 'sentimnet'"]),
    ("r.csv", "", [], "D108", ["is empty"]),
    ("r.csv", "text,label\n", [], "D108", ["has no rows"]),
    ("r.jsonl", "", [], "D108", ["is empty"]),
    ("r.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n\n{"text": "c", "label": "pos"}\n', [],
     "D109", ["row 3 (line 4)", "column 'label'", "mixed type"]),
    ("r.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n', [], "D109",
     ["row 2 (line 2)", "column 'label'", "mixed type", "'pos' (a string)"]),
    ("r.csv", "text,label\ngood,pos\n,neg\n", [], "D110", ["row 2 (line 3)", "column 'text'", "missing"]),
    ("r.jsonl", '{"text": "a", "label": 1}\n{"text": "  ", "label": 0}\n', [], "D110",
     ["row 2 (line 2)", "column 'text'", "empty"]),
    ("r.csv", "text,label\ngood,pos\nbad,\n", [], "D103", ["row 2 (line 3)", "column 'label'", "missing"]),
    ("r.jsonl", '{"text": "a", "label": 1}\n{"text": "b"', [], "D105", ["cannot read"]),
])
def test_bad_data_is_a_clean_error(tmp_path, tiny_dir, capsys, name, text, args, code, words):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    rc = _compile(tmp_path, tiny_dir, "--train", f"{'csv' if name.endswith('csv') else 'json'}:{p}", *args)
    err = capsys.readouterr().err
    assert rc == 3 and f"[{code}]" in err and "Traceback" not in err, err
    assert name in err and all(w in err for w in words), err
    assert not (tmp_path / "run").exists()


def test_unseen_label_in_test_or_validation_file(tmp_path, tiny_dir, capsys):
    train = write(tmp_path / "train.csv", _rows(60))
    test = tmp_path / "test.csv"
    test.write_text("id,text,label\n1,good,pos\n2,meh,neutral\n", encoding="utf-8")
    for flag in ("--test", "--validation"):
        rc = _compile(tmp_path, tiny_dir, "--train", f"csv:{train}", flag, str(test))
        err = capsys.readouterr().err
        assert rc == 3 and "[D103]" in err and "Traceback" not in err
        assert "test.csv: row 2 (line 3), column 'label'" in err and "'neutral' never occurs" in err
        assert "'neg', 'pos'" in err


def test_missing_file_and_usage_errors(tmp_path, tiny_dir, capsys):
    assert _compile(tmp_path, tiny_dir, "--train", f"csv:{tmp_path / 'nope.csv'}") == 3
    assert "[D101]" in capsys.readouterr().err
    write(tmp_path / "r.csv", _rows(10))
    assert _compile(tmp_path, tiny_dir, "--train", str(tmp_path / "r.csv")) == 2        # no format prefix
    assert f"csv:{tmp_path / 'r.csv'}" in capsys.readouterr().err
    assert _compile(tmp_path, tiny_dir, "--train", "glue/rte", "--text-column", "x") == 2
    assert "[U130]" in capsys.readouterr().err
    assert _compile(tmp_path, tiny_dir, "--train", f"csv:{tmp_path / 'r.csv'}", "--data-dir", str(tmp_path)) == 2
    assert "[U130]" in capsys.readouterr().err


# --- metrics and identity --------------------------------------------------------------------------

def test_custom_metric_configs():
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(0)
    p, r = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    task = CustomTask("x", ("text",), ("a", "b", "c"))
    m = glue_metric(task)
    assert m.config_name == "custom-classification"
    got = m.compute(predictions=p, references=r)
    assert got == pytest.approx({"accuracy": float((p == r).mean()), "f1_macro": f1_score(r, p, average="macro")})
    reg = CustomTask("y", ("text",), None)
    s, t = rng.uniform(0, 1, 50), rng.uniform(0, 1, 50)
    assert glue_metric(reg).config_name == "custom-regression"
    assert set(glue_metric(reg).compute(predictions=s, references=t)) == {"pearson", "spearmanr"}
    assert compute(reg, s, t) == pytest.approx(glue_metric(reg).compute(predictions=s, references=t))


def test_identity_names_the_data_and_its_content(tmp_path, tiny_dir):
    from peltc.runtime.runfolder import RunOptions
    from peltc.runtime.runfolder import differences as _differences
    from peltc.runtime.run import prepare
    p = write(tmp_path / "r.csv", _rows(100))
    opts = lambda: RunOptions(spec=str(SPEC), task=f"csv:{p}", model=str(tiny_dir), k=20, dev_size=20,
                              out=str(tmp_path / "run"))
    task, *_, identity, plan, raw = prepare(opts())
    assert identity["task"] == task.name == "r"
    assert identity["data"]["source"]["train"]["path"] == str(p) and len(identity["data"]["hashes"]["train"]) == 64
    assert plan.path == tmp_path / "run" and set(raw) == {"train"}
    write(p, _rows(100, seed=5))                                     # same file, other content
    again = prepare(opts())[5]
    assert _differences(identity, again) == ["the train data (its content differs)"]
    o = opts()
    o.label_column = "label"
    o.text_column = "text"
    assert prepare(o)[5]["data"]["source"] == again["data"]["source"]   # the defaults, resolved


# --- end to end on a tiny model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def own_run(tmp_path_factory, tiny_dir):
    d = tmp_path_factory.mktemp("own")
    rows = _rows(150, text="review", label="sentiment")
    train = write(d / "reviews.csv", rows)
    out = d / "run"
    rc = main(["compile", str(SPEC), "--train", f"csv:{train}", "--text-column", "review", "--label-column",
               "sentiment", "--model", str(tiny_dir), "--out", str(out), *FAST])
    assert rc == 0
    return out, d


def test_own_run_folder_records_the_task(own_run):
    run, _ = own_run
    m = json.loads((run / "metrics.json").read_text())
    assert m["final"] and m["main_metric"] == "accuracy" and set(m["test"]) == {"accuracy", "f1_macro"}
    assert m["sizes"] == {"train": 32, "dev": 40, "test": 30}
    manifest = json.loads((run / "adapter" / "manifest.json").read_text())
    assert manifest["labels"] == ["neg", "pos"] and manifest["task"] == "reviews"
    assert manifest["task_type"] == "classification"
    assert manifest["own_data"]["data"]["text_column"] == "review"
    r = json.loads((run / "run.json").read_text())
    assert r["identity"]["data"]["source"]["label_column"] == "sentiment" and r["label_column"] == "sentiment"


def test_own_eval_reproduces_and_predict_file(own_run, capsys):
    run, d = own_run
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    printed = json.loads(capsys.readouterr().out.split("\nwarning")[0])
    assert printed == json.loads((run / "metrics.json").read_text())["test"]

    inputs = d / "inputs.jsonl"
    rows = [{"id": 7, "review": "a great film"}, {"review": "dull", "label": "gold-neg", "meta": {"x": 1}},
            {"id": 9, "text": "ignored: review comes first", "review": "fine"}]
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = d / "preds.jsonl"
    assert main(["predict", str(run), "--file", str(inputs), "--out", str(out), "--quiet", "--batch-size", "2"]) == 0
    cap = capsys.readouterr()
    assert "note: the input's 'label' field is kept as 'input_label'" in cap.err
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(preds) == 3 and [p["review"] for p in preds] == [r["review"] for r in rows]   # input order
    assert all(p["label"] in ("neg", "pos") and 0.5 <= p["probability"] <= 1 for p in preds)
    assert preds[0]["id"] == 7 and preds[1]["input_label"] == "gold-neg" and preds[1]["meta"] == {"x": 1}
    # the same as one --text at a time
    assert main(["predict", str(run), "--text", "a great film"]) == 0
    assert capsys.readouterr().out.split()[0] == preds[0]["label"]
    # stdout, and `text` when the run's column is absent
    plain = d / "plain.jsonl"
    plain.write_text('{"text": "a great film"}\n', encoding="utf-8")
    assert main(["predict", str(run), "--file", str(plain), "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["text"] == "a great film" and line["label"] == preds[0]["label"]
    # bad input rows name file, row and column
    bad = d / "bad.jsonl"
    bad.write_text('{"review": "ok"}\n{"review": ""}\n', encoding="utf-8")
    assert main(["predict", str(run), "--file", str(bad), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "bad.jsonl: row 2 (line 2), column 'review'" in err and "Traceback" not in err
    assert main(["predict", str(run)]) == 2 and "--file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_regression_dir(tmp_path_factory, tokenizer):
    """`tiny_dir` with a one-output head (its saved 2-class head would not load with num_labels 1)."""
    import transformers
    d = tmp_path_factory.mktemp("tiny-bert-1")
    transformers.set_seed(0)
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=37, num_labels=1)
    transformers.BertForSequenceClassification(cfg).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def test_own_regression_end_to_end_with_test_file(tmp_path, tiny_regression_dir, capsys):
    tiny_dir = tiny_regression_dir
    rng = np.random.default_rng(1)
    mk = lambda n: [{"text": f"{w} film", "score": round(float(s), 2)}
                    for w, s in ((POS[i % 4] if i % 2 else NEG[i % 4], rng.uniform(0, 5)) for i in range(n))]
    train = write(tmp_path / "scores.jsonl", mk(80))
    test = write(tmp_path / "held.jsonl", mk(12))
    run = tmp_path / "run"
    assert main(["compile", str(SPEC), "--train", f"json:{train}", "--test", str(test), "--label-column", "score",
                 "--model", str(tiny_dir), "--out", str(run), *FAST]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["main_metric"] == "spearmanr" and m["sizes"]["test"] == 12
    assert json.loads((run / "adapter" / "manifest.json").read_text())["labels"] is None
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out.split("\nwarning")[0]) == m["test"]
    assert main(["predict", str(run), "--file", str(test), "--quiet"]) == 0
    preds = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(preds) == 12 and all(isinstance(p["score"], float) for p in preds)
    assert all("label" not in p and "input_score" in p for p in preds)      # the gold score kept beside


# --- a grid over your own data -----------------------------------------------------------------------

def test_grid_over_your_own_data(tiny_dir, small_glue, tmp_path, capsys):
    """`peltc grid --tasks csv:…,rte`: your own data beside a GLUE task, its columns from the own-data flags,
    its column named by the file's stem and its metric from its runs; the record's table says so too."""
    train = write(tmp_path / "reviews.csv", _rows(150, text="review", label="sentiment"))
    record = tmp_path / "grid.json"
    rc = main(["grid", str(SPEC), "--tasks", f"csv:{train},rte", "--text-column", "review", "--label-column",
               "sentiment", "--model", str(tiny_dir), "--data-dir", str(small_glue), "--out", str(tmp_path / "g"),
               "--k", "32", "--seeds", "1", "--dev-size", "40", "--epochs", "1", "--min-steps", "0",
               "--max-length", "32", "--record", str(record)])
    out = capsys.readouterr().out
    assert rc == 0 and "FAILED" not in out, out
    runs = {r["task"]: r for r in json.loads(record.read_text())["runs"]}
    assert set(runs) == {"reviews", "rte"} and runs["reviews"]["main_metric"] == "accuracy"
    m = json.loads((tmp_path / "g" / "lora" / "reviews" / "k32" / "s1" / "metrics.json").read_text())
    assert m["sizes"] == {"train": 32, "dev": 40, "test": 30}
    assert runs["reviews"]["sizes"] == m["sizes"]                  # the record keeps the sizes (the dev size)
    md = (tmp_path / "g" / "grid.md").read_text()
    assert "| spec | reviews | rte | avg |" in md and "accuracy (reviews, rte)" in md
    assert main(["grid", "--table", str(record)]) == 0
    assert "| spec | reviews | rte | avg |" in capsys.readouterr().out


@pytest.mark.parametrize("args,code,where", [
    (["--text-column", "review"], "U130", "--text-column"),                        # no own data named
    (["--tasks", "csv:{a},csv:{b}", "--test", "{a}"], "U130", "--validation / --test"),
    (["--tasks", "csv:{a},json:{c}"], "U133", "both named 'a'"),
    (["--tasks", "csv:{missing}"], "D101", "missing.csv"),
])
def test_grid_own_data_mistakes(tmp_path, capsys, args, code, where):
    """Checked before any run starts: a clear error, no traceback, no run folder."""
    files = {"a": write(tmp_path / "a.csv", _rows(60)), "b": write(tmp_path / "b.csv", _rows(60)),
             "c": write(tmp_path / "a.jsonl", _rows(60)), "missing": tmp_path / "missing.csv"}
    args = [x.format(**files) for x in args]
    rc = main(["grid", str(SPEC), "--out", str(tmp_path / "g"), *args])
    err = capsys.readouterr().err
    assert rc in (2, 3) and code in err and where in err and "Traceback" not in err, err
    assert not (tmp_path / "g").exists()
