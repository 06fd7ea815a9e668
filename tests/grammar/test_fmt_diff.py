"""`peltc fmt` rewrites in place; `--diff` prints what would change and writes nothing (issue 22, item 14)."""

from __future__ import annotations

from peltc.cli import main
from peltc.grammar.fmt import format_source

MESSY = "lora qv {at layers[*].attention.{query,value}\n rank 8}\n"


def test_fmt_diff_prints_a_unified_diff_and_writes_nothing(tmp_path, capsys):
    p = tmp_path / "messy.pelt"
    p.write_text(MESSY)
    assert main(["fmt", "--diff", str(p)]) == 0
    out = capsys.readouterr().out
    assert p.read_text() == MESSY                       # untouched
    lines = out.split("\n")
    assert lines[0].startswith("--- ") and lines[1].startswith("+++ ") and lines[2].startswith("@@")
    removed = [x[1:] for x in lines[3:] if x.startswith("-")]
    added = [x[1:] for x in lines[3:] if x.startswith("+")]
    assert removed == [x for x in MESSY.split("\n") if x]
    assert set(added) <= set(format_source(MESSY, "m.pelt").split("\n")) and added
    assert main(["fmt", "--diff", "--check", str(p)]) == 1 and p.read_text() == MESSY


def test_fmt_diff_of_a_canonical_spec_is_empty(tmp_path, capsys):
    p = tmp_path / "ok.pelt"
    p.write_text(format_source(MESSY, "ok.pelt"))
    assert main(["fmt", "--diff", str(p)]) == 0
    assert capsys.readouterr().out == ""


def test_fmt_rewrites_in_place(tmp_path, capsys):
    p = tmp_path / "messy.pelt"
    p.write_text(MESSY)
    assert main(["fmt", str(p)]) == 0
    assert p.read_text() == format_source(MESSY, "m.pelt")
