"""`peltc check` is linear in the number of instances on the same linears (issue 22, item 8): no pass
or view scans the whole IR once per instance. Measured as work, not time — the number of IR nodes the
front end touches (`IR._nodes` reads) for the whole of `peltc check` — so the test is deterministic;
`bench/check_scaling.py` times it."""

from __future__ import annotations

from peltc.compiler.ir import IR
from peltc.compiler.pipeline import build_ir
from peltc.compiler.summary import summary


class _Counting(dict):
    touched = 0

    def __getitem__(self, key):
        _Counting.touched += 1
        return super().__getitem__(key)

    def values(self):
        _Counting.touched += len(self)
        return super().values()

    def items(self):
        _Counting.touched += len(self)
        return super().items()

    def __iter__(self):
        _Counting.touched += len(self)
        return super().__iter__()


def _spec(n: int) -> str:
    return "".join(f"lora l{k} {{ at layers[*].attention.{{query, value}} rank 8 }}\n" for k in range(n))


def _touched(n: int, monkeypatch) -> int:
    init = IR.__init__

    def counting_init(self, graph=None):
        init(self, graph)
        self._nodes = _Counting(self._nodes)
    monkeypatch.setattr(IR, "__init__", counting_init)
    _Counting.touched = 0
    r = build_ir(_spec(n), "x.pelt", model="minilm")
    summary(r.ir, "x.pelt")
    assert len(r.ir.attachments()) == n * 6 * 2
    return _Counting.touched


def test_check_touches_the_ir_linearly_in_instances(monkeypatch):
    small, large = _touched(40, monkeypatch), _touched(160, monkeypatch)
    assert large / small < 4 * 1.25, (small, large)     # 4x the instances: ~4x the work (16x if quadratic)


def test_the_indexes_follow_replace_and_remove():
    ir = build_ir("lora a { at layers[0..1].attention.query }\nlora b { at layers[1].attention.value }",
                  model="minilm").ir
    assert [a.layer for a in ir.attachments("a")] == [0, 1] and len(ir.attachments("b")) == 1
    moved = ir.attachments("a")[0].model_copy(update={"instance": "b"})
    ir.replace(moved)
    assert len(ir.attachments("a")) == 1 and len(ir.attachments("b")) == 2
    ir.remove(moved.id)
    assert len(ir.attachments("b")) == 1 and moved.id not in {a.id for a in ir.attachments()}
    assert [n.id for n in ir.nodes("attachment")] == [n.id for n in ir.nodes() if n.kind == "attachment"]
    back = IR.from_json(ir.to_json())
    assert back == ir and [a.id for a in back.attachments("b")] == [a.id for a in ir.attachments("b")]
    assert [a.id for a in IR(ir.graph).attachments("a")] == [a.id for a in ir.attachments("a")]
