"""Serving a finished run: its artifact loaded onto a fresh base model (`load_run`), its test set scored
again (`eval_run`, `peltc eval`), texts labelled (`predict_text`, `predict_file`, `peltc predict`) and
prompts completed (`generate_text`, `peltc generate`). What a run can serve is its task's to say
(`task.Task.check_serves`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from peltc.compiler.schema import METHODS
from peltc.errors import UsageError
from peltc.runtime.runfolder import run_max_length

def load_run(run_dir: str | Path, speed=None):
    """A fresh base model with the run's artifact loaded: (model, tokenizer, task, manifest, ir). The
    task is the one the manifest records (`task.from_record`). ``speed`` (`runtime.speed.Speed`, resolved):
    the model goes to its device, compiled with its ``torch_compile`` (CPU, eager when None)."""
    from peltc.api import compile_model
    from peltc.compiler.archs import load_config
    from peltc.compiler.torch.artifact import load_into, read_artifact
    from peltc.compiler.torch.rewrite import fold_prefix
    from peltc.runtime.models import load_base
    from peltc.runtime.task import from_record

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder '{run_dir}' does not exist", code="U008")
    manifest, tensors, ir = read_artifact(run_dir / "adapter")
    task = from_record(manifest)
    mc = load_config(manifest["base_model"]["name"])
    tokenizer, model = load_base(mc, task.num_labels, causal_lm=task.causal_lm)
    compile_model(ir, model)
    fold_prefix(model)
    load_into(model, manifest, tensors, spec_hash=ir.settings.spec_hash)
    from peltc.runtime.speed import serving
    serving(model, speed)
    return model, tokenizer, task, manifest, ir


def run_speed(run_dir: Path, speed=None):
    """The resolved `Speed` a command serves ``run_dir`` with: ``speed`` as given, its precision (None) the
    one the run was trained and scored in (run.json), so that `peltc eval` reproduces the record."""
    from dataclasses import replace

    from peltc.runtime.speed import DEFAULT, recorded, resolve
    speed = speed or replace(DEFAULT, precision=None)
    if speed.precision is None:
        try:
            run = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            run = {}
        speed = replace(speed, precision=recorded(run if isinstance(run, dict) else {}))
    return resolve(speed)


def eval_run(run_dir: str | Path, data_dir: str | None = None, *, train: str | None = None,
             test: str | None = None, speed=None) -> dict[str, Any]:
    """Re-score a run's test set on a freshly loaded artifact. Your own data is read again from where
    the run found it, or from ``train`` / ``test`` when it moved (``warning`` says when a file changed
    since); a file not there is a DataError before weights load."""
    run_dir = Path(run_dir)
    task = _eval_task(run_dir, train, test)
    from peltc.runtime.speed import autocast
    speed = run_speed(run_dir, speed)
    model, tokenizer, _, manifest, ir = load_run(run_dir, speed)
    opts = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    test, notes = task.eval_split(run_dir, opts, data_dir, tokenizer, run_max_length(run_dir))
    with autocast(speed):
        metrics, _, warn = task.score(model, tokenizer, test, gates=False)
    warning = "; ".join(w for w in (*notes, warn) if w) or None
    return {"test": metrics, "warning": warning, **compare_recorded(run_dir, metrics)}


def _eval_task(run_dir: Path, train: str | None, test: str | None):
    """The task `eval_run` scores, read from the manifest alone, before weights load; data that moved
    is located by the task (its `locate`: your own data's files)."""
    from peltc.api import artifact_dir
    from peltc.compiler.torch.artifact import read_manifest
    from peltc.runtime.task import from_record

    task = from_record(read_manifest(artifact_dir(run_dir)))
    locate = getattr(task, "locate", None)
    if locate is None:
        if train or test:
            raise UsageError(f"--train / --test point at a moved data file; {run_dir} is a {task.name} run",
                             code="U130", help="they apply to runs on your own data (csv:, json:, disk:)")
        return task
    return locate(run_dir, train, test)


AGREE_TOL = 1e-6     # a re-scored metric agrees with the recorded one within this (absolute)


def compare_recorded(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """What ``metrics`` (a re-scoring) says against the test metrics the run recorded in ``metrics.json``:
    ``recorded`` (None: the folder records none, e.g. an imported adapter), ``agree`` (True, False or
    None) and ``differences`` (``(name, now, recorded)`` for each metric that differs, or that only one
    side has)."""
    try:
        recorded = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8")).get("test")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if not isinstance(recorded, dict):
        return {"recorded": None, "agree": None, "differences": []}
    diffs = []
    for k in sorted(set(metrics) | set(recorded)):
        a, b = metrics.get(k), recorded.get(k)
        num = isinstance(a, (int, float)) and isinstance(b, (int, float))
        if (num and abs(a - b) > AGREE_TOL) or (not num and a != b):
            diffs.append((k, a, b))
    return {"recorded": recorded, "agree": not diffs, "differences": diffs}


def predict_text(run_dir: str | Path, text: str, pair: str | None = None, *, probs: bool = False,
                 speed=None) -> dict[str, Any]:
    """``label`` + ``probability`` (and with ``probs`` every label's, ``probabilities``), or ``score``."""
    import torch

    from peltc.runtime.speed import autocast, to_device
    run_dir = Path(run_dir)
    speed = run_speed(run_dir, speed)
    model, tokenizer, task, manifest, ir = load_run(run_dir, speed)
    task.check_serves("predict", run_dir)
    if task.is_pair and pair is None:
        raise UsageError(f"{task.name} takes a text pair", code="U013", help="add --text-pair \"…\"")
    enc = tokenizer(text, pair, truncation=True, max_length=run_max_length(run_dir), return_tensors="pt")
    model.eval()
    with torch.no_grad(), autocast(speed):
        logits = model(**to_device(enc, model)).logits[0]
    return prediction_fields(task, logits.float().cpu().numpy(), probs=probs)


PREDICTION_FIELDS = ("label", "probability", "probabilities", "score")


def prediction_fields(task, logits, *, probs: bool = False) -> dict[str, Any]:
    """What a prediction adds to an input row: ``score`` (regression), else ``label`` + ``probability``
    and, with ``probs``, ``probabilities``: every label's, in the run's label order."""
    import numpy as np

    if task.is_regression:
        return {"score": float(logits[0])}
    p = np.exp(logits - logits.max())
    p /= p.sum()
    i = int(p.argmax())
    out = {"label": task.labels[i], "probability": float(p[i])}
    if probs:
        out["probabilities"] = {str(lab): float(q) for lab, q in zip(task.labels, p)}
    return out


@contextlib.contextmanager
def jsonl_sink(out: str | Path | None):
    """Standard output, or a file that appears whole or not at all (written aside, renamed at the end)."""
    if out is None:
        yield sys.stdout
        return
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    sink = open(tmp, "w", encoding="utf-8")
    try:
        yield sink
    except BaseException:
        sink.close()
        tmp.unlink(missing_ok=True)
        raise
    sink.close()
    os.replace(tmp, out)


def predict_file(run_dir: str | Path, path: str | Path, out: str | Path | None = None, *,
                 batch_size: int = 64, progress: bool = True, probs: bool = False, speed=None) -> dict[str, Any]:
    """Label every row of ``path`` (JSON Lines or a JSON array — ``-`` or a pipe: standard input — or a
    .csv; each row's text(s) under the run's column names or ``text`` / ``text_pair``, row by row: see
    `inputs`). Writes JSON Lines to ``out`` (stdout when None), one row per input row in input order, the
    row's own fields kept and ``label`` + ``probability`` (classification; with ``probs`` also ``probabilities``, every
    label's) or ``score`` (regression)
    added; an input field of one of those names is kept as ``input_<name>``. The input is checked before
    weights load. Returns ``{"rows": n, "renamed": [...], "out": out}``."""
    import torch

    from peltc.api import artifact_dir
    from peltc.compiler.torch.artifact import read_manifest
    from peltc.runtime.inputs import read_inputs, row_texts
    from peltc.runtime.task import from_record

    run_dir = Path(run_dir)
    rows, where = read_inputs(path)
    task = from_record(read_manifest(artifact_dir(run_dir)))
    task.check_serves("predict", run_dir)
    texts = [row_texts(row, i, task, where, "the run") for i, row in enumerate(rows)]
    renamed = sorted({k for r in rows for k in PREDICTION_FIELDS if k in r})
    from peltc.runtime.speed import autocast, to_device
    speed = run_speed(run_dir, speed)
    model, tokenizer, task, manifest, ir = load_run(run_dir, speed)
    max_length = run_max_length(run_dir)
    from tqdm.auto import tqdm

    model.eval()
    with jsonl_sink(out) as sink, torch.no_grad(), autocast(speed):
        bar = tqdm(total=len(rows), desc="predicting", unit="row", disable=not progress, file=sys.stderr)
        for start in range(0, len(rows), batch_size):
            feats = [tokenizer(*t, truncation=True, max_length=max_length) for t in texts[start:start + batch_size]]
            logits = model(**to_device(tokenizer.pad(feats, return_tensors="pt"), model)).logits.float().cpu().numpy()
            for j, lg in enumerate(logits):
                row = {(f"input_{k}" if k in PREDICTION_FIELDS else k): v for k, v in rows[start + j].items()}
                row.update(prediction_fields(task, lg, probs=probs))
                sink.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            bar.update(len(logits))
        bar.close()
    return {"rows": len(rows), "renamed": renamed, "out": str(out) if out is not None else None}


def generate_text(run_dir: str | Path, prompt: str, max_new_tokens: int | None = None, *,
                  temperature: float = 0.0, seed: int | None = None, speed=None) -> str:
    """Complete ``prompt`` with a generation run's artifact on a fresh base model: greedy (``temperature``
    0), else sampled at that temperature (``seed`` for repeatability); KV cache on. Returns the new text."""
    import torch

    from peltc.runtime.speed import autocast
    from peltc.runtime.task_gen import encode_gen

    run_dir = Path(run_dir)
    speed = run_speed(run_dir, speed)
    model, tokenizer, task, manifest, ir = load_run(run_dir, speed)
    task.check_serves("generate", run_dir)
    ids, _ = encode_gen(tokenizer, prompt)
    x = torch.tensor([ids], dtype=torch.long, device=next(model.parameters()).device)
    sample = temperature > 0
    if sample and seed is not None:
        torch.manual_seed(seed)
    model.eval()
    with torch.no_grad(), autocast(speed):
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=sample,
                             **({"temperature": temperature, "top_k": 0, "top_p": 1.0} if sample else {}),
                             max_new_tokens=max_new_tokens or task.max_new_tokens, use_cache=True,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


# --- a merged model (`peltc merge`) ----------------------------------------------------------------

def merge_refusals(ir) -> list[str]:
    """What keeps a run from merging into its base model's weights, one line each (none: it merges)."""
    # the registry: each method says whether it merges, and why not
    out = [f"{i.name} ({i.method}): {METHODS[i.method].no_merge or 'it does not merge into base weights'}"
           for i in ir.instances() if not METHODS[i.method].merges]
    gated = sorted({a.instance for a in ir.attachments() if METHODS[a.method].merges and a.gate.kind == "sigmoid"})
    out += [f"{n}: a sigmoid gate depends on each input, so no single weight reproduces it" for n in gated]
    pool = (ir.settings.head or {}).get("pool")
    if pool not in (None, "pooler"):
        out.append(f"head {{ pool {pool} }}: the classifier reads the token mean past the model's pooler, which the "
                   "saved transformers model would not do")
    return out


def merge_run(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``out``: the run's base model with its LoRA and BitFit merged into the weights (and its task
    head), by ``save_pretrained``, with the tokenizer — a plain transformers model that
    ``AutoModelFor….from_pretrained(out)`` loads with the run's outputs. Refused (U161, before weights
    load) where the run does not merge (`merge_refusals`); ``out`` must be new or empty (U010)."""
    import shutil

    from peltc.compiler.torch.artifact import read_ir, read_manifest
    from peltc.compiler.torch.rewrite import merge
    from peltc.runtime.runfolder import check_new_folder

    run_dir, out = Path(run_dir), check_new_folder(out)
    if not run_dir.is_dir():
        raise UsageError(f"run folder '{run_dir}' does not exist", code="U008")
    refused = merge_refusals(read_ir(read_manifest(run_dir / "adapter")))
    if refused:
        raise UsageError(f"cannot merge {run_dir} into its base model: " + "; ".join(refused), code="U161",
                         help="peltc merge takes runs of LoRA, BitFit and (IA)³ (gate none, const or scalar) with head "
                              "{ pool pooler } (e.g. specs/lora_peft.pelt); serve the others with peltc predict")
    model, tokenizer, task, manifest, ir = load_run(run_dir)
    merged = merge(model)
    if task.labels:
        model.config.id2label = {i: str(lab) for i, lab in enumerate(task.labels)}
        model.config.label2id = {str(lab): i for i, lab in enumerate(task.labels)}
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "merged": merged, "base_model": manifest["base_model"]["name"]}
