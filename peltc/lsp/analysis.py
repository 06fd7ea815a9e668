"""What the language server computes, as plain functions of a spec's text.

Positions here are *server units*: 0-based lines and columns counted in code points (as the parser
counts them); `peltc.lsp.server` converts them to the client's encoding (UTF-16 by default).

Diagnostics are exactly `peltc check`'s: the same front end (`peltc.compiler.pipeline.build_ir`), the
same codes, spans, messages, help and severities (warnings only where there are no errors, as `peltc
check` prints them). An error in an imported or extended file is shown on the `extends` / `import`
line that brings it in, with its own location as related information.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from lsprotocol import types as lsp

from peltc.compiler import schema
from peltc.compiler.archs import ALIASES, KNOWN_MODELS, PACKAGED_MODEL, load_config
from peltc.compiler.ir import IR
from peltc.compiler.layerset import compact_layers
from peltc.compiler.pipeline import build_ir
from peltc.errors import Diagnostic, PeltError, Span, SpecError
from peltc.grammar import ast
from peltc.grammar.parser import parse

SOURCE = "peltc"
# Hover counts need a model; a spec without `model` (and no `model` setting) is counted on the one
# `peltc compile` uses by default, the packaged MiniLM (its dimensions are in the built-in table).
DEFAULT_HOVER_MODEL = "minilm"

Loader = Callable[[str], str]


# --- positions ----------------------------------------------------------------------------------
def pos(line: int, col: int) -> lsp.Position:
    """A 1-based parser (line, col) as a 0-based server position."""
    return lsp.Position(line=max(line - 1, 0), character=max(col - 1, 0))


def span_range(span: Span | None, text: str | None = None) -> lsp.Range:
    """A peltc span (1-based, exclusive end) as a server range. A span without an end covers one
    character (the caret `peltc check` draws), or the word there when the text is known."""
    if span is None:
        return lsp.Range(start=lsp.Position(line=0, character=0), end=lsp.Position(line=0, character=0))
    start = pos(span.line, span.col)
    if span.end_line is not None and span.end_col is not None:
        return lsp.Range(start=start, end=pos(span.end_line, span.end_col))
    width = 1
    if text is not None:
        lines = text.split("\n")
        if 1 <= span.line <= len(lines):
            m = re.match(r"[A-Za-z0-9_.\-]+", lines[span.line - 1][span.col - 1:])
            width = len(m.group(0)) if m else 1
    return lsp.Range(start=start, end=lsp.Position(line=start.line, character=start.character + width))


def in_span(span: Span | None, line0: int, char0: int) -> bool:
    """Is the server position inside (or at the end of) the span?"""
    if span is None:
        return False
    p = (line0 + 1, char0 + 1)
    end = (span.end_line or span.line, span.end_col or span.col + 1)
    return (span.line, span.col) <= p <= end


def offset_of(text: str, line0: int, char0: int) -> int:
    lines = text.split("\n")
    line0 = min(line0, len(lines) - 1)
    return sum(len(ln) + 1 for ln in lines[:line0]) + min(char0, len(lines[line0]))


def uri_to_path(uri: str) -> str:
    from urllib.parse import unquote, urlparse
    u = urlparse(uri)
    if u.scheme != "file":
        return uri
    return os.path.normpath(unquote(u.path))


def path_to_uri(path: str) -> str:
    return Path(path).resolve().as_uri() if not path.startswith("<") else path


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, ValueError):
        return False


# --- the analysis of one document -----------------------------------------------------------------
@dataclass
class Analysis:
    path: str
    text: str
    tree: ast.Spec | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)   # peltc's, as `peltc check` reports them
    sources: dict[str, str] = field(default_factory=dict)
    ir: IR | None = None            # checked against the spec's model (or the `model` setting)
    hover_ir: IR | None = None      # the same with a model bound (DEFAULT_HOVER_MODEL when none)
    hover_model: str | None = None
    hover_model_defaulted: bool = False


def make_loader(open_docs: dict[str, str] | None = None) -> Loader:
    """A loader for `extends` / `import`: the editor's unsaved text of an open file, else the disk."""
    docs = {str(Path(p).resolve()): t for p, t in (open_docs or {}).items()}

    def load(path: str) -> str:
        key = str(Path(path).resolve())
        if key in docs:
            return docs[key]
        return Path(path).read_text(encoding="utf-8")
    return load


def analyse(text: str, path: str, *, model: str | None = None, loader: Loader | None = None,
            hover: bool = True) -> Analysis:
    """Check ``text`` (the spec at ``path``) as `peltc check PATH [--model MODEL]` does."""
    a = Analysis(path, text)
    try:
        a.tree = parse(text, path)
    except SpecError:
        a.tree = None
    try:
        r = build_ir(text, path, model=model, loader=loader)
    except SpecError as e:
        a.diagnostics = list(e.diagnostics)
        a.sources = dict(e.sources)
        return a
    except PeltError as e:   # a bad `model` setting: a usage error, as `peltc check --model X` reports it
        a.diagnostics = [e.diagnostic]
        return a
    a.diagnostics = list(r.warnings)
    a.sources = dict(r.diagnostics.sources)
    a.ir = r.ir
    if not hover:
        return a
    if r.ir.settings.family is not None:
        a.hover_ir, a.hover_model = r.ir, r.ir.settings.model or model
    else:
        try:
            a.hover_ir = build_ir(text, path, model=DEFAULT_HOVER_MODEL, loader=loader).ir
            a.hover_model, a.hover_model_defaulted = DEFAULT_HOVER_MODEL, True
        except PeltError:
            a.hover_ir = None
    return a


# --- diagnostics ----------------------------------------------------------------------------------
_INCLUDE = re.compile(r'^\s*(?:extends|import)\b[^"\n#]*"([^"\n]*)"', re.M)


def _included(path: str, loader: Loader, seen: set[str] | None = None) -> set[str]:
    """Every file that ``path`` brings in through extends / import, transitively (resolved paths)."""
    seen = set() if seen is None else seen
    try:
        text = loader(path)
    except (OSError, UnicodeDecodeError, ValueError):
        return seen
    for rel in _INCLUDE.findall(text):
        p = str((Path(path).parent / rel).resolve())
        if p not in seen:
            seen.add(p)
            _included(p, loader, seen)
    return seen


def suggestions(help_text: str | None) -> list[str]:
    """The names a help line's "did you mean 'a' or 'b'?" proposes."""
    if not help_text:
        return []
    m = re.search(r"did you mean (.+?)\?", help_text)
    return re.findall(r"'([^']*)'", m.group(1)) if m else []


def _message(d: Diagnostic) -> str:
    return d.message + (f"\nhelp: {d.help}" if d.help else "")


def to_lsp_diagnostics(a: Analysis, loader: Loader | None = None) -> list[lsp.Diagnostic]:
    """The analysis' diagnostics for its own document. A diagnostic in another file (an imported or
    extended spec) is shown on the statement that brings that file in, with the real location as
    related information."""
    loader = loader or make_loader()
    out: list[lsp.Diagnostic] = []
    includes: list[tuple[ast.Extends | ast.Import, set[str]]] | None = None
    for d in a.diagnostics:
        sev = lsp.DiagnosticSeverity.Warning if d.severity == "warning" else lsp.DiagnosticSeverity.Error
        data = {"help": d.help, "suggestions": suggestions(d.help)}
        code = d.code   # passed through as it is (tests/test_errors_registry.py reads `code=code` so)
        if d.span is None or _same(d.span.file, a.path):
            out.append(lsp.Diagnostic(range=span_range(d.span, a.text), message=_message(d), severity=sev,
                                      code=code, source=SOURCE, data=data))
            continue
        if includes is None:
            includes = []
            for st in (a.tree.statements if a.tree else ()):
                if isinstance(st, (ast.Extends, ast.Import)):
                    p = str((Path(a.path).parent / st.path).resolve())
                    includes.append((st, {p} | _included(p, loader)))
        target = str(Path(d.span.file).resolve())
        stmt = next((st for st, files in includes if target in files), includes[0][0] if includes else None)
        where = f"{d.span.file}:{d.span.line}:{d.span.col}"
        related = [lsp.DiagnosticRelatedInformation(
            location=lsp.Location(uri=path_to_uri(d.span.file),
                                  range=span_range(d.span, a.sources.get(d.span.file))),
            message=_message(d))]
        out.append(lsp.Diagnostic(range=span_range(stmt.span if stmt else None, a.text),
                                  message=f"in {where}: {_message(d)}", severity=sev, code=code,
                                  source=SOURCE, related_information=related, data=data))
    return out


def _bad_names(message: str) -> list[str]:
    names = re.findall(r"'([^']*)'", message)
    m = re.search(r"; got (\S+)$", message)
    if m:
        names.insert(0, m.group(1))
    return names


def quick_fixes(text: str, rng: lsp.Range, message: str, data: dict | None) -> list[tuple[str, lsp.Range, str]]:
    """(title, range, new text) for each did-you-mean of a diagnostic: the misspelt name inside the
    diagnostic's range replaced by a suggestion."""
    sugg = (data or {}).get("suggestions") or suggestions(message.partition("\nhelp: ")[2])
    if not sugg:
        return []
    start = offset_of(text, rng.start.line, rng.start.character)
    end = offset_of(text, rng.end.line, rng.end.character)
    region = text[start:end]
    bad = _bad_names(message.split("\n", 1)[0])
    out = []
    for s in sugg:
        loc = _replacement(region, bad, s)
        if loc is None:
            continue
        i, j = loc
        a_line, a_char = _position(text, start + i)
        b_line, b_char = _position(text, start + j)
        out.append((f"Change to '{s}'", lsp.Range(start=lsp.Position(line=a_line, character=a_char),
                                                  end=lsp.Position(line=b_line, character=b_char)),
                    _new_text(region[i:j], bad, s)))
    return out


def _word_at(region: str, word: str) -> int | None:
    for m in re.finditer(re.escape(word), region):
        before = region[m.start() - 1] if m.start() else " "
        after = region[m.end()] if m.end() < len(region) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after in "_"):
            return m.start()
    return None


def _replacement(region: str, bad: list[str], good: str) -> tuple[int, int] | None:
    """Where in ``region`` the misspelt name is: the whole name, else its one differing dotted part."""
    for b in sorted(bad, key=lambda b: -difflib.SequenceMatcher(None, b, good).ratio()):
        i = _word_at(region, b)
        if i is not None:
            return i, i + len(b)
        bp, gp = b.split("."), good.split(".")
        if len(bp) == len(gp):
            diff = [(x, y) for x, y in zip(bp, gp) if x != y]
            if len(diff) == 1:
                i = _word_at(region, diff[0][0])
                if i is not None:
                    return i, i + len(diff[0][0])
    return None


def _new_text(found: str, bad: list[str], good: str) -> str:
    if found in bad:
        return good
    for b in bad:   # one dotted part: the matching part of the suggestion
        for x, y in zip(b.split("."), good.split(".")):
            if x == found:
                return y
    return good


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    line = before.count("\n")
    return line, offset - (before.rfind("\n") + 1)


# --- finding what is under the cursor -------------------------------------------------------------
@dataclass
class Found:
    statement: ast.Statement | None = None
    section: ast.Section | None = None
    member: object | None = None             # ast.Param / ast.At / ast.Gate / ast.LayerOverride
    override: ast.LayerOverride | None = None
    target: ast.Target | None = None
    part: str = ""                           # "keyword" | "name" | "param-name" | "value" | ...


def find(tree: ast.Spec, line0: int, char0: int) -> Found:
    for st in tree.statements:
        if not in_span(st.span, line0, char0):
            continue
        f = Found(statement=st)
        if isinstance(st, ast.Section):
            f.section = st
            if in_span(st.keyword_span, line0, char0):
                f.part = "keyword"
                return f
            if in_span(st.name_span, line0, char0):
                f.part = "name"
                return f
            _find_member(st.members, f, line0, char0)
        return f
    return Found()


def _find_member(members, f: Found, line0: int, char0: int) -> None:
    for m in members:
        if not in_span(m.span, line0, char0):
            continue
        f.member = m
        if isinstance(m, ast.Param):
            name_end = Span(m.span.file, m.span.line, m.span.col, m.span.line, m.span.col + len(m.name))
            f.part = "param-name" if in_span(name_end, line0, char0) else "value"
        elif isinstance(m, ast.At):
            f.part = "at"
            f.target = next((t for t in m.targets if in_span(t.span, line0, char0)), None)
        elif isinstance(m, ast.Gate):
            f.part = "gate"
        elif isinstance(m, ast.LayerOverride):
            f.override = m
            f.part = "override"
            inner = Found()
            _find_member(m.members, inner, line0, char0)
            if inner.member is not None:
                f.member, f.part, f.target = inner.member, inner.part, inner.target
        return


# --- hover ----------------------------------------------------------------------------------------
POINT_DOCS = {
    "input": "the layer input h_in (value)",
    "attention": "the self-attention block (block; prefix-tuning)",
    "attention.query": "the attention's query projection (linear; LoRA)",
    "attention.key": "the attention's key projection (linear; LoRA)",
    "attention.value": "the attention's value projection (linear; LoRA)",
    "attention.out": "the attention's output projection (linear; LoRA)",
    "attention.output": "the attention sub-layer output, after its LayerNorm (value; adapters, gate source)",
    "ffn": "the feed-forward block (block)",
    "ffn.gate": "the gate projection of a gated MLP (linear; decoders only)",
    "ffn.up": "the feed-forward up projection (linear; LoRA)",
    "ffn.down": "the feed-forward down projection (linear; LoRA)",
    "ffn.output": "the feed-forward sub-layer output h_FN, after its LayerNorm (value; adapters, gate source)",
    "layer": "the whole layer (bitfit)",
    "embeddings": "the embeddings (global)",
    "head": "the model's frozen pooler (global)",
    "all": "the whole model (global)",
}

GATE_DOCS = {
    "none": "`none` (default): no gate; the value is 1 (LoRA: alpha / rank). 0 parameters.",
    "sigmoid": "`sigmoid(SOURCE)`: per example, the mean over tokens of σ(Linear(H, 1)(SOURCE)); SOURCE is "
               "`layer.input`, `attention.output` or `ffn.output` of the same layer; `pool=masked_mean|"
               "mean_unmasked|first`, `init=B` (the starting bias). H + 1 parameters per attachment.",
    "scalar": "`scalar`, `scalar(init=W)`: one learned scalar σ(w), w starting at `init` (0). 1 parameter.",
    "const": "`const(C)`: a constant C. 0 parameters.",
}


def _n(x: int | None) -> str:
    return "?" if x is None else f"{x:,}"


def param_doc(name: str, p: schema.ParamSpec, owner: str) -> str:
    lines = [f"**{name}** ({owner}): {p.doc}"]
    if p.type == "choice":
        lines.append(f"- values: {', '.join(f'`{c}`' for c in p.choices)}")
    else:
        kind = {"int": "a whole number", "float": "a number", "int_or_none": "a whole number or `none`",
                "bool": "`true` or `false`"}.get(p.type, p.type)
        if p.below_hidden:
            kind += ", or relative to the model: `hidden/D` (⌊hidden / D⌋, D > 1)"
        lines.append(f"- type: {kind}")
    lines.append(f"- default: {'—' if p.default is None else f'`{_value(p.default)}`'}")
    rng = []
    if p.min is not None:
        rng.append(f"{'>' if p.min_exclusive else '≥'} {p.min:g}")
    if p.max is not None:
        rng.append(f"{'<' if p.max_exclusive else '≤'} {p.max:g}")
    if p.below_hidden:
        rng.append("< the hidden size")
    if rng:
        lines.append(f"- range: {', '.join(rng)}")
    if p.instance_only:
        lines.append("- holds for the whole instance (not in a per-layer override)")
    if p.gate_replaces:
        lines.append("- has no effect under a gate (the gate replaces alpha / rank)")
    return "\n".join(lines)


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


def _model_note(a: Analysis) -> str:
    if a.hover_ir is None:
        return ""
    s = a.hover_ir.settings
    d = s.dims
    name = a.hover_model or s.model or "?"
    note = f"on `{name}` ({s.family}, {d['layers']} layers, hidden {d['hidden']})"
    if a.hover_model_defaulted:
        note += " — the spec names no model; `peltc compile`'s default"
    return note


def instance_hover(a: Analysis, name: str, method: str | None = None) -> str:
    from peltc.compiler.summary import params_text, point_order, points_text, trained_modules
    m = schema.METHODS.get(method or "")
    head = f"**{method}** `{name}`" + (f" — {m.doc}" if m else "")
    ir = a.hover_ir
    if ir is None or not any(i.name == name for i in ir.instances()):
        ir0 = a.ir
        if ir0 is not None and any(i.name == name for i in ir0.instances()):
            inst = ir0.instance(name)
            return head + "\n\n" + f"gate `{inst.gate.text()}`; " + \
                " · ".join(f"{k} {_value(v)}" for k, v in inst.params.items())
        return head + "\n\n(counts appear when the spec checks without errors)"
    inst = ir.instance(name)
    atts = ir.attachments(name)
    s = ir.settings
    lines = [head, ""]
    pts = sorted({x.point for x in atts}, key=point_order(s.family))
    layers = sorted({x.layer for x in atts if x.layer is not None})
    lines.append(f"- at: `{points_text(pts)}`" + (f" · layers {compact_layers(layers)}" if layers else ""))
    if pt := params_text(inst.method, atts):
        lines.append(f"- {pt}")
    if schema.METHODS[inst.method].gated:
        gates = list(dict.fromkeys(x.gate.text() for x in atts)) or [inst.gate.text()]
        gp = sum(x.gate_params or 0 for x in atts)
        lines.append(f"- gate: `{', '.join(gates)}`" + (f" ({_n(gp)} gate parameters)" if gp else ""))
    total = sum(x.saved or 0 for x in atts)
    per = {x.layer: 0 for x in atts if x.layer is not None}
    for x in atts:
        if x.layer is not None:
            per[x.layer] += x.saved or 0
    each = set(per.values())
    lines.append(f"- trainable: **{_n(total)}**" + (f" ({_n(each.pop())} per layer)" if len(each) == 1 else "") +
                 f" {_model_note(a)}")
    if inst.shared_trainable:
        lines.append(f"- also trains a {_n(inst.shared_trainable)}-parameter reparameterisation MLP "
                     "(folded into the prefixes after training)")
    mods = trained_modules(ir, atts)
    if mods:
        lines.append("- → " + "<br>".join(f"`{p}`" for p in mods))
    return "\n".join(lines)


def point_hover(a: Analysis, inst_name: str | None, target: ast.Target) -> str:
    from peltc.compiler.summary import path_patterns
    points = [p or schema.WHOLE_LAYER for p in target.points()] if target.selector is not None \
        else target.points()
    lines = []
    ir = a.hover_ir
    for p in points:
        lines.append(f"**{'layers[…].' if target.selector is not None and p != 'layer' else ''}{p}**: "
                     f"{POINT_DOCS.get(p, 'unknown point')}")
        if ir is not None and inst_name and any(i.name == inst_name for i in ir.instances()):
            atts = [x for x in ir.attachments(inst_name) if x.point == p]
            paths = path_patterns([x.module_path for x in atts if x.module_path])
            if paths:
                layers = sorted({x.layer for x in atts if x.layer is not None})
                lines.append(f"- resolves to ({_model_note(a)}" + (f", layers {compact_layers(layers)}" if layers
                                                                    else "") + "):")
                lines += [f"  - `{x}`" for x in paths]
    return "\n".join(lines)


def hover(a: Analysis, line0: int, char0: int) -> lsp.Hover | None:
    tree = a.tree
    if tree is None:
        return None
    f = find(tree, line0, char0)
    st = f.statement
    text: str | None = None
    rng: Span | None = None
    if isinstance(st, ast.Model):
        try:
            cfg = load_config(st.ref)
            text = f"**model** `{st.ref}` — from {cfg.source}"
            if a.ir is not None and a.ir.settings.family:
                d = a.ir.settings.dims
                text += (f"\n\n{a.ir.settings.family}, {d['layers']} layers, hidden {d['hidden']}, "
                         f"{_n(a.ir.settings.base_params)} base parameters")
        except PeltError as e:
            text = f"**model** `{st.ref}`: {e.diagnostic.message}"
        rng = st.span
    elif isinstance(st, (ast.Extends, ast.Import)):
        p = Path(a.path).parent / st.path
        text = f"`{p}`" + ("" if p.is_file() else " (not found)")
        rng = st.span
    elif isinstance(st, ast.Remove):
        text = f"removes the inherited instance `{st.name}`"
        rng = st.span
    elif f.section is not None:
        sec = f.section
        if f.part in ("keyword", "name"):
            if sec.name is not None:
                text = instance_hover(a, sec.name, sec.keyword)
            else:
                text = {"head": "**head**: task head settings (`pool pooler|mean`)",
                        "train": "**train**: training recipe defaults for `peltc compile` (flags win)"}.get(
                    sec.keyword)
            rng = sec.keyword_span if f.part == "keyword" else sec.name_span
        elif isinstance(f.member, ast.Param):
            m = f.member
            table = (schema.METHODS[sec.keyword].params if sec.keyword in schema.METHODS else
                     schema.HEAD_PARAMS if sec.keyword == "head" else
                     schema.TRAIN_PARAMS if sec.keyword == "train" else {})
            if m.name in table:
                text = param_doc(m.name, table[m.name], sec.keyword)
                if sec.name and a.hover_ir is not None and any(i.name == sec.name for i in a.hover_ir.instances()):
                    from peltc.compiler.summary import params_text
                    atts = a.hover_ir.attachments(sec.name)
                    now = [x for x in params_text(sec.keyword, atts).split(" · ") if x.startswith(m.name + " ")]
                    if now:
                        text += f"\n\nresolved: `{now[0]}` {_model_note(a)}"
            rng = m.span
        elif isinstance(f.member, ast.At):
            if f.target is not None:
                text = point_hover(a, sec.name, f.target)
                rng = f.target.span
            else:
                text = "**at**: where the instance attaches (targets separated by commas)"
                rng = f.member.span
        elif isinstance(f.member, ast.Gate):
            g = f.member.expr
            text = GATE_DOCS.get(g.name, f"unknown gate `{g.name}`")
            if sec.name and a.hover_ir is not None and any(i.name == sec.name for i in a.hover_ir.instances()):
                atts = a.hover_ir.attachments(sec.name)
                gp = sum(x.gate_params or 0 for x in atts)
                text += f"\n\nhere: `{', '.join(dict.fromkeys(x.gate.text() for x in atts))}`, {_n(gp)} " \
                        f"gate parameters {_model_note(a)}"
            rng = f.member.span
        elif isinstance(f.member, ast.LayerOverride):
            text = "**layers[…] { }**: a per-layer override of parameters and the gate"
            rng = f.member.span
    if not text:
        return None
    return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text),
                     range=span_range(rng) if rng else None)


# --- completion -----------------------------------------------------------------------------------
_TOKEN = re.compile(r'#[^\n]*|"[^"\n]*"?|[{}]|[A-Za-z_][A-Za-z0-9_-]*|\S')


@dataclass
class Context:
    blocks: list[tuple[str, str | None]]   # ("section", keyword) / ("override", keyword) / ("set", prefix)
    line: str                              # the current line up to the cursor, comment removed


def context_at(text: str, line0: int, char0: int) -> Context:
    """The blocks the cursor is in, from a lexical scan (works on text that does not parse yet)."""
    off = offset_of(text, line0, char0)
    upto = text[:off]
    blocks: list[tuple[str, str | None]] = []
    toks: list[str] = []   # the tokens of the current statement / member
    prev_end = 0
    for m in _TOKEN.finditer(upto):
        t = m.group(0)
        if t.startswith("#"):
            continue
        if "\n" in upto[prev_end:m.start()]:   # a new line: a new member or statement
            toks = []
        prev_end = m.end()
        if t == "{":
            if toks and toks[-1] == ".":
                prefix = []
                for x in reversed(toks[:-1]):
                    if x in ("]", " ", ",") or x == "at":
                        break
                    prefix.append(x)
                blocks.append(("set", "".join(reversed(prefix)).lstrip(".")))
            elif toks and toks[0] == "layers" and blocks and blocks[-1][0] == "section":
                blocks.append(("override", blocks[-1][1]))
            else:
                words = [x for x in toks if re.match(r"[A-Za-z_]", x)]
                blocks.append(("section", words[-2] if len(words) >= 2 else words[-1] if words else None))
            toks = []
        elif t == "}":
            if blocks:
                blocks.pop()
            toks = []
        else:
            toks.append(t)
    line = upto[upto.rfind("\n") + 1:]
    line = re.sub(r'#.*$', "", line) if not re.search(r'"[^"]*#', line) else line
    return Context(blocks, line)


def _item(label: str, kind: lsp.CompletionItemKind, detail: str | None = None, doc: str | None = None,
          insert: str | None = None, snippet: bool = False, rng: lsp.Range | None = None,
          sort: str | None = None) -> lsp.CompletionItem:
    text = insert if insert is not None else label
    return lsp.CompletionItem(
        label=label, kind=kind, detail=detail,
        documentation=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=doc) if doc else None,
        text_edit=lsp.TextEdit(range=rng, new_text=text) if rng is not None else None,
        insert_text=None if rng is not None else text,
        insert_text_format=lsp.InsertTextFormat.Snippet if snippet else lsp.InsertTextFormat.PlainText,
        sort_text=sort, filter_text=label if rng is not None else None)


def _models() -> list[str]:
    return sorted({*KNOWN_MODELS, *ALIASES, PACKAGED_MODEL})


def completion(a: Analysis, line0: int, char0: int) -> list[lsp.CompletionItem]:
    text = a.text
    ctx = context_at(text, line0, char0)
    line = ctx.line
    K = lsp.CompletionItemKind
    # the range the completion replaces: the token being typed (delimited by space , ( = { [ ")
    start = max(line.rfind(c) for c in ' \t,({="[') + 1
    rng = lsp.Range(start=lsp.Position(line=line0, character=start), end=lsp.Position(line=line0, character=char0))
    word = line[start:]
    items: list[lsp.CompletionItem] = []

    # spec files for extends / import
    m = re.match(r'^\s*(extends|import)\b.*"([^"]*)$', line)
    if m:
        base = Path(a.path).parent
        typed = m.group(2)
        folder = base / Path(typed).parent if "/" in typed else base
        frng = lsp.Range(start=lsp.Position(line=line0, character=line.rfind('"') + 1),
                         end=lsp.Position(line=line0, character=char0))
        prefix = typed[:typed.rfind("/") + 1]
        try:
            for p in sorted(folder.iterdir()):
                if p.suffix == ".pelt" and not _same(str(p), a.path):
                    items.append(_item(prefix + p.name, K.File, "spec", rng=frng))
                elif p.is_dir() and not p.name.startswith("."):
                    items.append(_item(prefix + p.name + "/", K.Folder, rng=frng))
        except OSError:
            pass
        return items

    if not ctx.blocks:
        if re.match(r"^\s*model\s+\S*$", line):
            return [_item(n, K.Value, "model", rng=rng) for n in _models()]
        if re.match(r"^\s*remove\s+\w*$", line) and a.ir is not None:
            return [_item(i.name, K.Class, i.method, rng=rng) for i in a.ir.instances()]
        if re.match(r"^\s*import\s+[\w\s,]*$", line) and not re.match(r"^\s*import\s*$", line):
            return [_item("from", K.Keyword, rng=rng)]
        if re.match(r"^\s*\w*$", line):
            for name, meth in schema.METHODS.items():
                at = "" if meth.default_at else f"\n  at ${{2:layers[*].{sorted(meth.points - set(schema.GLOBAL_POINTS) - {schema.WHOLE_LAYER})[0] if meth.points - set(schema.GLOBAL_POINTS) - {schema.WHOLE_LAYER} else 'all'}}}"
                items.append(_item(name, K.Class, meth.doc, f"a new `{name}` instance",
                                   insert=f"{name} ${{1:my_{name}}} {{{at}\n  $0\n}}", snippet=True, rng=rng))
            for kw, snip, detail in [("model", "model ${1:bert-base-uncased}", "the default base model"),
                                     ("extends", 'extends "${1}"', "start from another spec (first statement)"),
                                     ("import", 'import "${1}"', "add the instances of another spec"),
                                     ("remove", "remove ${1}", "drop an inherited instance"),
                                     ("head", "head {\n  pool ${1|mean,pooler|}\n}", "task head settings"),
                                     ("train", "train {\n  $0\n}", "training recipe defaults")]:
                items.append(_item(kw, K.Keyword, detail, insert=snip, snippet=True, rng=rng))
        return items

    kind, keyword = ctx.blocks[-1]
    section_kw = next((k for b, k in reversed(ctx.blocks) if b in ("section", "override")), None)
    method = schema.METHODS.get(section_kw or "")
    if kind == "set" and method is not None:
        prefix = keyword or ""
        tails = sorted({p[len(prefix) + 1:] for p in method.points if p.startswith(prefix + ".")})
        return [_item(t, K.EnumMember, POINT_DOCS.get(f"{prefix}.{t}"), rng=rng) for t in tails]

    if section_kw in ("head", "train"):
        table = schema.HEAD_PARAMS if section_kw == "head" else schema.TRAIN_PARAMS
        m = re.match(r"^\s*(\w+)\s+\S*$", line)
        if m and m.group(1) in table:
            return [_item(c, K.EnumMember, rng=rng) for c in table[m.group(1)].choices]
        if re.match(r"^\s*\w*$", line):
            return [_item(n, K.Property, p.doc, param_doc(n, p, section_kw), rng=rng) for n, p in table.items()]
        return []
    if method is None:
        return []
    in_override = kind == "override"

    gm = re.match(r"^\s*gate\s+(.*)$", line)
    if gm:
        g = gm.group(1)
        if re.search(r"pool\s*=\s*\w*$", g):
            return [_item(p, K.EnumMember, rng=rng) for p in schema.POOLS]
        if re.match(r"^sigmoid\s*\(", g) and ")" not in g:
            return ([_item(s, K.EnumMember, f"gate source: {POINT_DOCS[schema.GATE_SOURCES[s]]}", rng=rng)
                     for s in schema.GATE_SOURCES] +
                    [_item("pool=", K.Property, "masked_mean | mean_unmasked | first", rng=rng),
                     _item("init=", K.Property, "the starting bias (σ(init))", rng=rng)])
        if re.match(r"^scalar\s*\(", g) and ")" not in g:
            return [_item("init=", K.Property, "the starting logit w (σ(w))", rng=rng)]
        if re.match(r"^\w*$", g):
            forms = [("none", "none", "no gate"), ("scalar", "scalar", "one learned scalar σ(w)"),
                     ("const(…)", "const(${1:0.5})", "a constant"),
                     *[(f"sigmoid({s})", f"sigmoid({s})", f"per-example gate read from {s}")
                       for s in schema.GATE_SOURCES]]
            return [_item(lbl, K.Function, det, GATE_DOCS.get(lbl.split("(")[0]), insert=ins, snippet=True, rng=rng)
                    for lbl, ins, det in forms]
        return []

    am = re.match(r"^\s*at\s+(.*)$", line)
    if am:
        tail = am.group(1)
        cur = re.split(r",\s*", tail)[-1]
        lm = re.match(r"^layers\s*\[[^\]]*\]\.?(.*)$", cur)
        layer_points = sorted(p for p in method.points if p in schema.LAYER_POINTS)
        if lm:   # after layers[…].: the points, relative
            if cur.rstrip().endswith("]"):
                return []
            dot = line.rfind(".")
            prng = lsp.Range(start=lsp.Position(line=line0, character=dot + 1 if lm.group(1).count(".") == 0 else
                                                start), end=lsp.Position(line=line0, character=char0))
            sub = lm.group(1)
            if "." in sub:   # `layers[*].attention.` → the tails
                head = sub.rsplit(".", 1)[0]
                prng = lsp.Range(start=lsp.Position(line=line0, character=dot + 1),
                                 end=lsp.Position(line=line0, character=char0))
                return [_item(p[len(head) + 1:], K.EnumMember, POINT_DOCS.get(p), rng=prng)
                        for p in layer_points if p.startswith(head + ".")]
            return [_item(p, K.EnumMember, POINT_DOCS.get(p), rng=prng) for p in layer_points]
        out = [_item(f"layers[*].{p}", K.EnumMember, POINT_DOCS.get(p), insert=f"layers[${{1:*}}].{p}",
                     snippet=True, rng=rng) for p in layer_points]
        if schema.WHOLE_LAYER in method.points:
            out.append(_item("layers[*]", K.EnumMember, POINT_DOCS["layer"], insert="layers[${1:*}]", snippet=True,
                             rng=rng))
        out += [_item(p, K.EnumMember, POINT_DOCS.get(p), rng=rng) for p in sorted(method.points)
                if p in schema.GLOBAL_POINTS]
        return out

    pm = re.match(r"^\s*(\w+)\s+\S*$", line)
    if pm and pm.group(1) in method.params:
        p = method.params[pm.group(1)]
        vals = list(p.choices) + (["none"] if p.type == "int_or_none" else []) + \
            (["hidden/16"] if p.below_hidden else [])
        return [_item(v, K.EnumMember, rng=rng) for v in vals]
    if re.match(r"^\s*\w*$", line):
        for n, p in method.params.items():
            if in_override and p.instance_only:
                continue
            items.append(_item(n, K.Property, p.doc, param_doc(n, p, method.name),
                               insert=f"{n} ${{1:{_value(p.default) if p.default is not None else ''}}}",
                               snippet=True, rng=rng, sort=f"0{n}"))
        if not in_override:
            items.append(_item("at", K.Keyword, "where it attaches", insert="at ", rng=rng, sort="1at"))
            items.append(_item("layers", K.Keyword, "a per-layer override",
                               insert="layers[${1:-2..}] {\n  $0\n}", snippet=True, rng=rng, sort="1layers"))
        if method.gated:
            items.append(_item("gate", K.Keyword, "the instance's gate", insert="gate ", rng=rng, sort="1gate"))
    return items


# --- definition -----------------------------------------------------------------------------------
def _parse_file(path: str, loader: Loader) -> ast.Spec | None:
    try:
        return parse(loader(path), path)
    except (OSError, UnicodeDecodeError, ValueError, SpecError):
        return None


def _declarations(path: str, name: str, loader: Loader, seen: set[str] | None = None,
                  include_self: bool = True, tree: ast.Spec | None = None) -> list[tuple[str, Span]]:
    """Where ``name`` is declared as an instance in ``path`` (its ``tree`` when given) or the files it
    brings in; the nearest last (the spec's own declaration after its bases')."""
    seen = set() if seen is None else seen
    key = str(Path(path).resolve())
    if key in seen:
        return []
    seen.add(key)
    tree = tree if tree is not None else _parse_file(path, loader)
    if tree is None:
        return []
    out: list[tuple[str, Span]] = []
    for st in tree.statements:
        if isinstance(st, (ast.Extends, ast.Import)):
            if isinstance(st, ast.Import) and st.names is not None and name not in st.names:
                continue
            out += _declarations(str(Path(path).parent / st.path), name, loader, seen)
        elif include_self and isinstance(st, ast.Section) and st.name == name and st.name_span:
            out.append((path, st.name_span))
    return out


def definition(a: Analysis, line0: int, char0: int, loader: Loader) -> list[lsp.Location]:
    tree = a.tree
    if tree is None:
        return []
    f = find(tree, line0, char0)
    st = f.statement
    if isinstance(st, ast.Extends) or (isinstance(st, ast.Import) and st.names is None):
        p = Path(a.path).parent / st.path
        return [lsp.Location(uri=path_to_uri(str(p)), range=lsp.Range(start=lsp.Position(line=0, character=0),
                                                                       end=lsp.Position(line=0, character=0)))]
    name = None
    if isinstance(st, ast.Import):
        p = Path(a.path).parent / st.path
        word = _word_under(a.text, line0, char0)
        if word and st.names and word in st.names:
            return [lsp.Location(uri=path_to_uri(f), range=span_range(s))
                    for f, s in _declarations(str(p), word, loader)[-1:]]
        return [lsp.Location(uri=path_to_uri(str(p)), range=lsp.Range(start=lsp.Position(line=0, character=0),
                                                                        end=lsp.Position(line=0, character=0)))]
    if isinstance(st, ast.Remove):
        name = st.name
    elif f.section is not None and f.section.name and f.part in ("keyword", "name"):
        name = f.section.name
    if name is None:
        return []
    decls = _declarations(a.path, name, loader, include_self=False, tree=tree)
    return [lsp.Location(uri=path_to_uri(f), range=span_range(s)) for f, s in decls[-1:]]


def _word_under(text: str, line0: int, char0: int) -> str | None:
    lines = text.split("\n")
    if line0 >= len(lines):
        return None
    ln = lines[line0]
    for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_-]*", ln):
        if m.start() <= char0 <= m.end():
            return m.group(0)
    return None


# --- document symbols -----------------------------------------------------------------------------
def _sym(name: str, kind: lsp.SymbolKind, span: Span, sel: Span | None = None, detail: str | None = None,
         children: list | None = None) -> lsp.DocumentSymbol:
    return lsp.DocumentSymbol(name=name, kind=kind, range=span_range(span), selection_range=span_range(sel or span),
                              detail=detail, children=children or None)


def _member_symbols(members) -> list[lsp.DocumentSymbol]:
    S = lsp.SymbolKind
    out = []
    for m in members:
        if isinstance(m, ast.Param):
            out.append(_sym(m.name, S.Property, m.span, detail=m.value.text))
        elif isinstance(m, ast.At):
            out.append(_sym("at", S.Field, m.span, detail=f"{len(m.targets)} target{'s' if len(m.targets) > 1 else ''}"))
        elif isinstance(m, ast.Gate):
            out.append(_sym("gate", S.Event, m.span, detail=m.expr.name))
        elif isinstance(m, ast.LayerOverride):
            out.append(_sym("layers[…]", S.Namespace, m.span, children=_member_symbols(m.members)))
    return out


def document_symbols(a: Analysis) -> list[lsp.DocumentSymbol]:
    if a.tree is None:
        return []
    S = lsp.SymbolKind
    out = []
    for st in a.tree.statements:
        if isinstance(st, ast.Section):
            if st.name:
                out.append(_sym(st.name, S.Class, st.span, st.name_span, st.keyword, _member_symbols(st.members)))
            else:
                out.append(_sym(st.keyword, S.Module, st.span, st.keyword_span, None, _member_symbols(st.members)))
        elif isinstance(st, ast.Model):
            out.append(_sym("model", S.Constant, st.span, detail=st.ref))
        elif isinstance(st, ast.Extends):
            out.append(_sym("extends", S.File, st.span, detail=st.path))
        elif isinstance(st, ast.Import):
            out.append(_sym("import", S.File, st.span, detail=st.path))
        elif isinstance(st, ast.Remove):
            out.append(_sym(f"remove {st.name}", S.Null, st.span))
    return out


# --- formatting -----------------------------------------------------------------------------------
def formatting(text: str, path: str) -> list[lsp.TextEdit] | None:
    """`peltc fmt`: one edit replacing the whole document; None when it does not parse."""
    from peltc.grammar.fmt import format_source
    try:
        new = format_source(text, path)
    except SpecError:
        return None
    if new == text:
        return []
    lines = text.split("\n")
    end = lsp.Position(line=len(lines) - 1, character=len(lines[-1]))
    return [lsp.TextEdit(range=lsp.Range(start=lsp.Position(line=0, character=0), end=end), new_text=new)]


def iter_open_dependents(path: str, docs: Iterable[str], loader: Loader) -> list[str]:
    """The open documents that extend or import ``path`` (directly or not)."""
    target = str(Path(path).resolve())
    return [d for d in docs if not _same(d, path) and target in _included(d, loader)]
