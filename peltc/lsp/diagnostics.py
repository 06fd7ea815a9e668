"""Diagnostics for the editor: an analysis' diagnostics as LSP diagnostics (`peltc check`'s codes,
spans, messages, help and severities; an error in an imported or extended file shown on the `extends` /
`import` line that brings it in, with its own location as related information), and a quick fix for
each did-you-mean."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from lsprotocol import types as lsp

from peltc.errors import Diagnostic
from peltc.grammar import ast
from peltc.lsp.analysis import SOURCE, Analysis, Loader, included, make_loader, offset_of, path_to_uri, \
    same_path, span_range


def suggestions(help_text: str | None) -> list[str]:
    """The names a help line's "did you mean 'a' or 'b'?" proposes."""
    if not help_text:
        return []
    m = re.search(r"did you mean (.+?)\?", help_text)
    return re.findall(r"'([^']*)'", m.group(1)) if m else []


def _message(d: Diagnostic) -> str:
    return d.message + (f"\nhelp: {d.help}" if d.help else "")


def to_lsp_diagnostics(a: Analysis, loader: Loader | None = None) -> list[lsp.Diagnostic]:
    """The analysis' diagnostics for its own document. A diagnostic in another file (an imported or
    extended spec) is shown on the statement that brings that file in, with the real location as
    related information."""
    loader = loader or make_loader()
    out: list[lsp.Diagnostic] = []
    includes: list[tuple[ast.Extends | ast.Import, set[str]]] | None = None
    for d in a.diagnostics:
        sev = lsp.DiagnosticSeverity.Warning if d.severity == "warning" else lsp.DiagnosticSeverity.Error
        data = {"help": d.help, "suggestions": suggestions(d.help)}
        code = d.code   # passed through as it is (tests/test_errors_registry.py reads `code=code` so)
        if d.span is None or same_path(d.span.file, a.path):
            out.append(lsp.Diagnostic(range=span_range(d.span, a.text), message=_message(d), severity=sev,
                                      code=code, source=SOURCE, data=data))
            continue
        if includes is None:
            includes = []
            for st in (a.tree.statements if a.tree else ()):
                if isinstance(st, (ast.Extends, ast.Import)):
                    p = str((Path(a.path).parent / st.path).resolve())
                    includes.append((st, {p} | included(p, loader)))
        target = str(Path(d.span.file).resolve())
        stmt = next((st for st, files in includes if target in files), includes[0][0] if includes else None)
        where = f"{d.span.file}:{d.span.line}:{d.span.col}"
        related = [lsp.DiagnosticRelatedInformation(
            location=lsp.Location(uri=path_to_uri(d.span.file),
                                  range=span_range(d.span, a.sources.get(d.span.file))),
            message=_message(d))]
        out.append(lsp.Diagnostic(range=span_range(stmt.span if stmt else None, a.text),
                                  message=f"in {where}: {_message(d)}", severity=sev, code=code,
                                  source=SOURCE, related_information=related, data=data))
    return out


def _bad_names(message: str) -> list[str]:
    names = re.findall(r"'([^']*)'", message)
    m = re.search(r"; got (\S+)$", message)
    if m:
        names.insert(0, m.group(1))
    return names


def quick_fixes(text: str, rng: lsp.Range, message: str, data: dict | None) -> list[tuple[str, lsp.Range, str]]:
    """(title, range, new text) for each did-you-mean of a diagnostic: the misspelt name inside the
    diagnostic's range replaced by a suggestion."""
    sugg = (data or {}).get("suggestions") or suggestions(message.partition("\nhelp: ")[2])
    if not sugg:
        return []
    start = offset_of(text, rng.start.line, rng.start.character)
    end = offset_of(text, rng.end.line, rng.end.character)
    region = text[start:end]
    bad = _bad_names(message.split("\n", 1)[0])
    out = []
    for s in sugg:
        loc = _replacement(region, bad, s)
        if loc is None:
            continue
        i, j = loc
        a_line, a_char = _position(text, start + i)
        b_line, b_char = _position(text, start + j)
        out.append((f"Change to '{s}'", lsp.Range(start=lsp.Position(line=a_line, character=a_char),
                                                  end=lsp.Position(line=b_line, character=b_char)),
                    _new_text(region[i:j], bad, s)))
    return out


def _word_at(region: str, word: str) -> int | None:
    for m in re.finditer(re.escape(word), region):
        before = region[m.start() - 1] if m.start() else " "
        after = region[m.end()] if m.end() < len(region) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after in "_"):
            return m.start()
    return None


def _replacement(region: str, bad: list[str], good: str) -> tuple[int, int] | None:
    """Where in ``region`` the misspelt name is: the whole name, else its one differing dotted part."""
    for b in sorted(bad, key=lambda b: -difflib.SequenceMatcher(None, b, good).ratio()):
        i = _word_at(region, b)
        if i is not None:
            return i, i + len(b)
        bp, gp = b.split("."), good.split(".")
        if len(bp) == len(gp):
            diff = [(x, y) for x, y in zip(bp, gp) if x != y]
            if len(diff) == 1:
                i = _word_at(region, diff[0][0])
                if i is not None:
                    return i, i + len(diff[0][0])
    return None


def _new_text(found: str, bad: list[str], good: str) -> str:
    if found in bad:
        return good
    for b in bad:   # one dotted part: the matching part of the suggestion
        for x, y in zip(b.split("."), good.split(".")):
            if x == found:
                return y
    return good


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    line = before.count("\n")
    return line, offset - (before.rfind("\n") + 1)
