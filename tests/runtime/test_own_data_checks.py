"""Issue 22 (own data and serving): CSV rows with the wrong field count and non-UTF-8 bytes named by row and
line; the label set said at start; `peltc eval` on a run whose data moved; `predict --file` one way for one
run and several, reading standard input too."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from peltc.cli import main
from peltc.errors import DataError
from peltc.runtime import own_files, task_own

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "lora.pelt"
FAST = ["--k", "32", "--dev-size", "40", "--epochs", "1", "--batch-size", "16", "--min-steps", "0",
        "--max-length", "32", "--quiet", "--no-render"]
GOOD = "".join(f"a {'good' if i % 2 else 'bad'} film {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))


def _load(p: Path, **kw):
    return task_own.load_own(own_files.OwnData(train=own_files.parse_source(f"csv:{p}"), **kw))


def _err(p: Path, **kw) -> DataError:
    with pytest.raises(DataError) as e:
        _load(p, **kw)
    return e.value


# --- items 1 and 6: field counts and encoding, with row and line ------------------------------------

@pytest.mark.parametrize("body, row, line", [
    ("so, a gripping funny film,pos\n" + GOOD, 1, 2),                  # pandas made "so" an index
    (GOOD + "so, a gripping funny film,pos\n", 41, 42),                 # one bad row among good ones
    ("".join(r.rstrip("\n") + ",\n" for r in GOOD.splitlines(True)), 1, 2),   # a trailing extra field on every row
    (GOOD + "a lonely field\n", 41, 42),                                # a field too few
    ('"a film\nover two lines",pos\n' + GOOD + "x,pos,1,2\n", 42, 44),  # a quoted field spanning lines counts as one row
])
def test_wrong_field_count_names_file_row_and_line(tmp_path, body, row, line):
    p = tmp_path / "commas.csv"
    p.write_text("review,sentiment\n" + body, encoding="utf-8")
    e = _err(p, text_column="review", label_column="sentiment").diagnostic
    assert (e.code, e.span.file, e.span.line) == ("D102", str(p), line)
    assert f"row {row} (line {line})" in e.message and "commas.csv" in e.message


def test_non_utf8_byte_names_row_and_line(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes(b"text,label\n" + GOOD.encode() + b"caf\xe9 au lait,pos\n")
    e = _err(p).diagnostic
    assert (e.code, e.span.line, e.span.col) == ("D105", 42, 4)
    assert "row 41 (line 42)" in e.message


def test_rows_after_a_multiline_field_are_named_by_their_real_line(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text('text,label\n"two\nlines",pos\ngood,neg\n,pos\n', encoding="utf-8")
    e = _err(p).diagnostic
    assert (e.code, e.span.line) == ("D110", 5) and "row 3 (line 5)" in e.message


def test_cli_field_count_is_exit_3_without_traceback(tmp_path, tiny_dir, capsys):
    p = tmp_path / "four.csv"
    p.write_text("text,label\n" + GOOD + "a,b,c,d\n", encoding="utf-8")
    rc = main(["compile", str(SPEC), "--model", str(tiny_dir), "--train", f"csv:{p}", "--out", str(tmp_path / "run"),
               *FAST])
    err = capsys.readouterr().err
    assert rc == 3 and "[D102]" in err and f"{p}:42:1" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# --- item 10: the label set, with counts, said at start -----------------------------------------------

def test_label_set_and_a_label_seen_once_are_said(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("text,label\n" + GOOD + "so-so,maybe\n", encoding="utf-8")
    raw, task, _ = _load(p)
    lines = task_own.label_report(task, raw["train"])
    assert task.labels == ("maybe", "neg", "pos")
    assert lines[0].endswith("3 classes from the training data: maybe 1, neg 20, pos 20")
    assert len(lines) == 2 and lines[1].startswith("warning: label 'maybe' occurs once")
    p.write_text("text,label\n" + GOOD, encoding="utf-8")
    raw, task, _ = _load(p)
    assert len(task_own.label_report(task, raw["train"])) == 1          # no warning without a rare label


# --- the end-to-end items: eval on moved data (2), predict --file (4) --------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dir):
    d = tmp_path_factory.mktemp("own")
    rows = "".join(f"{i},a {'good' if i % 2 else 'bad'} film,{'pos' if i % 2 else 'neg'}\n" for i in range(150))
    (d / "reviews.csv").write_text("id,review,sentiment\n" + rows, encoding="utf-8")
    out = d / "run"
    assert main(["compile", str(SPEC), "--train", f"csv:{d / 'reviews.csv'}", "--text-column", "review",
                 "--label-column", "sentiment", "--model", str(tiny_dir), "--out", str(out), *FAST]) == 0
    return out, d


def test_eval_on_moved_data_is_a_data_error_then_found_with_train(run, capsys, tmp_path):
    out, d = run
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    before = json.loads(capsys.readouterr().out.split("\nwarning")[0])
    moved = tmp_path / "elsewhere.csv"
    shutil.move(d / "reviews.csv", moved)
    try:
        rc = main(["eval", str(out)])
        err = capsys.readouterr().err
        assert rc == 3 and "[D101]" in err and str(d / "reviews.csv") in err and "--train" in err
        assert "Traceback" not in err
        assert main(["eval", str(out), "--train", str(moved)]) == 0
        printed = capsys.readouterr().out
        assert json.loads(printed.split("\nwarning")[0]) == before and "changed" not in printed   # moved, not changed
        assert main(["eval", str(out), "--train", f"csv:{tmp_path / 'nope.csv'}"]) == 3
        assert "[D101]" in capsys.readouterr().err
    finally:
        shutil.move(moved, d / "reviews.csv")


def test_eval_test_flag_scores_a_moved_test_file(tmp_path, tiny_dir, capsys):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": f"a {w} film", "label": w == "good"}) + "\n"
                                                  for w in ("good", "bad") * 40), encoding="utf-8")
    (tmp_path / "test.jsonl").write_text('{"text": "good", "label": true}\n{"text": "bad", "label": false}\n')
    out = tmp_path / "run"
    assert main(["compile", str(SPEC), "--train", f"json:{tmp_path / 'train.jsonl'}", "--test",
                 str(tmp_path / "test.jsonl"), "--model", str(tiny_dir), "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    (tmp_path / "test.jsonl").rename(tmp_path / "t2.jsonl")
    assert main(["eval", str(out)]) == 3
    err = capsys.readouterr().err
    assert "[D101]" in err and "test.jsonl" in err and "--test" in err and "--train" not in err.split("help:")[1]
    assert main(["eval", str(out), "--test", str(tmp_path / "t2.jsonl")]) == 0
    assert set(json.loads(capsys.readouterr().out.split("\nwarning")[0])) == {"accuracy", "f1_macro"}


def test_predict_file_mixed_keys_no_null_and_same_as_multirun(run, capsys, monkeypatch):
    out, d = run
    inputs = d / "mixed.jsonl"
    rows = [{"id": 1, "review": "a good film"}, {"text": "a bad film", "label": "neg"}, {"review": "fine", "x": None}]
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", str(out), "--file", str(inputs), "--quiet"]) == 0
    single = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [set(p) - {"label", "probability"} for p in single] == [{"id", "review"}, {"text", "input_label"},
                                                                   {"review", "x"}]
    from peltc.runtime.multirun import predict_runs_file
    routed = d / "routed.jsonl"
    routed.write_text("".join(json.dumps({"run": "run", **r}) + "\n" for r in rows), encoding="utf-8")
    predict_runs_file([out], routed, d / "routed-preds.jsonl", progress=False)
    multi = [json.loads(x) for x in (d / "routed-preds.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in p.items() if k != "run"} for p in multi] == single
    # standard input (--file -) and a pipe by its path (/dev/stdin, <(…) are /dev/fd/N)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(inputs.read_bytes())))
    assert main(["predict", str(out), "--file", "-", "--quiet"]) == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == single
    r, w = os.pipe()
    os.write(w, inputs.read_bytes())
    os.close(w)
    try:
        assert main(["predict", str(out), "--file", f"/dev/fd/{r}", "--quiet"]) == 0
    finally:
        os.close(r)
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == single
    # a bad row of standard input is named by its line
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"review": "ok"}\n\n{"id": 3}\n')))
    assert main(["predict", str(out), "--file", "-", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "[D104]" in err and "<stdin>:3:1" in err and "row 2 (line 3)" in err
