"""The shared document model of the language server: one spec's text checked as `peltc check` checks
it (`Analysis`, `analyse`), positions, paths, the files a spec brings in, and what is under the cursor.

Positions here are *server units*: 0-based lines and columns counted in code points (as the parser
counts them); `peltc.lsp.server` converts them to the client's encoding (UTF-16 by default).

The editor features are in their own modules: diagnostics.py (diagnostics, quick fixes), hover.py,
completion.py, navigation.py (definition, dependents), outline.py (document symbols), formatting.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lsprotocol import types as lsp

from peltc.compiler.ir import IR
from peltc.compiler.pipeline import build_ir
from peltc.compiler.space import Space, load_space
from peltc.compiler.space_check import check_space
from peltc.errors import Diagnostic, PeltError, Span, SpecError
from peltc.grammar import ast
from peltc.grammar.parser import parse

SOURCE = "peltc"
# Hover counts need a model; a spec without `model` (and no `model` setting) is counted on the one
# `peltc compile` uses by default, the packaged MiniLM (its dimensions are in the built-in table).
DEFAULT_HOVER_MODEL = "minilm"

Loader = Callable[[str], str]


# --- positions ----------------------------------------------------------------------------------
def pos(line: int, col: int) -> lsp.Position:
    """A 1-based parser (line, col) as a 0-based server position."""
    return lsp.Position(line=max(line - 1, 0), character=max(col - 1, 0))


def span_range(span: Span | None, text: str | None = None) -> lsp.Range:
    """A peltc span (1-based, exclusive end) as a server range. A span without an end covers one
    character (the caret `peltc check` draws), or the word there when the text is known."""
    if span is None:
        return lsp.Range(start=lsp.Position(line=0, character=0), end=lsp.Position(line=0, character=0))
    start = pos(span.line, span.col)
    if span.end_line is not None and span.end_col is not None:
        return lsp.Range(start=start, end=pos(span.end_line, span.end_col))
    width = 1
    if text is not None:
        lines = text.split("\n")
        if 1 <= span.line <= len(lines):
            m = re.match(r"[A-Za-z0-9_.\-]+", lines[span.line - 1][span.col - 1:])
            width = len(m.group(0)) if m else 1
    return lsp.Range(start=start, end=lsp.Position(line=start.line, character=start.character + width))


def in_span(span: Span | None, line0: int, char0: int) -> bool:
    """Is the server position inside (or at the end of) the span?"""
    if span is None:
        return False
    p = (line0 + 1, char0 + 1)
    end = (span.end_line or span.line, span.end_col or span.col + 1)
    return (span.line, span.col) <= p <= end


def offset_of(text: str, line0: int, char0: int) -> int:
    lines = text.split("\n")
    line0 = min(line0, len(lines) - 1)
    return sum(len(ln) + 1 for ln in lines[:line0]) + min(char0, len(lines[line0]))


def uri_to_path(uri: str) -> str:
    from urllib.parse import unquote, urlparse
    u = urlparse(uri)
    if u.scheme != "file":
        return uri
    return os.path.normpath(unquote(u.path))


def path_to_uri(path: str) -> str:
    return Path(path).resolve().as_uri() if not path.startswith("<") else path


def same_path(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, ValueError):
        return False


# --- the analysis of one document -----------------------------------------------------------------
@dataclass
class Analysis:
    path: str
    text: str
    tree: ast.Spec | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)   # peltc's, as `peltc check` reports them
    sources: dict[str, str] = field(default_factory=dict)
    ir: IR | None = None            # checked against the spec's model (or the `model` setting)
    hover_ir: IR | None = None      # the same with a model bound (DEFAULT_HOVER_MODEL when none)
    hover_model: str | None = None
    hover_model_defaulted: bool = False
    space: Space | None = None      # a search space (compiler/space.py): the IRs above are its first point


def make_loader(open_docs: dict[str, str] | None = None) -> Loader:
    """A loader for `extends` / `import`: the editor's unsaved text of an open file, else the disk. Its
    ``disk`` attribute maps each file it read from the disk to its modification time then (the server's
    kept space checks are dropped when one changes)."""
    docs = {str(Path(p).resolve()): t for p, t in (open_docs or {}).items()}
    disk: dict[str, int] = {}

    def load(path: str) -> str:
        key = str(Path(path).resolve())
        if key in docs:
            return docs[key]
        disk[key] = disk_mtime(key)
        return Path(path).read_text(encoding="utf-8")
    load.disk = disk
    return load


def disk_mtime(path: str) -> int:
    """A file's modification time in ns (-1: gone)."""
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return -1


def analyse(text: str, path: str, *, model: str | None = None, loader: Loader | None = None,
            hover: bool = True, memo: dict | None = None) -> Analysis:
    """Check ``text`` (the spec at ``path``) as `peltc check PATH [--model MODEL]` does (``memo``: a search
    space's checks kept between calls, `space_check.check_space`)."""
    a = Analysis(path, text)
    try:
        a.tree = parse(text, path)
    except SpecError:
        a.tree = None
    try:
        space = load_space(text, path=path) if a.tree is not None else None
        if space is not None and space.dimensions:   # a search space: every point, as `peltc check` does
            sc = check_space(space, model=model, loader=loader, memo=memo)
            r, warnings, a.space = sc.result, sc.warnings, space
            text = space.layout_text(space.first())   # hover: the first point, at the space's positions
        else:
            r = build_ir(text, path, model=model, loader=loader)
            warnings = r.warnings
    except SpecError as e:
        a.diagnostics = list(e.diagnostics)
        a.sources = dict(e.sources)
        return a
    except PeltError as e:   # a bad `model` setting: a usage error, as `peltc check --model X` reports it
        a.diagnostics = [e.diagnostic]
        return a
    a.diagnostics = list(warnings)
    a.sources = dict(r.diagnostics.sources) | {path: a.text}
    a.ir = r.ir
    if not hover:
        return a
    if r.ir.settings.family is not None:
        a.hover_ir, a.hover_model = r.ir, r.ir.settings.model or model
    else:
        try:
            a.hover_ir = build_ir(text, path, model=DEFAULT_HOVER_MODEL, loader=loader).ir
            a.hover_model, a.hover_model_defaulted = DEFAULT_HOVER_MODEL, True
        except PeltError:
            a.hover_ir = None
    return a


# --- the files a spec brings in ----------------------------------------------------------------
_INCLUDE = re.compile(r'^\s*(?:extends|import)\b[^"\n#]*"([^"\n]*)"', re.M)


def included(path: str, loader: Loader, seen: set[str] | None = None) -> set[str]:
    """Every file that ``path`` brings in through extends / import, transitively (resolved paths)."""
    seen = set() if seen is None else seen
    try:
        text = loader(path)
    except (OSError, UnicodeDecodeError, ValueError):
        return seen
    for rel in _INCLUDE.findall(text):
        p = str((Path(path).parent / rel).resolve())
        if p not in seen:
            seen.add(p)
            included(p, loader, seen)
    return seen


# --- finding what is under the cursor -------------------------------------------------------------
@dataclass
class Found:
    statement: ast.Statement | None = None
    section: ast.Section | None = None
    member: object | None = None             # ast.Param / ast.At / ast.Gate / ast.LayerOverride
    override: ast.LayerOverride | None = None
    target: ast.Target | None = None
    part: str = ""                           # "keyword" | "name" | "param-name" | "value" | ...


def find(tree: ast.Spec, line0: int, char0: int) -> Found:
    for st in tree.statements:
        if not in_span(st.span, line0, char0):
            continue
        f = Found(statement=st)
        if isinstance(st, ast.Section):
            f.section = st
            if in_span(st.keyword_span, line0, char0):
                f.part = "keyword"
                return f
            if in_span(st.name_span, line0, char0):
                f.part = "name"
                return f
            _find_member(st.members, f, line0, char0)
        return f
    return Found()


def _find_member(members, f: Found, line0: int, char0: int) -> None:
    for m in members:
        if not in_span(m.span, line0, char0):
            continue
        f.member = m
        if isinstance(m, ast.Param):
            name_end = Span(m.span.file, m.span.line, m.span.col, m.span.line, m.span.col + len(m.name))
            f.part = "param-name" if in_span(name_end, line0, char0) else "value"
        elif isinstance(m, ast.At):
            f.part = "at"
            f.target = next((t for t in m.targets if in_span(t.span, line0, char0)), None)
        elif isinstance(m, ast.Gate):
            f.part = "gate"
        elif isinstance(m, ast.LayerOverride):
            f.override = m
            f.part = "override"
            inner = Found()
            _find_member(m.members, inner, line0, char0)
            if inner.member is not None:
                f.member, f.part, f.target = inner.member, inner.part, inner.target
        return
