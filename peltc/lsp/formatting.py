"""Formatting: `peltc fmt` as one edit replacing the whole document."""

from __future__ import annotations

from lsprotocol import types as lsp

from peltc.errors import SpecError


def formatting(text: str, path: str) -> list[lsp.TextEdit] | None:
    """`peltc fmt`: one edit replacing the whole document; None when it does not parse."""
    from peltc.grammar.fmt import format_source
    try:
        new = format_source(text, path)
    except SpecError:
        return None
    if new == text:
        return []
    lines = text.split("\n")
    end = lsp.Position(line=len(lines) - 1, character=len(lines[-1]))
    return [lsp.TextEdit(range=lsp.Range(start=lsp.Position(line=0, character=0), end=end), new_text=new)]
