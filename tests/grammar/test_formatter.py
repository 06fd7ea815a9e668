"""`peltc.grammar.fmt.format_source`: the canonical form, comments kept, idempotent, same IR."""

from __future__ import annotations

import textwrap

import pytest

from peltc.compiler.pipeline import build_ir
from peltc.errors import SpecError
from peltc.grammar.fmt import format_source


def _d(s: str) -> str:
    return textwrap.dedent(s).lstrip("\n")


def _ir(text: str) -> dict:
    """IR json without spans and source hash (what must not change when formatting)."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in ("span", "spans", "gate_span", "spec_hash")}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    d = strip(build_ir(text, model="bert-base-uncased").ir.to_dict())
    d["edges"] = sorted(d["edges"], key=lambda e: (e["src"], e["dst"], e["role"]))
    return d


def check(src: str, expected: str, *, same_ir: bool = True) -> None:
    got = format_source(src)
    assert got == expected, f"\n--- got ---\n{got}--- expected ---\n{expected}"
    assert format_source(got) == got, "not idempotent"
    if same_ir:
        assert _ir(got) == _ir(src)


# --- layout -------------------------------------------------------------------------------------
def test_one_member_per_line_two_space_indent_blank_line_between_sections():
    src = "model bert-base-uncased adapter a{at layers[*].ffn.output size 48}lora qv{at layers[*].attention.{query,value} rank 8}"
    check(src, _d("""
        model bert-base-uncased

        adapter a {
          at layers[*].ffn.output
          size 48
        }

        lora qv {
          at layers[*].attention.{query, value}
          rank 8
        }
    """))


def test_statements_keep_their_order_and_form():
    src = _d("""
        extends   "base.pelt"
        import a,b from "lib.pelt"
        import "all.pelt"
        remove   old
        adapter a { size 8 }
        model "bert-base-uncased"
    """)
    assert format_source(src) == _d("""
        extends "base.pelt"
        import a, b from "lib.pelt"
        import "all.pelt"
        remove old

        adapter a {
          size 8
        }

        model bert-base-uncased
    """)


def test_model_names_stay_quoted_when_they_must():
    assert format_source('model "my model"') == 'model "my model"\n'
    assert format_source('model "org/name-1.0"') == "model org/name-1.0\n"
    assert format_source('model "./configs/tiny.json"') == 'model "./configs/tiny.json"\n'
    assert format_source("model configs/tiny.json") == "model configs/tiny.json\n"


def test_empty_file_and_empty_section():
    assert format_source("") == ""
    assert format_source("  \n\n # only a comment\n\n") == "# only a comment\n"
    check("bitfit  b  {  }\nhead {\n\n}", "bitfit b {}\n\nhead {}\n")


def test_settings_sections():
    check("head{pool mean}train{lr 1e-4 epochs 3}", _d("""
        head {
          pool mean
        }

        train {
          lr 1e-4
          epochs 3
        }
    """))


# --- selectors, points, values, gates -----------------------------------------------------------
@pytest.mark.parametrize("written,canonical", [
    ("*", "*"), (" 3 ", "3"), ("-1", "-1"), ("0 .. 5", "0..5"), ("6..", "6.."), ("-4 ..", "-4.."),
    ("0..11 by 2", "0..11 by 2"), ("0..11 by 1", "0..11"), ("..5", "0..5"), ("..5 by 2", "0..5 by 2"),
    ("0,2,5..7", "0, 2, 5..7"), ("007", "7"), ("1..", "1.."),
])
def test_selectors(written, canonical):
    check(f"adapter a {{ at layers[{written}].ffn.output }}",
          f"adapter a {{\n  at layers[{canonical}].ffn.output\n}}\n")


@pytest.mark.parametrize("written,canonical", [
    ("layers[*].attention.{ query ,value }", "layers[*].attention.{query, value}"),
    ("layers[*].attention.{query}", "layers[*].attention.query"),
    ("layers[*].{attention.query}", "layers[*].attention.query"),
    ("layers[*].{attention , ffn}.output", "layers[*].{attention, ffn}.output"),
    ("layers[0 .. 2]", "layers[0..2]"),
    ("embeddings ,head", "embeddings, head"),
    ("{embeddings}", "embeddings"),
])
def test_targets(written, canonical):
    check(f"bitfit b {{ at {written} }}", f"bitfit b {{\n  at {canonical}\n}}\n", same_ir="query" not in canonical)


def test_point_sets_keep_braces_around_keywords():
    # `{layers}.x` is a point named "layers"; without braces it would not parse
    assert format_source("bitfit b { at {layers}.x }") == "bitfit b {\n  at {layers}.x\n}\n"
    assert format_source("bitfit b { at layers[*].{at} }") == "bitfit b {\n  at layers[*].{at}\n}\n"


@pytest.mark.parametrize("written", ["48", "4.50", "1e-3", ".5", "-0.0", "2E2", "007"])
def test_numbers_as_written(written):
    assert format_source(f"train {{ lr {written} }}") == f"train {{\n  lr {written}\n}}\n"


@pytest.mark.parametrize("written,canonical", [
    ("sigmoid( layer.input )", "sigmoid(layer.input)"),
    ("sigmoid(ffn.output,pool = mean_unmasked)", "sigmoid(ffn.output, pool=mean_unmasked)"),
    ("scalar", "scalar"), ("scalar( init = -1 )", "scalar(init=-1)"), ("const( .5 )", "const(.5)"),
    ("none", "none"),
])
def test_gates(written, canonical):
    check(f"adapter a {{ at layers[*].ffn.output gate {written} }}",
          f"adapter a {{\n  at layers[*].ffn.output\n  gate {canonical}\n}}\n")


@pytest.mark.parametrize("written", ["hidden/16", "hidden / 1.5", "hidden/ 2e1", "hidden /007"])
def test_relative_sizes_round_trip(written):
    canonical = written.replace(" ", "")
    check(f"adapter a {{ at layers[*].ffn.output size {written} }}",
          f"adapter a {{\n  at layers[*].ffn.output\n  size {canonical}\n}}\n")


def test_strings_and_words():
    check('adapter a { at layers[*].ffn.output activation "gelu" placement parallel }',
          'adapter a {\n  at layers[*].ffn.output\n  activation "gelu"\n  placement parallel\n}\n')


def test_per_layer_overrides_are_nested_blocks():
    check("lora l { at layers[*].attention.query rank 8 layers[0..3]{rank 4 gate const(0.5)} layers[-1]{} }", _d("""
        lora l {
          at layers[*].attention.query
          rank 8
          layers[0..3] {
            rank 4
            gate const(0.5)
          }
          layers[-1] {}
        }
    """), same_ir=False)   # `layers[-1] {}` changes nothing but is kept


def test_semantic_errors_are_formatted_too():
    # formatting needs only the syntax: unknown names and bad values are kept as written
    assert format_source("adaptor x { sizee = }".replace(" = ", " 3 ")) == "adaptor x {\n  sizee 3\n}\n"


def test_syntax_error_raises_spec_error():
    with pytest.raises(SpecError) as e:
        format_source("adapter a {\n  size = 48\n}", "x.pelt")
    assert e.value.diagnostics[0].code == "E001"
    assert (e.value.diagnostics[0].span.line, e.value.diagnostics[0].span.col) == (2, 8)


# --- comments -----------------------------------------------------------------------------------
def test_comments_are_kept_in_place():
    src = _d("""
        # header comment

        # about the model
        model bert-base-uncased   # trailing on a statement
        adapter a {   # trailing on a header
          # above a member
          at layers[*].ffn.output
          size 48 # trailing on a member
          # dangling before the closing brace
        }  # after the closing brace
        # end of file
    """)
    check(src, _d("""
        # header comment

        # about the model
        model bert-base-uncased  # trailing on a statement

        adapter a {  # trailing on a header
          # above a member
          at layers[*].ffn.output
          size 48  # trailing on a member
          # dangling before the closing brace
        }  # after the closing brace
        # end of file
    """))


def test_consecutive_trailing_comments_share_a_column():
    src = _d("""
        prefix kv {
          at layers[*].attention # where
          length 10 # L
          mlp 512     # folded away

          gate sigmoid(layer.input, pool=mean_unmasked) # alone in its run
        }
    """)
    check(src, _d("""
        prefix kv {
          at layers[*].attention  # where
          length 10               # L
          mlp 512                 # folded away

          gate sigmoid(layer.input, pool=mean_unmasked)  # alone in its run
        }
    """))


def test_comments_inside_multi_line_members_move_above_or_to_the_end():
    src = _d("""
        lora qv {
          at layers[*].attention.{query,   # the queries
                                  value},  # and values
             # and one more target
             layers[0].ffn.up
        }
    """)
    check(src, _d("""
        lora qv {
          # and values
          # and one more target
          at layers[*].attention.{query, value}, layers[0].ffn.up  # the queries
        }
    """))


def test_comment_before_brace_on_its_own_line():
    check("adapter a  # the adapter\n{\n  at layers[*].ffn.output\n}\n",
          "adapter a {  # the adapter\n  at layers[*].ffn.output\n}\n")


def test_one_line_section_with_a_trailing_comment():
    check("bitfit b { at embeddings }  # biases\n",
          "bitfit b {\n  at embeddings\n}  # biases\n")
    check("bitfit b {}  # biases\n", "bitfit b {}  # biases\n")


def test_hash_inside_a_string_is_not_a_comment():
    assert format_source('model "a#b"  # real\n') == 'model "a#b"  # real\n'


def test_blank_lines_collapse_and_never_open_or_close_a_block():
    src = "adapter a {\n\n\n  at layers[*].ffn.output\n\n\n\n  size 48\n\n}\n\n\n\n# end\n"
    check(src, "adapter a {\n  at layers[*].ffn.output\n\n  size 48\n}\n\n# end\n")


def test_crlf_and_tabs():
    src = "adapter a {\r\n\tat layers[*].ffn.output\t# tab\r\n\tsize 48\r\n}\r\n"
    check(src, "adapter a {\n  at layers[*].ffn.output  # tab\n  size 48\n}\n")


def test_comment_text_is_kept_verbatim():
    src = "#no space\n#   indented text  \nbitfit b {}\n"
    assert format_source(src) == "#no space\n#   indented text\nbitfit b {}\n"


def test_design_sketch_round_trips():
    sketch = _d("""
        # UniPELT (APL), Mao et al. 2021: adapter + prefix + LoRA, each behind a learned gate.
        model bert-base-uncased                  # default base model; --model overrides

        adapter ffn_adapter {
          at    layers[*].ffn.output             # after the feed-forward block (Pfeiffer placement)
          size  48
          gate  sigmoid(ffn.output)              # G_A, estimated from the adapter's own input
        }
        prefix kv {
          at     layers[*].attention
          length 10
          mlp    512                             # reparameterisation, folded away after training
          gate   sigmoid(layer.input)            # G_P scales P_K and P_V
        }
        lora qv {
          at    layers[*].attention.{query, value}
          rank  8
          alpha 16
          gate  sigmoid(layer.input)             # G_L replaces alpha/rank
        }
    """)
    once = format_source(sketch)
    assert format_source(once) == once
    assert _ir(once) == _ir(sketch)
    assert "  mlp 512                    # reparameterisation, folded away after training\n" in once
    assert once.count("\n\n") == 3
