"""The canonical text of a spec, printed from its syntax tree (`peltc fmt`).

The formatter works on what was written, not on the merged IR: `extends`, `import` and `remove`
statements stay as they are, and nothing is resolved or checked beyond the syntax.

Canonical form: statements in source order; one blank line around every section; members
indented two spaces, one per line; `at` targets comma-separated; point sets as `{query, value}`;
selectors as `*`, `3`, `0..5`, `6..`, `-4..`, `0..11 by 2`, `0, 2, 5..7`; numbers as written;
gates as `sigmoid(layer.input)`, `sigmoid(ffn.output, pool=mean_unmasked)`, `scalar`,
`const(0.5)`, `none`; per-layer overrides as nested blocks.

Comments are kept. The grammar ignores them, so they are recovered from the source text by line:
a comment alone on its line stays above the statement or member that follows it (or at the end of
its block); a comment after code stays at the end of the line of the statement or member it
follows, and the end-of-line comments of consecutive lines share a column (as gofmt aligns
them). A single blank line the author left between members or statements is kept (runs of
blank lines collapse to one), as black does.

>>> print(format_source("lora qv{at layers[ * ].attention.{query,value} rank 8 # r\\n}"), end="")
lora qv {
  at layers[*].attention.{query, value}
  rank 8  # r
}
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from peltc.grammar import ast
from peltc.grammar.parser import parse

INDENT = "  "
_KEYWORDS = frozenset({"model", "extends", "import", "from", "remove", "at", "gate", "layers", "by", "choice",
                       "optional"})
_MODEL_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\/:@+-]*")   # a model name that needs no quotes
_Out = tuple[str, "str | None"]   # an output line: code, end-of-line comment
_BLANK: _Out = ("", None)
_INF = 1 << 60                    # the line of the end-of-file anchor


def format_source(text: str, file: str = "<string>") -> str:
    """Return the canonical form of spec ``text``; raise `SpecError` if it does not parse."""
    tree = parse(text, file)
    src = _Source(text)
    top = _Block([_statement(s, src) for s in tree.statements],
                 _Anchor(_INF, _INF), level=0, top=True)
    anchors = list(top.anchors())
    _place_comments(src, anchors)
    out: list[_Out] = []
    top.render(out, src)
    while out and out[-1] == _BLANK:
        out.pop()
    return "".join(line + "\n" for line in _align(out))


def _align(out: list[_Out]) -> list[str]:
    """Join code and end-of-line comments; comments on consecutive lines share a column."""
    lines: list[str] = []
    k = 0
    while k < len(out):
        j = k
        while j < len(out) and out[j][1] is not None:
            j += 1
        if j == k:
            lines.append(out[k][0])
            k += 1
            continue
        col = max(len(code) for code, _ in out[k:j]) + 2
        lines += [code.ljust(col) + comment for code, comment in out[k:j]]
        k = j
    return lines


# --- the source text: lines, comments, blank lines ----------------------------------------------
class _Source:
    """Line-level facts about the source (lines counted on '\\n', as the parser does)."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.split("\n")
        self.starts = [0]
        for ln in self.lines[:-1]:
            self.starts.append(self.starts[-1] + len(ln) + 1)
        self.comments: dict[int, tuple[str, bool]] = {}   # line → (comment text, alone on its line)
        for i, ln in enumerate(self.lines, 1):
            col = _comment_col(ln)
            if col is not None:
                self.comments[i] = (ln[col:].rstrip(), ln[:col].strip() == "")
        self.blank = [i for i, ln in enumerate(self.lines, 1) if ln.strip() == ""]   # sorted

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col - 1

    def line_of(self, offset: int) -> int:
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def find_brace(self, line: int, col: int) -> int:
        """The line of the first '{' at or after (line, col), skipping comments."""
        i, n = self.offset(line, col), len(self.text)
        while i < n:
            c = self.text[i]
            if c == "{":
                return self.line_of(i)
            if c == "#":
                j = self.text.find("\n", i)
                i = n if j < 0 else j
                continue
            i += 1
        return line

    def blank_between(self, a: int, b: int) -> bool:
        """Is there a blank source line strictly between lines a and b?"""
        k = bisect.bisect_right(self.blank, a)
        return k < len(self.blank) and self.blank[k] < b


def _comment_col(line: str) -> int | None:
    """Column (0-based) of the comment on a line, or None. A '#' inside a string is not one;
    strings cannot span lines and no other token holds '"', so a toggle is exact."""
    in_str = False
    for i, c in enumerate(line):
        if c == '"':
            in_str = not in_str
        elif c == "#" and not in_str:
            return i
    return None


# --- the layout tree ----------------------------------------------------------------------------
@dataclass
class _Anchor:
    """A place comments attach to: one output line, printed from source lines start..end."""

    start: int
    end: int
    leading: list[int] = field(default_factory=list)    # source lines of comments printed above
    trailing: int | None = None                          # source line of the end-of-line comment


@dataclass
class _Line:
    """A statement or member printed on one line."""

    text: str
    anchor: _Anchor
    section: bool = False

    def anchors(self):
        yield self.anchor

    def last_line(self) -> int:
        return self.anchor.end

    def render(self, out: list[_Out], src: _Source, level: int) -> None:
        out.append((INDENT * level + self.text, _trailing(self.anchor, src)))


@dataclass
class _Section:
    """`head {` members `}`: a section, or a per-layer override (``section`` False)."""

    head: str
    anchor: _Anchor
    body: "_Block"
    section: bool = True

    def anchors(self):
        yield self.anchor
        yield from self.body.anchors()

    def last_line(self) -> int:
        return self.body.close.end

    def render(self, out: list[_Out], src: _Source, level: int) -> None:
        pad, close = INDENT * level, self.body.close
        if not self.body.items and not close.leading and self.anchor.trailing is None:
            out.append((f"{pad}{self.head} {{}}", _trailing(close, src)))
            return
        out.append((f"{pad}{self.head} {{", _trailing(self.anchor, src)))
        self.body.render(out, src)
        out.append((f"{pad}}}", _trailing(close, src)))


@dataclass
class _Block:
    """The items between braces (or of the whole file, ``top``) and the closing brace's anchor."""

    items: list
    close: _Anchor
    level: int
    top: bool = False

    def anchors(self):
        for it in self.items:
            yield from it.anchors()
        yield self.close

    def render(self, out: list[_Out], src: _Source) -> None:
        pad = INDENT * self.level
        prev_end: int | None = None      # last source line of the previous item
        prev_section = False
        for it in [*self.items, None]:
            anchor = self.close if it is None else next(it.anchors())
            comments = anchor.leading
            if it is None and not comments:
                break
            first = comments[0] if it is None else min([anchor.start, *comments[:1]])
            section = it is not None and it.section
            if prev_end is not None and (src.blank_between(prev_end, first) or
                                         (self.top and it is not None and (section or prev_section))):
                out.append(_BLANK)
            last = None
            for ln in comments:
                if last is not None and src.blank_between(last, ln):
                    out.append(_BLANK)
                out.append((pad + src.comments[ln][0], None))
                last = ln
            if it is None:
                break
            if last is not None and src.blank_between(last, anchor.start):
                out.append(_BLANK)
            it.render(out, src, self.level)
            prev_end, prev_section = it.last_line(), section


def _trailing(anchor: _Anchor, src: _Source) -> str | None:
    return None if anchor.trailing is None else src.comments[anchor.trailing][0]


# --- comment placement --------------------------------------------------------------------------
def _place_comments(src: _Source, anchors: list[_Anchor]) -> None:
    """Give each comment to an anchor (``anchors`` are in source order, the last one at the end).

    A comment alone on its line goes above the anchor whose lines hold it (a comment inside a
    multi-line member) or else above the next anchor. A comment after code ends the line of the
    last anchor whose lines hold it; a second one on the same anchor moves above it.
    """
    for line in sorted(src.comments):
        alone = src.comments[line][1]
        holders = [a for a in anchors if a.start <= line <= a.end]
        if not holders:
            next(a for a in anchors if a.start > line).leading.append(line)
        elif alone or holders[-1].trailing is not None:
            holders[-1].leading.append(line)
        else:
            holders[-1].trailing = line


# --- statements and members ---------------------------------------------------------------------
def _statement(s: ast.Statement, src: _Source):
    if isinstance(s, ast.Section):
        head = s.keyword if s.name is None else f"{s.keyword} {s.name}"
        head = f"optional {head}" if s.optional else head
        after = s.name_span or s.keyword_span
        return _block(head, s.span, after.end_line or after.line, after.end_col or after.col, s.members, 0, src)
    a = _Anchor(s.span.line, s.span.end_line or s.span.line)
    if isinstance(s, ast.Model):
        ref = s.ref if _MODEL_REF.fullmatch(s.ref) else f'"{s.ref}"'
        return _Line(f"model {ref}", a)
    if isinstance(s, ast.Extends):
        return _Line(f'extends "{s.path}"', a)
    if isinstance(s, ast.Import):
        names = "" if s.names is None else ", ".join(s.names) + " from "
        return _Line(f'import {names}"{s.path}"', a)
    assert isinstance(s, ast.Remove), s
    return _Line(f"remove {s.name}", a)


def _block(head: str, span, line: int, col: int, members, level: int, src: _Source) -> _Section:
    brace = src.find_brace(line, col)
    anchor = _Anchor(span.line, brace)
    end = span.end_line or span.line
    items = [_member(m, level + 1, src) for m in members]
    return _Section(head, anchor, _Block(items, _Anchor(end, end), level + 1))


def _member(m: ast.Member, level: int, src: _Source):
    """A member printed at indentation ``level``."""
    if isinstance(m, ast.LayerOverride):
        sel = m.selector.span
        sec = _block(f"layers[{selector(m.selector)}]", m.span, sel.end_line or sel.line,
                     sel.end_col or sel.col, m.members, level, src)
        sec.section = False
        return sec
    a = _Anchor(m.span.line, m.span.end_line or m.span.line)
    if isinstance(m, ast.At):
        return _Line("at " + (space(m.choice) if m.choice else ", ".join(target(t) for t in m.targets)), a)
    if isinstance(m, ast.Gate):
        return _Line("gate " + (space(m.choice) if m.choice else gate(m.expr)), a)
    assert isinstance(m, ast.Param), m
    return _Line(f"{m.name} {space(m.space) if m.space else m.value.text}", a)


def option(o) -> str:
    """One option of a choice, as canonical text."""
    if isinstance(o, ast.Target):
        return target(o)
    if isinstance(o, ast.GateExpr):
        return gate(o)
    return o.text


def space(s: "ast.Choice | ast.Range") -> str:
    """`choice(4, 8)`, `loguniform(1e-4, 1e-2)`, `uniform(0, 1)`, `intrange(4, 64)`."""
    if isinstance(s, ast.Choice):
        return f"choice({', '.join(option(o) for o in s.options)})"
    return f"{s.kind}({s.low.text}, {s.high.text})"


def selector(sel: ast.Selector) -> str:
    """`*`, `3`, `0..5`, `6..`, `-4..`, `0..11 by 2`, and comma lists of these."""
    parts = []
    for it in sel.items:
        if it.kind == "all":
            parts.append("*")
        elif it.kind == "index":
            parts.append(str(it.start))
        else:
            s = f"{it.start}..{'' if it.stop is None else it.stop}"
            parts.append(s if it.step == 1 else f"{s} by {it.step}")
    return ", ".join(parts)


def target(t: ast.Target) -> str:
    segs = []
    for alts in t.segments:
        # a one-element set loses its braces, unless a name in it is a keyword (`{layers}.x`)
        plain = len(alts) == 1 and not (set(alts[0].split(".")) & _KEYWORDS)
        segs.append(alts[0] if plain else "{" + ", ".join(alts) + "}")
    path = ".".join(segs)
    if t.selector is None:
        return path
    return f"layers[{selector(t.selector)}]" + (f".{path}" if path else "")


def gate(e: ast.GateExpr) -> str:
    if not e.called:
        return e.name
    args = []
    for a in e.args:
        args.append(a.value.text if a.key is None else f"{a.key}={a.value.text}")
    return f"{e.name}({', '.join(args)})"
