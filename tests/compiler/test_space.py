"""Search spaces (compiler/space.py, space_check.py, space_summary.py): the syntax and its canonical
form, the dimensions, concrete points, checking every point, and what check / show / render print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peltc import cli
from peltc.compiler.pipeline import build_ir
from peltc.compiler.space import load_space
from peltc.compiler.space_check import check_space
from peltc.errors import SpecError
from peltc.grammar.fmt import format_source

ROOT = Path(__file__).resolve().parents[2]
UNIPELT = ROOT / "specs" / "spaces" / "unipelt.pelt"

SPACE = """\
model bert-base-uncased

# a comment stays
optional lora q {
  at choice(layers[*].attention.{query, value}, layers[0..1].attention.query)
  rank choice(4, 8)
  gate choice(none, sigmoid(layer.input))
  lr loguniform(1e-4, 1e-2)
  layers[0] {
    rank intrange(2, 3)
  }
}

prefix p {
  at layers[0..3].attention
  length choice(5, 10)
}

train {
  lr uniform(1e-5, 1e-3)
}
"""

POINT = {"q.present": "true", "q.at": "layers[0..1].attention.query", "q.rank": 8, "q.gate": "none",
         "q.lr": 0.001, "q.layers[0].rank": 3, "p.length": "10", "train.lr": 2e-4}


def test_the_canonical_form_round_trips():
    messy = SPACE.replace("choice(4, 8)", "choice( 4,8 )").replace("lr uniform(1e-5, 1e-3)", "lr  uniform(1e-5,1e-3)")
    assert format_source(messy) == SPACE
    assert format_source(SPACE) == SPACE


def test_dimensions_are_named_after_where_they_are_written():
    s = load_space(SPACE, path="x.pelt")
    got = [(d.name, d.kind, d.choices, d.low, d.high, d.log) for d in s.dimensions]
    assert got == [
        ("q.present", "categorical", ("true", "false"), None, None, False),
        ("q.at", "categorical", ("layers[*].attention.{query, value}", "layers[0..1].attention.query"), None, None,
         False),
        ("q.rank", "categorical", ("4", "8"), None, None, False),
        ("q.gate", "categorical", ("none", "sigmoid(layer.input)"), None, None, False),
        ("q.lr", "float", (), 1e-4, 1e-2, True),
        ("q.layers[0].rank", "int", (), 2, 3, False),
        ("p.length", "categorical", ("5", "10"), None, None, False),
        ("train.lr", "float", (), 1e-5, 1e-3, False),
    ]
    assert s.size() is None and len(s.discrete()) == 6
    assert (s.dimensions[2].span.line, s.dimensions[2].span.col) == (6, 8)   # `choice(4, 8)`


def test_points_cover_the_discrete_dimensions():
    s = load_space(SPACE.replace("lr loguniform(1e-4, 1e-2)", "").replace("lr uniform(1e-5, 1e-3)", "lr 1e-4"))
    pts = list(s.points())
    assert s.size() == len(pts) == 2 * 2 * 2 * 2 * 2 * 2
    assert len({json.dumps(p, sort_keys=True) for p in pts}) == len(pts)
    assert pts[0] == {"q.present": "true", "q.at": "layers[*].attention.{query, value}", "q.rank": "4",
                      "q.gate": "none", "q.layers[0].rank": 2, "p.length": "5"}


def test_concrete_writes_one_spec_that_checks():
    s = load_space(SPACE, path="x.pelt")
    text = s.concrete(POINT)
    assert "choice" not in text and "optional" not in text and "# a comment stays" in text
    assert "  at layers[0..1].attention.query\n  rank 8\n  gate none\n  lr 0.001\n" in text
    assert "rank 3" in text and "length 10" in text and "lr 0.0002" in text
    ir = build_ir(text, "x.pelt").ir
    assert ir.instance("q").params["rank"] == 8 and ir.settings.train["lr"] == 2e-4


def test_an_absent_optional_instance_is_removed_and_its_dimensions_may_be_left_out():
    s = load_space(SPACE, path="x.pelt")
    text = s.concrete({"q.present": False, "p.length": 5, "train.lr": 1e-5})
    assert "lora" not in text and "prefix p" in text
    assert [i.name for i in build_ir(text, "x.pelt").ir.instances()] == ["p"]


@pytest.mark.parametrize("change,error", [
    ({"q.rank": 16}, ValueError), ({"q.lr": 0.5}, ValueError), ({"q.layers[0].rank": 2.5}, ValueError),
    ({"q.gate": "scalar"}, ValueError), ({"train.lr": "fast"}, ValueError), ({"nope": 1}, KeyError),
])
def test_concrete_refuses_a_value_outside_the_space(change, error):
    with pytest.raises(error):
        load_space(SPACE).concrete(POINT | change)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.data())
def test_every_point_is_one_canonical_spec(data):
    s = load_space(SPACE, path="x.pelt")
    point = data.draw(st.sampled_from(list(s.points())))
    point |= {"q.lr": data.draw(st.floats(1e-4, 1e-2)), "train.lr": data.draw(st.floats(1e-5, 1e-3))}
    text = s.concrete(point)
    assert load_space(text).dimensions == []
    assert format_source(format_source(text)) == format_source(text)
    ir = build_ir(text, "x.pelt").ir
    assert ir.settings.train["lr"] == point["train.lr"]
    assert ("q" in [i.name for i in ir.instances()]) == (point["q.present"] == "true")


def test_concrete_needs_every_dimension_of_a_present_instance():
    point = dict(POINT)
    del point["q.rank"]
    with pytest.raises(KeyError):
        load_space(SPACE).concrete(point)


def test_a_plain_spec_is_a_space_without_dimensions(tmp_path: Path):
    spec = ROOT / "specs" / "unipelt_apl.pelt"
    s = load_space(spec)
    assert s.dimensions == [] and s.size() == 1 and list(s.points()) == [{}]
    text = s.concrete({})
    assert text == spec.read_text(encoding="utf-8")
    assert build_ir(text, str(spec)).ir.settings.spec_hash == build_ir(spec.read_text(), str(spec)).ir.settings.spec_hash


def test_a_space_is_not_one_spec():
    with pytest.raises(SpecError) as e:
        build_ir(SPACE, "x.pelt")
    assert {d.code for d in e.value.errors} == {"E160"}


def test_check_reports_size_and_count_range_and_pairs_agree_with_every_combination():
    s = load_space(SPACE, path="x.pelt")
    full = check_space(s)
    pairs = check_space(s, full_limit=1)
    assert full.exhaustive and not pairs.exhaustive
    assert full.counts == pairs.counts
    lo, hi = full.counts
    counts = []
    for point in s.points():   # the range is the min and max over every point's own count
        ir = build_ir(s.concrete(point | {"q.lr": 1e-3, "train.lr": 1e-4}), "x.pelt").ir
        counts.append(sum(a.trainable or 0 for a in ir.attachments()) + sum(
            i.shared_trainable or 0 for i in ir.instances()) - sum(
            a.saved or 0 for a in ir.attachments() if a.method == "prefix" and ir.instance(a.instance).shared_trainable))
    assert (lo, hi) == (min(counts), max(counts))


def test_an_invalid_combination_names_only_what_it_depends_on():
    text = SPACE.replace("rank choice(4, 8)", "rank choice(4, 768)")
    for full_limit in (10_000, 1):
        with pytest.raises(SpecError) as e:
            check_space(load_space(text, path="x.pelt"), full_limit=full_limit)
        (d,) = e.value.errors
        assert d.code == "E104" and (d.span.line, d.span.col) == (6, 8)
        assert d.message.endswith("(with q.present = true and q.rank = 768)")


def test_a_float_range_is_checked_at_both_ends():
    with pytest.raises(SpecError) as e:   # LoRA's dropout must stay below 1
        check_space(load_space(SPACE.replace("lr loguniform(1e-4, 1e-2)", "dropout uniform(0, 1)"), path="x.pelt"))
    (d,) = e.value.errors
    assert d.code == "E104" and d.message.endswith("(with q.dropout = 1)") and (d.span.line, d.span.col) == (8, 11)


def test_a_choice_of_one_value_is_a_warning():
    sc = check_space(load_space(SPACE.replace("choice(5, 10)", "choice(5)"), path="x.pelt"))
    assert [w.code for w in sc.warnings] == ["W220"]


def test_the_unipelt_space_checks(capsys):
    assert cli.main(["check", str(UNIPELT), "--model", "bert-base-uncased"]) == 0
    out = capsys.readouterr().out
    assert "a search space of 13,824 discrete points (2,197 different specs) × 4 continuous dimensions" in out
    assert "qv.rank              categorical  4 | 8 | 16" in out
    assert "trained parameters over the space: 0 – " in out


def test_show_json_lists_the_dimensions(capsys):
    assert cli.main(["show", "--json", str(UNIPELT), "--model", "bert-base-uncased"]) == 0
    data = json.loads(capsys.readouterr().out)
    dims = data["space"]["dimensions"]
    assert [d["name"] for d in dims][:3] == ["ffn_adapter.present", "ffn_adapter.at", "ffn_adapter.size"]
    assert dims[4] == {"name": "ffn_adapter.lr", "kind": "float", "section": "ffn_adapter", "low": 1e-4,
                       "high": 1e-2, "log": True, "span": dims[4]["span"]}
    assert data["space"]["size"] is None and "nodes" in data


def test_render_draws_optional_instances_dashed_with_their_choices(tmp_path: Path, capsys):
    out = tmp_path / "space.dot"
    assert cli.main(["render", str(UNIPELT), "-o", str(out), "--model", "bert-base-uncased"]) == 0
    dot = out.read_text()
    assert "optional: present or not" in dot and "rank ∈ 4 | 8 | 16" in dot and "rounded,filled,dashed" in dot
    assert "search space of 13,824 discrete points (2,197 different specs)" in dot


def test_the_language_server_analyses_a_space():
    pytest.importorskip("lsprotocol")
    from peltc.lsp import analysis, completion, diagnostics, hover, outline
    a = analysis.analyse(SPACE, "/tmp/x.pelt")
    assert a.ir is not None and a.hover_ir is not None
    assert diagnostics.to_lsp_diagnostics(a) == []
    for line0, text in enumerate(SPACE.split("\n")):
        for char0 in range(0, len(text), 3):
            hover.hover(a, line0, char0)   # never raises on a choice
    assert outline.document_symbols(a)
    rank = hover.hover(a, 5, 10).contents.value   # on `choice(4, 8)`
    assert "search dimension `q.rank` (categorical): 4 | 8" in rank
    for line0, text in enumerate(SPACE.split("\n")):   # completion inside a choice does not raise either
        for char0 in range(0, len(text) + 1, 4):
            completion.completion(a, line0, char0)
    bad = analysis.analyse(SPACE.replace("choice(4, 8)", "choice(4, 768)"), "/tmp/x.pelt")
    assert [d.code for d in bad.diagnostics] == ["E104"]


def test_the_example_in_the_language_reference_checks():
    doc = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    block = doc.split("## Search spaces", 1)[1].split("```pelt\n", 1)[1].split("```", 1)[0]
    sc = check_space(load_space(block, path="language.md"), model="minilm")
    assert sc.space.size() is None and [d.name for d in sc.space.continuous()] == ["qv.lr", "qv.dropout", "train.lr"]


def test_check_without_a_model_and_show_outline(tmp_path: Path, capsys):
    spec = tmp_path / "space.pelt"
    spec.write_text(SPACE.replace("model bert-base-uncased\n", ""), encoding="utf-8")
    assert cli.main(["check", str(spec), "--model", "none"]) == 0
    out = capsys.readouterr().out
    assert "every point valid without a model" in out and "trained parameters" not in out
    assert cli.main(["show", str(spec), "--model", "none"]) == 0
    assert capsys.readouterr().out.startswith(f"{spec}: a search space of 64 discrete points (34 different specs) × 2 continuous dimensions")


def test_distinct_points_count_an_absent_instance_once():
    s = load_space(SPACE.replace("lr loguniform(1e-4, 1e-2)", "").replace("lr uniform(1e-5, 1e-3)", "lr 1e-4"))
    every = list(s.points())
    distinct = list(s.points(distinct=True))
    texts = {s.concrete(p) for p in every}
    assert s.size(distinct=True) == len(distinct) == len(texts) == (2 * 2 * 2 * 2 + 1) * 2
    assert {s.concrete(p) for p in distinct} == texts
