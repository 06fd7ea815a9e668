"""Text → syntax tree (`peltc.grammar.ast`). Syntax errors become `SpecError` diagnostics.

>>> spec = parse("lora qv { at layers[*].attention.{query, value} rank 8 }", "x.pelt")
>>> spec.statements[0].members[0].targets[0].points()
['attention.query', 'attention.value']
"""

from __future__ import annotations

import functools
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from peltc.errors import Diagnostic, Span, SpecError
from peltc.grammar import ast

_TERMINAL_WORDS = {
    "NAME": "a name", "INT": "an integer", "NUMBER": "a number", "STRING": 'a quoted "string"',
    "MODEL_REF": "a model name", "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['", "RSQB": "']'",
    "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "DOT": "'.'", "EQUAL": "'='", "STAR": "'*'",
    "__ANON_0": "'..'", "SLASH": "'/'", "$END": "end of file",
}


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    text = resources.files("peltc.grammar").joinpath("pelt.lark").read_text(encoding="utf-8")
    # cache=True: the LALR tables are built once and kept in the temp dir (keyed by grammar hash),
    # so `peltc check` starts fast.
    return Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True, cache=True)


def _span(file: str, meta_or_tok) -> Span:
    if isinstance(meta_or_tok, Token):
        return Span(file, meta_or_tok.line, meta_or_tok.column,
                    meta_or_tok.end_line, meta_or_tok.end_column)
    m = meta_or_tok
    if getattr(m, "empty", False):
        return Span(file, 1, 1)
    return Span(file, m.line, m.column, m.end_line, m.end_column)


class _ToAst(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _s(self, x) -> Span:
        return _span(self.file, x)

    # --- statements -------------------------------------------------------------------------
    @v_args(meta=True)
    def start(self, meta, items):
        return tuple(items)

    @v_args(meta=True)
    def model_stmt(self, meta, items):
        tok = items[0]
        ref = tok[1:-1] if tok.type == "STRING" else str(tok)
        return ast.Model(ref, self._s(meta))

    @v_args(meta=True)
    def extends_stmt(self, meta, items):
        return ast.Extends(items[0][1:-1], self._s(meta))

    @v_args(meta=True)
    def import_all(self, meta, items):
        return ast.Import(items[0][1:-1], None, self._s(meta))

    @v_args(meta=True)
    def import_names(self, meta, items):
        return ast.Import(items[-1][1:-1], tuple(str(t) for t in items[:-1]), self._s(meta))

    @v_args(meta=True)
    def remove_stmt(self, meta, items):
        return ast.Remove(str(items[0]), self._s(meta))

    @v_args(meta=True)
    def section(self, meta, items):
        opt = items[0] if isinstance(items[0], Token) and items[0].type == "OPTIONAL" else None
        names = [t for t in items if isinstance(t, Token) and t is not opt]
        members = tuple(i for i in items if not isinstance(i, Token))
        kw = names[0]
        name = names[1] if len(names) > 1 else None
        return ast.Section(str(kw), str(name) if name is not None else None, members,
                           self._s(meta), self._s(kw), self._s(name) if name is not None else None,
                           self._s(opt) if opt is not None else None)

    # --- members ----------------------------------------------------------------------------
    @v_args(meta=True)
    def at_member(self, meta, items):
        return ast.At(tuple(items), self._s(meta))

    @v_args(meta=True)
    def gate_member(self, meta, items):
        return ast.Gate(items[0], self._s(meta))

    @v_args(meta=True)
    def layer_override(self, meta, items):
        return ast.LayerOverride(items[0], tuple(items[1:]), self._s(meta))

    @v_args(meta=True)
    def param(self, meta, items):
        name, value = items
        return ast.Param(str(name), value, self._s(meta))

    @v_args(meta=True)
    def at_choice(self, meta, items):
        kw, *opts = items
        return ast.At(tuple(opts), self._s(meta), ast.Choice("at", tuple(opts), self._from(kw, meta)))

    @v_args(meta=True)
    def gate_choice(self, meta, items):
        kw, *opts = items
        return ast.Gate(opts[0], self._s(meta), ast.Choice("gate", tuple(opts), self._from(kw, meta)))

    @v_args(meta=True)
    def param_space(self, meta, items):
        name, space = items
        first = space.options[0] if isinstance(space, ast.Choice) else space.low
        return ast.Param(str(name), first, self._s(meta), space)

    def _from(self, tok: Token, meta) -> Span:
        """From token ``tok`` to the end of ``meta``: `choice(...)` without the member's keyword."""
        end = self._s(meta)
        return Span(self.file, tok.line, tok.column, end.end_line, end.end_col)

    # --- search spaces ----------------------------------------------------------------------
    @v_args(meta=True)
    def choice_value(self, meta, items):
        return ast.Choice("value", tuple(items[1:]), self._s(meta))

    def _range(self, kind, meta, items):
        lo, hi = (self.number([t]) for t in items)
        return ast.Range(kind, lo, hi, self._s(meta))

    @v_args(meta=True)
    def loguniform(self, meta, items):
        return self._range("loguniform", meta, items)

    @v_args(meta=True)
    def uniform(self, meta, items):
        return self._range("uniform", meta, items)

    @v_args(meta=True)
    def intrange(self, meta, items):
        return self._range("intrange", meta, items)

    # --- targets ----------------------------------------------------------------------------
    @v_args(meta=True)
    def layer_target(self, meta, items):
        return ast.Target(items[0], tuple(items[1:]), self._s(meta))

    @v_args(meta=True)
    def global_target(self, meta, items):
        return ast.Target(None, tuple(items), self._s(meta))

    def seg_name(self, items):
        return (str(items[0]),)

    def seg_set(self, items):
        return tuple(items)

    def path(self, items):
        return ".".join(str(t) for t in items)

    # --- selectors --------------------------------------------------------------------------
    @v_args(meta=True)
    def selector(self, meta, items):
        return ast.Selector(tuple(items), self._s(meta))

    @v_args(meta=True)
    def sel_all(self, meta, items):
        return ast.SelItem("all", None, None, 1, self._s(meta))

    @v_args(meta=True)
    def sel_index(self, meta, items):
        return ast.SelItem("index", int(items[0]), int(items[0]), 1, self._s(meta))

    @v_args(meta=True)
    def sel_range(self, meta, items):
        start, stop, step = items
        return ast.SelItem("range", int(start), None if stop is None else int(stop),
                           1 if step is None else int(step), self._s(meta))

    @v_args(meta=True)
    def sel_upto(self, meta, items):
        stop, step = items
        return ast.SelItem("range", 0, int(stop), 1 if step is None else int(step), self._s(meta))

    # --- gates & values ---------------------------------------------------------------------
    @v_args(meta=True)
    def gate_word(self, meta, items):
        return ast.GateExpr(str(items[0]), (), False, self._s(meta))

    @v_args(meta=True)
    def gate_call(self, meta, items):
        return ast.GateExpr(str(items[0]), tuple(i for i in items[1:] if i is not None), True, self._s(meta))

    @v_args(meta=True)
    def kwarg(self, meta, items):
        return ast.GateArg(str(items[0]), items[1], self._s(meta))

    @v_args(meta=True)
    def pos_point(self, meta, items):
        s = self._s(meta)
        return ast.GateArg(None, ast.Value("point", items[0], items[0], s), s)

    def pos_number(self, items):
        v = self.number([items[0]])
        return ast.GateArg(None, v, v.span)

    def number(self, items):
        tok = items[0]
        text = str(tok)
        try:
            val: int | float = int(text)
        except ValueError:
            val = float(text)
        return ast.Value("number", val, text, self._s(tok))

    def string(self, items):
        tok = items[0]
        return ast.Value("string", str(tok)[1:-1], str(tok), self._s(tok))

    def word(self, items):
        tok = items[0]
        return ast.Value("word", str(tok), str(tok), self._s(tok))

    @v_args(meta=True)
    def ratio(self, meta, items):
        name, num = items
        return ast.Value("ratio", (str(name), str(num)), f"{name}/{num}", self._s(meta))


def _describe(expected) -> str:
    words = sorted({_TERMINAL_WORDS.get(e, f"'{e.lower()}'" if e.isupper() else e) for e in expected})
    return ", ".join(words)


def _syntax_diagnostic(err: UnexpectedInput, file: str, text: str) -> Diagnostic:
    line, col = max(getattr(err, "line", 1) or 1, 1), max(getattr(err, "column", 1) or 1, 1)
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        # just after the last non-blank character; lines are counted on '\n' only, as lark does
        # (str.splitlines would also break at '\r', '\f', '\u2028', ...)
        body = text.rstrip()
        line = body.count("\n") + 1
        col = len(body) - (body.rfind("\n") + 1) + 1
        expected = getattr(err, "expected", None) or getattr(err, "accepts", None) or []
        help_ = f"expected {_describe(expected)}" if expected else None
        if "RBRACE" in expected:
            help_ = "a '{' block is not closed: add the missing '}'"
        return Diagnostic("E003", "unexpected end of file", Span(file, line, col), help_)
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else "?"
        allowed = err.allowed or set()
        help_ = f"expected {_describe(allowed)}" if allowed else None
        if ch == "=":
            help_ = "parameters are written `name value`, without '=' (e.g. `size 48`)"
        elif ch == ":":
            help_ = "parameters are written `name value`, without ':' (e.g. `rank 8`)"
        elif ch == ";":
            help_ = "statements need no ';' — put each parameter on its own line"
        return Diagnostic("E002", f"unexpected character {ch!r}", Span(file, line, col, line, col + 1), help_)
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    expected = err.accepts or err.expected or set()
    help_ = f"expected {_describe(expected)}"
    if tok.type == "EQUAL":
        help_ = "parameters are written `name value`, without '=' (e.g. `size 48`)"
    elif tok.type in ("LBRACE",) and "NAME" in expected:
        help_ = "an instance needs a method and a name: `adapter my_adapter { ... }`"
    end_col = tok.end_column if tok.end_column else col + max(1, len(str(tok)))
    return Diagnostic("E001", f"unexpected {str(tok)!r}", Span(file, tok.line, tok.column, tok.line, end_col), help_)


def parse(text: str, file: str = "<string>") -> ast.Spec:
    """Parse .pelt source text into a syntax tree; raise `SpecError` on a syntax error."""
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise SpecError([_syntax_diagnostic(err, file, text)], {file: text}) from None
    tf = _ToAst(file)
    try:
        statements = tf.transform(tree)
    except VisitError as err:  # a bug in the transformer, never a user mistake; unwrap it
        raise err.orig_exc from None
    return ast.Spec(file, text, statements)
