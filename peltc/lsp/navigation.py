"""Navigation: go to definition across `extends` / `import` and for overridden instances, and the open
documents that depend on a spec (to re-check them when it changes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from lsprotocol import types as lsp

from peltc.errors import Span, SpecError
from peltc.grammar import ast
from peltc.grammar.parser import parse
from peltc.lsp.analysis import Analysis, Loader, find, included, path_to_uri, same_path, span_range


def _parse_file(path: str, loader: Loader) -> ast.Spec | None:
    try:
        return parse(loader(path), path)
    except (OSError, UnicodeDecodeError, ValueError, SpecError):
        return None


def _declarations(path: str, name: str, loader: Loader, seen: set[str] | None = None,
                  include_self: bool = True, tree: ast.Spec | None = None) -> list[tuple[str, Span]]:
    """Where ``name`` is declared as an instance in ``path`` (its ``tree`` when given) or the files it
    brings in; the nearest last (the spec's own declaration after its bases')."""
    seen = set() if seen is None else seen
    key = str(Path(path).resolve())
    if key in seen:
        return []
    seen.add(key)
    tree = tree if tree is not None else _parse_file(path, loader)
    if tree is None:
        return []
    out: list[tuple[str, Span]] = []
    for st in tree.statements:
        if isinstance(st, (ast.Extends, ast.Import)):
            if isinstance(st, ast.Import) and st.names is not None and name not in st.names:
                continue
            out += _declarations(str(Path(path).parent / st.path), name, loader, seen)
        elif include_self and isinstance(st, ast.Section) and st.name == name and st.name_span:
            out.append((path, st.name_span))
    return out


def definition(a: Analysis, line0: int, char0: int, loader: Loader) -> list[lsp.Location]:
    tree = a.tree
    if tree is None:
        return []
    f = find(tree, line0, char0)
    st = f.statement
    if isinstance(st, ast.Extends) or (isinstance(st, ast.Import) and st.names is None):
        p = Path(a.path).parent / st.path
        return [lsp.Location(uri=path_to_uri(str(p)), range=lsp.Range(start=lsp.Position(line=0, character=0),
                                                                       end=lsp.Position(line=0, character=0)))]
    name = None
    if isinstance(st, ast.Import):
        p = Path(a.path).parent / st.path
        word = _word_under(a.text, line0, char0)
        if word and st.names and word in st.names:
            return [lsp.Location(uri=path_to_uri(f), range=span_range(s))
                    for f, s in _declarations(str(p), word, loader)[-1:]]
        return [lsp.Location(uri=path_to_uri(str(p)), range=lsp.Range(start=lsp.Position(line=0, character=0),
                                                                        end=lsp.Position(line=0, character=0)))]
    if isinstance(st, ast.Remove):
        name = st.name
    elif f.section is not None and f.section.name and f.part in ("keyword", "name"):
        name = f.section.name
    if name is None:
        return []
    decls = _declarations(a.path, name, loader, include_self=False, tree=tree)
    return [lsp.Location(uri=path_to_uri(f), range=span_range(s)) for f, s in decls[-1:]]


def _word_under(text: str, line0: int, char0: int) -> str | None:
    lines = text.split("\n")
    if line0 >= len(lines):
        return None
    ln = lines[line0]
    for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_-]*", ln):
        if m.start() <= char0 <= m.end():
            return m.group(0)
    return None


def iter_open_dependents(path: str, docs: Iterable[str], loader: Loader) -> list[str]:
    """The open documents that extend or import ``path`` (directly or not)."""
    target = str(Path(path).resolve())
    return [d for d in docs if not same_path(d, path) and target in included(d, loader)]
