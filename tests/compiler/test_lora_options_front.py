"""LoRA's options in the front end: `peltc check` lists them and counts DoRA's magnitude vectors exactly
(specs/dora.pelt, specs/rslora.pelt on bert-base, offline from the config table), `peltc render` draws
them in the module's label, an option at its default is left out of both."""

from __future__ import annotations

from pathlib import Path

from peltc.cli import main
from peltc.compiler.pipeline import build_ir

SPECS = Path(__file__).resolve().parents[2] / "specs"
SPEC = """lora qv {
  at layers[*].attention.{query, value}
  rank 8
  alpha 16
  dora true
  scaling rs
  init olora
  lr_ratio 16
}
"""


def test_check_counts_the_shipped_specs(capsys):
    # DoRA: 12 layers × 2 linears × (8·768 + 768·8 + 768 magnitudes); rsLoRA: as plain LoRA
    for name, total in (("dora.pelt", 12 * 2 * (8 * 768 * 2 + 768)), ("rslora.pelt", 12 * 2 * 8 * 768 * 2)):
        assert main(["check", str(SPECS / name), "--model", "bert-base-uncased"]) == 0
        out = capsys.readouterr().out
        assert f"total saved: {total:,}" in out, out


def test_check_and_render_show_the_options(tmp_path, capsys):
    p = tmp_path / "opts.pelt"
    p.write_text(SPEC)
    assert main(["check", str(p), "--model", "bert-base-uncased"]) == 0
    assert "rank 8 · alpha 16 · dropout 0 · scaling rs · init olora · dora true · lr_ratio 16" in capsys.readouterr().out
    assert main(["render", str(p), "--model", "bert-base-uncased", "-o", str(tmp_path / "d.dot")]) == 0
    assert "DoRA · r 8 · α 16 / √r · init olora · B lr × 16" in (tmp_path / "d.dot").read_text()
    plain = tmp_path / "plain.pelt"
    plain.write_text("lora qv {\n  at layers[*].attention.query\n}\n")
    assert main(["check", str(plain), "--model", "bert-base-uncased"]) == 0
    out = capsys.readouterr().out
    assert "scaling" not in out and "dora" not in out and "lr_ratio" not in out


def test_lr_ratio_is_for_the_whole_instance():
    import pytest

    from peltc.errors import SpecError
    with pytest.raises(SpecError) as e:
        build_ir("lora l {\n  at layers[*].attention.query\n  layers[0] {\n    lr_ratio 4\n  }\n}\n", model="none")
    assert [d.code for d in e.value.errors] == ["E116"]
