"""PNG / PDF diagrams draw only glyphs their font has (issue 22, item 15: an artefact in `r 4 · α 16`):
where fontconfig lacks the drawing font (DejaVu Sans), the labels are spelt in ASCII."""

from __future__ import annotations

import graphviz
import pytest

from peltc.compiler import render as render_mod
from peltc.compiler.glyphs import ascii_labels
from peltc.compiler.pipeline import build_ir

SPEC = "lora qv { at layers[*].attention.{query, value} rank 4 alpha 16 }\n" \
       "adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }"


def _piped(monkeypatch, tmp_path, fmt: str, has_font: bool) -> str:
    seen = []

    def pipe(self, format=None, **kw):
        seen.append(self.source)
        return b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(graphviz.Source, "pipe", pipe)
    monkeypatch.setattr(graphviz.Digraph, "pipe", pipe)
    monkeypatch.setattr(render_mod, "font_has_glyphs", lambda font: has_font)
    render_mod.render(build_ir(SPEC, model="minilm").ir, tmp_path / f"d.{fmt}")
    return seen[0]


@pytest.mark.parametrize("fmt", ["png", "pdf"])
def test_without_the_font_raster_labels_are_ascii(monkeypatch, tmp_path, fmt):
    src = _piped(monkeypatch, tmp_path, fmt, has_font=False)
    assert src.isascii()
    assert "r 4 | alpha 16" in src and "sigma(" in src


def test_with_the_font_labels_keep_their_glyphs(monkeypatch, tmp_path):
    src = _piped(monkeypatch, tmp_path, "png", has_font=True)
    assert "r 4 · α 16" in src and "σ(" in src


def test_svg_keeps_its_glyphs_whatever_the_font(monkeypatch, tmp_path):
    assert "r 4 · α 16" in _piped(monkeypatch, tmp_path, "svg", has_font=False)


def test_ascii_labels_spells_every_glyph_the_drawing_uses():
    assert ascii_labels("r 4 · α 16 → σ(x) ×6 …") == "r 4 | alpha 16 -> sigma(x) x6 ..."
    assert ascii_labels("Ω").isascii()
