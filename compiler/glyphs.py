"""What a raster (PNG) or PDF diagram can draw: `peltc render` labels use α, σ, ·, → and line glyphs in its
legend; drawn with a font that lacks them they come out as boxes or stray marks (`r 4 · α 16`)."""

from __future__ import annotations

# Raster and PDF output draw with whatever font fontconfig resolves FONT to: without DejaVu (which has
# every glyph the labels use), a fallback font may lack α, σ, ·, → or the legend's line glyphs and draw
# boxes or misplaced marks. Then those formats get ASCII labels instead.
ASCII_GLYPHS = {"α": "alpha", "σ": "sigma", "·": "|", "×": "x", "→": "->", "…": "...", "–": "-", "—": "-",
                "≈": "~", "━": "-", "┄": "-", "╍": "-", "▶": ">", "◆": "*", "●": "o", "†": "+", "≥": ">=",
                "≤": "<=", "−": "-"}


def font_has_glyphs(font: str) -> bool:
    """Whether fontconfig has ``font`` itself (not a substitute) installed; True where there is no
    fontconfig to ask (Graphviz then uses its own lookup)."""
    import shutil
    import subprocess
    if shutil.which("fc-list") is None:
        return True
    try:
        found = subprocess.run(["fc-list", font, "family"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return True
    return font.lower() in found.lower()


def ascii_labels(source: str) -> str:
    """DOT source with every non-ASCII character of its labels spelt in ASCII (``r 4 | alpha 16``)."""
    for k, v in ASCII_GLYPHS.items():
        source = source.replace(k, v)
    return "".join(c if ord(c) < 128 else "?" for c in source)
