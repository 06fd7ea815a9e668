"""The language server's computations (peltc.lsp's analysis, diagnostics, hover, completion, navigation
modules), without a client: diagnostics equal to
`peltc check`'s on every golden case, quick fixes, completion contexts, hover, definition; and no
torch in the server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types as lsp

from peltc import cli
from peltc.lsp import analysis as an
from peltc.lsp import completion as cm
from peltc.lsp import diagnostics as dg
from peltc.lsp import formatting as fm
from peltc.lsp import hover as hv
from peltc.lsp import navigation as nav

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted((ROOT / "tests" / "cases").glob("*.pelt"))
SPECS = sorted((ROOT / "specs").glob("*.pelt"))
_MODEL = re.compile(r"# model:\s+(\S+)\s*$", re.M)
_LINE = re.compile(r"^(error|warning): (.+?):(\d+):(\d+): (.*) \[([A-Z]\d{3})\]$")


def test_the_server_does_not_import_torch():
    code = ("import sys, peltc.lsp.server, peltc.cli; peltc.cli.build_parser(); "
            "bad = [m for m in ('torch', 'transformers', 'networkx') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _check_output(path: Path, model: str | None, capsys) -> list[tuple]:
    """`peltc check`'s diagnostics as printed: (severity, file, line, col, message, code, help)."""
    rc = cli.main(["check", str(path)] + (["--model", model] if model else []))
    err = capsys.readouterr().err.split("\n")
    out = []
    for k, line in enumerate(err):
        if m := _LINE.match(line):
            help_ = next((x[len("help: "):] for x in err[k + 1:k + 4] if x.startswith("help: ")), None)
            nxt = next((j for j in range(k + 1, len(err)) if _LINE.match(err[j])), len(err))
            if not any(x.startswith("help: ") for x in err[k + 1:nxt]):
                help_ = None
            sev, file, ln, col, msg, code = m.groups()
            out.append((sev, str(Path(file).resolve()), int(ln), int(col), msg, code, help_))
    assert out or rc == 0
    return out


@pytest.mark.parametrize("path", CASES + SPECS, ids=lambda p: p.name)
def test_diagnostics_are_peltc_checks(path: Path, capsys):
    text = path.read_text(encoding="utf-8")
    model = m.group(1) if (m := _MODEL.search(text)) else None
    expected = _check_output(path, model, capsys)
    a = an.analyse(text, str(path), model=model)
    got = []
    for d in dg.to_lsp_diagnostics(a):
        sev = "warning" if d.severity == lsp.DiagnosticSeverity.Warning else "error"
        if d.related_information:   # in another file: the related location is the real one
            (rel,) = d.related_information
            file, r, message = an.uri_to_path(rel.location.uri), rel.location.range, rel.message
            assert d.message == f"in {file}:{r.start.line + 1}:{r.start.character + 1}: {message}" or \
                d.message.endswith(message)
        else:
            file, r, message = str(path.resolve()), d.range, d.message
        msg, _, help_ = message.partition("\nhelp: ")
        assert d.source == "peltc" and (d.data or {}).get("help") == (help_ or None)
        got.append((sev, str(Path(file).resolve()), r.start.line + 1, r.start.character + 1, msg, d.code,
                    help_ or None))
    assert sorted(got) == sorted(expected)


def test_span_end_is_exclusive_and_zero_based():
    a = an.analyse("lora qv {\n  at layers[*].attention.query\n  rnak 8\n}\n", "/tmp/x.pelt")
    (d,) = dg.to_lsp_diagnostics(a)
    assert (d.range.start.line, d.range.start.character, d.range.end.line, d.range.end.character) == (2, 2, 2, 6)


def test_warnings_are_warnings():
    text = "lora qv {\n  at layers[*].attention.query\n  alpha 32\n  gate scalar\n}\n"
    (d,) = dg.to_lsp_diagnostics(an.analyse(text, "/tmp/x.pelt"))
    assert d.code == "W202" and d.severity == lsp.DiagnosticSeverity.Warning


@pytest.mark.parametrize("text, fixed", [
    ("lora qv {\n  at layers[*].attention.query\n  rnak 8\n}\n", "rank 8"),
    ("lroa qv {\n  at layers[*].attention.query\n}\n", "lora qv"),
    ("lora qv {\n  at layers[*].attention.{query, vlue}\n}\n", "attention.{query, value}"),
    ("adapter a {\n  at layers[*].ffn.outptu\n}\n", "layers[*].ffn.output"),
    ("adapter a {\n  at layers[*].ffn.output\n  gate sigmod(ffn.output)\n}\n", "gate sigmoid(ffn.output)"),
    ("adapter a {\n  at layers[*].ffn.output\n  gate sigmoid(ffn.outptu)\n}\n", "gate sigmoid(ffn.output)"),
    ("adapter a {\n  at layers[*].ffn.output\n  activation rleu\n}\n", "activation relu"),
    ("train {\n  lrr 1e-4\n}\n", "lr 1e-4"),
])
def test_quick_fix_for_each_did_you_mean(text, fixed):
    a = an.analyse(text, "/tmp/x.pelt")
    (d,) = dg.to_lsp_diagnostics(a)
    fixes = dg.quick_fixes(text, d.range, d.message, d.data)
    assert fixes, d.message
    _, r, new = fixes[0]
    start, end = an.offset_of(text, r.start.line, r.start.character), an.offset_of(text, r.end.line, r.end.character)
    out = text[:start] + new + text[end:]
    assert fixed in out
    assert dg.to_lsp_diagnostics(an.analyse(out, "/tmp/x.pelt")) == []


def _complete(text: str, path: str = "/tmp/x.pelt") -> set[str]:
    """Completion labels at the `|` in ``text``."""
    k = text.index("|")
    text = text.replace("|", "")
    line = text[:k].count("\n")
    col = k - (text[:k].rfind("\n") + 1)
    return {i.label for i in cm.completion(an.analyse(text, path), line, col)}


def test_completion_contexts(tmp_path: Path):
    top = _complete("|")
    assert {"adapter", "lora", "prefix", "bitfit", "finetune", "model", "extends", "import", "head", "train"} <= top
    assert _complete("lora qv {\n  |\n}\n") >= {"rank", "alpha", "dropout", "lr", "at", "gate", "layers"}
    assert "lr" not in _complete("lora qv {\n  layers[0] {\n    |\n  }\n}\n")     # lr holds for the instance
    assert _complete("adapter a {\n  at |\n}\n") == {"layers[*].attention.output", "layers[*].ffn.output"}
    assert _complete("lora a {\n  at layers[*].|\n}\n") == {
        "attention.query", "attention.key", "attention.value", "attention.out", "ffn.gate", "ffn.up", "ffn.down"}
    assert _complete("lora a {\n  at layers[*].attention.{query, |}\n}\n") == {"query", "key", "value", "out"}
    assert "embeddings" in _complete("bitfit b {\n  at |\n}\n")
    assert {"none", "scalar", "const(…)", "sigmoid(layer.input)"} <= _complete("lora a {\n  gate |\n}\n")
    assert _complete("lora a {\n  gate sigmoid(|\n}\n") == {"layer.input", "attention.output", "ffn.output",
                                                             "pool=", "init="}
    assert _complete("lora a {\n  gate sigmoid(ffn.output, pool=|\n}\n") == {"masked_mean", "mean_unmasked", "first"}
    assert _complete("adapter a {\n  activation |\n}\n") == {"relu", "gelu", "tanh", "silu"}
    assert _complete("adapter a {\n  placement |\n}\n") == {"sequential", "parallel"}
    assert "bert-base-uncased" in _complete("model |")
    assert _complete("head {\n  |\n}\n") == {"pool"}
    assert "head_bias" in _complete("train {\n  |\n}\n")
    (tmp_path / "base.pelt").write_text("")
    (tmp_path / "lib").mkdir()
    assert _complete('extends "|', str(tmp_path / "x.pelt")) == {"base.pelt", "lib/"}


def test_hover_parameter_and_point(tmp_path: Path):
    text = "model bert-base-uncased\nlora qv {\n  at layers[*].attention.{query, value}\n  rank hidden/96\n}\n"
    a = an.analyse(text, str(tmp_path / "x.pelt"))
    h = hv.hover(a, 3, 3).contents.value
    assert "rank r" in h and "default: `8`" in h and "≥ 1" in h and "resolved: `rank 8 (hidden/96)`" in h
    h = hv.hover(a, 2, 30).contents.value
    assert "`bert.encoder.layer.{0..11}.attention.self.query`" in h
    h = hv.hover(a, 1, 5).contents.value
    assert "trainable: **294,912** (24,576 per layer) on `bert-base-uncased`" in h
    assert "`bert.encoder.layer.{0..11}.attention.self.{query, value}`" in h


def test_definition_of_removed_and_imported_names(tmp_path: Path):
    (tmp_path / "lib.pelt").write_text("lora qv {\n  at layers[*].attention.query\n}\n\n"
                                       "adapter a {\n  at layers[*].ffn.output\n}\n")
    text = 'import a, qv from "lib.pelt"\nremove qv\n'
    a = an.analyse(text, str(tmp_path / "x.pelt"))
    lib = (tmp_path / "lib.pelt").resolve().as_uri()
    (loc,) = nav.definition(a, 1, 8, an.make_loader())
    assert (loc.uri, loc.range.start.line, loc.range.start.character) == (lib, 0, 5)
    (loc,) = nav.definition(a, 0, 8, an.make_loader())
    assert (loc.uri, loc.range.start.line, loc.range.start.character) == (lib, 4, 8)


def test_unsaved_text_of_an_open_base_is_what_extends_reads(tmp_path: Path):
    (tmp_path / "base.pelt").write_text("lora qv {\n  at layers[*].attention.query\n}\n")
    loader = an.make_loader({str(tmp_path / "base.pelt"): "lora qv {\n  at layers[*].attention.qurey\n}\n"})
    a = an.analyse('extends "base.pelt"\n', str(tmp_path / "x.pelt"), loader=loader)
    (d,) = dg.to_lsp_diagnostics(a, loader)
    assert d.code == "E107" and d.related_information[0].location.range.start.line == 1


def test_formatting_is_peltc_fmt():
    from peltc.grammar.fmt import format_source
    messy = "lora qv{at layers[*].attention.{query,value} # r\n rank 8}"
    (e,) = fm.formatting(messy, "x.pelt")
    assert e.new_text == format_source(messy)
    assert fm.formatting(format_source(messy), "x.pelt") == []
    assert fm.formatting("lora {", "x.pelt") is None


SPACE_WITH_ERROR = """\
optional lora qv {
  at choice(layers[*].attention.{query, value}, layers[-1].attention.query)
  rank choice(4, 8)
}
optional adapter a {
  at layers[*].ffn.output
  size choice(8, 16)
}
prefix p {
  at layers[*].attention
  length choice(5, 0)
}
"""


def test_space_checks_kept_between_edits_give_what_a_fresh_check_gives(monkeypatch):
    """The editor keeps a space's checks between edits (``memo``): an edit in one instance re-builds only
    the specs whose text changed, and the diagnostics equal a check from scratch (here the prefix's
    length 0, an error at its span whatever the other instances hold)."""
    import peltc.compiler.space_check as sc
    built = []
    real = sc.build_ir
    monkeypatch.setattr(sc, "build_ir", lambda *a, **k: built.append(1) or real(*a, **k))
    memo: dict = {}
    first = an.analyse(SPACE_WITH_ERROR, "/x/space.pelt", memo=memo, model="bert-base-uncased")
    n_first = len(built)
    edited = SPACE_WITH_ERROR.replace("size choice(8, 16)", "size choice(8, 32)")
    again = an.analyse(edited, "/x/space.pelt", memo=memo, model="bert-base-uncased")
    n_again = len(built) - n_first
    fresh = an.analyse(edited, "/x/space.pelt", model="bert-base-uncased")
    assert 0 < n_again < n_first
    key = [(d.code, d.message, d.span) for d in fresh.diagnostics]
    assert [(d.code, d.message, d.span) for d in again.diagnostics] == key
    assert any(d.code.startswith("E") for d in first.diagnostics) and key
