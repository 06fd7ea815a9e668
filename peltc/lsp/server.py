"""The pygls 2 language server behind `peltc lsp` (stdio).

Features: diagnostics on open and on every change (`peltc check`'s), hover, completion, go to
definition, document symbols, formatting (`peltc fmt`) and a quick fix per did-you-mean.

Settings (``initializationOptions``, or ``workspace/didChangeConfiguration`` with ``{"peltc": {…}}``):
``model`` — check every spec against this model, as `peltc check --model` does (default: the spec's
own `model`; hover counts then fall back to `peltc compile`'s default, the packaged MiniLM).

No torch: only the front end is imported (tests/lsp checks it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from peltc import __version__
from peltc.lsp import analysis as an
from peltc.lsp import completion as cm
from peltc.lsp import diagnostics as dg
from peltc.lsp import formatting as fm
from peltc.lsp import hover as hv
from peltc.lsp import navigation as nav
from peltc.lsp import outline as ol

log = logging.getLogger(__name__)
MEMO_LIMIT = 20_000      # space checks kept per document (each a built spec's outcome)


class PeltServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("peltc", __version__)
        self.model: str | None = None
        self.analyses: dict[str, an.Analysis] = {}      # uri → the latest analysis
        self.good: dict[str, an.Analysis] = {}          # uri → the latest analysis with a hover IR
        # uri → (what its space checks depend on: the model, the other open documents; the checks by text;
        # the files they read from the disk, with their modification times then)
        self.memos: dict[str, tuple[tuple, dict, dict[str, int]]] = {}

    # --- helpers -------------------------------------------------------------------------------
    def open_texts(self) -> dict[str, str]:
        return {an.uri_to_path(uri): doc.source for uri, doc in self.workspace.text_documents.items()}

    def loader(self) -> an.Loader:
        return an.make_loader(self.open_texts())

    def analysis(self, uri: str) -> an.Analysis:
        doc = self.workspace.get_text_document(uri)
        a = self.analyses.get(uri)
        if a is None or a.text != doc.source:
            a = self.check(uri, publish=False)
        return a

    def hover_analysis(self, uri: str) -> an.Analysis:
        """The current analysis, with the last good hover IR when the text has errors right now."""
        a = self.analysis(uri)
        if a.hover_ir is None and uri in self.good:
            g = self.good[uri]
            a.hover_ir, a.hover_model, a.hover_model_defaulted = g.hover_ir, g.hover_model, g.hover_model_defaulted
        return a

    def to_client(self, uri: str, rng: lsp.Range, text: str | None = None) -> lsp.Range:
        lines = (text if text is not None else self.workspace.get_text_document(uri).source).split("\n")
        lines = [ln + "\n" for ln in lines]
        return self.workspace.position_codec.range_to_client_units(lines, rng)

    def from_client(self, uri: str, p: lsp.Position) -> tuple[int, int]:
        doc = self.workspace.get_text_document(uri)
        sp = doc.position_codec.position_from_client_units(doc.lines, p)
        return sp.line, sp.character

    def check(self, uri: str, publish: bool = True) -> an.Analysis:
        doc = self.workspace.get_text_document(uri)
        loader = self.loader()
        memo = self.memo(uri)
        a = an.analyse(doc.source, an.uri_to_path(uri), model=self.model, loader=loader, memo=memo)
        self.memos[uri][2].update(getattr(loader, "disk", {}))
        self.analyses[uri] = a
        if a.hover_ir is not None:
            self.good[uri] = a
        if publish:
            diags = dg.to_lsp_diagnostics(a, loader)
            for d in diags:
                d.range = self.to_client(uri, d.range, a.text)
                for r in d.related_information or ():
                    other = a.sources.get(an.uri_to_path(r.location.uri))
                    if other is not None:
                        r.location.range = self.to_client(r.location.uri, r.location.range, other)
            self.text_document_publish_diagnostics(
                lsp.PublishDiagnosticsParams(uri=uri, diagnostics=diags, version=doc.version))
        return a

    def memo(self, uri: str) -> dict:
        """The space checks kept for ``uri``: dropped when the model, another open document (an imported
        file) or a file they read from the disk changes, or when they hold `MEMO_LIMIT` specs."""
        path = an.uri_to_path(uri)
        depends = (self.model, tuple(sorted((p, hash(t)) for p, t in self.open_texts().items() if p != path)))
        kept = self.memos.get(uri)
        if kept is None or kept[0] != depends or len(kept[1]) > MEMO_LIMIT or any(
                an.disk_mtime(p) != t for p, t in kept[2].items()):
            kept = self.memos[uri] = (depends, {}, {})
        return kept[1]

    def check_with_dependents(self, uri: str) -> None:
        self.check(uri)
        path = an.uri_to_path(uri)
        others = [u for u in self.workspace.text_documents if u != uri]
        deps = set(nav.iter_open_dependents(path, [an.uri_to_path(u) for u in others], self.loader()))
        for u in others:
            if an.uri_to_path(u) in deps:
                self.check(u)


server = PeltServer()


def _settings(ls: PeltServer, value) -> None:
    if isinstance(value, dict):
        value = value.get("peltc", value)
        if isinstance(value, dict) and "model" in value:
            ls.model = value.get("model") or None


@server.feature(lsp.INITIALIZE)
def initialize(ls: PeltServer, params: lsp.InitializeParams) -> None:
    _settings(ls, params.initialization_options)


@server.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: PeltServer, params: lsp.DidChangeConfigurationParams) -> None:
    _settings(ls, params.settings)
    for uri in list(ls.workspace.text_documents):
        ls.check(uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: PeltServer, params: lsp.DidOpenTextDocumentParams) -> None:
    ls.check_with_dependents(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: PeltServer, params: lsp.DidChangeTextDocumentParams) -> None:
    ls.check_with_dependents(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: PeltServer, params: lsp.DidSaveTextDocumentParams) -> None:
    ls.check_with_dependents(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: PeltServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.analyses.pop(uri, None)
    ls.good.pop(uri, None)
    ls.memos.pop(uri, None)
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: PeltServer, params: lsp.HoverParams) -> lsp.Hover | None:
    uri = params.text_document.uri
    a = ls.hover_analysis(uri)
    h = hv.hover(a, *ls.from_client(uri, params.position))
    if h is not None and h.range is not None:
        h.range = ls.to_client(uri, h.range, a.text)
    return h


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                lsp.CompletionOptions(trigger_characters=[".", '"', "(", "=", "[", "{", " ", "/", ","]))
def completion(ls: PeltServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    uri = params.text_document.uri
    a = ls.analysis(uri)
    items = cm.completion(a, *ls.from_client(uri, params.position))
    for it in items:
        if isinstance(it.text_edit, lsp.TextEdit):
            it.text_edit.range = ls.to_client(uri, it.text_edit.range, a.text)
    return lsp.CompletionList(is_incomplete=False, items=items)


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: PeltServer, params: lsp.DefinitionParams) -> list[lsp.Location]:
    uri = params.text_document.uri
    a = ls.analysis(uri)
    locs = nav.definition(a, *ls.from_client(uri, params.position), ls.loader())
    texts = ls.open_texts()
    for loc in locs:
        p = an.uri_to_path(loc.uri)
        try:
            text = texts.get(p) or Path(p).read_text(encoding="utf-8")
        except OSError:
            continue
        loc.range = ls.to_client(loc.uri, loc.range, text)
    return locs


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def document_symbol(ls: PeltServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
    uri = params.text_document.uri
    a = ls.analysis(uri)
    syms = ol.document_symbols(a)

    def conv(s: lsp.DocumentSymbol) -> None:
        s.range = ls.to_client(uri, s.range, a.text)
        s.selection_range = ls.to_client(uri, s.selection_range, a.text)
        for c in s.children or ():
            conv(c)
    for s in syms:
        conv(s)
    return syms


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: PeltServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
    uri = params.text_document.uri
    doc = ls.workspace.get_text_document(uri)
    edits = fm.formatting(doc.source, an.uri_to_path(uri))
    for e in edits or ():
        e.range = ls.to_client(uri, e.range, doc.source)
    return edits


@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
def code_action(ls: PeltServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
    uri = params.text_document.uri
    doc = ls.workspace.get_text_document(uri)
    out = []
    for d in params.context.diagnostics:
        if d.source != an.SOURCE:
            continue
        rng = doc.position_codec.range_from_client_units(doc.lines, d.range)
        srng = lsp.Range(start=lsp.Position(line=rng.start.line, character=rng.start.character),
                         end=lsp.Position(line=rng.end.line, character=rng.end.character))
        data = d.data if isinstance(d.data, dict) else None
        for k, (title, r, new) in enumerate(dg.quick_fixes(doc.source, srng, d.message, data)):
            edit = lsp.TextEdit(range=ls.to_client(uri, r, doc.source), new_text=new)
            out.append(lsp.CodeAction(title=title, kind=lsp.CodeActionKind.QuickFix, diagnostics=[d],
                                      is_preferred=k == 0,
                                      edit=lsp.WorkspaceEdit(changes={uri: [edit]})))
    return out


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    server.start_io()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
