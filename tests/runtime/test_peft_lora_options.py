"""peft interop for LoRA's options, against the real `peft` package: rsLoRA and DoRA export to
``use_rslora`` / ``use_dora`` adapters that peft loads with peltc's logits, and adapters that peft made
and saved (random, non-identity weights) import and give peft's logits; PiSSA / OLoRA runs export as a
plain delta on the original base (peft's conversion: rank 2r); what peft cannot hold is refused."""

from __future__ import annotations

import json

import pytest
import torch

peft = pytest.importorskip("peft")

from peltc.cli import main  # noqa: E402
from peltc.compiler.torch.peft_export import export_peft  # noqa: E402
from peltc.errors import UsageError  # noqa: E402

TOL = 1e-5
AT = "layers[*].attention.{query, value}, layers[0].ffn.up"


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _perturb(model, seed: int = 0, std: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)


def _base(d):
    from transformers import AutoModelForSequenceClassification
    return AutoModelForSequenceClassification.from_pretrained(str(d), num_labels=2).eval()


def _artifact(tmp_path, base_dir, members: str):
    import peltc
    from peltc.api import load_adapter, save_adapter
    model = _base(base_dir)
    peltc.compile_model(f"lora l {{\n  at {AT}\n  rank 4\n  alpha 8\n  {members}\n}}\nhead {{\n  pool pooler\n}}\n",
                        model)
    _perturb(model)
    save_adapter(model, tmp_path / "artifact")
    fresh = _base(base_dir)
    load_adapter(fresh, tmp_path / "artifact")
    return tmp_path / "artifact", fresh


def _peft_logits(base_dir, peft_dir, batch):
    return _logits(peft.PeftModel.from_pretrained(_base(base_dir), str(peft_dir)), batch)


@pytest.mark.parametrize("members, rank, flags", [
    ("scaling rs", 4, {"use_rslora": True, "use_dora": False}),
    ("dora true", 4, {"use_rslora": False, "use_dora": True}),
    ("dora true\n  scaling rs", 4, {"use_rslora": True, "use_dora": True}),
    ("init pissa", 8, {"use_dora": False}),
    ("init olora\n  scaling rs", 8, {"use_rslora": True}),
    ("init pissa\n  gate const(0.5)", 8, {"use_rslora": False}),
], ids=["rslora", "dora", "dora-rs", "pissa", "olora-rs", "pissa-const"])
def test_export_loads_in_peft_with_peltc_logits(tmp_path, tiny_dir, members, rank, flags):
    art, ours = _artifact(tmp_path, tiny_dir, members)
    out = tmp_path / "peft"
    assert main(["export", str(art), "--to", "peft", str(out)]) == 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == rank and {k: cfg[k] for k in flags} == flags
    batch = _batch(ours.config.vocab_size)
    mine = _logits(ours, batch)
    assert (_peft_logits(tiny_dir, out, batch) - mine).abs().max() <= TOL
    assert (_logits(_base(tiny_dir), batch) - mine).abs().max() > 1e-3


def test_export_refuses_what_peft_dora_cannot_hold(tmp_path, tiny_dir):
    art, _ = _artifact(tmp_path, tiny_dir, "dora true\n  gate scalar")
    with pytest.raises(UsageError) as e:
        export_peft(art, tmp_path / "peft")
    assert e.value.diagnostic.code == "U120" and "DoRA under a gate" in str(e.value)


@pytest.mark.parametrize("kwargs", [
    dict(r=4, lora_alpha=8, use_dora=True, target_modules=["query", "value"]),
    dict(r=2, lora_alpha=3, use_dora=True, use_rslora=True, target_modules=["key", "intermediate.dense"]),
], ids=["dora", "dora-rslora"])
def test_import_a_peft_dora_adapter(tmp_path, tiny_dir, kwargs):
    from peltc.runtime.serve import load_run
    pm = peft.get_peft_model(_base(tiny_dir), peft.LoraConfig(task_type="SEQ_CLS", **kwargs))
    _perturb(pm)
    d = tmp_path / "from-peft"
    pm.save_pretrained(str(d))
    spec, run = tmp_path / "imported.pelt", tmp_path / "run"
    assert main(["import", str(d), "-o", str(spec), "--model", str(tiny_dir), "--out", str(run),
                 "--task", "glue/rte"]) == 0
    text = spec.read_text()
    assert "dora true" in text and ("scaling rs" in text) == bool(kwargs.get("use_rslora"))
    batch = _batch(pm.config.vocab_size)
    model = load_run(run)[0]
    assert (_logits(model, batch) - _logits(pm, batch)).abs().max() <= TOL
    assert main(["export", str(run), "--to", "peft", str(tmp_path / "again")]) == 0
    assert (_peft_logits(tiny_dir, tmp_path / "again", batch) - _logits(pm, batch)).abs().max() <= TOL


def test_import_refuses_an_unconverted_pissa_adapter(tmp_path, tiny_dir):
    from peltc.compiler.archs import load_config
    from peltc.compiler.torch.peft_io import read_peft
    from peltc.errors import ArtifactError
    pm = peft.get_peft_model(_base(tiny_dir), peft.LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query"],
                                                               init_lora_weights="pissa"))
    pm.save_pretrained(str(tmp_path / "p"))
    with pytest.raises(ArtifactError) as e:
        read_peft(tmp_path / "p", load_config(str(tiny_dir)).config)
    assert e.value.diagnostic.code == "A021" and "pissa" in str(e.value)
