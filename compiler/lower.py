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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peltc.compiler import methods, schema
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR, GateSpec, InstanceNode, OverrideSpec, SettingsNode, SpanModel, TargetSpec
from peltc.compiler.lower_terms import a_an, coerce, lower_gate, lower_target, selector_items, selector_text
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


# --- sections -------------------------------------------------------------------------------
def _is_space(m, diags: Diagnostics) -> bool:
    """E160: a choice or an `optional` where one spec is lowered (a space is read by compiler/space.py:
    `peltc check` checks every point, `peltc search` searches it; a file it extends or imports must
    be one spec)."""
    sp = getattr(m, "space", None) or getattr(m, "choice", None)
    if isinstance(m, ast.Section):
        sp = m.optional
    if sp is None:
        return False
    what = "`optional`" if isinstance(sp, Span) else f"`{sp.kind if isinstance(sp, ast.Range) else 'choice'}(...)`"
    diags.error("E160", f"{what} makes this a search space, not one spec", sp if isinstance(sp, Span) else sp.span,
                "check a space with `peltc check`, search it with `peltc search`; a file that a spec extends "
                "or imports cannot hold choices, and `compile` takes one point (`peltc search --emit`)")
    return True


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
        if _is_space(m, diags):
            targets = [] if isinstance(m, ast.At) else targets   # E160 says it all (not also E131)
            continue
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
        if _is_space(m, diags):
            continue
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

    def load_plugin(self, path: str, stmt: ast.Import) -> None:
        """`import "my_methods.py"`: register the plug-in file's methods (`compiler.methods`)."""
        if stmt.names is not None:
            self.diags.error("E142", f"'{stmt.path}' is a plug-in: it is imported whole", stmt.span,
                             f"write `import \"{stmt.path}\"`")
            return
        try:
            methods.load_file(path)
        except methods.PluginProblem as e:
            if e.kind == "missing":
                self.diags.error("E140", e.message, stmt.span, e.help)
            elif e.kind == "raises":
                self.diags.error("E141", e.message, stmt.span, e.help)
            elif e.kind == "clash":
                self.diags.error("E143", e.message, stmt.span, e.help)
            else:
                self.diags.error("E142", e.message, stmt.span, e.help)

    def find_method(self, name: str, span: Span) -> bool:
        """Whether method ``name`` is known (loading an installed entry point of that name, E141 if it fails)."""
        try:
            return methods.find_method(name) is not None
        except methods.PluginProblem as e:
            self.diags.error("E141", e.message, span, e.help)
            return True   # said; no E101 on top

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
            elif isinstance(stmt, ast.Import) and stmt.path.endswith(".py"):
                self.load_plugin(self._resolve(stmt.path, tree), stmt)
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
        _is_space(sec, diags)
        if sec.name is None:
            if sec.keyword == "head":
                _settings(sec, schema.HEAD_PARAMS, st.head, diags)
            elif sec.keyword == "train":
                _settings(sec, schema.TRAIN_PARAMS, st.train, diags)
            elif sec.keyword in schema.METHODS:
                diags.error("E129", f"{a_an(sec.keyword)} instance needs a name", sec.keyword_span,
                            f"write `{sec.keyword} my_{sec.keyword} {{ ... }}`")
            else:
                diags.error("E117", f"unknown section '{sec.keyword}'", sec.keyword_span,
                            did_you_mean(sec.keyword, [*schema.SECTIONS, *schema.METHODS], "sections and methods"))
            return
        if sec.keyword in schema.SECTIONS:   # `train t { ... }` is not an unknown method
            diags.error("E129", f"the `{sec.keyword}` section takes no name", sec.name_span,
                        f"write `{sec.keyword} {{ ... }}`")
            return
        if not self.find_method(sec.keyword, sec.keyword_span):
            diags.error("E101", f"unknown method '{sec.keyword}'", sec.keyword_span,
                        did_you_mean(sec.keyword, [*schema.METHODS, *methods.entry_point_names()], "methods"))
            return
        if sec.keyword not in schema.METHODS:
            return
        method = schema.METHODS[sec.keyword]
        if sec.name in declared_here:
            diags.error("E105", f"instance '{sec.name}' is declared twice", sec.name_span,
                        f"first declared at {declared_here[sec.name]}; names must be unique")
            return
        declared_here[sec.name] = sec.name_span
        existing = st.instances.get(sec.name)
        if existing is not None and existing.method != method.name:
            diags.error("E122", f"'{sec.name}' is {a_an(existing.method)} (from the spec it extends); "
                                f"it cannot be overridden as {a_an(method.name)}", sec.keyword_span,
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
        scale = "alpha / √rank" if d.params.get("scaling") == "rs" else "alpha / rank"
        diags.warning("W202", f"{d.name}: '{name}' has no effect: the gate {g.text()} replaces the scale "
                              f"{scale}", at,
                      f"remove `{name}`, or write `gate none` to scale by {scale}")

    for name in method.params:
        if not schema.gate_replaces(d.method, name, d.params):
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


def _check_lora_init(d: _Draft, params: dict[str, Any], diags: Diagnostics) -> None:
    """E145: `init pissa` / `init olora` under a learned gate. The base keeps W − s·B₀A₀ with the fixed
    scale s that the LoRA multiplies by: alpha / rank (`gate none`) or c (`gate const(c)`); a scalar or
    sigmoid gate's value moves, so no base weight keeps the model unchanged at init."""
    inits = [params.get("init")] + [ov.params["init"] for ov in d.overrides if "init" in ov.params]
    if not any(i in ("pissa", "olora") for i in inits):
        return
    gates = [d.gate or GateSpec()] + [ov.gate for ov in d.overrides if ov.gate is not None]
    bad = next((g for g in gates if g.kind in ("scalar", "sigmoid")), None)
    if bad is not None:
        at = d.spans.get("init") or d.spans.get("gate")
        init = next(i for i in inits if i in ("pissa", "olora"))
        diags.error("E145", f"{d.name}: `init {init}` under the learned gate {bad.text()}",
                    at.to_span() if at else d.span,
                    f"init {init} subtracts s·B A from the base weight with a fixed scale s; write `gate none` "
                    "(s = alpha / rank) or `gate const(c)` (s = c), or `init default`")


def _check_prompt_init(d: _Draft, params: dict[str, Any], diags: Diagnostics) -> None:
    """E155: `init text` without a (non-empty) `text`; E156: a `text` that `init` does not read."""
    if d.method != "prompt":
        return
    init, text = params.get("init"), params.get("text")
    at = d.spans.get("init") or d.spans.get("text")
    span = at.to_span() if at else d.span
    if init == "text" and not text:
        diags.error("E155", f"{d.name}: `init text` needs the text its tokens start from", span,
                    'write it in the block: text "Classify the sentiment of this review:"')
    elif text is not None and init != "text":
        diags.error("E156", f"{d.name}: `text` is read only with `init text` (init is {init})", span,
                    "write `init text`, or remove the `text` line")


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
        _check_lora_init(d, params, diags)
        _check_prompt_init(d, params, diags)
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
