"""The method registry's plug-in door, front end only (no torch): a plug-in's methods are checked,
registered once per source, refused with U17x on the command line, and `peltc check` with a plug-in
imports no torch. The torch side (VeRA end to end) is tests/compiler_torch/test_plugin_vera.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peltc.compiler import schema
from peltc.compiler.pipeline import build_ir
from peltc.errors import SpecError, UsageError
from peltc.methods import Method, ParamSpec, load_plugin, register, unregister

ROOT = Path(__file__).resolve().parents[2]
VERA = ROOT / "tests" / "plugins" / "vera.py"


@pytest.fixture
def vera():
    load_plugin(VERA)
    yield schema.METHODS["vera"]
    unregister("vera")


def test_check_with_a_plugin_imports_no_torch(tmp_path):
    spec = tmp_path / "s.pelt"
    spec.write_text("vera v { at layers[*].attention.value rank 4 }\n", encoding="utf-8")
    code = ("import sys; from peltc.cli import main; "
            f"rc = main(['check', {str(spec)!r}, '--plugin', {str(VERA)!r}]); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert rc == 0 and not bad, (rc, bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "vera" in r.stdout


def test_the_row_as_registered(vera):
    assert vera.origin == str(VERA.resolve()) and not vera.builtin
    assert "lr" in vera.params and vera.params["lr"] is schema.LR      # every method takes lr
    assert load_plugin(VERA) == ["vera"]                                 # loading again: the same row
    assert schema.params_model("vera")(rank=8).d_init == 0.1


def test_plugin_params_are_checked_like_builtins(vera):
    with pytest.raises(SpecError) as e:
        build_ir("vera v { at layers[*].attention.value rank 0 }\n", model="none")
    assert [d.code for d in e.value.errors] == ["E104"]
    with pytest.raises(SpecError) as e:
        build_ir("vera v { at layers[*].attention.value seed 1.5 }\n", model="none")
    assert [d.code for d in e.value.errors] == ["E103"]
    with pytest.raises(SpecError) as e:
        build_ir("vera v { at layers[*].attention.value layers[0] { lr 0.1 } }\n", model="none")
    assert [d.code for d in e.value.errors] == ["E116"]


def test_import_in_a_spec_is_relative_to_it(tmp_path):
    (tmp_path / "lib").mkdir()
    shutil.copy(VERA, tmp_path / "lib" / "vera.py")
    spec = tmp_path / "s.pelt"
    spec.write_text('import "lib/vera.py"\nvera v { at layers[*].attention.value }\n', encoding="utf-8")
    try:
        r = build_ir(spec.read_text(), str(spec), model="none")
        assert [i.method for i in r.ir.instances()] == ["vera"]
    finally:
        unregister("vera")
    with pytest.raises(SpecError) as e:
        build_ir('import vera from "lib/vera.py"\n', str(spec), model="none")
    assert e.value.errors[0].code == "E142"


def _row(name: str, **kw) -> Method:
    return Method(name, "d", kw.pop("params", {}), kw.pop("points", frozenset({"ffn.up"})),
                  count=kw.pop("count", lambda c: 0), build=kw.pop("build", lambda c: None), **kw)


@pytest.mark.parametrize("row,code", [
    (_row("lora"), "U173"),
    (_row("model"), "U172"),                                          # a keyword of the language
    (_row("x", params={"k": ParamSpec("text", 1, "k")}), "U172"),     # unknown type
    (_row("x", params={"k": ParamSpec("int", 0, "k", min=1)}), "U172"),   # default out of its range
    (_row("x", points=frozenset({"ffn.outptu"})), "U172"),
    (_row("x", points=frozenset({"ffn.output"})), "U172"),            # host linear at a value point
    (_row("x", count=None), "U172"),
    (_row("x", host="value", build=None), "U172"),                    # no attach for a value host
])
def test_invalid_rows_are_refused(row, code):
    with pytest.raises(UsageError) as e:
        register(row)
    assert e.value.diagnostic.code == code
    assert "x" not in schema.METHODS


def test_two_sources_cannot_share_a_name(vera, tmp_path):
    other = tmp_path / "vera.py"
    shutil.copy(VERA, other)
    with pytest.raises(UsageError) as e:
        load_plugin(other)
    assert e.value.diagnostic.code == "U173" and str(VERA.resolve()) in str(e.value)


def test_a_space_over_a_plugin_method_checks_every_point(tmp_path):
    """A search space over the VeRA plug-in's rank, the plug-in read by the space's own `import "vera.py"`:
    every point is checked like a built-in's (a rank out of range is E104 at the choice, naming its value),
    and a point's spec saved elsewhere (a search trial's folder) still finds the plug-in (`relocate`)."""
    from peltc.compiler.space import load_space, relocate
    from peltc.compiler.space_check import check_space
    shutil.copy(VERA, tmp_path / "vera.py")
    good = tmp_path / "space.pelt"
    good.write_text('import "vera.py"\nmodel bert-base-uncased\n'
                    'vera v { at layers[*].attention.value rank choice(4, 8) }\n', encoding="utf-8")
    try:
        sc = check_space(load_space(good))
        assert sc.space.size() == 2 and sc.exhaustive and sc.checked == 2
        # per layer: rank + out (768), 12 layers
        assert sc.counts == (12 * (4 + 768), 12 * (8 + 768))
        bad = tmp_path / "bad.pelt"
        bad.write_text(good.read_text().replace("choice(4, 8)", "choice(0, 4)"), encoding="utf-8")
        with pytest.raises(SpecError) as e:
            check_space(load_space(bad))
        d = e.value.diagnostics[0]
        assert d.code == "E104" and "v.rank = 0" in d.message and d.span.line == 3
        s = load_space(good)
        text = relocate(s.concrete({"v.rank": 8}), s.file, tmp_path / "runs" / "study")
        assert text.startswith('import "../../vera.py"\n')
        (tmp_path / "runs" / "study").mkdir(parents=True)
        (tmp_path / "runs" / "study" / "t0000.pelt").write_text(text, encoding="utf-8")
        r = build_ir(text, str(tmp_path / "runs" / "study" / "t0000.pelt"), model="bert-base-uncased")
        assert [(i.method, i.params["rank"]) for i in r.ir.instances()] == [("vera", 8)]
    finally:
        unregister("vera")
