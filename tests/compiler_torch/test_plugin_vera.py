"""A method defined only in a test file (tests/plugins/vera.py, VeRA) goes through the one method registry:
check (counts, did-you-mean), render, compile, gates, overrides, `lr`, a train step, merge, save / load,
a reload in a fresh process, several runs on one base, peft's VeRA with identical weights — loaded by
`load_plugin` (the API behind --plugin), by `import "vera.py"` in a spec, and by an entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch_models import changed, logits, perturb, tiny_model

from peltc.api import compile_model, load_adapter, load_runs, save_adapter
from peltc.compiler.methods import unregister
from peltc.compiler.pipeline import build_ir
from peltc.errors import ArtifactError, SpecError
from peltc.methods import METHODS, load_plugin

ROOT = Path(__file__).resolve().parents[2]
VERA = ROOT / "tests" / "plugins" / "vera.py"
SPEC = "vera v { at layers[*].attention.{query, value} rank 4 }\n"


@pytest.fixture
def vera():
    load_plugin(VERA)
    yield METHODS["vera"]
    unregister("vera")


def _config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    tiny_model("bert").save_pretrained(d)
    return d


def test_check_counts_and_did_you_mean(vera, tmp_path):
    cfg = tiny_model("bert").config.to_dict()
    r = build_ir(SPEC + "lora l { at layers[0].attention.query rank 2 }\n", model=cfg)
    own = {a.instance: 0 for a in r.ir.attachments()}
    for a in r.ir.attachments():
        own[a.instance] += a.trainable
    assert own["v"] == 4 * (4 + 32)                 # r + out per linear, 2 layers × 2 linears
    assert own["l"] == 2 * (32 + 32)                 # the built-in beside it, unchanged
    with pytest.raises(SpecError) as e:
        build_ir("verra v { at layers[*].attention.query }\n", model=cfg)
    assert e.value.errors[0].code == "E101" and "vera" in e.value.errors[0].help
    with pytest.raises(SpecError) as e:
        build_ir("vera v { at layers[*].attention.query rnak 4 }\n", model=cfg)
    assert e.value.errors[0].code == "E102" and "rank" in e.value.errors[0].help
    with pytest.raises(SpecError) as e:
        build_ir("vera v { at layers[*].ffn.output }\n", model=cfg)
    assert e.value.errors[0].code == "E108"


def test_import_in_spec_render_and_cli(tmp_path):
    shutil.copy(VERA, tmp_path / "vera.py")
    spec = tmp_path / "s.pelt"
    spec.write_text('import "vera.py"\n' + SPEC, encoding="utf-8")
    cfg = _config_dir(tmp_path)
    try:
        r = build_ir(spec.read_text(), str(spec), model=tiny_model("bert").config.to_dict())
        assert {a.method for a in r.ir.attachments()} == {"vera"}
        from peltc.compiler.render import to_dot
        dot = to_dot(r.ir).source
        assert "#5b3cc4" in dot and "r 4" in dot
    finally:
        unregister("vera")
    peltc = [sys.executable, "-m", "peltc"]
    out = subprocess.run([*peltc, "check", str(spec), "--model", str(cfg / "config.json")], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "144" in out.stdout, out.stderr
    plain = tmp_path / "plain.pelt"
    plain.write_text(SPEC, encoding="utf-8")
    out = subprocess.run([*peltc, "check", str(plain), "--model", str(cfg / "config.json"), "--plugin", str(VERA)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "144" in out.stdout, out.stderr


@pytest.mark.parametrize("body,code", [
    (None, "U170"),
    ("raise ValueError('boom')\n", "U171"),
    ("from peltc.methods import Method\nX = Method('x', 'no count', {}, frozenset({'ffn.up'}), build=len)\n", "U172"),
    ("x = 1\n", "U172"),
    ("from peltc.methods import Method\nX = Method('adapter', 'd', {}, frozenset({'ffn.up'}), count=len, build=len)\n",
     "U173"),
])
def test_bad_plugins_on_the_command_line(tmp_path, body, code):
    f = tmp_path / "bad.py"
    if body is not None:
        f.write_text(body, encoding="utf-8")
    spec = tmp_path / "s.pelt"
    spec.write_text("lora l { at layers[*].attention.query }\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "peltc", "check", str(spec), "--model", "none", "--plugin", str(f)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and code in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_compile_identity_gates_train_merge(vera, batch):
    m = tiny_model("bert")
    base = logits(m, batch)
    spec = ("vera v { at layers[*].attention.{query, value} rank 4 gate scalar lr 0.01\n"
            "  layers[1] { rank 6 gate const(0.5) } }\n")
    compile_model(spec, m)
    assert torch.equal(logits(m, batch), base)              # b = 0: identity at init
    trained = {n for n, p in m.named_parameters() if p.requires_grad and "pelt_" in n}
    assert any(n.endswith("fn.d") for n in trained) and not any(n.endswith((".A", ".B")) for n in trained)
    assert m.bert.encoder.layer[1].attention.self.query.pelt_delta["v"].fn.d.shape == (6,)
    m.train()
    m(**batch, labels=torch.tensor([0, 1, 0])).loss.backward()
    b = m.bert.encoder.layer[0].attention.self.value.pelt_delta["v"].fn.b
    assert b.grad is not None and b.grad.abs().sum() > 0
    m.eval()
    perturb(m)
    before = logits(m, batch)
    from peltc.compiler.torch.rewrite import merge
    merged = merge(m)
    assert len(merged) == 4 and not any("pelt_delta" in n for n, _ in m.named_modules())
    assert torch.allclose(logits(m, batch), before, atol=1e-6)


def test_save_load_runs_and_missing_plugin(vera, batch, tmp_path):
    m = tiny_model("bert")
    compile_model(SPEC, m)
    perturb(m)
    want = logits(m, batch)
    art = save_adapter(m, tmp_path / "art")
    import json
    rec = json.loads((art / "manifest.json").read_text())["plugins"]
    assert rec[0]["method"] == "vera" and rec[0]["origin"] == str(VERA.resolve()) and len(rec[0]["sha256"]) == 64
    m2 = tiny_model("bert")
    load_adapter(m2, art)
    assert torch.allclose(logits(m2, batch), want, atol=1e-6)
    runs = load_runs([art, art], tiny_model("bert"))
    with torch.no_grad():
        out = runs([0, 1, 0], **batch).logits
    assert torch.allclose(out, want, atol=1e-6)
    unregister("vera")
    with pytest.raises(ArtifactError) as e:
        load_adapter(tiny_model("bert"), art)
    assert e.value.diagnostic.code == "A030" and "vera" in str(e.value)
    load_plugin(VERA)


_FRESH = r"""
import sys, torch
sys.path.insert(0, sys.argv[4])
from torch_models import tiny_batch, tiny_model
from peltc.api import load_adapter
if sys.argv[1] != "-":
    from peltc.methods import load_plugin
    load_plugin(sys.argv[1])
m = tiny_model("bert")
try:
    load_adapter(m, sys.argv[2])
except Exception as e:
    sys.exit(f"{getattr(getattr(e, 'diagnostic', None), 'code', None)}: {e}")
with torch.no_grad():
    torch.save(m(**tiny_batch()).logits, sys.argv[3])
"""


def _fresh(plugin: str, art: Path, out: Path, env=None):
    return subprocess.run([sys.executable, "-c", _FRESH, plugin, str(art), str(out), str(Path(__file__).parent)],
                          capture_output=True, text=True, env=env)


def test_reload_in_fresh_process_plugin_and_entry_point(vera, batch, tmp_path):
    m = tiny_model("bert")
    compile_model(SPEC, m)
    perturb(m)
    want = logits(m, batch)
    art = save_adapter(m, tmp_path / "art")
    r = _fresh(str(VERA), art, tmp_path / "a.pt")
    assert r.returncode == 0, r.stderr
    assert torch.allclose(torch.load(tmp_path / "a.pt"), want, atol=1e-6)
    r = _fresh("-", art, tmp_path / "b.pt")                     # no plug-in: A030 naming it
    assert r.returncode != 0 and "A030" in r.stderr and "vera" in r.stderr
    changed = tmp_path / "vera_changed.py"                        # the plug-in file edited since: A031
    changed.write_text(VERA.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    r = _fresh(str(changed), art, tmp_path / "d.pt")
    assert r.returncode != 0 and "A031" in r.stderr and str(changed) in r.stderr
    same = tmp_path / "vera_copy.py"                               # a copy elsewhere, same content: loads
    shutil.copy(VERA, same)
    r = _fresh(str(same), art, tmp_path / "e.pt")
    assert r.returncode == 0, r.stderr
    site = tmp_path / "site"                                       # an installed package with the entry point
    site.mkdir()
    shutil.copy(VERA, site / "peltc_vera_ep.py")
    dist = site / "peltc_vera_ep-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: peltc-vera-ep\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[peltc.methods]\nvera = peltc_vera_ep:VERA\n")
    import os
    env = {**os.environ, "PYTHONPATH": str(site)}
    unregister("vera")
    r = _fresh("-", art, tmp_path / "c.pt", env=env)
    load_plugin(VERA)
    assert r.returncode == 0, r.stderr
    assert torch.allclose(torch.load(tmp_path / "c.pt"), want, atol=1e-6)
    spec = tmp_path / "ep.pelt"
    spec.write_text(SPEC, encoding="utf-8")      # no import: the method is found through the entry point
    out = subprocess.run([sys.executable, "-m", "peltc", "check", str(spec), "--model", "none"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "vera" in out.stdout, out.stderr


def test_equals_peft_vera(vera, batch):
    from peft import VeraConfig, get_peft_model
    ref = get_peft_model(tiny_model("bert"), VeraConfig(r=4, target_modules=["query", "value"], d_initial=0.1))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "vera_lambda" in n:
                p.copy_(torch.randn(p.shape, generator=g))
    m = tiny_model("bert")
    compile_model(SPEC, m)
    peft_layers = {n: mod for n, mod in ref.named_modules() if hasattr(mod, "vera_lambda_d")}
    assert sum(p.numel() for n, p in ref.named_parameters() if "vera_lambda" in n) == \
        sum(p.numel() for n, p in m.named_parameters() if "pelt_delta" in n)
    with torch.no_grad():
        for n, mod in peft_layers.items():
            ours = m.get_submodule(n.replace("base_model.model.", "")).pelt_delta["v"].fn
            fin, fout = mod.in_features, mod.out_features
            ours.A.copy_(mod.vera_A["default"][:, :fin])
            ours.B.copy_(mod.vera_B["default"][:fout, :])
            ours.d.copy_(mod.vera_lambda_d["default"])
            ours.b.copy_(mod.vera_lambda_b["default"])
    ref.eval()
    assert torch.allclose(logits(m, batch), logits(ref, batch), atol=1e-5)


def test_grid_hands_its_plugins_to_each_run(vera, tmp_path):
    from peltc.runtime.grid import _command
    cmd = _command("s.pelt", "sst2", "16", 0, tmp_path / "run", None, None, {}, 100)
    assert cmd[cmd.index("--plugin") + 1] == str(VERA.resolve())


def test_sigmoid_gate_and_disable(vera, batch):
    from peltc.compiler.torch.gate import read_gates
    from peltc.compiler.torch.rewrite import disable
    m = tiny_model("bert")
    base = logits(m, batch)
    compile_model("vera v { at layers[*].ffn.up rank 4 gate sigmoid(attention.output) }\n", m)
    perturb(m)
    out = logits(m, batch)
    assert changed(out, base)
    assert {k[0] for k in read_gates(m)} == {"v"} and all(g.shape == (3,) for g in read_gates(m).values())
    assert disable(m, "v") == 2
    assert torch.allclose(logits(m, batch), base, atol=1e-6)
