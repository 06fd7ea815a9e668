"""Syntax tree → IR: resolve `extends` / `import` / `remove`, merge overrides, check names and
types against the schema tables, and add one ``instance`` node per module instance plus the
``settings`` node.

Everything checkable without a model is checked here, with the span of the offending text.

>>> from peltc.compiler.lower import lower_text
>>> ir, diags = lower_text("adapter a { at layers[*].ffn.output size 48 }", "x.pelt")
>>> ir.instance("a").params["size"], diags.errors
(48, [])
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peltc.compiler import schema
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR, GateSpec, InstanceNode, OverrideSpec, SettingsNode, SpanModel, TargetSpec
from peltc.errors import Span, SpecError, did_you_mean
from peltc.grammar import ast
from peltc.grammar.parser import parse

Loader = Callable[[str], str]   # path → text (raises OSError)


@dataclass
class _Draft:
    name: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    gate: GateSpec | None = None
    targets: list[TargetSpec] | None = None
    overrides: list[OverrideSpec] = field(default_factory=list)
    span: Span | None = None
    file: str | None = None
    order: int = 0
    spans: dict[str, SpanModel] = field(default_factory=dict)   # member → where written
    params_at: dict[str, Span] = field(default_factory=dict)    # parameter → its whole `name value`
    override_params_at: list[dict[str, Span]] = field(default_factory=list)   # the same, per override


@dataclass
class _State:
    model: str | None = None
    model_span: Span | None = None
    head: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    instances: dict[str, _Draft] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)   # texts in load order (for the spec hash)


# --- selectors ------------------------------------------------------------------------------
def selector_items(sel: ast.Selector, diags: Diagnostics) -> tuple[tuple[int | None, int | None, int], ...]:
    out = []
    for it in sel.items:
        if it.kind == "all":
            out.append((None, None, 1))
            continue
        if it.step < 1:
            diags.error("E125", f"layer step must be ≥ 1, got {it.step}", it.span,
                        "write a range as `start..stop by step` with step ≥ 1, e.g. `0..11 by 2`")
            continue
        if it.kind == "range" and it.stop is not None and it.start is not None and \
                (it.start >= 0) == (it.stop >= 0) and it.stop < it.start:
            diags.error("E110", f"layer range {it.start}..{it.stop} is empty", it.span,
                        "ranges are inclusive and ascending: write the smaller index first")
            continue
        out.append((it.start, it.stop, it.step))
    return tuple(out)


def selector_text(items) -> str:
    parts = []
    for start, stop, step in items:
        if start is None and stop is None:
            parts.append("*")
        elif start == stop and step == 1:
            parts.append(str(start))
        else:
            s = f"{start}..{'' if stop is None else stop}"
            parts.append(s + (f" by {step}" if step != 1 else ""))
    return ", ".join(parts)


# --- values ---------------------------------------------------------------------------------
def coerce(pspec: schema.ParamSpec, value: ast.Value, name: str, diags: Diagnostics) -> Any:
    """Check a parameter value's type and static range; return the typed value or None."""
    v = value.value
    t = pspec.type
    if t == "int_or_none" and value.kind == "word" and v in ("none", "off"):
        return None
    if value.kind == "ratio" and pspec.below_hidden:
        return _relative(value, name, diags)
    if t in ("int", "int_or_none"):
        if value.kind != "number" or not isinstance(v, int):
            diags.error("E103", f"'{name}' takes a whole number, got {value.text}", value.span,
                        f"{name}: {pspec.doc}" + (" (or `none`)" if t == "int_or_none" else "") +
                        (f" (or relative to the model: `{name} hidden/16`)" if pspec.below_hidden else ""))
            return None
    elif t == "float":
        if value.kind != "number":
            diags.error("E103", f"'{name}' takes a number, got {value.text}", value.span, f"{name}: {pspec.doc}")
            return None
        v = float(v)
        if not math.isfinite(v):   # 1e400 overflows to inf
            diags.error("E104", f"'{name}' = {value.text} is out of range", value.span, f"{name} must be a finite number")
            return None
    elif t == "choice":
        if value.kind == "string":
            v = str(v)
        if value.kind not in ("word", "string") or v not in pspec.choices:
            diags.error("E103", f"'{name}' must be one of {', '.join(pspec.choices)}; got {value.text}",
                        value.span, did_you_mean(str(v), pspec.choices, f"values of {name}"))
            return None
        return v
    elif t == "bool":
        if value.kind != "word" or v not in ("true", "false"):
            diags.error("E103", f"'{name}' takes true or false, got {value.text}", value.span)
            return None
        return v == "true"
    rng = pspec.out_of_range(v)
    if rng is not None:
        diags.error("E104", f"'{name}' = {value.text} is out of range", value.span, f"{name} must be {rng}")
        return None
    return v


def _relative(value: ast.Value, name: str, diags: Diagnostics) -> str | None:
    """`hidden/16`: kept as its text (resolved to ⌊hidden / 16⌋ when a model is bound)."""
    base, div = value.value
    if base != schema.RELATIVE_TO:
        diags.error("E103", f"a relative '{name}' is the hidden size over a number, got {value.text}", value.span,
                    f"write `{name} {schema.RELATIVE_TO}/{div}`")
        return None
    d = schema.relative_divisor(f"{base}/{div}")
    if d <= 1:
        diags.error("E104", f"'{name}' = {value.text} is out of range", value.span,
                    f"{name} = ⌊hidden / D⌋ must be below the hidden size: write hidden/D with D > 1, e.g. hidden/16")
        return None
    return value.text


def lower_gate(expr: ast.GateExpr, diags: Diagnostics) -> GateSpec | None:
    name = expr.name
    if name not in schema.GATE_KINDS:
        diags.error("E111", f"unknown gate '{name}'", expr.span,
                    did_you_mean(name, schema.GATE_KINDS, "gates") +
                    " (write sigmoid(<point>), scalar, const(<value>) or none)")
        return None
    pos = [a for a in expr.args if a.key is None]
    kw = {a.key: a for a in expr.args if a.key is not None}
    if name == "none":
        if expr.called:
            diags.error("E114", "gate 'none' takes no arguments", expr.span, "write `gate none`")
            return None
        return GateSpec(kind="none")
    if name == "const":
        if len(pos) != 1 or kw or pos[0].value.kind != "number":
            diags.error("E114", "const gate takes one number", expr.span, "write e.g. `gate const(0.5)`")
            return None
        if not math.isfinite(float(pos[0].value.value)):
            diags.error("E104", f"const gate value {pos[0].value.text} is out of range", pos[0].span,
                        "a gate value must be a finite number")
            return None
        return GateSpec(kind="const", value=float(pos[0].value.value))
    if name == "scalar":
        bad = [a for a in expr.args if a.key != "init" or a.value.kind != "number"]
        if bad:
            diags.error("E114", "scalar gate takes only `init=<number>` (the logit it starts from)", bad[0].span,
                        "write `gate scalar` or `gate scalar(init=0)`")
            return None
        init = float(kw["init"].value.value) if "init" in kw else 0.0
        if not math.isfinite(init):
            diags.error("E104", f"scalar gate init {kw['init'].value.text} is out of range", kw["init"].value.span,
                        "a gate value must be a finite number")
            return None
        return GateSpec(kind="scalar", value=init)
    # sigmoid(<point>, pool=<pool>)
    if len(pos) != 1 or pos[0].value.kind != "point":
        diags.error("E114", "sigmoid gate takes the point it reads, e.g. sigmoid(layer.input)", expr.span,
                    did_you_mean("", schema.GATE_SOURCES, "gate sources"))
        return None
    src = pos[0].value.value
    if src not in schema.GATE_SOURCES:
        diags.error("E112", f"unknown gate source '{src}'", pos[0].span,
                    did_you_mean(src, schema.GATE_SOURCES, "gate sources"))
        return None
    pool, init = "masked_mean", None
    for key, a in kw.items():
        if key == "init":
            if a.value.kind != "number":
                diags.error("E114", f"sigmoid gate init must be a number (the starting bias), got {a.value.text}",
                            a.value.span, "write e.g. `gate sigmoid(layer.input, init=-2)`: starts at σ(-2) = 0.12")
                return None
            init = float(a.value.value)
            if not math.isfinite(init):
                diags.error("E104", f"sigmoid gate init {a.value.text} is out of range", a.value.span,
                            "a gate value must be a finite number")
                return None
            continue
        if key != "pool":
            diags.error("E114", f"unknown gate argument '{key}'", a.span,
                        did_you_mean(key, ["pool", "init"], "arguments"))
            return None
        if a.value.kind != "word" or a.value.value not in schema.POOLS:
            diags.error("E114", f"unknown pooling '{a.value.text}'", a.value.span,
                        did_you_mean(str(a.value.value), schema.POOLS, "poolings"))
            return None
        pool = a.value.value
    # init 0 (the default bias) is stored as None: `sigmoid(x, init=0)` and `sigmoid(x)` are one gate
    return GateSpec(kind="sigmoid", source=schema.GATE_SOURCES[src], pool=pool, value=init or None)


def lower_target(t: ast.Target, method: schema.MethodSpec, diags: Diagnostics) -> list[TargetSpec]:
    items = selector_items(t.selector, diags) if t.selector is not None else ()
    sel = selector_text(items) if t.selector is not None else None
    out = []
    for p in t.points() or [""]:
        if t.selector is not None:
            point = p or schema.WHOLE_LAYER
            valid = [*schema.LAYER_POINTS]
            known = point in schema.LAYER_POINTS or point == schema.WHOLE_LAYER
        else:
            point = p
            valid = [*schema.GLOBAL_POINTS]
            known = point in schema.GLOBAL_POINTS
        if not known:
            close = did_you_mean(point, valid, "points")
            diags.error("E107", f"unknown insertion point '{point}'", t.span,
                        close if t.selector is not None else f"{close}; or a layer point: layers[<selector>].<point>")
            continue
        if point not in method.points:
            allowed = sorted(method.points)
            kind = schema.LAYER_POINTS.get(point) or schema.GLOBAL_POINTS.get(point) or "layer"
            diags.error("E108", f"{method.name} cannot attach at '{point}' (a {kind} point)", t.span,
                        f"{method.name} attaches at: {', '.join(allowed)}")
            continue
        out.append(TargetSpec(selector=sel, items=items, point=point, span=SpanModel.of(t.span)))
    return out


def _a(word: str) -> str:
    """`an adapter`, `a lora`."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


# --- sections -------------------------------------------------------------------------------
def _name_span(p: ast.Param) -> Span:
    return Span(p.span.file, p.span.line, p.span.col, p.span.line, p.span.col + len(p.name))


def _lower_members(members, method: schema.MethodSpec, draft: _Draft, diags: Diagnostics, *,
                   in_override: bool, spans: dict[str, SpanModel], params_at: dict[str, Span]
                   ) -> tuple[dict[str, Any], GateSpec | None, list[TargetSpec] | None]:
    """Lower a block's members; ``spans`` receives where each valid member's value is written,
    ``params_at`` where each valid parameter is written as a whole (`alpha 16`)."""
    params: dict[str, Any] = {}
    seen: dict[str, Span] = {}
    gate: GateSpec | None = None
    targets: list[TargetSpec] | None = None
    for m in members:
        if isinstance(m, ast.Param):
            if m.name in seen:
                diags.error("E106", f"parameter '{m.name}' given twice", _name_span(m),
                            f"first given at {seen[m.name]}")
                continue
            seen[m.name] = m.span
            if m.name not in method.params:
                extra = ["at", "gate"] if method.gated else ["at"]
                diags.error("E102", f"unknown parameter '{m.name}' for {method.name}", _name_span(m),
                            did_you_mean(m.name, [*method.params, *extra], "parameters"))
                continue
            if in_override and method.params[m.name].instance_only:
                diags.error("E116", f"'{m.name}' cannot be set in a per-layer override", _name_span(m),
                            f"`{m.name}` holds for the whole instance: set it in the {method.name} block "
                            f"itself, outside `layers[...] {{ }}`")
                continue
            v = coerce(method.params[m.name], m.value, m.name, diags)
            if v is not None or method.params[m.name].type == "int_or_none":
                params[m.name] = v
                spans[m.name] = SpanModel.of(m.value.span)
                params_at[m.name] = m.span
        elif isinstance(m, ast.Gate):
            if "gate" in seen:
                diags.error("E106", "gate given twice", m.span, f"first given at {seen['gate']}")
                continue
            seen["gate"] = m.span
            if not method.gated:
                diags.error("E130", f"{method.name} cannot be gated", m.span, "remove the gate line")
                continue
            gate = lower_gate(m.expr, diags)
            spans["gate"] = SpanModel.of(m.expr.span)
        elif isinstance(m, ast.At):
            if in_override:
                diags.error("E116", "`at` cannot appear in a per-layer override", m.span,
                            "per-layer overrides change parameters and gates of the layers they select")
                continue
            if "at" in seen:
                diags.error("E106", "`at` given twice", m.span, "list several targets in one `at`, separated by commas")
                continue
            seen["at"] = m.span
            spans["at"] = SpanModel.of(m.span)
            targets = [ts for t in m.targets for ts in lower_target(t, method, diags)]
        elif isinstance(m, ast.LayerOverride):
            if in_override:
                diags.error("E116", "per-layer overrides cannot nest", m.span)
                continue
            items = selector_items(m.selector, diags)
            ov_spans: dict[str, SpanModel] = {}
            ov_at: dict[str, Span] = {}
            p, g, _ = _lower_members(m.members, method, draft, diags, in_override=True, spans=ov_spans,
                                     params_at=ov_at)
            draft.overrides.append(OverrideSpec(selector=selector_text(items), items=items, params=p, gate=g,
                                                span=SpanModel.of(m.span), spans=ov_spans))
            draft.override_params_at.append(ov_at)
    return params, gate, targets


def _settings(section: ast.Section, table: dict[str, schema.ParamSpec], into: dict[str, Any], diags: Diagnostics):
    seen: set[str] = set()
    for m in section.members:
        if not isinstance(m, ast.Param):
            diags.error("E117", f"only parameters may appear in `{section.keyword}`", m.span,
                        did_you_mean("", table, f"{section.keyword} settings"))
            continue
        if m.name in seen:
            diags.error("E106", f"setting '{m.name}' given twice", m.span)
            continue
        seen.add(m.name)
        if m.name not in table:
            diags.error("E117", f"unknown {section.keyword} setting '{m.name}'", _name_span(m),
                        did_you_mean(m.name, table, f"{section.keyword} settings"))
            continue
        v = coerce(table[m.name], m.value, m.name, diags)
        if v is not None:
            into[m.name] = v


class _Lowerer:
    def __init__(self, loader: Loader, diags: Diagnostics):
        self.loader = loader
        self.diags = diags
        self.stack: list[str] = []
        self.counter = 0

    def load_file(self, path: str, span: Span | None) -> _State | None:
        try:
            key = str(Path(path).resolve()) if not path.startswith("<") else path
        except (OSError, ValueError, RuntimeError):   # a NUL byte in the path, a symlink loop
            key = path
        if key in self.stack:
            chain = " → ".join(Path(p).name for p in [*self.stack, key])
            self.diags.error("E119", f"import cycle: {chain}", span, "a spec cannot extend or import itself")
            return None
        try:
            text = self.loader(path)
        except (OSError, UnicodeDecodeError, ValueError) as e:   # ValueError: a NUL byte in the path
            self.diags.error("E118", f"cannot read '{path}': {getattr(e, 'strerror', None) or e}", span,
                             "paths in extends/import are relative to the spec that names them")
            return None
        self.stack.append(key)
        try:
            return self.lower_text(text, path)
        finally:
            self.stack.pop()

    def lower_text(self, text: str, file: str) -> _State | None:
        self.diags.sources[file] = text
        try:
            tree = parse(text, file)
        except SpecError as e:
            for d in e.diagnostics:
                self.diags.items.append(d)
            return None
        return self.lower_tree(tree)

    def _resolve(self, rel: str, tree: ast.Spec) -> str:
        if tree.file.startswith("<"):
            return rel
        return str(Path(tree.file).parent / rel)

    def lower_tree(self, tree: ast.Spec) -> _State:
        st = _State(sources=[tree.source])
        declared_here: dict[str, Span] = {}
        diags = self.diags
        model_seen: Span | None = None
        for k, stmt in enumerate(tree.statements):
            if isinstance(stmt, ast.Extends):
                if k != 0:
                    diags.error("E127", "`extends` must be the first statement", stmt.span,
                                "move the extends line to the top of the file")
                    continue
                base = self.load_file(self._resolve(stmt.path, tree), stmt.span)
                if base is not None:
                    base.sources = base.sources + st.sources
                    st = base
            elif isinstance(stmt, ast.Import):
                other = self.load_file(self._resolve(stmt.path, tree), stmt.span)
                if other is None:
                    continue
                st.sources += other.sources
                names = list(other.instances) if stmt.names is None else list(stmt.names)
                for n in names:
                    if n not in other.instances:
                        diags.error("E120", f"'{stmt.path}' defines no instance '{n}'", stmt.span,
                                    did_you_mean(n, other.instances, "instances there"))
                        continue
                    if n in st.instances:
                        diags.error("E105", f"imported instance '{n}' clashes with an existing one", stmt.span,
                                    "import selected names (`import a, b from \"file\"`) or rename one")
                        continue
                    d = other.instances[n]
                    self.counter += 1
                    d.order = self.counter
                    st.instances[n] = d
            elif isinstance(stmt, ast.Model):
                if model_seen:
                    diags.error("E126", "`model` given twice", stmt.span, f"first given at {model_seen}")
                    continue
                model_seen = stmt.span
                st.model, st.model_span = stmt.ref, stmt.span
            elif isinstance(stmt, ast.Remove):
                if stmt.name not in st.instances:
                    diags.error("E121", f"cannot remove '{stmt.name}': no such instance", stmt.span,
                                did_you_mean(stmt.name, st.instances, "instances"))
                    continue
                del st.instances[stmt.name]
            elif isinstance(stmt, ast.Section):
                self.lower_section(stmt, st, declared_here)
        return st

    def lower_section(self, sec: ast.Section, st: _State, declared_here: dict[str, Span]) -> None:
        diags = self.diags
        if sec.name is None:
            if sec.keyword == "head":
                _settings(sec, schema.HEAD_PARAMS, st.head, diags)
            elif sec.keyword == "train":
                _settings(sec, schema.TRAIN_PARAMS, st.train, diags)
            elif sec.keyword in schema.METHODS:
                diags.error("E129", f"{_a(sec.keyword)} instance needs a name", sec.keyword_span,
                            f"write `{sec.keyword} my_{sec.keyword} {{ ... }}`")
            else:
                diags.error("E117", f"unknown section '{sec.keyword}'", sec.keyword_span,
                            did_you_mean(sec.keyword, [*schema.SECTIONS, *schema.METHODS], "sections and methods"))
            return
        if sec.keyword in schema.SECTIONS:   # `train t { ... }` is not an unknown method
            diags.error("E129", f"the `{sec.keyword}` section takes no name", sec.name_span,
                        f"write `{sec.keyword} {{ ... }}`")
            return
        if sec.keyword not in schema.METHODS:
            diags.error("E101", f"unknown method '{sec.keyword}'", sec.keyword_span,
                        did_you_mean(sec.keyword, schema.METHODS, "methods"))
            return
        method = schema.METHODS[sec.keyword]
        if sec.name in declared_here:
            diags.error("E105", f"instance '{sec.name}' is declared twice", sec.name_span,
                        f"first declared at {declared_here[sec.name]}; names must be unique")
            return
        declared_here[sec.name] = sec.name_span
        existing = st.instances.get(sec.name)
        if existing is not None and existing.method != method.name:
            diags.error("E122", f"'{sec.name}' is {_a(existing.method)} (from the spec it extends); "
                                f"it cannot be overridden as {_a(method.name)}", sec.keyword_span,
                        f"write `{existing.method} {sec.name} {{ ... }}` to override it, or pick a new name")
            return
        if existing is None:
            self.counter += 1
            existing = _Draft(sec.name, method.name, span=sec.name_span, file=sec.span.file, order=self.counter)
            st.instances[sec.name] = existing
        else:
            existing.span = sec.name_span
        params, gate, targets = _lower_members(sec.members, method, existing, diags, in_override=False,
                                               spans=existing.spans, params_at=existing.params_at)
        existing.params.update(params)
        if gate is not None:
            existing.gate = gate
        if targets is not None:
            existing.targets = targets


def _warn_replaced_by_gate(d: _Draft, diags: Diagnostics) -> None:
    """W202: a parameter written where a gate makes it meaningless (LoRA's `alpha` under a gate,
    which replaces alpha / rank), at the instance or in a per-layer override. Decided without a
    model: only where every layer the value reaches is gated (no override sets `gate none`)."""
    method = schema.METHODS[d.method]
    gate = d.gate or GateSpec()
    ungated = [ov.gate is not None and ov.gate.kind == "none" for ov in d.overrides]

    def warn(name: str, at: Span, g: GateSpec) -> None:
        diags.warning("W202", f"{d.name}: '{name}' has no effect: the gate {g.text()} replaces "
                              f"{name} / rank", at,
                      f"remove `{name}`, or write `gate none` to scale by {name} / rank")

    for name, p in method.params.items():
        if not p.gate_replaces:
            continue
        if name in d.params and name in d.params_at and gate.kind != "none" and not any(ungated):
            warn(name, d.params_at[name], gate)
        for k, (ov, at) in enumerate(zip(d.overrides, d.override_params_at)):
            g = ov.gate or gate
            if name in at and g.kind != "none" and not any(u for j, u in enumerate(ungated) if j != k):
                warn(name, at[name], g)


def _check_prefix_init(d: _Draft, params: dict[str, Any], diags: Diagnostics) -> None:
    """E104: `init tokens` with an MLP narrower than the prefix. The MLP's output is made equal to
    the tokens' keys and values by solving for its last Linear, which needs one independent hidden
    vector per prefix position: mlp ≥ length (in every layer)."""
    if params.get("init") != "tokens":
        return
    lengths = [params.get("length")] + [ov.params["length"] for ov in d.overrides if "length" in ov.params]
    mlps = [params.get("mlp")] + [ov.params["mlp"] for ov in d.overrides if "mlp" in ov.params]
    longest = max((x for x in lengths if isinstance(x, int)), default=None)
    mlp = min((x for x in mlps if isinstance(x, int)), default=None)
    if longest is not None and mlp is not None and mlp < longest:
        at = d.spans.get("init") or d.spans.get("mlp")
        diags.error("E104", f"{d.name}: `init tokens` needs mlp ≥ length, got mlp {mlp} < length {longest}",
                    at.to_span() if at else d.span,
                    f"the reparameterisation is set to reproduce {longest} token activations exactly, which "
                    f"needs at least {longest} hidden units: write `mlp {longest}` or more, or `mlp none`")


def _finish(st: _State, diags: Diagnostics) -> IR:
    ir = IR()
    head = dict(st.head)   # only what the spec says: compile_model keeps the model's own head by
                           # default, `peltc compile` applies its recipe's pooling (see runtime)
    spec_hash = hashlib.sha256("\x00".join(st.sources).encode()).hexdigest()
    ir.add(SettingsNode(id="settings", model=st.model, head=head, train=dict(st.train),
                        span=SpanModel.of(st.model_span), spec_hash=spec_hash))
    for d in st.instances.values():
        method = schema.METHODS[d.method]
        _warn_replaced_by_gate(d, diags)
        # a parameter whose default is None (`lr`: the run's) is in the IR only when written
        params = {k: p.default for k, p in method.params.items() if p.default is not None} | d.params
        _check_prefix_init(d, params, diags)
        targets = d.targets
        if targets is None:
            if method.default_at:
                targets = [TargetSpec(selector=None, point=p) for p in method.default_at]
            else:
                diags.error("E131", f"{d.method} '{d.name}' has no `at`", d.span,
                            f"say where it attaches, e.g. `at layers[*].{sorted(method.points)[0]}`")
                targets = []
        ir.add(InstanceNode(id=f"inst:{d.name}", name=d.name, method=d.method, params=params,
                            gate=d.gate or GateSpec(), targets=tuple(targets), overrides=tuple(d.overrides),
                            file=d.file, order=d.order, span=SpanModel.of(d.span), spans=dict(d.spans)))
    return ir


def lower_text(text: str, file: str = "<string>", loader: Loader | None = None,
               diags: Diagnostics | None = None) -> tuple[IR | None, Diagnostics]:
    """Lower one spec's text (its imports read through ``loader``, default: the file system)."""
    diags = diags or Diagnostics()
    lw = _Lowerer(loader or (lambda p: Path(p).read_text(encoding="utf-8")), diags)
    if not file.startswith("<"):
        lw.stack.append(str(Path(file).resolve()))
    st = lw.lower_text(text, file)
    if st is None:
        return None, diags
    return _finish(st, diags), diags
