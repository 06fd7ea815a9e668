"""`peltc show` without --json: a readable outline of the resolved IR — the settings, then each
instance with its method, parameters, gate, targets, overrides and resolved attachments."""

from __future__ import annotations

import json
from pathlib import Path

from peltc.cli import main

SPECS = Path(__file__).resolve().parents[2] / "specs"


def show(capsys, *argv: str) -> str:
    assert main(["show", *argv]) == 0
    return capsys.readouterr().out


def test_show_prints_an_outline_not_json(capsys):
    out = show(capsys, str(SPECS / "unipelt_apl.pelt"), "--model", "bert-base-uncased")
    lines = out.rstrip("\n").split("\n")
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            continue
        raise AssertionError(f"a JSON line: {line}")
    assert lines[0] == str(SPECS / "unipelt_apl.pelt")
    assert lines[1] == "├─ settings"
    assert "│  ├─ model: bert-base-uncased — bert, 12 layers, hidden 768, 12 heads, intermediate 3072" in lines
    for text in ["├─ adapter ffn_adapter", "├─ prefix kv", "└─ lora qv"]:
        assert any(line.startswith(text) for line in lines), text
    assert "   ├─ params: rank 8 · dropout 0" in lines        # alpha: replaced by the gate
    assert "   ├─ gate: sigmoid(layer.input) (769 parameters per attachment)" in lines
    assert any("layers[0..11].attention.query → bert.encoder.layer.{0..11}.attention.self.query: 13,057 each"
               in line for line in lines)
    assert lines[-1] == "total trained: 11,083,376, saved: 1,410,672 (task head not included)"


def test_show_outlines_overrides_relative_sizes_and_settings(tmp_path, capsys):
    p = tmp_path / "o.pelt"
    p.write_text("adapter a {\n  at layers[*].ffn.output\n  size hidden/48\n  gate sigmoid(ffn.output)\n"
                 "  layers[0..1] {\n    size 32\n    gate const(0.5)\n  }\n}\n\nhead {\n  pool mean\n}\n")
    out = show(capsys, str(p), "--model", "bert-base-uncased")
    assert "│  ├─ head: pool mean" in out
    assert "   ├─ params: size hidden/48 · activation relu · placement sequential · scale 1" in out
    assert "   ├─ override layers[0..1]: size 32 · gate const(0.5)" in out
    assert "layers[0..1].ffn.output → bert.encoder.layer.{0..1}.output.LayerNorm: 49,952 each " \
           "(size 32 · gate const(0.5))" in out
    assert "layers[2..11].ffn.output → bert.encoder.layer.{2..11}.output.LayerNorm: 26,129 each " \
           "(size 16 (hidden/48) · gate sigmoid(ffn.output))" in out


def test_show_without_a_model_outlines_what_was_written(capsys):
    out = show(capsys, str(SPECS / "mam_adapter.pelt"), "--model", "none")
    assert "│  ├─ model: none bound (pass --model NAME|DIR|config.json)" in out
    assert "   ├─ params: size hidden/1.5 · activation relu · placement parallel · scale 4" in out
    assert "attachments" not in out and "total trained" not in out


def test_show_bitfit_lists_its_bias_modules(capsys):
    out = show(capsys, str(SPECS / "bitfit_attention_gated_adapter.pelt"), "--model", "bert-base-uncased")
    assert "bert.encoder.layer.{0..11}.attention.output.{dense, LayerNorm}" in out
