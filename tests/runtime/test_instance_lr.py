"""A learning rate per instance (`lr` in an instance block): the instance's parameters form their own
optimiser groups at that lr (a finetune instance's: every trainable base weight), the head its own at
head_lr, the rest the run's lr; one AdamW step moves each group's parameters by its lr; the linear
schedule scales every group from its own lr."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import TrainerCallback

from peltc.api import compile_model
from peltc.compiler.torch.report import _instance_of
from peltc.runtime.task_glue import task
from peltc.runtime.train import head_prefixes, instance_lrs, PeltTrainer, train, training_arguments, TrainSettings

SPEC = """
adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output, init=-2) lr 1e-2 }
lora l { at layers[*].attention.{query, value} rank 4 }
bitfit b { at layers[1].attention.output lr 5e-2 }
"""
FINETUNE = """
finetune f { lr 2e-5 }
lora l { at layers[*].attention.query rank 4 lr 1e-3 }
"""
RUN_LR, HEAD_LR = 1e-3, 3e-3


def _model(spec: str, seed: int = 0, vocab: int = 99):
    transformers.set_seed(seed)
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    model = transformers.BertForSequenceClassification(cfg)
    compile_model(spec, model)
    return model


def _settings(**kw):
    base = dict(lr=RUN_LR, epochs=1, batch_size=4, warmup=0.0, weight_decay=0.0, patience=3, min_steps=0,
                eval_steps=None, max_length=32, seed=1, eval_batch_size=8, head_lr=HEAD_LR)
    return TrainSettings(**{**base, **kw})


def _trainer(model, tmp_path, settings=None, **kw) -> PeltTrainer:
    settings = settings or _settings()
    lrs, base = instance_lrs(model)
    args = training_arguments(settings, task("sst2"), tmp_path, progress=False, eval_strategy="no",
                              save_strategy="no", load_best_model_at_end=False)
    return PeltTrainer(model=model, args=args, head_lr=settings.head_lr, head_prefixes=head_prefixes(model),
                       instance_lrs=lrs, base_instance=base, **kw)


def _groups(trainer) -> dict[str | None, tuple[float, set[str]]]:
    """owner → (lr, names of its parameters), the decay / no-decay groups of one owner joined."""
    name_of = {id(p): n for n, p in trainer.model.named_parameters()}
    out: dict[str | None, tuple[float, set[str]]] = {}
    for owner, g in zip(trainer.param_group_owners, trainer.optimizer.param_groups, strict=True):
        lr, names = out.get(owner, (g["lr"], set()))
        assert lr == g["lr"], owner
        out[owner] = (lr, names | {name_of[id(p)] for p in g["params"]})
    return out


def test_instance_lrs_read_from_the_ir():
    assert instance_lrs(_model(SPEC)) == ({"a": 1e-2, "b": 5e-2}, None)
    assert instance_lrs(_model(FINETUNE)) == ({"f": 2e-5, "l": 1e-3}, "f")
    assert instance_lrs(_model("lora l { at layers[*].attention.query }")) == ({}, None)
    assert instance_lrs(torch.nn.Linear(2, 2)) == ({}, None)


def test_groups_hold_exactly_each_instances_params(tmp_path):
    model = _model(SPEC)
    trainer = _trainer(model, tmp_path)
    trainer.create_optimizer()
    groups = _groups(trainer)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    pelt = {n for n in trainable if "pelt_" in n}
    head = {n for n in trainable if n.startswith("classifier.")}
    assert set(groups) == {"a", "b", "head", None}
    assert groups["a"] == (1e-2, {n for n in pelt if _instance_of(n) == "a"})
    assert groups["b"] == (5e-2, {n for n in pelt if _instance_of(n) == "b"})
    assert groups["head"] == (HEAD_LR, head)
    assert groups[None] == (RUN_LR, {n for n in pelt if _instance_of(n) == "l"})
    assert any(".gate." in n for n in groups["a"][1])                  # the gate trains with its module
    assert len(groups["a"][1]) == 2 * 6                                 # down, up (w, b), gate (w, b) × 2 layers
    assert sum(len(names) for _, names in groups.values()) == len(trainable)


def test_finetune_instance_owns_the_base_weights(tmp_path):
    model = _model(FINETUNE)
    trainer = _trainer(model, tmp_path)
    trainer.create_optimizer()
    groups = _groups(trainer)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(groups) == {"f", "l", "head"}
    assert groups["l"] == (1e-3, {n for n in trainable if "pelt_" in n})
    assert groups["head"] == (HEAD_LR, {n for n in trainable if n.startswith("classifier.")})
    assert groups["f"] == (2e-5, {n for n in trainable if "pelt_" not in n and not n.startswith("classifier.")})
    assert "bert.embeddings.word_embeddings.weight" in groups["f"][1]
    assert "bert.encoder.layer.0.attention.self.query.base_layer.weight" in groups["f"][1]


def test_without_lr_the_optimiser_is_as_before(tmp_path):
    """No `lr` in the spec: the stock grouping (head_lr None) or head / rest (head_lr set)."""
    model = _model("lora l { at layers[*].attention.query rank 4 }")
    t = _trainer(model, tmp_path, _settings(head_lr=None))
    t.create_optimizer()
    assert t.param_group_owners == [] and {g["lr"] for g in t.optimizer.param_groups} == {RUN_LR}
    t = _trainer(model, tmp_path)
    t.create_optimizer()
    assert set(_groups(t)) == {"head", None}


def _batch(n: int = 4, seq: int = 6):
    g = torch.Generator().manual_seed(3)
    return {"input_ids": torch.randint(3, 99, (n, seq), generator=g), "attention_mask": torch.ones(n, seq, dtype=torch.long),
            "labels": torch.tensor([0, 1, 1, 0][:n])}


@pytest.mark.parametrize("spec", [SPEC, FINETUNE], ids=["pelt", "finetune"])
def test_one_step_moves_each_group_by_its_lr(tmp_path, spec):
    """AdamW's first step (bias-corrected, no weight decay) moves every parameter with a gradient by
    lr · sign(grad): the largest move in each group is its lr."""
    model = _model(spec)
    model.train()
    trainer = _trainer(model, tmp_path)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model(**_batch()).loss.backward()
    trainer.optimizer.step()
    for owner, (lr, names) in _groups(trainer).items():
        moves = torch.cat([(dict(model.named_parameters())[n].detach() - before[n]).abs().flatten() for n in names])
        assert moves.max().item() == pytest.approx(lr, rel=1e-2), owner   # float32 rounding of the weights
        assert moves.max().item() <= lr * 1.01, owner


def test_schedule_scales_every_group_from_its_own_lr(tmp_path):
    model = _model(SPEC)
    trainer = _trainer(model, tmp_path, _settings(warmup=0.2))
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    initial = [g["initial_lr"] for g in trainer.optimizer.param_groups]
    for step in range(6):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        ratios = {round(g["lr"] / i, 12) for g, i in zip(trainer.optimizer.param_groups, initial)}
        assert len(ratios) == 1, (step, ratios)                         # one factor for every group
    assert 0 < ratios.pop() < 1


class _Seen(TrainerCallback):
    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.initial = sorted({g["initial_lr"] for g in optimizer.param_groups})


def test_train_uses_the_specs_lrs(tmp_path, glue_dir, tokenizer):
    from peltc.runtime import classify, data, task_glue
    t = task("sst2")
    s = data.sample(task_glue.load_glue(t, glue_dir), 8, seed=1, dev_size=8)
    s["test"] = s["test"].select(range(8))
    enc = classify.tokenize(s, tokenizer, t, max_length=32)
    model = _model(SPEC, vocab=tokenizer.vocab_size)
    seen = _Seen()
    result = train(model, tokenizer, enc, t, _settings(), tmp_path, progress=False, callbacks=[seen])
    assert seen.initial == sorted({RUN_LR, HEAD_LR, 1e-2, 5e-2})
    assert result["train"]["instance_lrs"] == {"a": 1e-2, "b": 5e-2}
    # an explicit mapping replaces the spec's
    model2 = _model(SPEC, vocab=tokenizer.vocab_size)
    seen2 = _Seen()
    train(model2, tokenizer, enc, t, _settings(epochs=0.5), tmp_path / "two", progress=False, callbacks=[seen2],
          instance_lr={"l": 7e-3}, evaluate_test=False)
    assert seen2.initial == sorted({RUN_LR, HEAD_LR, 7e-3})


GATED = """
adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) lr 1e-4 }
lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }
prefix p { at layers[1].attention length 3 gate scalar }
"""


def test_gate_lr_gives_every_gate_its_own_group(tmp_path):
    """``gate_lr``: every gate's parameters, whichever instance holds them, at gate_lr; the modules keep
    their own lr (here slower than their gates', the experiment of issue 19)."""
    model = _model(GATED)
    trainer = _trainer(model, tmp_path, gate_lr=1e-2)
    trainer.create_optimizer()
    groups = _groups(trainer)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    gates = {n for n in trainable if "pelt_" in n and ".gate." in n}
    assert {_instance_of(n) for n in gates} == {"a", "l", "p"}
    assert groups["gate"] == (1e-2, gates)
    assert groups["a"] == (1e-4, {n for n in trainable if _instance_of(n) == "a"} - gates)
    assert groups[None][1] == {n for n in trainable if _instance_of(n) in ("l", "p")} - gates
    assert sum(len(names) for _, names in groups.values()) == len(trainable)


def test_gate_lr_alone_makes_groups(tmp_path):
    model = _model("lora l { at layers[*].attention.query rank 4 gate sigmoid(layer.input) }")
    t = _trainer(model, tmp_path, _settings(head_lr=None), gate_lr=5e-3)
    t.create_optimizer()
    groups = _groups(t)
    assert set(groups) == {"gate", None} and groups["gate"][0] == 5e-3 and groups[None][0] == RUN_LR


def test_gate_lr_is_a_setting_that_keeps_old_identities():
    """Unset, gate_lr adds no key to the recorded settings (every earlier run keeps its identity hash);
    set, from the spec's train block or --gate-lr, it is recorded; out of range is U106."""
    from peltc.errors import UsageError
    from peltc.runtime.settings import resolve_settings

    assert "gate_lr" not in resolve_settings().to_dict()
    assert resolve_settings({"gate_lr": 1e-2}).to_dict()["gate_lr"] == 1e-2
    assert resolve_settings(None, {"gate_lr": 3e-3}).gate_lr == 3e-3
    with pytest.raises(UsageError) as e:
        resolve_settings(None, {"gate_lr": -1.0})
    assert e.value.diagnostic.code == "U106" and "--gate-lr" in str(e.value)


def test_gate_lr_finds_gates_by_module_not_by_name(tmp_path):
    """An instance named `gate` (its LoRA's A and B: …pelt_lora.gate.A.weight) is no gate: it keeps its own
    lr; an instance named `head` is no task head either."""
    model = _model("lora gate { at layers[*].attention.query rank 4 lr 5e-4 gate sigmoid(layer.input) }\n"
                   "adapter head { at layers[*].ffn.output size 8 lr 2e-4 }")
    trainer = _trainer(model, tmp_path, gate_lr=1e-2)
    trainer.create_optimizer()
    name_of = {id(p): n for n, p in model.named_parameters()}
    for g in trainer.optimizer.param_groups:
        for p in g["params"]:
            n = name_of[id(p)]
            if "pelt_" not in n:
                assert n.startswith("classifier.") and g["lr"] == HEAD_LR
            elif ".pelt_lora.gate.gate." in n:
                assert g["lr"] == 1e-2, n                              # the gate of the instance `gate`
            elif ".pelt_lora.gate." in n:
                assert g["lr"] == 5e-4, n
            else:
                assert ".pelt_adapters.head." in n and g["lr"] == 2e-4, n
