"""The parser: text → syntax tree with spans; syntax errors → E001/E002/E003 diagnostics."""

from __future__ import annotations

import pytest

from peltc.errors import Diagnostic, Span, SpecError
from peltc.grammar import ast
from peltc.grammar.parser import parse


def one(text: str):
    (stmt,) = parse(text, "x.pelt").statements
    return stmt


def first_member(text: str):
    return one(text).members[0]


# --- the tree -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sel,items", [
    ("*", [("all", None, None, 1)]),
    ("3", [("index", 3, 3, 1)]),
    ("-1", [("index", -1, -1, 1)]),
    ("0..5", [("range", 0, 5, 1)]),
    ("6..", [("range", 6, None, 1)]),
    ("-4..", [("range", -4, None, 1)]),
    ("..5", [("range", 0, 5, 1)]),
    ("0..11 by 2", [("range", 0, 11, 2)]),
    ("0, 2, 5..7", [("index", 0, 0, 1), ("index", 2, 2, 1), ("range", 5, 7, 1)]),
])
def test_selectors(sel, items):
    at = first_member(f"adapter a {{ at layers[{sel}].ffn.output }}")
    got = [(i.kind, i.start, i.stop, i.step) for i in at.targets[0].selector.items]
    assert got == items


def test_point_sets_are_a_cartesian_product():
    at = first_member("lora l { at layers[*].{attention.query, ffn}.{up, down} }")
    assert at.targets[0].points() == ["attention.query.up", "attention.query.down", "ffn.up", "ffn.down"]
    at = first_member("bitfit b { at embeddings, head }")
    assert [t.selector for t in at.targets] == [None, None]
    assert [t.points() for t in at.targets] == [["embeddings"], ["head"]]


def test_whole_layer_target_has_no_points():
    at = first_member("bitfit b { at layers[0..2] }")
    assert at.targets[0].segments == () and at.targets[0].points() == [""]


@pytest.mark.parametrize("text,name,args,called", [
    ("none", "none", [], False),
    ("scalar", "scalar", [], False),
    ("scalar(init=-1)", "scalar", [("init", "number", -1)], True),
    ("const(0.5)", "const", [(None, "number", 0.5)], True),
    ("sigmoid(layer.input)", "sigmoid", [(None, "point", "layer.input")], True),
    ("sigmoid(ffn.output, pool=mean_unmasked)", "sigmoid",
     [(None, "point", "ffn.output"), ("pool", "word", "mean_unmasked")], True),
    ("sigmoid()", "sigmoid", [], True),
])
def test_gates(text, name, args, called):
    g = first_member(f"adapter a {{ gate {text} }}").expr
    assert (g.name, [(a.key, a.value.kind, a.value.value) for a in g.args], g.called) == (name, args, called)


@pytest.mark.parametrize("text,kind,value", [
    ("48", "number", 48), ("4.5", "number", 4.5), ("1e-3", "number", 1e-3), (".5", "number", 0.5),
    ("-2", "number", -2), ("relu", "word", "relu"), ('"gelu"', "string", "gelu"),
])
def test_values_keep_their_text(text, kind, value):
    p = first_member(f"adapter a {{ size {text} }}")
    assert (p.value.kind, p.value.value, p.value.text) == (kind, value, text)


@pytest.mark.parametrize("text,value,canonical", [
    ("hidden/16", ("hidden", "16"), "hidden/16"), ("hidden / 1.5", ("hidden", "1.5"), "hidden/1.5"),
    ("width/2", ("width", "2"), "width/2"),     # any name parses; the lowering says which one is valid
])
def test_relative_values(text, value, canonical):
    p = first_member(f"adapter a {{ size {text} }}")
    assert (p.value.kind, p.value.value, p.value.text) == ("ratio", value, canonical)
    assert (p.value.span.col, p.value.span.end_col) == (18, 18 + len(text))


def test_statements():
    spec = parse('model bert-base-uncased\nextends "a.pelt"\nimport x, y from "b.pelt"\nimport "c.pelt"\nremove z\n')
    m, e, i1, i2, r = spec.statements
    assert isinstance(m, ast.Model) and m.ref == "bert-base-uncased"
    assert isinstance(e, ast.Extends) and e.path == "a.pelt"
    assert (i1.path, i1.names) == ("b.pelt", ("x", "y")) and (i2.path, i2.names) == ("c.pelt", None)
    assert isinstance(r, ast.Remove) and r.name == "z"
    assert one('model "my model"').ref == "my model"


def test_per_layer_override():
    ov = one("lora l { layers[0..3] { rank 4 gate const(1) } }").members[0]
    assert isinstance(ov, ast.LayerOverride)
    assert [type(m).__name__ for m in ov.members] == ["Param", "Gate"]


def test_comments_are_ignored():
    spec = parse("# a comment\nadapter a { # another\n  size 48 # a third\n}\n")
    assert one("adapter a { size 48 } # c").members[0].name == "size"
    assert len(spec.statements) == 1


def test_keywords_can_be_names_where_unambiguous():
    assert one("adapter at { }").name == "at"
    assert first_member("adapter a { size layers }").value.value == "layers"
    assert one("model import").ref == "import"


# --- spans --------------------------------------------------------------------------------------
def test_spans_point_at_the_source():
    text = "model bert-base-uncased\n\nadapter ffn {\n  at layers[*].ffn.output\n  size 48\n}\n"
    spec = parse(text, "x.pelt")
    model, sec = spec.statements
    assert (model.span.line, model.span.col) == (1, 1)
    assert (sec.keyword_span.line, sec.keyword_span.col, sec.keyword_span.end_col) == (3, 1, 8)
    assert (sec.name_span.line, sec.name_span.col, sec.name_span.end_col) == (3, 9, 12)
    assert (sec.span.end_line, sec.span.end_col) == (6, 2)   # just after the closing brace
    at, size = sec.members
    assert (at.span.line, at.span.col) == (4, 3)
    assert (at.targets[0].span.col, at.targets[0].span.end_col) == (6, 26)
    assert (size.value.span.line, size.value.span.col, size.value.span.end_col) == (5, 8, 10)
    assert at.span.file == "x.pelt"


# --- syntax errors ------------------------------------------------------------------------------
def error(text: str) -> Diagnostic:
    with pytest.raises(SpecError) as e:
        parse(text, "x.pelt")
    (d,) = e.value.diagnostics
    return d


@pytest.mark.parametrize("text,code,pos,help_has", [
    ("adapter a {\n  size = 48\n}", "E001", (2, 8), "without '='"),
    ("adapter a {\n  rank: 8\n}", "E002", (2, 7), "without ':'"),
    ("adapter a {\n  size 48;\n}", "E002", (2, 10), "no ';'"),
    ("adapter a {\n  size 48\n", "E003", (2, 10), "not closed"),
    ("adapter a { at layers*.ffn }", "E001", (1, 22), "'['"),
    ("lora l { at layers[*].attention.{query value} }", "E001", (1, 40), "','"),
    ("adapter a { gate sigmoid(ffn.output }", "E001", (1, 37), "')'"),
    ('model "unterminated\n', "E002", (1, 7), ""),
    ("adapter a { size $ }", "E002", (1, 18), ""),
    ("}", "E001", (1, 1), ""),
])
def test_syntax_errors(text, code, pos, help_has):
    d = error(text)
    assert (d.code, (d.span.line, d.span.col)) == (code, pos)
    assert d.span.file == "x.pelt"
    assert help_has in (d.help or "")


def test_syntax_error_renders_with_caret_and_help():
    with pytest.raises(SpecError) as e:
        parse("adapter a {\n  size = 48\n}", "x.pelt")
    out = e.value.render().split("\n")
    assert out[0] == "error: x.pelt:2:8: unexpected '=' [E001]"
    assert out[1] == " 2 |   size = 48"
    assert out[2] == "   |        ^"
    assert out[3].startswith("help: parameters are written `name value`")


def test_render_counts_lines_as_the_parser_does():
    # '\x0c' and '\r' are not line breaks for the parser; the rendered source line must agree
    src = "a\x0cb\nadapter x {\r\n  size = 1\r\n}"
    d = Diagnostic("E001", "m", Span("f", 3, 8, 3, 9))
    lines = d.render(src).split("\n")
    assert lines[1] == " 3 |   size = 1"
    assert lines[2] == "   |        ^"


def test_unicode_and_control_characters_are_clean_errors():
    for text in ["adapter a { size 4\x008 }", "adapter é { }", "adapter a { size 48 }\u2028", "\x00"]:
        with pytest.raises(SpecError) as e:
            parse(text, "x.pelt")
        assert e.value.diagnostics[0].code in ("E001", "E002", "E003")
