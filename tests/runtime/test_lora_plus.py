"""LoRA+ (`lr_ratio λ` on a lora instance): the optimiser groups equal peft's `create_loraplus_optimizer`
(the same parameters in each group, the same learning rates and weight decays), DoRA's magnitude vector
included (peft puts every 1-d parameter with B); an instance's own `lr` is A's, B's is λ × it."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from peltc.api import compile_model
from peltc.runtime.task_glue import task
from peltc.runtime.train import PeltTrainer, head_prefixes, instance_lrs, lr_ratios, training_arguments, TrainSettings

peft = pytest.importorskip("peft")

RUN_LR, WD = 1e-3, 0.01


def _base():
    transformers.set_seed(0)
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    return transformers.BertForSequenceClassification(cfg)


def _trainer(model, tmp_path) -> PeltTrainer:
    settings = TrainSettings(lr=RUN_LR, epochs=1, batch_size=4, warmup=0.0, weight_decay=WD, patience=3,
                             min_steps=0, eval_steps=None, max_length=32, seed=1, eval_batch_size=8, head_lr=None)
    lrs, base = instance_lrs(model)
    args = training_arguments(settings, task("sst2"), tmp_path, progress=False, eval_strategy="no",
                              save_strategy="no", load_best_model_at_end=False)
    return PeltTrainer(model=model, args=args, head_prefixes=head_prefixes(model), instance_lrs=lrs,
                       base_instance=base, lr_ratios=lr_ratios(model))


def _key(name: str) -> str:
    """A LoRA parameter's module and role, the same for peltc and peft names."""
    for ours, theirs, role in ((".pelt_lora.l.A.weight", ".lora_A.default.weight", "A"),
                               (".pelt_lora.l.B.weight", ".lora_B.default.weight", "B"),
                               (".pelt_lora.l.magnitude", ".lora_magnitude_vector.default.weight", "m")):
        for suffix in (ours, theirs):
            if name.endswith(suffix):
                return name[:-len(suffix)].removeprefix("base_model.model.") + ":" + role
    raise AssertionError(name)


def _groups(opt, model) -> set[tuple[float, float, frozenset[str]]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {(g["lr"], g["weight_decay"], frozenset(_key(name_of[id(p)]) for p in g["params"]))
            for g in opt.param_groups if g["params"]}


@pytest.mark.parametrize("dora", [False, True])
def test_loraplus_groups_equal_peft(tmp_path, dora):
    base = _base()
    ours = copy.deepcopy(base)
    compile_model(f"lora l {{ at layers[*].attention.{{query, value}} rank 4 lr_ratio 16 dora {str(dora).lower()} }}",
                  ours)
    for n, p in ours.named_parameters():          # peft's model trains no head here: compare the LoRA alone
        if n.startswith("classifier."):
            p.requires_grad_(False)
    trainer = _trainer(ours, tmp_path)
    trainer.create_optimizer()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, target_modules=["query", "value"],
                                                                   use_dora=dora))
    from peft.optimizers import create_loraplus_optimizer
    theirs = create_loraplus_optimizer(pm, torch.optim.AdamW, lr=RUN_LR, loraplus_lr_ratio=16,
                                       loraplus_weight_decay=WD)
    assert _groups(trainer.optimizer, ours) == _groups(theirs, pm)
    assert {r for r in trainer.param_group_ratios} == {1.0, 16.0}


def test_loraplus_with_an_instance_lr_and_others_untouched(tmp_path):
    model = _base()
    compile_model("lora l { at layers[*].attention.query rank 4 lr 2e-3 lr_ratio 8 }\n"
                  "lora k { at layers[*].attention.key rank 2 }", model)
    assert lr_ratios(model) == {"l": 8.0}
    trainer = _trainer(model, tmp_path)
    trainer.create_optimizer()
    name_of = {id(p): n for n, p in model.named_parameters()}
    lr_of = {name_of[id(p)]: g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    for n, lr in lr_of.items():
        if ".pelt_lora.l.B." in n:
            assert lr == pytest.approx(16e-3)
        elif ".pelt_lora.l.A." in n:
            assert lr == pytest.approx(2e-3)
        else:
            assert lr == pytest.approx(RUN_LR), n
