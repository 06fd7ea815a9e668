"""`peltc lsp` end to end: a real LSP client (pytest-lsp) talks to the server over stdio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

from peltc.grammar.fmt import format_source

BASE = """\
lora qv {
  at layers[*].attention.{query, value}
  rank 8
}
"""

CHILD = """\
extends "base.pelt"

lora qv {
  rnak 4
}

adapter a {
  at layers[*].ffn.output
  size 24
}
"""


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "peltc", "lsp"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(lsp.InitializeParams(
        capabilities=lsp.ClientCapabilities(), initialization_options={"model": "bert-base-uncased"}))
    yield
    await lsp_client.shutdown_session()


def _open(client: LanguageClient, path: Path, text: str) -> str:
    uri = path.resolve().as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id="pelt", version=1, text=text)))
    return uri


async def _diagnostics(client: LanguageClient, uri: str) -> list[lsp.Diagnostic]:
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return client.diagnostics[uri]


@pytest.mark.asyncio
async def test_misspelt_parameter_diagnostic_quick_fix_and_clear(client: LanguageClient, tmp_path: Path):
    (tmp_path / "base.pelt").write_text(BASE)
    uri = _open(client, tmp_path / "child.pelt", CHILD)
    diags = await _diagnostics(client, uri)
    assert [(d.code, d.range.start.line, d.range.start.character, d.range.end.character) for d in diags] == \
        [("E102", 3, 2, 6)]
    d = diags[0]
    assert d.severity == lsp.DiagnosticSeverity.Error and d.source == "peltc"
    assert d.message.startswith("unknown parameter 'rnak' for lora\nhelp: did you mean 'rank'")

    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=d.range,
        context=lsp.CodeActionContext(diagnostics=[d])))
    assert [a.title for a in actions][0] == "Change to 'rank'"      # the closest first
    (edit,) = actions[0].edit.changes[uri]
    assert edit.new_text == "rank" and edit.range == d.range

    # apply the fix: the diagnostic clears
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[lsp.TextDocumentContentChangePartial(range=edit.range, text=edit.new_text)]))
    assert list(await _diagnostics(client, uri)) == []


@pytest.mark.asyncio
async def test_hover_completion_definition_formatting_symbols(client: LanguageClient, tmp_path: Path):
    (tmp_path / "base.pelt").write_text(BASE)
    text = CHILD.replace("rnak", "rank")
    uri = _open(client, tmp_path / "child.pelt", text)
    assert list(await _diagnostics(client, uri)) == []
    doc = lsp.TextDocumentIdentifier(uri=uri)

    # hover on an instance: its trainable count on the model (bert-base: 24 · (768 + 768) · 2 · 12)
    h = await client.text_document_hover_async(lsp.HoverParams(text_document=doc,
                                                                 position=lsp.Position(line=6, character=9)))
    assert "**adapter** `a`" in h.contents.value
    assert "trainable: **451,872** (37,656 per layer) on `bert-base-uncased`" in h.contents.value
    h = await client.text_document_hover_async(lsp.HoverParams(text_document=doc,
                                                                 position=lsp.Position(line=2, character=5)))
    assert "trainable: **147,456**" in h.contents.value     # rank 4 on query and value of 12 layers

    # completion inside a method block offers that method's parameters
    c = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=doc, position=lsp.Position(line=8, character=2)))
    labels = {i.label for i in c.items}
    assert {"size", "activation", "placement", "scale", "lr", "gate"} <= labels and "rank" not in labels

    # go to definition: the overridden instance in the extended file
    locs = await client.text_document_definition_async(lsp.DefinitionParams(
        text_document=doc, position=lsp.Position(line=2, character=5)))
    assert [(loc.uri, loc.range.start.line, loc.range.start.character) for loc in locs] == \
        [((tmp_path / "base.pelt").resolve().as_uri(), 0, 5)]

    # formatting returns what `peltc fmt` prints
    messy = "lora   qv{at layers[ * ].attention.{query,value}\n rank 8}\n"
    uri2 = _open(client, tmp_path / "messy.pelt", messy)
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri2), options=lsp.FormattingOptions(tab_size=2,
                                                                                          insert_spaces=True)))
    assert len(edits) == 1 and edits[0].new_text == format_source(messy)
    assert edits[0].range.start == lsp.Position(line=0, character=0)

    syms = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(text_document=doc))
    assert [(s.name, s.detail) for s in syms] == [("extends", "base.pelt"), ("qv", "lora"), ("a", "adapter")]


@pytest.mark.asyncio
async def test_error_in_extended_file_is_related_information(client: LanguageClient, tmp_path: Path):
    (tmp_path / "base.pelt").write_text(BASE.replace("rank 8", "rank 8\n  gate sigmod(layer.input)"))
    uri = _open(client, tmp_path / "child.pelt", 'extends "base.pelt"\n')
    (d,) = await _diagnostics(client, uri)
    assert d.code == "E111" and d.range.start.line == 0
    (rel,) = d.related_information
    assert rel.location.uri == (tmp_path / "base.pelt").resolve().as_uri()
    assert (rel.location.range.start.line, rel.location.range.start.character) == (3, 7)
    assert "unknown gate 'sigmod'" in rel.message


@pytest.mark.asyncio
async def test_a_space_is_rechecked_when_a_file_it_extends_changes_on_disk(client: LanguageClient, tmp_path: Path):
    """The server keeps a space's checks between edits; a file the space extends, changed on the disk (not
    open in the editor), drops them: the next check sees the change."""
    (tmp_path / "base.pelt").write_text(BASE)
    space = 'extends "base.pelt"\n\nadapter a {\n  at layers[*].ffn.output\n  size choice(8, 16)\n}\n'
    uri = _open(client, tmp_path / "space.pelt", space)
    assert not await _diagnostics(client, uri)
    (tmp_path / "base.pelt").write_text(BASE.replace("rank 8", "rank 8\n  gate sigmod(layer.input)"))
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=space)]))     # the same text
    (d,) = await _diagnostics(client, uri)
    assert d.code == "E111" and "sigmod" in d.related_information[0].message
