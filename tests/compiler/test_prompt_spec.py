"""The `prompt` method in the front end: its parameters (a quoted `text`, `init`, `encoder`), located
errors E155 / E156 / E103, its counts in `check` (n × E saved; the P-tuning encoder trained and folded),
and `fmt` keeping the text."""

from __future__ import annotations

import pytest

from peltc.compiler.pipeline import build_ir
from peltc.compiler.summary import summary
from peltc.errors import SpecError
from peltc.grammar.fmt import format_source


def _codes(text: str) -> list[tuple[str, int, int]]:
    with pytest.raises(SpecError) as e:
        build_ir(text, "x.pelt", model="bert-base-uncased")
    return [(d.code, d.span.line, d.span.col) for d in e.value.errors]


def test_defaults_and_text():
    ir = build_ir('prompt p {\n  init text\n  text "Classify:"\n}', model="bert-base-uncased").ir
    p = ir.instance("p").params
    assert (p["length"], p["init"], p["text"], p["encoder"]) == (20, "text", "Classify:", "none")
    (att,) = ir.attachments("p")
    assert att.point == "embeddings" and att.layer is None and att.saved == 20 * 768


def test_init_text_needs_a_text():
    assert _codes("prompt p {\n  init text\n}") == [("E155", 2, 8)]
    assert _codes('prompt p {\n  init text\n  text ""\n}')[0][0] == "E155"


def test_a_text_without_init_text():
    assert _codes('prompt p {\n  text "hi"\n}') == [("E156", 2, 8)]


def test_text_takes_a_quoted_string():
    assert ("E103", 3) in [c[:2] for c in _codes("prompt p {\n  init text\n  text hello\n}")]


def test_length_is_set_for_the_whole_instance_and_in_range():
    assert _codes("prompt p { length 0 }")[0][0] == "E104"
    assert _codes("prompt p { encoder gru }")[0][0] == "E103"
    assert _codes("prompt p { at layers[0].attention }")[0][0] == "E108"


def test_check_shows_the_encoder_it_folds():
    ir = build_ir("prompt p { length 10 encoder mlp encoder_hidden 64 }", model="bert-base-uncased").ir
    assert ir.instance("p").shared_trainable == 10 * 768 + (768 * 64 + 64) + (64 * 64 + 64) + (64 * 768 + 768)
    text = summary(ir, "x.pelt")
    assert f"total saved: {10 * 768:,}" in text and "P-tuning encoder" in text


def test_fmt_keeps_the_text():
    src = 'prompt p {\n  init text\n  text "Is it good?"\n}\n'
    assert 'text "Is it good?"' in format_source(src)
