"""The training job on a tiny model: settings, early stopping, a real Trainer run, resume."""

import json
import math

import pytest
import torch
from transformers import TrainerCallback, TrainerControl, TrainerState

from peltc.compiler.schema import TRAIN_PARAMS
from peltc.errors import ArtifactError, UsageError
from peltc.runtime import classify, data, task_glue
from peltc.runtime.task_glue import task
from peltc.runtime.train import default_recipe, EarlyStopping, resolve_settings, SETTING_NAMES, train, training_arguments, TrainSettings
from peltc.runtime.classify import evaluate_saved


# --- settings ------------------------------------------------------------------------------------

def test_every_spec_train_setting_is_a_setting():
    assert set(TRAIN_PARAMS) <= set(SETTING_NAMES)


def test_recipe_then_spec_then_cli():
    s = resolve_settings({"lr": 3e-4, "epochs": 7, "patience": None}, {"epochs": 2, "seed": 5})
    assert (s.lr, s.epochs, s.seed, s.patience) == (3e-4, 2, 5, default_recipe["patience"])
    assert resolve_settings().lr == default_recipe["lr"]
    assert resolve_settings(finetune=True).lr == default_recipe["finetune_lr"]
    assert resolve_settings({"lr": 1e-4}, finetune=True).lr == 1e-4
    with pytest.raises(UsageError) as e:
        resolve_settings(cli={"learning_rate": 1.0})
    assert "lr" in e.value.diagnostic.help


def test_training_arguments(tmp_path):
    per_epoch = resolve_settings(recipe={**default_recipe, "eval_steps": None})
    args = training_arguments(per_epoch, task("cola"), tmp_path)
    assert (args.eval_strategy, args.save_strategy) == ("epoch", "epoch")
    assert args.load_best_model_at_end and args.metric_for_best_model == "matthews_correlation"
    assert args.greater_is_better
    steps = training_arguments(resolve_settings(cli={"eval_steps": 20}), task("mrpc"), tmp_path)
    assert (steps.eval_strategy, steps.eval_steps, steps.save_steps) == ("steps", 20, 20)


# --- early stopping with a minimum number of steps --------------------------------------------------

class _Args:
    metric_for_best_model = "accuracy"
    greater_is_better = True


def test_early_stopping_waits_for_min_steps():
    cb, state, control = EarlyStopping(2, min_steps=10), TrainerState(), TrainerControl()
    state.best_metric = 0.5
    for step in (2, 4, 6, 8):          # flat, but before min_steps: never counts
        state.global_step = step
        cb.on_evaluate(_Args(), state, control, {"eval_accuracy": 0.5})
        assert not control.should_training_stop and cb.early_stopping_patience_counter == 0
    state.global_step = 10
    cb.on_evaluate(_Args(), state, control, {"eval_accuracy": 0.5})
    assert not control.should_training_stop
    state.global_step = 12
    cb.on_evaluate(_Args(), state, control, {"eval_accuracy": 0.5})
    assert control.should_training_stop
    assert cb.state()["args"]["min_steps"] == 10


# --- a real run on a tiny model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def sst2_splits(glue_dir, tokenizer):
    t = task("sst2")
    ds = task_glue.load_glue(t, glue_dir)
    s = data.sample(ds, 32, seed=1, dev_size=32)
    s["test"] = s["test"].select(range(64))
    return classify.tokenize(s, tokenizer, t, max_length=64)


def _settings(**kw):
    base = dict(lr=5e-3, epochs=2, batch_size=8, warmup=0.1, weight_decay=0.01, patience=3, min_steps=0,
                eval_steps=None, max_length=64, seed=1, eval_batch_size=64)
    return TrainSettings(**{**base, **kw})


def test_tiny_trainer_run(tmp_path, tiny_model, tokenizer, sst2_splits):
    model = tiny_model(2)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    result = train(model, tokenizer, sst2_splits, task("sst2"), _settings(), tmp_path, progress=False)

    assert result["sizes"] == {"train": 32, "dev": 32, "test": 64}
    assert [h["epoch"] for h in result["dev"]["history"]] == [1.0, 2.0]
    assert [h["step"] for h in result["dev"]["history"]] == [4, 8]
    assert {"accuracy", "loss"} <= result["dev"]["history"][0].keys()
    best = max(h["accuracy"] for h in result["dev"]["history"])
    assert result["dev"]["best"]["accuracy"] == pytest.approx(best)       # best checkpoint restored
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
    assert result["train"]["steps"] == 8 and not result["train"]["stopped_early"]
    assert result["train"]["samples_per_second"] > 0 and result["test"]["samples_per_second"] > 0
    assert isinstance(result["warnings"], list)
    json.dumps(result)                                                  # JSON-ready
    again, _, _ = evaluate_saved(model, tokenizer, sst2_splits["test"], task("sst2"))
    assert again["accuracy"] == result["test"]["accuracy"]
    assert not list(tmp_path.glob("checkpoint-*"))                      # cleaned up
    for n, p in model.named_parameters():                               # frozen params untouched
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


@pytest.mark.parametrize("min_steps", [5, 100])
def test_best_checkpoint_is_chosen_from_min_steps_on(tmp_path, tiny_model, tokenizer, sst2_splits, min_steps):
    """The restored checkpoint is the best evaluation at or after min_steps; in a run no longer than
    min_steps, the best of all. Early stopping off (patience 99), so every evaluation happens."""
    result = train(tiny_model(2), tokenizer, sst2_splits, task("sst2"),
                   _settings(epochs=3, eval_steps=2, patience=99, min_steps=min_steps), tmp_path, progress=False)
    hist = result["dev"]["history"]
    assert [h["step"] for h in hist] == [2, 4, 6, 8, 10, 12]
    allowed = [h for h in hist if h["step"] >= min_steps] or hist
    first_best = max(allowed, key=lambda h: (h["accuracy"], -h["step"]))     # the first of equal scores
    assert result["train"]["best_step"] == first_best["step"]
    assert result["dev"]["best"]["accuracy"] == pytest.approx(first_best["accuracy"])


def test_tiny_regression_run(tmp_path, glue_dir, tiny_model, tokenizer):
    t = task("stsb")
    s = data.sample(task_glue.load_glue(t, glue_dir), 16, seed=2, dev_size=16)
    s["test"] = s["test"].select(range(32))
    enc = classify.tokenize(s, tokenizer, t, max_length=48)
    result = train(tiny_model(1), tokenizer, enc, t, _settings(epochs=1), tmp_path, progress=False)
    assert {"pearson", "spearmanr"} <= result["test"].keys()
    assert all(math.isfinite(result["test"][k]) for k in ("pearson", "spearmanr"))


class _Groups(TrainerCallback):
    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.groups = [(g.get("initial_lr", g["lr"]), g["weight_decay"], sum(p.numel() for p in g["params"]))
                       for g in optimizer.param_groups]


@pytest.mark.parametrize("head_lr", [None, 1e-2])
def test_optimiser_holds_only_trainable_params(tmp_path, tiny_model, tokenizer, sst2_splits, head_lr):
    model, seen = tiny_model(2), _Groups()
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("classifier."))
    train(model, tokenizer, sst2_splits, task("sst2"), _settings(epochs=1, head_lr=head_lr, lr=1e-3),
          tmp_path, progress=False, callbacks=[seen])
    assert sum(n for *_, n in seen.groups) == n_trainable
    if head_lr is not None:
        assert sum(n for lr, _, n in seen.groups if lr == head_lr) == n_head
        assert sum(n for lr, _, n in seen.groups if lr == 1e-3) == n_trainable - n_head


class _Interrupt(Exception):
    pass


class _CrashAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Interrupt


def test_resume_gives_the_uninterrupted_result(tmp_path, tiny_model, tokenizer, sst2_splits):
    t, settings = task("sst2"), _settings(epochs=3)
    whole = train(tiny_model(2, seed=3), tokenizer, sst2_splits, t, settings, tmp_path / "a", progress=False)

    with pytest.raises(_Interrupt):
        train(tiny_model(2, seed=3), tokenizer, sst2_splits, t, settings, tmp_path / "b",
              progress=False, callbacks=[_CrashAfterSave(4)])
    assert (tmp_path / "b" / "checkpoint-4").is_dir()
    resumed = train(tiny_model(2, seed=3), tokenizer, sst2_splits, t, settings, tmp_path / "b",
                    resume=True, progress=False)
    assert resumed["train"]["resumed_from"].endswith("checkpoint-4")
    assert resumed["test"]["accuracy"] == whole["test"]["accuracy"]
    assert resumed["test"]["loss"] == pytest.approx(whole["test"]["loss"], abs=1e-6)
    assert [h["loss"] for h in resumed["dev"]["history"]] == pytest.approx(
        [h["loss"] for h in whole["dev"]["history"]], abs=1e-6)


def test_resume_under_other_settings_is_a_clean_error(tmp_path, tiny_model, tokenizer, sst2_splits):
    """A checkpoint written with one parameter group (no head lr) cannot resume a run with two: the
    error names the checkpoint and what to do, instead of torch's optimizer traceback."""
    t = task("sst2")
    with pytest.raises(_Interrupt):
        train(tiny_model(2, seed=3), tokenizer, sst2_splits, t, _settings(epochs=3), tmp_path,
              progress=False, callbacks=[_CrashAfterSave(4)])
    with pytest.raises(ArtifactError) as e:
        train(tiny_model(2, seed=3), tokenizer, sst2_splits, t, _settings(epochs=3, head_lr=1e-2), tmp_path,
              resume=True, progress=False)
    assert e.value.diagnostic.code == "A013" and "checkpoint-4" in str(e.value)
    assert "new --out folder" in e.value.diagnostic.help


class _FailOnStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        raise ValueError("a bug during training")


def test_resume_reports_only_restore_failures_as_checkpoint_errors(tmp_path, tiny_model, tokenizer, sst2_splits):
    """An error after the checkpoint was restored (here: in a callback) is not blamed on the checkpoint."""
    t = task("sst2")
    with pytest.raises(_Interrupt):
        train(tiny_model(2, seed=3), tokenizer, sst2_splits, t, _settings(epochs=3), tmp_path,
              progress=False, callbacks=[_CrashAfterSave(4)])
    with pytest.raises(ValueError, match="a bug during training"):
        train(tiny_model(2, seed=3), tokenizer, sst2_splits, t, _settings(epochs=3), tmp_path,
              resume=True, progress=False, callbacks=[_FailOnStep()])


def test_no_trainable_parameters(tmp_path, tiny_model, tokenizer, sst2_splits):
    model = tiny_model(2)
    for p in model.parameters():
        p.requires_grad = False
    with pytest.raises(UsageError):
        train(model, tokenizer, sst2_splits, task("sst2"), _settings(), tmp_path, progress=False)


# --- with the real compiler ---------------------------------------------------------------------

SPECS = __import__("pathlib").Path(__file__).resolve().parents[2] / "specs"


def test_compiled_unipelt_apl_trains_and_resumes_best(tmp_path, tokenizer, sst2_splits):
    """A spec compiled by peltc.api.compile_model (adapter + gated prefix + gated LoRA, mean head
    pooling) goes through the Trainer: checkpoints save and the best one loads back."""
    import transformers

    api = pytest.importorskip("peltc.api")
    transformers.set_seed(1)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=37, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    api.compile_model(SPECS / "unipelt_apl.pelt", model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("pelt_" in n or n.startswith("classifier.") for n in trainable)
    result = train(model, tokenizer, sst2_splits, task("sst2"), _settings(epochs=2), tmp_path, progress=False)
    assert result["dev"]["best"]["accuracy"] == pytest.approx(
        max(h["accuracy"] for h in result["dev"]["history"]))
    assert result["trainable_parameters"] == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
