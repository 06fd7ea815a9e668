"""What Jupyter shows of a spec (`peltc.load_spec`), a compiled model's report (`peltc.compile_model`) and a
run folder (`peltc.open_run`): the `_repr_svg_` / `_repr_html_` / `_repr_markdown_` hooks, called directly
(tests/notebook/test_notebook.py runs them in a real kernel); the errors; no torch for a spec."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import peltc
from peltc.compiler.pipeline import check_file
from peltc.compiler.summary import check_table, summary, summary_html
from peltc.errors import SpecError, UsageError

ROOT = Path(__file__).resolve().parents[2]
APL = ROOT / "specs" / "unipelt_apl.pelt"


def test_a_spec_shows_its_diagram_and_check_table():
    spec = peltc.load_spec(APL, model="minilm")
    ir = check_file(APL, model="minilm").ir
    total = sum(a.saved or 0 for a in ir.attachments())
    assert spec.total == total
    svg = spec._repr_svg_()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    html = spec._repr_html_()
    assert svg in html                                      # the diagram inline, over the table
    table = check_table(ir, str(APL))
    assert [r[0] for r in table.rows] == ["ffn_adapter", "kv", "qv"]
    assert html.count("<tr>") == 1 + len(table.rows) + sum(1 for b in table.below if b)
    for row in table.rows:
        assert f">{row[-1]}</td>" in html                   # each instance's total, e.g. 74,928
    assert f"total saved: {total:,}" in html
    assert spec._repr_markdown_() == f"```\n{summary(ir, str(APL))}\n```"


def test_the_text_check_table_is_unchanged_by_the_html_one():
    """`summary` prints the same rows `summary_html` draws (the golden `peltc check` output is the text one)."""
    ir = check_file(APL, model="bert-base-uncased").ir
    text = summary(ir, "x.pelt")
    assert "total saved: 1,410,672 (1.288% of 109,482,240 base parameters)" in text
    assert "total trained: 11,083,376 (prefix reparameterisation MLPs included: folded away after training); "\
           "task head not included" in text
    assert "note: prefix 'kv' also trains a" in text
    assert "1,410,672" in summary_html(ir, "x.pelt")


def test_a_spec_without_a_model_shows_its_table():
    spec = peltc.load_spec("lora qv { at layers[*].attention.query rank 4 }")
    assert spec.total is None
    assert "<td" in spec._repr_html_() and "qv" in spec._repr_html_()


def test_a_spec_error_shows_as_peltc_prints_it_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.pelt"
    bad.write_text("lora qv {\n  at layers[*].attention.query\n  rnak 8\n}\n", encoding="utf-8")
    with pytest.raises(SpecError) as e:
        peltc.load_spec(bad)
    d = e.value.diagnostic
    assert (d.code, d.span.line, d.span.col) == ("E102", 3, 3)
    lines = e.value._render_traceback_()        # what IPython shows instead of a traceback
    assert lines[0].endswith("[E102]") and lines[1].startswith(" 3 |")
    assert not any("Traceback" in x for x in lines)


def test_load_spec_of_a_missing_file_is_U001(tmp_path):
    with pytest.raises(UsageError) as e:
        peltc.load_spec(tmp_path / "nope.pelt")
    assert e.value.diagnostic.code == "U001"


def test_a_run_shows_its_metrics_and_gate_heatmap(run_dir):
    run = peltc.open_run(run_dir)
    gates = json.loads((run_dir / "gates.json").read_text())
    assert run.finished and run.test == {"accuracy": pytest.approx(0.5523465703971119)}
    html = run._repr_html_()
    heat = html[html.index('class="peltc-gates"'):]
    cells = re.findall(r'<td style="background:(#[0-9a-f]{6});color:(white|black);text-align:center">([0-9.]+)</td>',
                       heat)
    assert len(cells) == sum(len(r) for r in gates.values())
    assert [float(c[2]) for c in cells] == [round(v, 2) for r in gates.values() for v in r.values()]
    assert all((c[1] == "white") == (float(c[2]) < 0.6) for c in cells)
    assert "0.5523" in html and html.count("<tr>") >= 2 + 2   # test metric, two dev evaluations
    md = run._repr_markdown_()
    assert "| accuracy | 0.5523 |" in md and "| kv | 0.48 | 0.45 |" in md


def test_open_run_errors(tmp_path):
    with pytest.raises(UsageError) as e:
        peltc.open_run(tmp_path / "missing")
    assert e.value.diagnostic.code == "U008"
    with pytest.raises(UsageError) as e:
        peltc.open_run(tmp_path)                     # a folder, but no run's
    assert e.value.diagnostic.code == "U136"
    (tmp_path / "metrics.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UsageError) as e:
        peltc.open_run(tmp_path)
    assert e.value.diagnostic.code == "U136"


def test_a_compiled_models_report_shows_a_table():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=37)
    report = peltc.compile_model(APL, transformers.BertForSequenceClassification(cfg))
    html = report._repr_html_()
    body = html[html.index("<tbody>"):]
    assert body.count("<tr>") == len(report.instances) + 3            # PELT total, task head, trainable
    assert f">{report.pelt_trainable:,}</td>" in html and f">{report.trainable_total:,}</td>" in html
    assert f"| {report.instances[0].name} |" in report._repr_markdown_()
    assert report.render().count(f"{report.pelt_trainable:,}") == 1    # the text table as before


def test_peltc_load_spec_imports_no_torch():
    code = ("import sys, peltc; s = peltc.load_spec('specs/unipelt_apl.pelt', model='minilm'); s._repr_html_(); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
