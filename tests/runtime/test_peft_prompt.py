"""peft interop for prompt tuning (`compiler/torch/peft_prompt.py`), against the real `peft` package: a
prompt-tuning (and a P-tuning) adapter made and saved by peft imports into a run folder that computes
peft's logits; a peltc prompt run exports to an adapter that peft loads with peltc's logits; what peft's
prompt format cannot hold is refused (U120)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

peft = pytest.importorskip("peft")

from peltc.cli import main  # noqa: E402
from peltc.errors import UsageError  # noqa: E402

TOL = 1e-5


def _base(d, num_labels: int = 2):
    from transformers import AutoModelForSequenceClassification
    return AutoModelForSequenceClassification.from_pretrained(str(d), num_labels=num_labels).eval()


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _randomise(model, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("kind", ["prompt", "ptuning"])
def test_a_peft_adapter_imports_with_peft_logits_and_exports_back(tmp_path, tiny_dir, kind):
    from peltc.runtime.serve import load_run
    cfg = (peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4) if kind == "prompt" else
           peft.PromptEncoderConfig(task_type="SEQ_CLS", num_virtual_tokens=4, encoder_hidden_size=8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(_base(tiny_dir), cfg)
    _randomise(pm)
    d = tmp_path / "from-peft"
    pm.save_pretrained(str(d))
    from peft import PeftModel
    theirs = PeftModel.from_pretrained(_base(tiny_dir), str(d))      # what peft itself loads back
    batch = _batch(pm.config.vocab_size)
    want = _logits(theirs, batch)
    spec, run = tmp_path / "imported.pelt", tmp_path / "run"
    assert main(["import", str(d), "-o", str(spec), "--model", str(tiny_dir), "--out", str(run),
                 "--task", "glue/rte"]) == 0
    text = spec.read_text()
    assert "prompt soft {\n  length 4\n}" in text and "head {\n  pool pooler\n}" in text
    model = load_run(run)[0]
    assert (_logits(model, batch) - want).abs().max() <= TOL
    assert (want - _logits(_base(tiny_dir), batch)).abs().max() > 1e-3
    assert main(["export", str(run), "--to", "peft", str(tmp_path / "again")]) == 0
    again = PeftModel.from_pretrained(_base(tiny_dir), str(tmp_path / "again"))
    assert (_logits(again, batch) - want).abs().max() <= TOL


def _artifact(tmp_path, base_dir, spec: str):
    import peltc
    from peltc.api import save_adapter
    model = _base(base_dir)
    peltc.compile_model(spec, model)
    _randomise(model)
    art = tmp_path / "artifact"
    save_adapter(model, art)
    return art, model


def test_a_peltc_prompt_exports_to_peft_with_its_gate_folded(tmp_path, tiny_dir):
    from peft import PeftModel
    art, model = _artifact(tmp_path, tiny_dir, "prompt p {\n  length 3\n  encoder mlp\n  encoder_hidden 8\n"
                                               "  gate scalar(init=0.5)\n}\nhead {\n  pool pooler\n}\n")
    batch = _batch(model.config.vocab_size)
    ours = _logits(model, batch)
    out = tmp_path / "peft"
    assert main(["export", str(art), "--to", "peft", str(out)]) == 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["num_virtual_tokens"] == 3 and cfg["token_dim"] == 64
    theirs = _logits(PeftModel.from_pretrained(_base(tiny_dir), str(out)), batch)
    assert (theirs - ours).abs().max() <= TOL


def test_export_refuses_what_the_prompt_format_cannot_hold(tmp_path, tiny_dir):
    from peltc.compiler.torch.peft_export import export_peft
    art, _ = _artifact(tmp_path, tiny_dir, "prompt p { length 3 }\nlora l { at layers[*].attention.query rank 2 }\n"
                                           "head { pool mean }\n")
    with pytest.raises(UsageError) as e:
        export_peft(art, tmp_path / "peft")
    assert e.value.diagnostic.code == "U120"
    assert "l (lora)" in str(e.value) and "pool mean" in str(e.value)
    assert not (tmp_path / "peft").exists()
