"""LoReFT and (IA)³ under the trainer: each instance's `lr` is its optimiser group's, and AdamW steps with
weight decay keep R's rows orthonormal (the trainer leaves R's parametrised original out of decay) while
W, b and the (IA)³ vectors move."""

from __future__ import annotations

import torch
import transformers

from peltc.api import compile_model
from peltc.compiler.torch.report import _instance_of
from peltc.runtime.task_glue import task
from peltc.runtime.train import PeltTrainer, TrainSettings, head_prefixes, instance_lrs, training_arguments

SPEC = ("loreft f { at layers[*].output rank 3 first 2 last 2 lr 1e-2 }\n"
        "ia3 v { at layers[*].attention.{key, value}, layers[*].ffn.down lr 5e-2 }\n"
        "head { pool mean }")   # the pooler reads token 0 only: the last layer's `last` positions would not reach it


def test_groups_and_steps_with_weight_decay(tmp_path):
    transformers.set_seed(0)
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    model = transformers.BertForSequenceClassification(cfg)
    compile_model(SPEC, model)
    settings = TrainSettings(lr=1e-3, epochs=1, batch_size=4, warmup=0.0, weight_decay=0.5, patience=3,
                             min_steps=0, eval_steps=None, max_length=32, seed=1, eval_batch_size=8, head_lr=None)
    lrs, base = instance_lrs(model)
    assert lrs == {"f": 1e-2, "v": 5e-2}
    args = training_arguments(settings, task("sst2"), tmp_path, progress=False, eval_strategy="no",
                              save_strategy="no", load_best_model_at_end=False)
    trainer = PeltTrainer(model=model, args=args, head_lr=None, head_prefixes=head_prefixes(model),
                          instance_lrs=lrs, base_instance=base)
    opt = trainer.create_optimizer()
    name_of = {id(p): n for n, p in model.named_parameters()}
    for owner, g in zip(trainer.param_group_owners, opt.param_groups, strict=True):
        names = [name_of[id(p)] for p in g["params"]]
        if owner in lrs:
            assert g["lr"] == lrs[owner] and {_instance_of(n) for n in names} == {owner}
        if any(".parametrizations." in n for n in names):
            assert g["weight_decay"] == 0.0
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "pelt_" in n}
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 99, (4, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[2:, 4:] = 0
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 1, 0])).loss.backward()
        opt.step()
    for mod in model.modules():
        if hasattr(mod, "R") and hasattr(mod, "W"):
            r = mod.R.weight
            torch.testing.assert_close(r @ r.t(), torch.eye(3), rtol=0, atol=1e-5)
    moved = {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert moved == set(before)
