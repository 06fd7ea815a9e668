"""Decoding and scoring with a causal LM (generation tasks, `task_gen.GenTask`): greedy completions, exact
match on a test split, the gates read teacher-forced, the Trainer's dev metric, and the diagnostics probe.

The dev metric is exact match computed by teacher forcing, in the same forward pass as the dev loss: an
example counts when, at every completion position (its end-of-sequence token included), the arg-max of the
logits is the reference token. That holds exactly when greedy decoding from the prompt reproduces the
completion token for token (each greedy step then sees the reference prefix), so it selects checkpoints by
greedy exact match at the cost of one forward, not one per generated token. The test set is scored by real
greedy generation (`evaluate_generation`).
"""

from __future__ import annotations

import numpy as np


def gen_collator(tokenizer):
    """Right padding (the pad token; ``labels`` padded with -100, ``attention_mask`` with 0): the positions
    of every example start at 0, so a batch computes what each example alone would."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def collate(features):
        n = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            gap = n - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [pad] * gap)
            batch["attention_mask"].append(list(f["attention_mask"]) + [0] * gap)
            batch["labels"].append(list(f.get("labels") or [-100] * len(f["input_ids"])) + [-100] * gap)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}

    return collate


def greedy_completions(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, *,
                       batch_size: int = 64) -> list[str]:
    """Greedy completions (KV cache on) of tokenised prompts, decoded without special tokens and cut at
    the end-of-sequence token. Prompts are sorted by length and generated ``batch_size`` at a time, each
    batch padded on the left (attention mask 0 there: positions count from each prompt's first real token,
    and masked-mean gates and prefixes skip the padding), so each completion is what that prompt alone gives."""
    import torch

    out: list[str | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            n = max(len(prompts[i]) for i in chunk)
            ids = torch.tensor([[pad] * (n - len(prompts[i])) + list(prompts[i]) for i in chunk], dtype=torch.long)
            mask = torch.tensor([[0] * (n - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk], dtype=torch.long)
            dev = next(model.parameters()).device
            gen = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), do_sample=False,
                                 max_new_tokens=max_new_tokens, use_cache=True, pad_token_id=pad, eos_token_id=eos)
            for i, row in zip(chunk, gen[:, n:].tolist()):
                if eos is not None and eos in row:
                    row = row[:row.index(eos)]
                out[i] = tokenizer.decode(row, skip_special_tokens=True)
    return [o or "" for o in out]


def gen_gates(model, tokenizer, dataset, batch_size: int = 32) -> dict[tuple, float]:
    """The mean gate value per (instance, layer, point) over a tokenised generation split, each example
    teacher-forced (prompt + reference completion + end token, one forward per batch) and its gate read at
    its last token: a decoder's causal gate pooled over the whole example, as an encoder's gate is.
    LoReFT's positions are the prompt's (the labels' -100 tokens), as in training (`reft.prompt_held`)."""
    import torch

    from peltc.compiler.torch.gate import read_gates
    from peltc.compiler.torch.reft import prompt_held

    collate = gen_collator(tokenizer)
    lengths = dataset["length"]
    order = sorted(range(len(dataset)), key=lambda i: lengths[i])    # little padding per batch
    dev = next(model.parameters()).device
    model.eval()
    sums: dict[tuple, float] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = dataset.select(order[start:start + batch_size])
            batch = collate([{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"],
                              "labels": r["labels"]} for r in rows])
            with prompt_held(model, batch["labels"].to(dev), batch["attention_mask"].to(dev)):   # as trained
                model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev),
                      use_cache=False, logits_to_keep=1)
            for key, g in read_gates(model).items():
                sums[key] = sums.get(key, 0.0) + float(g.float().sum())
    return {key: v / max(len(dataset), 1) for key, v in sums.items()}


def evaluate_generation(model, tokenizer, dataset, task) -> dict[str, float]:
    """Exact match of greedy completions (stripped) with the references on a tokenised generation split
    (`task_gen.tokenize_gen`): ``exact_match`` and the number of examples."""
    prompts = [ids[:n] for ids, n in zip(dataset["input_ids"], dataset["prompt_length"])]
    preds = greedy_completions(model, tokenizer, prompts, task.max_new_tokens)
    refs = [c.strip() for c in dataset["completion"]]
    hits = sum(p.strip() == r for p, r in zip(preds, refs))
    return {"exact_match": hits / len(refs) if refs else 0.0}


# --- the Trainer's dev metric ------------------------------------------------------------------

def gen_argmax(logits, labels):
    """``preprocess_logits_for_metrics``: keep only the arg-max token (not the vocabulary-wide logits)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(-1)


def teacher_forced_match(predictions, labels) -> tuple[np.ndarray, int, int]:
    """Per example, whether every completion token is predicted (arg-max at the position before it);
    and the numbers of completion tokens right and in all. ``predictions``: arg-max ids (N, L);
    ``labels``: ids with -100 where there is no loss (prompt, padding)."""
    p, y = np.asarray(predictions)[:, :-1], np.asarray(labels)[:, 1:]
    mask = y != -100
    hit = (p == y) | ~mask
    return hit.all(axis=1) & mask.any(axis=1), int(((p == y) & mask).sum()), int(mask.sum())


def gen_metrics(eval_pred) -> dict[str, float]:
    """The Trainer's ``compute_metrics`` of a generation task: ``exact_match`` (teacher-forced, see
    above; selects checkpoints) and ``token_accuracy`` over the completion tokens."""
    rows, right, total = teacher_forced_match(eval_pred.predictions, eval_pred.label_ids)
    return {"exact_match": float(rows.mean()) if rows.size else 0.0,
            "token_accuracy": right / total if total else 0.0}


class CompletionProbe:
    """A generation task's probe batches (`diagnostics.Diagnostics`): the features are what the LM head reads
    at each example's last prompt token (the state that predicts the completion's first token); the
    predictions, teacher-forced, ``majority_share`` (of the first completion token), ``exact_match`` and
    ``loss`` (the mean cross-entropy of the completion tokens)."""

    def __init__(self, tokenizer, sub, parts: list[list[int]]):
        import torch

        cols = [c for c in ("input_ids", "attention_mask", "token_type_ids", "labels") if c in sub.column_names]
        pad = gen_collator(tokenizer)
        self.batches = [{k: v for k, v in pad([{c: sub[i][c] for c in cols} for i in part]).items() if k in cols}
                        for part in parts]
        self.labels = np.zeros(len(sub))
        self.at = [torch.tensor([sub[i]["prompt_length"] - 1 for i in part]) for part in parts]

    def head(self, model):
        from peltc.compiler.archs import family_of_model
        family = family_of_model(model)
        return model.get_submodule(family.lm_head if family else "classifier")

    def forward(self, model, dev):
        from peltc.compiler.torch.reft import prompt_held

        out = []
        for b, at in zip(self.batches, self.at):
            mask = b.get("attention_mask")
            with prompt_held(model, b["labels"].to(dev), None if mask is None else mask.to(dev)):   # as trained
                logits = model(**{k: v.to(dev) for k, v in b.items() if k != "labels"}).logits.float()
            out.append(_completion_stats(logits, b["labels"].to(dev), at.to(dev)))
        return out

    def read_at(self, model, feats):
        return self.at

    def predictions(self, stats) -> dict[str, float]:
        import torch

        first, hits, loss, tokens = (torch.cat([s[0] for s in stats]), sum(s[1] for s in stats),
                                     sum(s[2] for s in stats), sum(s[3] for s in stats))
        return {"majority_share": float(torch.bincount(first).max() / len(first)),
                "exact_match": hits / len(first), "loss": loss / max(tokens, 1)}


def _completion_stats(logits, labels, at):
    """Teacher-forced on one probe batch: the arg-max first completion token per example, the examples
    whose every completion token is the arg-max, the summed completion loss and its token count."""
    import torch

    pred, y = logits[:, :-1], labels[:, 1:]
    mask = y != -100
    hits = int((((pred.argmax(-1) == y) | ~mask).all(1) & mask.any(1)).sum())
    loss = torch.nn.functional.cross_entropy(pred[mask], y[mask], reduction="sum")
    first = logits[torch.arange(len(logits)), at].argmax(-1)
    return first.cpu(), hits, float(loss), int(mask.sum())
