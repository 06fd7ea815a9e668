"""What a classification or regression task does in a run — the `task.Task` behaviour that GLUE tasks
(`task_glue.GlueTask`) and your own data (`task_own.CustomTask`) share: a sequence-classification model
with a task head, texts (one, or a pair) tokenised and padded per batch, label ids (or scores) scored by the
task's metrics, checkpoints selected on the main one.

A kind of task that classifies inherits `Classification` and adds where its data comes from (``load`` /
``sample``) and how it is recorded; see `task.Task`.
"""

from __future__ import annotations

from typing import Any, Iterable

from peltc.errors import UsageError
from peltc.runtime.data import MAX_LENGTH


class Classification:
    """The shared behaviour (read from the dataclass fields ``labels`` — None for a score — and ``columns``)."""

    labels: tuple[Any, ...] | None
    columns: tuple[str, ...]
    name: str
    causal_lm = False          # a ``*ForSequenceClassification`` model with a task head

    # --- what the task is ------------------------------------------------------------------------
    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Output size of the classification head (1 for regression)."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.columns) == 2

    @property
    def metric_config(self) -> str:
        """The config name of its `metrics.GlueMetric` (a GLUE task's name)."""
        return self.name

    @property
    def metrics(self) -> tuple[str, ...]:
        """What the task's metric config reports (`metrics.CONFIGS`)."""
        from peltc.runtime.metrics import CONFIGS
        return CONFIGS[self.metric_config].metrics

    # --- a run ---------------------------------------------------------------------------------
    def prepare_ir(self, ir, mc, ref: str | None):
        """The spec's IR for this task: the recipe's head pooling unless the spec sets one."""
        from peltc.runtime.settings import default_recipe
        s = ir.settings
        if s.head.get("pool") is None:
            ir.replace(s.model_copy(update={"head": {**s.head, "pool": default_recipe["pool"]}}))
        return ir

    def encode(self, splits, tokenizer, max_length: int = MAX_LENGTH):
        return tokenize(splits, tokenizer, self, max_length=max_length)

    def fit(self, enc):
        """The task as scoring it needs it, given its tokenised splits (nothing to adjust here)."""
        return self

    def collator(self, tokenizer):
        return collator(tokenizer)

    def trainer_metrics(self):
        """The Trainer's ``compute_metrics`` and ``preprocess_logits_for_metrics``."""
        from peltc.runtime.metrics import compute_metrics
        return compute_metrics(self), None

    def init_head(self, model, settings, train) -> None:
        """The head's output as the settings start it: zero weights (``head_weights zero``), the constant
        predictor's bias (``head_bias prior``)."""
        import torch

        if settings.head_weights == "zero":
            with torch.no_grad():
                head_output(model, need_bias=False).weight.zero_()
        if settings.head_bias == "prior":
            init_head_bias(model, train["label"], self)

    def test_warnings(self, predictions, test: dict[str, float], pool: str | None = None) -> list[str]:
        from peltc.runtime.metrics import degenerate_warning, to_predictions
        return [w for w in (degenerate_warning(self, to_predictions(self, predictions), "test", test, pool=pool),)
                if w]

    def score(self, model, tokenizer, test, gates: bool = True):
        """Test metrics, mean gates (read in the same pass) and a warning for a (near-)constant predictor
        (or None)."""
        return evaluate_saved(model, tokenizer, test, self)

    def probe(self, tokenizer, sub, parts: list[list[int]]):
        return ClassifierProbe(self, tokenizer, sub, parts)

    def check_serves(self, command: str, run_dir) -> None:
        """A classification run labels texts (`peltc predict`); it completes no prompts."""
        if command == "generate":
            raise UsageError(f"'{run_dir}' is a classification run ({self.name}): its model has a classifier "
                             "head, not a language-model head", code="U132",
                             help=f"peltc predict {run_dir} --text \"…\"")


# --- tokenisation --------------------------------------------------------------------------------

def tokenize(ds, tokenizer, task, max_length: int = MAX_LENGTH, sort_by_length: Iterable[str] = ("dev", "test")):
    """Tokenise every split (pairs as pairs, truncated to ``max_length``, not padded: the collator
    pads each batch). Adds ``length`` (tokens). Splits in ``sort_by_length`` are sorted longest
    first, so that large evaluation batches carry little padding (metrics do not depend on order).
    """
    def encode(batch):
        texts = [batch[c] for c in task.columns]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    import numpy as np

    out = ds.map(encode, batched=True, remove_columns=list(task.columns), desc="tokenising")
    for split in sort_by_length:
        if split in out:
            order = np.argsort(-np.asarray(out[split]["length"]), kind="stable")
            out[split] = out[split].select(order)
    return out


def collator(tokenizer):
    """Dynamic padding: each batch padded to its longest member."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


# --- the task head -------------------------------------------------------------------------------

def head_output(model, need_bias: bool = True):
    """The task head's output layer: the last Linear with ``num_labels`` outputs in the head modules."""
    import torch

    from peltc.compiler.archs import family_of_model

    family = family_of_model(model)
    found = None
    for h in (family.head if family else ("classifier",)):
        mod = model.get_submodule(h)
        for m in [mod, *mod.modules()]:
            if isinstance(m, torch.nn.Linear) and m.out_features == model.config.num_labels:
                found = m
    if found is None or (need_bias and found.bias is None):
        raise UsageError("the task head has no output layer with a bias to initialise", code="U107",
                         help="train with head_bias zero")
    return found


def init_head_bias(model, labels, task) -> None:
    """Start the head at the constant predictor's optimum on the training labels: the mean score for
    regression (MSE), log class frequencies (centred; add-one smoothed) for classification."""
    import numpy as np
    import torch

    with torch.no_grad():
        out = head_output(model)
        y = np.asarray(labels, dtype=float)
        if task.is_regression:
            out.bias.fill_(float(y.mean()))
        else:
            counts = np.bincount(y.astype(int), minlength=out.out_features) + 1.0
            logp = np.log(counts / counts.sum())
            out.bias.copy_(torch.as_tensor(logp - logp.mean(), dtype=out.bias.dtype))


# --- scoring the saved model ---------------------------------------------------------------------

def predict_with_gates(model, dataset, tokenizer, batch_size: int = 256):
    """Logits for every example (no grad, large batches, dataset order) and the mean gate value per
    (instance, layer, point) over the examples."""
    import numpy as np
    import torch

    from peltc.compiler.torch.gate import read_gates

    collate = collator(tokenizer)
    cols = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    model.eval()
    logits, sums, n = [], {}, 0
    with torch.no_grad():
        for i in range(0, len(dataset), batch_size):
            rows = dataset[i:i + batch_size]
            feats = [{c: rows[c][j] for c in cols} for j in range(len(rows[cols[0]]))]
            batch = collate(feats)
            dev = next(model.parameters()).device
            out = model(**{k: v.to(dev) for k, v in batch.items() if k in cols})
            logits.append(out.logits.float().cpu().numpy())
            for key, g in read_gates(model).items():
                sums[key] = sums.get(key, 0.0) + float(g.float().sum())
            n += len(feats)
    gates = {key: s / max(n, 1) for key, s in sums.items()}
    return np.concatenate(logits) if logits else np.zeros((0, 1)), gates


def head_pool(model) -> str | None:
    """The head pooling of a model peltc compiled (``mean`` / ``pooler``), or None when it is not known."""
    compiled = model.__dict__.get("_pelt")
    return None if compiled is None else (compiled.ir.settings.head or {}).get("pool")


def evaluate_saved(model, tokenizer, dataset, task):
    """Test metrics, mean gates and a warning for a constant or near-constant predictor (or None)."""
    from peltc.runtime.metrics import compute, degenerate_warning, near_constant, to_predictions

    logits, gates = predict_with_gates(model, dataset, tokenizer)
    preds = to_predictions(task, logits)
    metrics = compute(task, preds, dataset["label"])
    warn = (degenerate_warning(task, preds, "test", metrics, pool=head_pool(model))
            or near_constant(task, preds, dataset["label"], "test"))
    return metrics, gates, warn


# --- the diagnostics probe (`diagnostics.Diagnostics`) -------------------------------------------

class ClassifierProbe:
    """A classifier's probe batches: the features the head reads (an encoder's first token, a decoder
    classifier's last real one) and its predictions (the scores' spread, or the majority class's share)."""

    def __init__(self, task, tokenizer, sub, parts: list[list[int]]):
        import numpy as np

        self.task = task
        cols = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in sub.column_names]
        pad = collator(tokenizer)
        self.batches = [{k: v for k, v in pad([{c: sub[i][c] for c in cols} for i in part]).items() if k in cols}
                        for part in parts]
        self.labels = np.asarray(sub["label"], dtype=float)[[i for part in parts for i in part]]

    def head(self, model):
        from peltc.compiler.archs import family_of_model
        family = family_of_model(model)
        return model.get_submodule(family.head[-1] if family else "classifier")

    def forward(self, model, dev):
        import torch
        return torch.cat([model(**{k: v.to(dev) for k, v in b.items()}).logits.float() for b in self.batches])

    def read_at(self, model, feats):
        """Per probe batch, the position each example's head input is read at."""
        import torch

        from peltc.compiler.archs import family_of_model
        family = family_of_model(model)
        if family is not None and family.pooling == "last":     # a decoder classifier: the last real token
            return [b["attention_mask"].sum(1) - 1 if "attention_mask" in b else torch.full((len(x),), x.shape[1] - 1)
                    for b, x in zip(self.batches, feats)]
        return [torch.zeros(len(x), dtype=torch.long) for x in feats]

    def predictions(self, logits) -> dict[str, float]:
        import numpy as np

        if self.task.is_regression:
            s = logits[:, 0].cpu().numpy()
            return {"std": float(s.std()), "label_std": float(self.labels.std()), "mean": float(s.mean())}
        pred = logits.argmax(-1).cpu().numpy()
        return {"majority_share": float(np.bincount(pred).max() / len(pred))}

