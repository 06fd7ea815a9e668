"""Document symbols: the outline of a spec (instances with their members, head, train, model, extends,
import, remove)."""

from __future__ import annotations

from lsprotocol import types as lsp

from peltc.errors import Span
from peltc.grammar import ast
from peltc.lsp.analysis import Analysis, span_range


def _sym(name: str, kind: lsp.SymbolKind, span: Span, sel: Span | None = None, detail: str | None = None,
         children: list | None = None) -> lsp.DocumentSymbol:
    return lsp.DocumentSymbol(name=name, kind=kind, range=span_range(span), selection_range=span_range(sel or span),
                              detail=detail, children=children or None)


def _member_symbols(members) -> list[lsp.DocumentSymbol]:
    S = lsp.SymbolKind
    out = []
    for m in members:
        if isinstance(m, ast.Param):
            out.append(_sym(m.name, S.Property, m.span, detail=m.value.text))
        elif isinstance(m, ast.At):
            out.append(_sym("at", S.Field, m.span, detail=f"{len(m.targets)} target{'s' if len(m.targets) > 1 else ''}"))
        elif isinstance(m, ast.Gate):
            out.append(_sym("gate", S.Event, m.span, detail=m.expr.name))
        elif isinstance(m, ast.LayerOverride):
            out.append(_sym("layers[…]", S.Namespace, m.span, children=_member_symbols(m.members)))
    return out


def document_symbols(a: Analysis) -> list[lsp.DocumentSymbol]:
    if a.tree is None:
        return []
    S = lsp.SymbolKind
    out = []
    for st in a.tree.statements:
        if isinstance(st, ast.Section):
            if st.name:
                out.append(_sym(st.name, S.Class, st.span, st.name_span, st.keyword, _member_symbols(st.members)))
            else:
                out.append(_sym(st.keyword, S.Module, st.span, st.keyword_span, None, _member_symbols(st.members)))
        elif isinstance(st, ast.Model):
            out.append(_sym("model", S.Constant, st.span, detail=st.ref))
        elif isinstance(st, ast.Extends):
            out.append(_sym("extends", S.File, st.span, detail=st.path))
        elif isinstance(st, ast.Import):
            out.append(_sym("import", S.File, st.span, detail=st.path))
        elif isinstance(st, ast.Remove):
            out.append(_sym(f"remove {st.name}", S.Null, st.span))
    return out
