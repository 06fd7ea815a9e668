"""Several trained runs on one base (`peltc.load_runs`, `rewrite.attach_runs`): a batch mixing examples of
runs of different methods — LoRA, adapters (sequential, parallel), UniPELT APL (prefix + gates), BitFit —,
heads of different sizes and poolings, with padding, gives each example the logits its run's own model
gives it (≤ 1e-5), on sdpa and eager; the routed model refuses merge, save, a missing route; bad runs are
one-line errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch_models import perturb, tiny_batch, tiny_config, tiny_decoder

import peltc
from peltc.api import load_adapter, load_runs, save_adapter
from peltc.compiler.torch.compiled import compiled
from peltc.compiler.torch.rewrite import merge
from peltc.errors import ArtifactError, CompileError, UsageError

SPECS = {
    "lora": "lora qv {\n  at layers[*].attention.{query, value}\n  rank 4\n  alpha 8\n}\n",
    "adapter": "adapter ad {\n  at layers[*].ffn.output\n  size 8\n}\nhead {\n  pool mean\n}\n",
    "apl": ("adapter ad {\n  at layers[*].ffn.output\n  size 8\n  gate sigmoid(ffn.output)\n}\n"
            "prefix kv {\n  at layers[*].attention\n  length 3\n  mlp 16\n  gate sigmoid(layer.input)\n}\n"
            "lora qv {\n  at layers[*].attention.{query, value}\n  rank 4\n  gate sigmoid(layer.input)\n}\n"),
    "bitfit": "bitfit biases {\n  at all\n}\nhead {\n  pool mean\n}\n",
    "ia3": "ia3 v {\n  at layers[*].attention.{key, value}, layers[*].ffn.down\n  gate scalar\n}\n",
    "loreft": "loreft f {\n  at layers[*].output\n  rank 2\n  first 2\n  last 1\n  gate sigmoid(layer.input)\n}\n",
    "parallel": ("adapter par {\n  at layers[*].attention.output\n  size 6\n  placement parallel\n"
                 "  gate sigmoid(layer.input, pool=first)\n}\n"
                 "prefix p2 {\n  at layers[1].attention\n  length 5\n}\n"
                 "bitfit b {\n  at layers[0].attention\n  gate scalar\n}\n"),
}

_BASES: dict = {}


def base(attn: str = "sdpa", num_labels: int = 2):
    """The same random tiny BERT every time (one draw of its weights), with a fresh head of num_labels."""
    from transformers import AutoModelForSequenceClassification
    if attn not in _BASES:
        torch.manual_seed(0)
        _BASES[attn] = AutoModelForSequenceClassification.from_config(tiny_config("bert", attn)).eval()
    m = copy.deepcopy(_BASES[attn])
    if num_labels != m.config.num_labels:
        torch.manual_seed(num_labels)
        m.classifier = nn.Linear(m.config.hidden_size, num_labels)
        m.config.num_labels = num_labels
    return m


def artifact(tmp_path, kind: str, num_labels: int, seed: int, attn: str = "sdpa"):
    model = base(attn, num_labels)
    peltc.compile_model(SPECS[kind], model)
    perturb(model, std=0.3, seed=seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("classifier."):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.5)
    d = tmp_path / f"{kind}-{num_labels}-{seed}"
    save_adapter(model, d)
    return d


def alone(d, num_labels: int, attn: str = "sdpa"):
    m = base(attn, num_labels)
    load_adapter(m, d)
    return m.eval()


def batch(n: int, seed: int = 3, seq: int = 9):
    """n examples, most with padding (lengths 3 … seq)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (n, seq), generator=g)
    mask = torch.ones(n, seq, dtype=torch.long)
    for i in range(n):
        length = seq - (i * 2) % (seq - 2)
        mask[i, length:] = 0
        ids[i, length:] = 0
    return {"input_ids": ids, "attention_mask": mask}


MIXES = [
    ("lora", "adapter", "apl", "bitfit"),
    ("apl", "parallel", "apl", "lora"),
    ("bitfit", "adapter"),
    ("ia3", "loreft", "lora"),
]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("mix", MIXES, ids=["-".join(m) for m in MIXES])
def test_mixed_batch_equals_each_run_alone(tmp_path, attn, mix):
    labels = [2, 3, 1, 5][:len(mix)]
    dirs = [artifact(tmp_path, k, n, seed=i, attn=attn) for i, (k, n) in enumerate(zip(mix, labels))]
    runs = load_runs(dirs, base(attn, 2))
    assert runs.num_labels == labels and runs.names == [d.name for d in dirs]
    x = batch(10)
    route = [r % len(mix) for r in (0, 1, 2, 3, 0, 3, 2, 1, 1, 0)]
    with torch.no_grad():
        out = runs(route, **x).logits
    assert out.shape == (10, max(labels))
    per = runs.unpad(out, route)
    for i, d in enumerate(dirs):
        rows = [b for b, r in enumerate(route) if r == i]
        with torch.no_grad():
            want = alone(d, labels[i], attn)(**{k: v[rows] for k, v in x.items()}).logits
        got = torch.stack([per[b] for b in rows])
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 1e-5, (mix[i], (got - want).abs().max())
        assert torch.isinf(out[rows, labels[i]:]).all()          # padded with -inf: softmax is the run's
    # one run alone in a batch (the others absent) and runs named by name and by folder
    with torch.no_grad():
        only = runs([dirs[1].name] * 3, **{k: v[:3] for k, v in x.items()}).logits
        want = alone(dirs[1], labels[1], attn)(**{k: v[:3] for k, v in x.items()}).logits
    assert (only[:, :labels[1]] - want).abs().max() <= 1e-5
    last = len(dirs) - 1
    assert runs.index(str(dirs[last])) == last and runs.index(last) == last


def test_instances_are_namespaced_and_paths_kept(tmp_path):
    dirs = [artifact(tmp_path, "lora", 2, 0), artifact(tmp_path, "lora", 3, 1)]
    model = base()
    runs = load_runs(dirs, model)
    names = {n for n, _ in model.named_parameters()}
    assert "bert.encoder.layer.0.attention.self.query.pelt_lora.r0_qv.A.weight" in names
    assert "bert.encoder.layer.0.attention.self.query.pelt_lora.r1_qv.A.weight" in names
    assert "classifier.pelt_heads.r1.weight" in names and "classifier.weight" not in names
    assert not any(p.requires_grad for p in model.parameters())
    assert len(compiled(model).runs) == 2 and len(runs) == 2


def test_routed_model_refuses_merge_save_and_unrouted_calls(tmp_path):
    dirs = [artifact(tmp_path, "lora", 2, 0), artifact(tmp_path, "bitfit", 2, 1)]
    model = base()
    runs = load_runs(dirs, model)
    with pytest.raises(CompileError) as e:
        merge(model)
    assert e.value.diagnostic.code == "C019"
    with pytest.raises(CompileError) as e:
        save_adapter(model, tmp_path / "x")
    assert e.value.diagnostic.code == "C019"
    x = tiny_batch()
    with pytest.raises(CompileError) as e, torch.no_grad():
        model(**x)
    assert e.value.diagnostic.code == "C018"
    with pytest.raises(CompileError) as e, torch.no_grad():
        runs([0, 1], **x)                                      # 2 runs named, 3 examples
    assert e.value.diagnostic.code == "C022"
    with pytest.raises(UsageError) as e:
        runs(["nope", 0, 1], **x)
    assert e.value.diagnostic.code == "U124" and "no run named 'nope'" in str(e.value)
    with pytest.raises(UsageError):
        runs([0, 5, 1], **x)
    # the single-run merge still works
    m = base()
    peltc.compile_model(SPECS["lora"], m)
    assert merge(m)


def test_bad_runs(tmp_path):
    good = artifact(tmp_path, "lora", 2, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError) as e:
        load_runs([good, tmp_path / "empty"], base())
    assert e.value.diagnostic.code == "A002" and "empty" in str(e.value)
    with pytest.raises(UsageError) as e:
        load_runs([good, tmp_path / "missing"], base())
    assert e.value.diagnostic.code == "U008"
    # a run on another base model (another hidden size)
    from transformers import AutoModelForSequenceClassification, BertConfig
    other = AutoModelForSequenceClassification.from_config(BertConfig(
        vocab_size=99, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64))
    peltc.compile_model(SPECS["lora"], other)
    save_adapter(other, tmp_path / "other")
    with pytest.raises(ArtifactError) as e:
        load_runs([good, tmp_path / "other"], base())
    assert e.value.diagnostic.code == "A023" and "different base models" in str(e.value)
    # full fine-tuning cannot share the base
    ft = base()
    peltc.compile_model("finetune all {\n  at all\n}\n", ft)
    save_adapter(ft, tmp_path / "ft")
    with pytest.raises(CompileError) as e:
        load_runs([good, tmp_path / "ft"], base())
    assert e.value.diagnostic.code == "C020"


def test_decoder_runs(tmp_path):
    """A tiny Llama (*ForSequenceClassification, reads the last non-pad token): LoRA, an adapter with
    mean pooling, an ungated prefix — routed equals alone."""
    specs = [SPECS["lora"],
             "adapter ad {\n  at layers[*].ffn.output\n  size 8\n}\nhead {\n  pool mean\n}\n",
             "prefix kv {\n  at layers[*].attention\n  length 3\n}\n"]
    dirs = []
    for i, spec in enumerate(specs):
        m = tiny_decoder("llama", attn="sdpa")
        peltc.compile_model(spec, m)
        perturb(m, std=0.3, seed=i)
        save_adapter(m, tmp_path / f"d{i}")
        dirs.append(tmp_path / f"d{i}")
    runs = load_runs(dirs, tiny_decoder("llama", attn="sdpa"))
    x = tiny_batch(batch=3, seq=7)
    x = {k: torch.cat([v, v]) for k, v in x.items()}
    route = [0, 1, 2, 2, 1, 0]
    with torch.no_grad():
        out = runs(route, **x).logits
    for i, d in enumerate(dirs):
        ref = tiny_decoder("llama", attn="sdpa")
        load_adapter(ref, d)
        rows = [b for b, r in enumerate(route) if r == i]
        with torch.no_grad():
            want = ref(**{k: v[rows] for k, v in x.items()}).logits
        assert (out[rows] - want).abs().max() <= 1e-5
