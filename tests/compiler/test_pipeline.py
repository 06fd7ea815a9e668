"""Front end end-to-end: exact counts per spec on a bert-base config.json, IR JSON round trip,
torch-free imports, CLI exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peltc.cli import main
from peltc.compiler.ir import IR
from peltc.compiler.pipeline import build_ir, check_file
from peltc.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"

# DESIGN.md's table (paper Table 4), classifier head excluded — exact.
EXPECTED = {
    "bitfit.pelt": 102_912,
    "prefix.pelt": 184_320,
    "lora.pelt": 294_912,
    "adapter.pelt": 894_528,
    "unipelt_ap.pelt": 1_097_304,
    "unipelt_apl.pelt": 1_410_672,
    "unipelt_apl_nogate.pelt": 1_373_760,   # APL minus its 4 gates per layer
}


@pytest.fixture(scope="module")
def bert_base_config(tmp_path_factory) -> str:
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("bert-base")
    transformers.BertConfig().to_json_file(str(d / "config.json"))
    return str(d / "config.json")


@pytest.mark.parametrize("spec,count", sorted(EXPECTED.items()))
def test_design_counts_on_bert_base_config(spec, count, bert_base_config):
    r = check_file(SPECS / spec, model=bert_base_config)
    assert sum(a.saved for a in r.ir.attachments()) == count


def test_check_cli_prints_the_apl_total(bert_base_config, capsys):
    assert main(["check", str(SPECS / "unipelt_apl.pelt"), "--model", bert_base_config]) == 0
    out = capsys.readouterr().out
    assert "total saved: 1,410,672" in out      # the paper's Table 4 counts what is kept
    assert "bert.encoder.layer.{0..11}.output.LayerNorm" in out


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.pelt")))
def test_ir_json_round_trip(spec):
    r = check_file(SPECS / spec, model="bert-base-uncased")
    text = r.ir.to_json()
    back = IR.from_json(text)
    assert back == r.ir
    assert back.to_json() == text


def test_without_model_checks_are_pending():
    r = build_ir("lora qv { at layers[0..40].attention.query }")
    assert "layer indices in range" in r.pending
    assert not list(r.ir.nodes("attachment"))
    with pytest.raises(SpecError) as e:
        build_ir("lora qv { at layers[0..40].attention.query }", model="bert-base-uncased")
    assert [d.code for d in e.value.errors] == ["E109"]


def test_all_semantic_errors_reported_in_one_run():
    src = "adapter a { sise 48 }\nlora b { at layers[*].ffn.output }\nprefx c { }\n"
    with pytest.raises(SpecError) as e:
        build_ir(src, "x.pelt")
    got = {(d.code, d.span.line, d.span.col) for d in e.value.errors}
    assert got == {("E102", 1, 13), ("E108", 2, 13), ("E101", 3, 1), ("E131", 1, 9)}


def test_selectors_expand():
    src = "lora a { at layers[0..11 by 2, -1].attention.query, layers[6..].attention.value, layers[-4..].ffn.up }"
    r = build_ir(src, model="bert-base-uncased")
    by = {}
    for a in r.ir.attachments():
        by.setdefault(a.point, []).append(a.layer)
    assert by["attention.query"] == [0, 2, 4, 6, 8, 10, 11]
    assert by["attention.value"] == [6, 7, 8, 9, 10, 11]
    assert by["ffn.up"] == [8, 9, 10, 11]
    assert any(w.code == "W201" for w in r.warnings)   # uneven coverage warns


def test_per_layer_override_and_gate_graph():
    src = ("adapter a { at layers[*].ffn.output size 48 gate sigmoid(ffn.output)\n"
           "  layers[0..1] { size 8 gate const(0.5) } }")
    r = build_ir(src, model="bert-base-uncased")
    sizes = [a.params["size"] for a in r.ir.attachments()]
    assert sizes[:3] == [8, 8, 48]
    g0 = r.ir.gate_of("att:a:0:ffn.output")
    g5 = r.ir.gate_of("att:a:5:ffn.output")
    assert g0.gate.kind == "const" and g5.gate.kind == "sigmoid"
    assert [p.id for p in r.ir.predecessors(g5.id, "source")] == ["pt:L5:ffn.output"]


def test_check_does_not_import_networkx():
    """`peltc check` builds and walks the IR without networkx (its import was ~70 ms of start-up)."""
    code = ("import sys\nfrom peltc.cli import main\n"
            f"rc = main(['check', {str(SPECS / 'unipelt_apl.pelt')!r}, '--model', 'bert-base-uncased'])\n"
            "assert rc == 0, rc\nassert 'networkx' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_ir_graph_is_the_networkx_view():
    import networkx as nx

    ir = check_file(str(SPECS / "unipelt_apl.pelt"), model="bert-base-uncased").ir
    g = ir.graph
    assert isinstance(g, nx.DiGraph)
    assert list(g.nodes) == [n.id for n in ir.nodes()]
    assert sorted((s, d, r["role"]) for s, d, r in g.edges(data=True)) == sorted(ir.edges())
    assert g.number_of_edges() == len(list(ir.edges())) > 0
    again = IR(g)                                        # and back: the same IR
    assert again == ir and list(again.edges()) == list(ir.edges())
    first = next(a for a in ir.attachments())
    ir.remove(first.id)                                  # removing a node drops its edges both ways
    assert first.id not in ir and all(first.id not in (s, d) for s, d, _ in ir.edges())


def test_front_end_does_not_import_torch():
    code = ("import sys\nfrom peltc.cli import build_parser\nfrom peltc.compiler.pipeline import check_file\n"
            "from peltc.grammar.parser import parse\nimport peltc.compiler.render, peltc.compiler.summary\n"
            f"check_file({str(SPECS / 'unipelt_apl.pelt')!r}, model='bert-base-uncased')\n"
            "build_parser()\n"
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("argv,code", [
    (["check", "missing.pelt"], 2),
    (["check", str(SPECS / "lora.pelt"), "--model", "no-such-model"], 2),
    (["frobnicate"], 2),
    (["check", str(SPECS / "lora.pelt"), "--model", "bert-base-uncased"], 0),
])
def test_exit_codes(argv, code, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    assert rc == code
    assert "Traceback" not in capsys.readouterr().err


def test_spec_error_exit_code_and_rendering(tmp_path, capsys):
    p = tmp_path / "bad.pelt"
    p.write_text("lora qv {\n  at layers[*].attention.{query, value}\n  rnak 8\n}\n")
    assert main(["check", str(p)]) == 1
    err = capsys.readouterr().err
    assert f"error: {p}:3:3: unknown parameter 'rnak' for lora" in err
    assert "  rnak 8" in err and "^^^^" in err and "help: did you mean 'rank'" in err


def test_show_json_loads_back(capsys):
    assert main(["show", str(SPECS / "unipelt_ap.pelt"), "--model", "bert-base-uncased", "--json"]) == 0
    ir = IR.from_json(capsys.readouterr().out)
    assert {i.name for i in ir.instances()} == {"ffn_adapter", "kv"}
