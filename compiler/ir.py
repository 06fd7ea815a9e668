"""The IR: a directed graph whose nodes are frozen pydantic models with a ``kind`` and a span.

Node kinds (closed set):
  settings    — one per spec: model, head and train settings, the resolved architecture facts
  instance    — a declared module instance (method, parameters, gate, targets as written)
  point       — a base-model point, per layer when a model is known (``layers[3].ffn.output``)
  attachment  — one instance attached at one point of one layer (what the rewrite applies)
  gate        — the gate of one attachment, with an edge from its source point

Edges carry a ``role``: ``flow`` (point → next point), ``input`` (point → attachment),
``output`` (attachment → point it writes), ``source`` (point → gate), ``scales`` (gate →
attachment), ``instance`` (instance → attachment), ``part`` (block point → its linear points).

Only this module touches the graph's storage; everything else uses ``IR`` methods. The storage is
networkx's own layout (node dict, successor / predecessor adjacency dicts, insertion-ordered), and
``IR.graph`` gives the ``networkx.DiGraph`` of it on demand, for graph algorithms. networkx is only
imported then: its import (~70 ms, most of ``peltc check``'s start-up budget) is not paid by passes
that only add, look up and walk nodes.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Iterator, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class SpanModel(BaseModel):
    model_config = ConfigDict(frozen=True)
    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    @classmethod
    def of(cls, span) -> "SpanModel | None":
        if span is None:
            return None
        return cls(file=span.file, line=span.line, col=span.col, end_line=span.end_line, end_col=span.end_col)

    def to_span(self):
        from peltc.errors import Span
        return Span(self.file, self.line, self.col, self.end_line, self.end_col)


class GateSpec(BaseModel):
    """How an attachment is gated.

    none    — no gate (g = 1; LoRA uses alpha / rank)
    sigmoid — per example: g = pool_tokens(sigmoid(Linear(H, 1)(source))); the Linear's bias starts at
              ``value`` (None: 0), so the gate starts near σ(value)
    scalar  — one learned scalar per attachment: g = sigmoid(w), w initialised to ``value`` (0)
    const   — a fixed constant ``value``
    """

    model_config = ConfigDict(frozen=True)
    kind: Literal["none", "sigmoid", "scalar", "const"] = "none"
    source: str | None = None       # canonical layer point ("input", "attention.output", "ffn.output")
    pool: Literal["masked_mean", "mean_unmasked", "first"] = "masked_mean"
    value: float | None = None

    def with_default(self, init: float | None) -> GateSpec:
        """This gate as it starts on a model: a sigmoid gate the spec left without ``init=`` takes ``init``
        (the family's, resolved into `AttachmentNode.gate_init`); any other gate is returned as is."""
        if self.kind == "sigmoid" and self.value is None and init is not None:
            return self.model_copy(update={"value": init})
        return self

    def text(self) -> str:
        if self.kind == "none":
            return "none"
        if self.kind == "sigmoid":
            src = "layer.input" if self.source == "input" else self.source
            args = [src] + ([f"pool={self.pool}"] if self.pool != "masked_mean" else []) + \
                ([f"init={self.value:g}"] if self.value else [])
            return f"sigmoid({', '.join(args)})"
        if self.kind == "scalar":
            return "scalar" if not self.value else f"scalar(init={self.value:g})"
        return f"const({self.value:g})"


class GateBehaviour(BaseModel):
    """What a model family's gates compute beyond the spec (resolved into the IR by
    `passes.resolve_gates` from `archs.Family.gates`; an artifact's IR records it, and one whose sigmoid
    gates were trained under another behaviour is refused on load, A015).

    gate_source_norm — sigmoid gates read their source RMS-normalised, x / rms(x)
    prefix_gate      — how a per-token gate g scales a prefix: "kv" (keys and values times g) or
                       "kv_weight" (that, and the prefix's attention weights times g)
    prefix_gate_init — a prefix's sigmoid gate starts at this bias unless the spec writes ``init=``
                       (None: 0, σ = 0.5)
    """

    model_config = ConfigDict(frozen=True)
    gate_source_norm: bool = False
    prefix_gate: Literal["kv", "kv_weight"] = "kv"
    prefix_gate_init: float | None = None


class TargetSpec(BaseModel):
    """One target as written, after set expansion: a selector (None for global points) and a point."""

    model_config = ConfigDict(frozen=True)
    selector: str | None            # canonical selector text, e.g. "*", "0..5", "-4..", "0..11 by 2"
    items: tuple[tuple[int | None, int | None, int], ...] = ()   # (start, stop incl., step); None = open
    point: str                      # canonical point ("ffn.output", "layer", "embeddings", "all", ...)
    span: SpanModel | None = None


class OverrideSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    selector: str
    items: tuple[tuple[int | None, int | None, int], ...]
    params: dict[str, Any]
    gate: GateSpec | None = None
    span: SpanModel | None = None
    spans: dict[str, SpanModel] = Field(default_factory=dict)   # where each parameter / the gate is written


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    span: SpanModel | None = None


class SettingsNode(_Node):
    kind: Literal["settings"] = "settings"
    model: str | None = None
    head: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    family: str | None = None
    dims: dict[str, int] = Field(default_factory=dict)   # hidden, layers, heads, intermediate, embedding
    base_params: int | None = None
    model_source: str | None = None
    spec_hash: str | None = None
    gate_behaviour: GateBehaviour | None = None   # the family's, resolved (`passes.resolve_gates`); None: no family


class InstanceNode(_Node):
    kind: Literal["instance"] = "instance"
    name: str
    method: str
    params: dict[str, Any]
    gate: GateSpec = GateSpec()
    targets: tuple[TargetSpec, ...] = ()
    overrides: tuple[OverrideSpec, ...] = ()
    file: str | None = None
    order: int = 0                  # declaration order (decides order of sequential modules)
    shared_trainable: int | None = None   # trained but shared across layers (prefix MLP; folded away)
    spans: dict[str, SpanModel] = Field(default_factory=dict)   # member → where it is written ("gate", "at", params)

    @property
    def args(self) -> Any:
        """The parameters as the method's typed model (`schema.method_params`): every default filled."""
        from peltc.compiler.schema import method_params
        return method_params(self.method, self.params)


class PointNode(_Node):
    kind: Literal["point"] = "point"
    layer: int | None               # None for global points
    point: str
    module_path: str | None = None  # resolved with a model


class AttachmentNode(_Node):
    kind: Literal["attachment"] = "attachment"
    instance: str
    method: str
    layer: int | None
    point: str
    params: dict[str, Any]          # effective (defaults + per-layer overrides), relative sizes resolved
    relative: dict[str, str] = Field(default_factory=dict)   # parameters written relative: "size" → "hidden/16"
    gate: GateSpec = GateSpec()
    placement: Literal["sequential", "parallel"] = "sequential"
    order: int = 0                  # position among the modules sharing this point
    trainable: int | None = None    # parameters trained (prefix: incl. its share of the MLP; gate included)
    saved: int | None = None        # parameters kept after training (prefix: folded)
    gate_params: int | None = None
    module_path: str | None = None  # resolved with a model (relative to the task model)
    gate_span: SpanModel | None = None   # where its gate is written (span: the target that placed it)
    gate_init: float | None = None       # resolved: the bias a sigmoid gate the spec left without ``init=``
                                         # starts at on this family (None: 0); `passes.resolve_gates`

    @property
    def start_gate(self) -> GateSpec:
        """The gate as it starts on the model: ``gate`` with the family's resolved ``gate_init``."""
        return self.gate.with_default(self.gate_init)

    @property
    def args(self) -> Any:
        """The parameters as the method's typed model (`schema.method_params`): every default filled."""
        from peltc.compiler.schema import method_params
        return method_params(self.method, self.params)


class GateNode(_Node):
    kind: Literal["gate"] = "gate"
    attachment: str
    instance: str
    layer: int | None
    gate: GateSpec
    params: int = 0


Node = Annotated[Union[SettingsNode, InstanceNode, PointNode, AttachmentNode, GateNode], Field(discriminator="kind")]


@functools.lru_cache(maxsize=1)
def _node_adapter() -> TypeAdapter:
    """Built on first use (loading JSON), not at import: `peltc check` never needs it."""
    return TypeAdapter(Node)


def point_id(layer: int | None, point: str) -> str:
    return f"pt:{point}" if layer is None else f"pt:L{layer}:{point}"


def attachment_id(instance: str, layer: int | None, point: str) -> str:
    return f"att:{instance}:{'*' if layer is None else layer}:{point}"


class IR:
    """A typed directed graph: nodes keyed by id (with a ``node`` payload), edges with a ``role``."""

    def __init__(self, graph: Any = None):
        """``graph``: a ``networkx.DiGraph`` in the layout ``IR.graph`` gives (node attribute ``node``,
        edge attribute ``role``), to wrap a graph built elsewhere; None for an empty IR."""
        self._nodes: dict[str, _Node] = {}
        self._succ: dict[str, dict[str, str]] = {}
        self._pred: dict[str, dict[str, str]] = {}
        # indexes (ordered sets of node ids), so that `nodes(kind)` and `attachments(instance)` cost what
        # they return, not the whole graph: a pass asking per instance stays linear in the spec's size
        self._by_kind: dict[str, dict[str, None]] = {}
        self._atts_of: dict[str, dict[str, None]] = {}
        if graph is not None:
            for node_id, data in graph.nodes(data=True):
                self.add(data["node"])
            for s, d, data in graph.edges(data=True):
                self.connect(s, d, data["role"])

    def _adj(self, node_id: str) -> None:
        self._succ.setdefault(node_id, {})
        self._pred.setdefault(node_id, {})

    @property
    def graph(self):
        """The IR as a ``networkx.DiGraph`` (a copy: node attribute ``node``, edge attribute ``role``),
        for graph algorithms (``nx.topological_sort(ir.graph)``, ``nx.descendants`` …)."""
        import networkx as nx

        g = nx.DiGraph()
        for node_id, node in self._nodes.items():
            g.add_node(node_id, node=node)
        for s, d, role in self.edges():
            g.add_edge(s, d, role=role)
        return g

    # --- nodes ------------------------------------------------------------------------------
    def _index(self, node: _Node) -> None:
        self._by_kind.setdefault(node.kind, {})[node.id] = None
        if node.kind == "attachment":
            self._atts_of.setdefault(node.instance, {})[node.id] = None

    def _unindex(self, node: _Node) -> None:
        self._by_kind.get(node.kind, {}).pop(node.id, None)
        if node.kind == "attachment":
            self._atts_of.get(node.instance, {}).pop(node.id, None)

    def add(self, node: _Node) -> _Node:
        if node.id in self._nodes:
            self.replace(node)
        else:
            self._nodes[node.id] = node
            self._index(node)
        self._adj(node.id)
        return node

    def replace(self, node: _Node) -> None:
        assert node.id in self._nodes, node.id
        old = self._nodes[node.id]
        if old.kind != node.kind or getattr(old, "instance", None) != getattr(node, "instance", None):
            self._unindex(old)
            self._index(node)
        self._nodes[node.id] = node

    def remove(self, node_id: str) -> None:
        self._unindex(self._nodes.pop(node_id))
        for d in self._succ.pop(node_id):
            del self._pred[d][node_id]
        for s in self._pred.pop(node_id):
            del self._succ[s][node_id]

    def get(self, node_id: str) -> _Node:
        return self._nodes[node_id]

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._nodes

    def nodes(self, kind: str | None = None) -> Iterator[Any]:
        if kind is None:
            yield from list(self._nodes.values())
        else:
            yield from [self._nodes[i] for i in list(self._by_kind.get(kind, ()))]

    def connect(self, src: str, dst: str, role: str) -> None:
        self._adj(src)
        self._adj(dst)
        self._succ[src][dst] = role
        self._pred[dst][src] = role

    def edges(self, role: str | None = None) -> Iterator[tuple[str, str, str]]:
        for s, succ in list(self._succ.items()):
            for d, r in list(succ.items()):
                if role is None or r == role:
                    yield s, d, r

    def successors(self, node_id: str, role: str | None = None) -> list[Any]:
        return [self.get(d) for d, r in self._succ[node_id].items() if role is None or r == role]

    def predecessors(self, node_id: str, role: str | None = None) -> list[Any]:
        return [self.get(s) for s, r in self._pred[node_id].items() if role is None or r == role]

    # --- typed views ------------------------------------------------------------------------
    @property
    def settings(self) -> SettingsNode:
        return self.get("settings")

    def instances(self) -> list[InstanceNode]:
        return sorted(self.nodes("instance"), key=lambda n: n.order)

    def instance(self, name: str) -> InstanceNode:
        return self.get(f"inst:{name}")

    def attachments(self, instance: str | None = None) -> list[AttachmentNode]:
        """Attachments in application order: by layer, point order, then ``order``."""
        from peltc.compiler.schema import POINT_ORDER
        atts = list(self.nodes("attachment")) if instance is None else \
            [self._nodes[i] for i in self._atts_of.get(instance, ())]
        return sorted(atts, key=lambda a: (-1 if a.layer is None else a.layer,
                                           POINT_ORDER.get(a.point, 99), a.point, a.order))

    def gate_of(self, attachment_id: str) -> GateNode | None:
        gates = self.predecessors(attachment_id, "scales")
        return gates[0] if gates else None

    def copy(self) -> "IR":
        """A new IR of the same (frozen) nodes and edges; changing one leaves the other as it was."""
        new = IR()
        for node in self._nodes.values():
            new.add(node)
        for s, d, r in self.edges():
            new.connect(s, d, r)
        return new

    # --- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "nodes": [n.model_dump(mode="json") for n in self.nodes()],
            "edges": [{"src": s, "dst": d, "role": r} for s, d, r in self.edges()],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IR":
        ir = cls()
        for nd in data["nodes"]:
            ir.add(_node_adapter().validate_python(nd))
        for e in data["edges"]:
            ir.connect(e["src"], e["dst"], e["role"])
        return ir

    @classmethod
    def from_json(cls, text: str) -> "IR":
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IR) and self.to_dict()["nodes"] == other.to_dict()["nodes"] and \
            sorted(self.edges()) == sorted(other.edges())
