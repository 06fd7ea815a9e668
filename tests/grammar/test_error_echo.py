"""What an error echoes is capped (issue 22, item 8): a nested-braces spec on one 100 KB line printed
that line whole. The source line is cut to `ECHO_WIDTH` characters around the caret, with an ellipsis at
each cut end, and the caret still under the same characters; messages to `TEXT_WIDTH`."""

from __future__ import annotations

import pytest

from peltc.cli import main
from peltc.errors import ECHO_WIDTH, ELLIPSIS, TEXT_WIDTH, Diagnostic, Span, echo_window


def _caret(rendered: str) -> tuple[str, int, int]:
    """(echoed line, caret column, caret width), 1-based, from a rendered diagnostic."""
    lines = rendered.split("\n")
    src = next(x for x in lines[1:] if x.startswith(" ") and " | " in x and "^" not in x)
    mark = next(x for x in lines[1:] if "^" in x)
    shown = src.split(" | ", 1)[1]
    bar = mark.split(" | ", 1)[1]
    return shown, len(bar) - len(bar.lstrip(" ")) + 1, bar.count("^")


@pytest.mark.parametrize("case", ["nested", "eof", "value"])
def test_a_100kb_line_is_echoed_capped_with_the_caret_in_place(case, tmp_path, capsys):
    n = 50_000
    text = {"nested": "lora a { at layers[*].attention.query " + "{" * n + "}" * n + " }\n",
            "eof": "lora a { at layers[*].attention.query }\n" + "x" * 2 * n + " {\n",
            "value": "lora a { at layers[*].attention.query rank " + "x" * 2 * n + " }\n"}[case]
    p = tmp_path / "big.pelt"
    p.write_text(text)
    assert main(["check", str(p), "--model", "none"]) == 1
    err = capsys.readouterr().err
    assert len(err) < 2 * ECHO_WIDTH + 2 * TEXT_WIDTH
    assert all(len(line) <= TEXT_WIDTH + len(str(p)) + 40 for line in err.split("\n"))
    shown, col, width = _caret(err)
    assert len(shown) <= ECHO_WIDTH + 2 and ELLIPSIS in shown
    header = err.split("\n")[0]
    line_no, src_col = (int(x) for x in header.split(": ")[1].split(":")[1:3])
    source_line = text.split("\n")[line_no - 1]
    if src_col <= len(source_line):   # the caret is under the character the span starts at
        assert shown[col - 1] == source_line[src_col - 1]
        assert shown[col - 1:col - 1 + width] == source_line[src_col - 1:src_col - 1 + width].replace("\n", "")
    else:                             # just past the end of the line (end of file)
        assert col == len(shown) + 1 and not shown.endswith(ELLIPSIS)


def test_echo_window_keeps_short_lines_and_the_caret():
    assert echo_window("lora a {", 6, 1) == ("lora a {", 6, 1)
    line = "a" * 1000 + "XYZ" + "b" * 1000
    shown, col, width = echo_window(line, 1001, 3)
    assert shown[col - 1:col - 1 + width] == "XYZ" and shown.startswith(ELLIPSIS) and shown.endswith(ELLIPSIS)
    assert len(shown) == ECHO_WIDTH + 2
    shown, col, width = echo_window("Q" + "a" * 1000, 1, 1)
    assert shown[0] == "Q" and col == 1 and not shown.startswith(ELLIPSIS)


def test_messages_and_help_are_capped():
    d = Diagnostic("E103", "got " + "x" * 10_000, Span("f", 1, 1), help="h" * 10_000)
    assert len(d.message) == TEXT_WIDTH and d.message.endswith(ELLIPSIS) and len(d.help) == TEXT_WIDTH
