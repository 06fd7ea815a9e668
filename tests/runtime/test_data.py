"""GLUE loading (real local files and malformed ones), the low-resource sampling, tokenisation."""

import datasets
import pytest

from peltc.errors import DataError, UsageError
from peltc.runtime import classify, data, task_glue
from peltc.runtime.task_glue import task, TASKS


# --- the real files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, n_train, n_dev", [
    ("cola", 8551, 1043), ("mrpc", 3668, 408), ("rte", 2490, 277), ("stsb", 5749, 1500), ("sst2", 67349, 872)])
def test_local_glue_row_counts(glue_dir, name, n_train, n_dev):
    ds = task_glue.load_glue(TASKS[name], glue_dir)
    assert (len(ds["train"]), len(ds["dev"])) == (n_train, n_dev)
    t = TASKS[name]
    assert ds["train"].column_names == [*t.columns, "label", "idx"]
    assert ds["train"].features == task_glue.features(t)


def test_local_glue_content(glue_dir):
    cola = task_glue.load_glue(task("cola"), glue_dir)["train"]
    assert cola[0] == {"sentence": "Our friends won't buy this analysis, let alone the next one we propose.",
                       "label": 1, "idx": 0}
    assert cola.features["label"].names == ["unacceptable", "acceptable"]
    mrpc = task_glue.load_glue(task("mrpc"), glue_dir)["train"]      # BOM before the header
    assert mrpc[0]["label"] == 1 and mrpc[0]["sentence1"].startswith("Amrozi accused his brother")
    assert mrpc[1]["label"] == 0
    rte = task_glue.load_glue(task("rte"), glue_dir)["dev"]
    assert rte.features["label"].names == ["entailment", "not_entailment"]
    assert rte[0]["label"] == 1                                   # not_entailment
    stsb = task_glue.load_glue(task("stsb"), glue_dir)["dev"]
    assert stsb[0]["label"] == pytest.approx(5.0) and stsb[1]["label"] == pytest.approx(4.75)
    assert min(stsb["label"]) >= 0 and max(stsb["label"]) <= 5


def test_quotes_are_text(glue_dir):
    # QUOTE_NONE: a stray quote does not swallow the following lines
    mrpc = task_glue.load_glue(task("mrpc"), glue_dir, splits=["dev"])["dev"]
    assert mrpc[0]["sentence2"].startswith('"The foodservice pie business')


def test_dev_only_task(glue_dir):
    ds = task_glue.load_glue(task("qnli"), glue_dir, splits=["dev"])
    assert len(ds["dev"]) == 5463
    with pytest.raises(DataError) as e:                           # no QNLI train.tsv here
        task_glue.load_glue(task("qnli"), glue_dir)
    assert e.value.diagnostic.code == "D101"
    assert e.value.diagnostic.span.file.endswith("QNLI/train.tsv")


def test_env_dir_is_used(glue_dir, monkeypatch):
    monkeypatch.setenv(task_glue.ENV_DIR, str(glue_dir))
    monkeypatch.setattr(datasets, "load_dataset", _no_hub)
    assert len(task_glue.load_glue(task("rte"), splits=["dev"])["dev"]) == 277


def _no_hub(*args, **kwargs):
    raise ConnectionError("no network")


def test_hub_failure_says_to_pass_data_dir(monkeypatch):
    monkeypatch.delenv(task_glue.ENV_DIR, raising=False)
    monkeypatch.setattr(task_glue, "hub_offline", lambda: None)     # the Hub reachable: datasets is asked
    seen = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: seen.append(a) or _no_hub())
    with pytest.raises(DataError) as e:
        task_glue.load_glue(task("cola"))
    assert seen == [("nyu-mll/glue", "cola")]
    assert e.value.diagnostic.code == "D107" and "--data-dir" in e.value.diagnostic.help


def test_hub_splits_are_renamed(monkeypatch):
    monkeypatch.delenv(task_glue.ENV_DIR, raising=False)
    monkeypatch.setattr(task_glue, "hub_offline", lambda: None)
    fake = datasets.DatasetDict({s: datasets.Dataset.from_dict({"x": [s]})
                                 for s in ("train", "validation_matched", "validation_mismatched")})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: fake)
    ds = task_glue.load_glue(task("mnli"))
    assert ds["dev"]["x"] == ["validation_matched"] and ds["train"]["x"] == ["train"]


def test_missing_data_dir_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        task_glue.load_glue(task("rte"), tmp_path / "nope")


# --- malformed files -----------------------------------------------------------------------------

def _write(tmp_path, folder, name, text):
    d = tmp_path / folder
    d.mkdir(exist_ok=True)
    (d / name).write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("folder, name, text, code, line", [
    ("CoLA", "train.tsv", "gj04\t1\t\tGood.\ngj04\t0\tBad.\n", "D102", 2),            # 3 columns, not 4
    ("CoLA", "train.tsv", "gj04\t1\t\tGood.\ngj04\t1\t\tFine.\ngj04\tyes\t\tBad.\n", "D103", 3),
    ("RTE", "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n", "D103", 3),
    ("RTE", "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\n", "D102", 2),
    ("RTE", "train.tsv", "index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n", "D104", 1),
    ("STS-B", "train.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                           "0\tg\tf\ty\to\tn\tn\ta\tb\tfive\n", "D103", 2),
])
def test_malformed_files_name_file_and_line(tmp_path, folder, name, text, code, line):
    root = _write(tmp_path, folder, name, text)
    t = task(folder)
    with pytest.raises(DataError) as e:
        task_glue.load_local(t, root, splits=["train"])
    d = e.value.diagnostic
    assert (d.code, d.span.line) == (code, line)
    assert d.span.file == str(root / folder / name)
    assert d.help   # says what was expected


def test_missing_file(tmp_path):
    (tmp_path / "MRPC").mkdir()
    with pytest.raises(DataError) as e:
        task_glue.load_local(task("mrpc"), tmp_path, splits=["dev"])
    assert e.value.diagnostic.code == "D101"
    assert e.value.exit_code == 3


def test_blank_last_line_and_bom(tmp_path):
    root = _write(tmp_path, "MRPC", "dev.tsv",
                  "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\ta\t\"b\n\n")
    ds = task_glue.load_local(task("mrpc"), root, splits=["dev"])["dev"]
    assert ds[0] == {"sentence1": "a", "sentence2": '"b', "label": 1, "idx": 0}


# --- sampling ------------------------------------------------------------------------------------

def _toy(n_train=300, n_dev=20):
    t = task("sst2")
    mk = lambda n, o: datasets.Dataset.from_dict(
        {"sentence": [f"s{o + i}" for i in range(n)], "label": [i % 2 for i in range(n)], "idx": list(range(n))},
        features=task_glue.features(t))
    return datasets.DatasetDict({"train": mk(n_train, 0), "dev": mk(n_dev, 10_000)})


def test_sample_sizes_disjoint_and_test_is_glue_dev():
    ds = _toy()
    s = data.sample(ds, 50, seed=1, dev_size=100)
    assert {k: len(v) for k, v in s.items()} == {"train": 50, "dev": 100, "test": 20}
    assert not set(s["train"]["idx"]) & set(s["dev"]["idx"])
    assert s["test"]["sentence"] == ds["dev"]["sentence"]


def test_sample_is_deterministic_per_seed():
    ds = _toy()
    a, b, c = (data.sample(ds, 50, seed=s, dev_size=100) for s in (1, 1, 2))
    assert a["train"]["idx"] == b["train"]["idx"] and a["dev"]["idx"] == b["dev"]["idx"]
    assert a["train"]["idx"] != c["train"]["idx"]


def test_sample_nested_over_k_and_all():
    ds = _toy()
    small, large, every = (data.sample(ds, k, seed=3, dev_size=100) for k in (20, 60, "all"))
    assert set(small["train"]["idx"]) <= set(large["train"]["idx"]) <= set(every["train"]["idx"])
    assert small["dev"]["idx"] == every["dev"]["idx"]
    assert len(every["train"]) == 200


def test_sample_k_too_large_and_bad_k():
    with pytest.raises(DataError) as e:
        data.sample(_toy(), 250, seed=1, dev_size=100)
    assert e.value.diagnostic.code == "D106"
    with pytest.raises(UsageError):
        data.sample(_toy(), "many", seed=1)
    assert data.parse_k("100") == 100 and data.parse_k("ALL") == "all"


def test_sample_real_files(glue_dir):
    s = data.sample(task_glue.load_glue(task("rte"), glue_dir), 100, seed=1)
    assert (len(s["train"]), len(s["dev"]), len(s["test"])) == (100, 1000, 277)
    again = data.sample(task_glue.load_glue(task("rte"), glue_dir), 100, seed=1)
    assert s["train"]["sentence1"] == again["train"]["sentence1"]


# --- tokenisation --------------------------------------------------------------------------------

def test_tokenize_pairs_truncation_sorting_and_padding(glue_dir, tokenizer):
    t = task("rte")
    s = data.sample(task_glue.load_glue(t, glue_dir), 16, seed=1, dev_size=16)
    enc = classify.tokenize(s, tokenizer, t, max_length=32)
    ex = enc["train"][0]
    assert set(enc["train"].column_names) >= {"input_ids", "attention_mask", "token_type_ids", "label", "length"}
    assert "sentence1" not in enc["train"].column_names
    assert ex["input_ids"].count(tokenizer.sep_token_id) == 2 and 1 in ex["token_type_ids"]   # a pair
    assert max(enc["test"]["length"]) <= 32
    lengths = enc["test"]["length"]
    assert lengths == sorted(lengths, reverse=True)               # eval splits longest first
    keys = ("input_ids", "attention_mask", "token_type_ids", "label")
    batch = classify.collator(tokenizer)([{k: enc["train"][i][k] for k in keys} for i in range(4)])
    assert batch["input_ids"].shape[1] == max(enc["train"]["length"][:4])   # padded to the batch's longest
    assert batch["labels"].tolist() == enc["train"]["label"][:4]
