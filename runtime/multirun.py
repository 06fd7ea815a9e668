"""`peltc predict RUN_A RUN_B … --file inputs.jsonl`: several trained runs served on one base model.

Every row of the input names its run in a ``run`` field — the folder as given on the command line (or
any path to it) or its name (the folder's basename) — and holds its text(s) under that run's column
names, or ``text`` / ``text_pair``. The runs go on one freshly loaded base model (`peltc.load_runs`); each
batch mixes rows of any runs, in input order, each row routed to its own run's modules and head, its
text truncated at its run's ``max_length``. The output is what ``peltc predict RUN --file`` writes for
each run alone (JSON Lines, input fields kept, ``label`` + ``probability`` or ``score`` added).

Everything that can be checked without weights is checked first: each folder holds an artifact (A002),
the runs share one base model (A023), every row names a known run (D112, naming file, row and line) and
holds its texts (D104 / D110).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from peltc.errors import UsageError

RUN_FIELD = "run"


def _max_length(run_dir: Path) -> int:
    from peltc.runtime.runfolder import run_max_length
    d = Path(run_dir)
    return run_max_length(d.parent if d.name == "adapter" and (d / "manifest.json").is_file() else d)


def predict_runs_file(run_dirs: list[str | Path], path: str | Path, out: str | Path | None = None, *,
                      batch_size: int = 64, progress: bool = True, probs: bool = False,
                      speed=None) -> dict[str, Any]:
    """Label every row of ``path`` with the run its ``run`` field names (see the module's doc). Writes JSON
    Lines to ``out`` (stdout when None; written whole or not at all). Returns ``{"rows", "renamed", "out",
    "per_run"}`` (per_run: rows per run name). ``speed``: a `runtime.speed.Speed` (default: the best device, fp32)."""
    import torch

    from peltc.api import artifact_dir, check_same_base, load_runs, resolve_run, run_name
    from peltc.compiler.archs import load_config
    from peltc.compiler.torch.artifact import read_manifest
    from peltc.runtime.inputs import read_inputs, row_texts
    from peltc.runtime.models import load_base
    from peltc.runtime.serve import PREDICTION_FIELDS
    from peltc.runtime.task import from_record

    dirs = [Path(d) for d in run_dirs]
    arts = [artifact_dir(d) for d in dirs]
    manifests = [read_manifest(a) for a in arts]
    check_same_base([str(d) for d in dirs], manifests)
    names = [run_name(d) for d in dirs]
    tasks = [from_record(m) for m in manifests]
    for t, d in zip(tasks, dirs):
        t.check_serves("predict", d)
    lengths = [_max_length(d) for d in dirs]

    rows, where = read_inputs(path)
    route, texts = [], []
    for i, row in enumerate(rows):
        given = row.get(RUN_FIELD)
        if given is None or (isinstance(given, str) and not given.strip()):
            raise where.error(i, RUN_FIELD, "no run given", code="D112",
                              help=f"every row names its run: one of {', '.join(names)} (or its folder's path)")
        try:
            r = resolve_run(str(given), dirs, names)
        except UsageError as e:
            raise where.error(i, RUN_FIELD, str(e), code="D112", help=e.diagnostic.help) from None
        route.append(r)
        texts.append(row_texts(row, i, tasks[r], where, f"run '{names[r]}'"))

    mc = load_config(manifests[0]["base_model"]["name"])
    from peltc.runtime.speed import autocast, resolve, serving, to_device
    speed = resolve(speed)
    tokenizer, model = load_base(mc, tasks[0].num_labels)
    runs = load_runs(dirs, model, names)
    serving(model, speed)
    renamed = sorted({k for r in rows for k in PREDICTION_FIELDS if k in r})

    from tqdm.auto import tqdm

    from peltc.runtime.serve import jsonl_sink, prediction_fields

    per_run = dict.fromkeys(names, 0)
    with jsonl_sink(out) as sink, torch.no_grad(), autocast(speed):
        bar = tqdm(total=len(rows), desc="predicting", unit="row", disable=not progress, file=sys.stderr)
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            feats = [tokenizer(*texts[j], truncation=True, max_length=lengths[route[j]]) for j in range(start, stop)]
            enc = to_device(tokenizer.pad(feats, return_tensors="pt"), model)
            logits = runs(route[start:stop], **enc).logits.float().cpu().numpy()
            for j, lg in zip(range(start, stop), logits):
                r = route[j]
                row = {(f"input_{k}" if k in PREDICTION_FIELDS else k): v for k, v in rows[j].items()}
                row.update(prediction_fields(tasks[r], lg[:runs.num_labels[r]], probs=probs))
                per_run[names[r]] += 1
                sink.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            bar.update(stop - start)
        bar.close()
    return {"rows": len(rows), "renamed": renamed, "out": str(out) if out is not None else None, "per_run": per_run}
