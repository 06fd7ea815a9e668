"""peft interop for (IA)³, both ways, on the packaged MiniLM (real weights), padded batches: an IA3 adapter
made and saved by peft itself (random, non-identity vectors) imports (`peltc import`) and gives peft's
logits; a peltc (IA)³ run exports (`export_peft`) and loads in peft with peltc's logits (a scalar-gated
instance on the same module included: its vector is 1 + σ(w)·(l − 1), multiplied in)."""

from __future__ import annotations

import json

import pytest
import torch

peft = pytest.importorskip("peft")

from peltc.cli import main  # noqa: E402
from peltc.errors import UsageError  # noqa: E402

TARGETS = r".*encoder\.layer\.\d+\.(attention\.self\.(key|value)|output\.dense)"
FEEDFORWARD = r".*encoder\.layer\.\d+\.output\.dense"


def _batch():
    from transformers import AutoTokenizer

    from peltc.compiler.archs import packaged_model_dir
    tok = AutoTokenizer.from_pretrained(str(packaged_model_dir()))
    return tok(["a great film with a dull end", "dull", "great"], padding=True, return_tensors="pt")


def _randomise(model, names: str, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if names in n or "classifier" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.4)


def test_peft_ia3_adapter_imports_with_peft_logits(tmp_path, capfd, packaged_minilm):
    _base = packaged_minilm
    from peft import IA3Config, get_peft_model

    from peltc.runtime.serve import load_run
    pm = get_peft_model(_base(), IA3Config(task_type="SEQ_CLS", target_modules=TARGETS,
                                           feedforward_modules=FEEDFORWARD))
    _randomise(pm, "ia3_l")
    d = tmp_path / "peft"
    pm.save_pretrained(str(d))
    data = tmp_path / "reviews.csv"
    data.write_text("review,sentiment\n" + "".join(f"film {i} was {w},{s}\n" for i in range(10)
                                                   for w, s in (("great", "pos"), ("dull", "neg"))))
    spec, run = tmp_path / "imported.pelt", tmp_path / "run"
    assert main(["import", str(d), "-o", str(spec), "--out", str(run), "--task", f"csv:{data}",
                 "--text-column", "review", "--label-column", "sentiment"]) == 0, capfd.readouterr().err
    text = spec.read_text()
    assert "ia3 ia3 {\n  at layers[*].{attention.key, attention.value, ffn.down}\n}" in text
    model, _, _, _, _ = load_run(run)
    b = _batch()
    with torch.no_grad():
        ours, theirs = model.eval()(**b).logits, pm.eval()(**b).logits
    assert (ours - theirs).abs().max() <= 1e-5
    assert (theirs - _base()(**b).logits).abs().max() > 1e-3          # the vectors matter


def test_ia3_run_exports_and_loads_in_peft(tmp_path, packaged_minilm):
    _base = packaged_minilm
    from peft import PeftModel

    import peltc
    from peltc.api import save_adapter
    from peltc.compiler.torch.peft_export import export_peft
    model = _base()
    peltc.compile_model("ia3 v { at layers[*].attention.{key, value}, layers[*].ffn.down }\n"
                        "ia3 s { at layers[0..2].attention.value gate scalar }", model)
    _randomise(model, "pelt_ia3")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".gate." in n:
                p.fill_(0.7)
    save_adapter(model, tmp_path / "adapter")
    r = export_peft(tmp_path / "adapter", tmp_path / "peft")
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "IA3" and len(cfg["target_modules"]) == 18 and len(cfg["feedforward_modules"]) == 6
    assert r.left_out == []
    pm = PeftModel.from_pretrained(_base(), str(tmp_path / "peft")).eval()
    b = _batch()
    with torch.no_grad():
        assert (pm(**b).logits - model.eval()(**b).logits).abs().max() <= 1e-5
    gated = _base()
    peltc.compile_model("ia3 v { at layers[*].ffn.down gate sigmoid(layer.input) }", gated)
    save_adapter(gated, tmp_path / "gated")
    with pytest.raises(UsageError) as e:
        export_peft(tmp_path / "gated", tmp_path / "peft2")
    assert e.value.diagnostic.code == "U120"
