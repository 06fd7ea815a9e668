"""Export to / import from peft's LoRA format, checked against the real `peft` package: what peltc writes
loads with ``PeftModel.from_pretrained`` and computes peltc's logits; what peft writes imports into a
run folder that computes peft's logits through peltc's own loading path (``load_run``)."""

from __future__ import annotations

import json

import pytest
import torch

peft = pytest.importorskip("peft")

from peltc.cli import main  # noqa: E402
from peltc.errors import ArtifactError, UsageError  # noqa: E402

TOL = 1e-5

LORA_SPEC = """
lora qv {
  at layers[*].attention.{query, value}
  rank 4
  alpha 12
  layers[1] {
    rank 2
  }
}

lora up {
  at layers[0].ffn.up
  rank 3
  gate const(0.7)
}

lora out {
  at layers[1].attention.out
  rank 2
  gate scalar(init=0.5)
}

head {
  pool pooler
}
"""


def _batch(vocab: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _perturb(model, seed: int = 0, std: float = 0.3) -> None:
    """Every trained tensor (LoRA A and B, gates, the head) gets a random value, so B ≠ 0 matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)


def _base(d, num_labels: int = 2):
    from transformers import AutoModelForSequenceClassification
    return AutoModelForSequenceClassification.from_pretrained(str(d), num_labels=num_labels).eval()


def _artifact(tmp_path, base_dir, spec: str, seed: int = 0):
    """Compile ``spec`` onto the base model, randomise what it trains, save the artifact; returns
    (artifact dir, peltc's logits on a fresh base model with the artifact loaded, batch)."""
    import peltc
    from peltc.api import load_adapter, save_adapter
    model = _base(base_dir)
    peltc.compile_model(spec, model)
    _perturb(model, seed)
    art = tmp_path / "artifact"
    save_adapter(model, art)
    fresh = _base(base_dir)
    load_adapter(fresh, art)
    batch = _batch(model.config.vocab_size)
    return art, _logits(fresh, batch), batch, fresh


def _peft_logits(base_dir, peft_dir, batch, num_labels: int = 2):
    from peft import PeftModel
    pm = PeftModel.from_pretrained(_base(base_dir, num_labels), str(peft_dir))
    return _logits(pm, batch)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    """Tiny random RoBERTa and DistilBERT classifiers saved to folders: heads of several modules
    (RoBERTa's classifier.dense + out_proj; DistilBERT's pre_classifier + classifier)."""
    import transformers
    out = {}
    for fam, cfg in {
        "roberta": transformers.RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=4, intermediate_size=37, pad_token_id=1,
                                              max_position_embeddings=64),
        "distilbert": transformers.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                                    max_position_embeddings=64),
    }.items():
        transformers.set_seed(0)
        d = tmp_path_factory.mktemp(f"tiny-{fam}")
        transformers.AutoModelForSequenceClassification.from_config(cfg).save_pretrained(d)
        out[fam] = d
    return out


# --- export ------------------------------------------------------------------------------------------

def test_export_per_layer_rank_alpha_const_and_scalar_gate_loads_in_peft(tmp_path, tiny_dir, capsys):
    art, ours, batch, _ = _artifact(tmp_path, tiny_dir, LORA_SPEC)
    out = tmp_path / "peft"
    assert main(["export", str(art), "--to", "peft", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "SEQ_CLS" and cfg["bias"] == "none"
    assert cfg["modules_to_save"] == ["classifier"]
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 12           # the most common (rank, alpha): qv in layer 0
    assert cfg["rank_pattern"] == {"bert.encoder.layer.1.attention.self.query": 2,
                                   "bert.encoder.layer.1.attention.self.value": 2,
                                   "bert.encoder.layer.1.attention.output.dense": 2,
                                   "bert.encoder.layer.0.intermediate.dense": 3}
    # qv in layer 1: s = 12 / 2 = 6 → alpha 12 (the default); const(0.7) at rank 3 → 2.1; scalar → 2σ(w)
    assert set(cfg["alpha_pattern"]) == {"bert.encoder.layer.0.intermediate.dense",
                                         "bert.encoder.layer.1.attention.output.dense"}
    assert cfg["alpha_pattern"]["bert.encoder.layer.0.intermediate.dense"] == pytest.approx(2.1)
    assert "bert.encoder.layer.1.output.dense" not in cfg["target_modules"]   # no suffix matching surprises
    theirs = _peft_logits(tiny_dir, out, batch)
    assert (theirs - ours).abs().max() <= TOL
    base = _logits(_base(tiny_dir), batch)
    assert (theirs - base).abs().max() > 1e-3                  # the adapter does something


def test_export_sums_two_loras_on_one_linear(tmp_path, tiny_dir):
    spec = LORA_SPEC + """
lora q2 {
  at layers[0].attention.query
  rank 2
  alpha 5
}
"""
    art, ours, batch, _ = _artifact(tmp_path, tiny_dir, spec, seed=3)
    from peltc.compiler.torch.peft_export import export_peft
    r = export_peft(art, tmp_path / "peft")
    assert r.config["rank_pattern"]["bert.encoder.layer.0.attention.self.query"] == 6
    assert any("summed" in n for n in r.notes)
    assert (_peft_logits(tiny_dir, tmp_path / "peft", batch) - ours).abs().max() <= TOL


@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_export_other_families_heads_of_several_modules(tmp_path, family_dirs, family):
    d = family_dirs[family]
    spec = "lora qv {\n  at layers[*].attention.{query, value, out}, layers[-1].ffn.down\n  rank 2\n  alpha 3\n}\n" \
           "head {\n  pool pooler\n}\n"
    art, ours, batch, _ = _artifact(tmp_path, d, spec)
    from peltc.compiler.torch.peft_export import export_peft
    r = export_peft(art, tmp_path / "peft")
    assert r.config["modules_to_save"] == {"roberta": ["classifier"],
                                           "distilbert": ["pre_classifier", "classifier"]}[family]
    assert (_peft_logits(d, tmp_path / "peft", batch) - ours).abs().max() <= TOL


def test_export_refuses_a_sigmoid_gate_and_mean_pooling(tmp_path, tiny_dir, capsys):
    spec = """
lora qv {
  at layers[*].attention.{query, value}
  gate sigmoid(layer.input)
}

head {
  pool mean
}
"""
    art, *_ = _artifact(tmp_path, tiny_dir, spec)
    from peltc.compiler.torch.peft_export import export_peft
    with pytest.raises(UsageError) as e:
        export_peft(art, tmp_path / "peft")
    assert e.value.diagnostic.code == "U120"
    msg = str(e.value)
    assert "qv" in msg and "sigmoid" in msg and "pool mean" in msg
    assert not (tmp_path / "peft").exists()
    assert main(["export", str(art), "--to", "peft", str(tmp_path / "peft")]) == 2
    err = capsys.readouterr().err
    assert "[U120]" in err and "--partial" in err
    # nothing else is left to export: even --partial refuses, saying why
    with pytest.raises(UsageError) as e:
        export_peft(art, tmp_path / "peft", partial=True)
    assert e.value.diagnostic.code == "U121"


def test_partial_exports_the_lora_and_lists_the_adapter(tmp_path, tiny_dir, capsys):
    spec = """
lora qv {
  at layers[*].attention.{query, value}
  rank 4
}

adapter ad {
  at layers[*].ffn.output
  size 8
}

head {
  pool pooler
}
"""
    art, _, batch, fresh = _artifact(tmp_path, tiny_dir, spec)
    out = tmp_path / "peft"
    with pytest.raises(UsageError):
        from peltc.compiler.torch.peft_export import export_peft
        export_peft(art, out)
    assert main(["export", str(art), "--to", "peft", str(out), "--partial"]) == 0
    said = capsys.readouterr().out
    assert "left out: ad (adapter)" in said
    from peltc.compiler.torch.rewrite import disable
    disable(fresh, "ad")                                      # peltc's model without the adapter
    assert (_peft_logits(tiny_dir, out, batch) - _logits(fresh, batch)).abs().max() <= TOL
    # a second export over the first is fine; a folder holding anything else is refused
    assert main(["export", str(art), "--to", "peft", str(out), "--partial"]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(art), "--to", "peft", str(out), "--partial"]) == 2
    assert "[U122]" in capsys.readouterr().err


# --- import ------------------------------------------------------------------------------------------

def _peft_adapter(tmp_path, base_dir, config_kwargs, seed: int = 0, num_labels: int = 2):
    """An adapter written by peft itself: get_peft_model, random (non-zero) A, B and head, save_pretrained."""
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(_base(base_dir, num_labels), LoraConfig(task_type="SEQ_CLS", **config_kwargs))
    _perturb(model, seed)
    d = tmp_path / "from-peft"
    model.save_pretrained(str(d))
    return d, model.eval()


@pytest.mark.parametrize("kwargs", [
    dict(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "value", "intermediate.dense"],
         rank_pattern={"bert.encoder.layer.1.attention.self.value": 2},
         alpha_pattern={"bert.encoder.layer.0.intermediate.dense": 5}),
    dict(r=4, lora_alpha=6, use_rslora=True, target_modules=["key", "attention.output.dense"]),
], ids=["patterns", "rslora"])
def test_import_a_peft_adapter_into_a_run_folder(tmp_path, tiny_dir, kwargs, capsys):
    from safetensors.torch import load_file

    from peltc.compiler.pipeline import check_file
    from peltc.runtime.serve import load_run
    d, pm = _peft_adapter(tmp_path, tiny_dir, kwargs)
    assert any(k.startswith("base_model.model.classifier.") for k in load_file(str(d / "adapter_model.safetensors")))
    spec, run = tmp_path / "imported.pelt", tmp_path / "run"
    assert main(["import", str(d), "-o", str(spec), "--model", str(tiny_dir), "--out", str(run),
                 "--task", "glue/rte"]) == 0
    text = spec.read_text()
    assert "head {\n  pool pooler\n}" in text
    ir = check_file(spec).ir
    groups = {(a.params["rank"], a.params["alpha"]) for a in ir.attachments()}
    if "rank_pattern" in kwargs:
        assert groups == {(4, 8.0), (2, 8.0), (4, 5.0)}
        assert "at layers[*].attention.query, layers[0].attention.value" in text
    else:
        assert groups == {(4, 6.0)} and "scaling rs" in text     # rsLoRA stays rsLoRA: s = alpha / sqrt(r)
    batch = _batch(pm.config.vocab_size)
    model, _, task, manifest, _ = load_run(run)
    assert task.name == "rte"
    assert (_logits(model, batch) - _logits(pm, batch)).abs().max() <= TOL
    # and back: the imported run exports to an adapter peft loads with the same logits
    assert main(["export", str(run), "--to", "peft", str(tmp_path / "again")]) == 0
    assert (_peft_logits(tiny_dir, tmp_path / "again", batch) - _logits(pm, batch)).abs().max() <= TOL


def test_import_roberta_head_of_two_linears(tmp_path, family_dirs):
    d, pm = _peft_adapter(tmp_path, family_dirs["roberta"], dict(r=2, lora_alpha=4, target_modules=["query"]))
    run = tmp_path / "run"
    assert main(["import", str(d), "--model", str(family_dirs["roberta"]), "--out", str(run),
                 "--task", "glue/rte"]) == 0
    from peltc.runtime.serve import load_run
    model = load_run(run)[0]
    batch = _batch(pm.config.vocab_size)
    assert (_logits(model, batch) - _logits(pm, batch)).abs().max() <= TOL


def test_import_refusals(tmp_path, tiny_dir, capsys):
    from peltc.compiler.archs import load_config
    from peltc.compiler.torch.peft_io import read_peft
    cfg = load_config(str(tiny_dir)).config
    # LoRA on the pooler: no canonical point
    d, _ = _peft_adapter(tmp_path, tiny_dir, dict(r=2, target_modules=["query", "pooler.dense"]))
    with pytest.raises(ArtifactError) as e:
        read_peft(d, cfg)
    assert e.value.diagnostic.code == "A021" and "bert.pooler.dense" in str(e.value)
    assert main(["import", str(d), "-o", str(tmp_path / "x.pelt"), "--model", str(tiny_dir)]) == 3
    assert "[A021]" in capsys.readouterr().err and not (tmp_path / "x.pelt").exists()
    # a run folder needs the task; the head's width must match it
    ok = tmp_path / "ok"
    _peft_adapter(ok, tiny_dir, dict(r=2, target_modules=["query"]))
    ok = ok / "from-peft"
    assert main(["import", str(ok), "--model", str(tiny_dir), "--out", str(tmp_path / "run")]) == 2
    assert "[U123]" in capsys.readouterr().err
    assert main(["import", str(ok), "--model", str(tiny_dir), "--out", str(tmp_path / "run"),
                 "--task", "glue/mnli"]) == 2
    assert "3" in capsys.readouterr().err and not (tmp_path / "run").exists()
    # not a peft folder
    assert main(["import", str(tmp_path), "-o", str(tmp_path / "y.pelt"), "--model", str(tiny_dir)]) == 3
    assert "[A020]" in capsys.readouterr().err
