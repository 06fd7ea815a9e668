"""docs/language.md holds the table of insertion points per family that `compiler/points_doc.py`
generates from `archs.FAMILIES` (issue 22, item 14: `ffn.up` / `ffn.down` are `intermediate.dense` /
`output.dense` on BERT)."""

from __future__ import annotations

from pathlib import Path

from peltc.compiler.archs import FAMILIES
from peltc.compiler.points_doc import BEGIN, END, markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"


def test_the_language_doc_holds_the_generated_table():
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, "regenerate: python -m peltc.compiler.points_doc"
    held = text[text.index(BEGIN):text.index(END) + len(END)]
    assert held == markdown(), "docs/language.md is stale: python -m peltc.compiler.points_doc"


def test_the_table_names_berts_ffn_linears():
    rows = {r.split(" | ")[0].strip("| `"): r.split(" | ")[1] for r in markdown().split("\n") if r.startswith("| `")}
    assert rows["ffn.up"] == "`intermediate.dense`" and rows["ffn.down"] == "`output.dense`"
    assert FAMILIES["bert"].points["ffn.up"] == "intermediate.dense"
