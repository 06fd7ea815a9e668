"""One run, spec to saved adapter: what `peltc compile --train`, `peltc eval` and `peltc predict` do.

    run = RunOptions(spec="specs/unipelt_apl.pelt", task="glue/cola", k=100, seed=1)
    result = train_run(run)         # a new folder under runs/ with everything below

A run folder (never another run's: a taken name gets a numeric suffix) holds ``spec.pelt``,
``ir.json``, ``architecture.svg``, ``adapter/`` (the artifact), ``metrics.json``, ``gates.json``,
``gates.png``, ``trainer_log.json`` and ``run.json`` (the options, to reload and resume).
The test metrics are computed on the *saved* model (prefix MLPs folded), with the same evaluation
`peltc eval` uses, so a reload reproduces them exactly.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peltc.compiler.archs import PACKAGED_MODEL, ModelConfig, load_config
from peltc.compiler.ir import IR
from peltc.errors import ArtifactError, UsageError

RUNS_DIR = "runs"


@dataclass
class RunOptions:
    spec: str
    task: str | None = None
    model: str | None = None
    data_dir: str | None = None
    k: str | int = 100
    seed: int = 1
    dev_size: int = 1000      # held-out training examples for checkpoint selection (the paper: 1,000)
    out: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)   # train settings from the command line
    resume: bool = False
    progress: bool = True
    render: bool = True


# --- model ----------------------------------------------------------------------------------------

def resolve_model(cli: str | None, spec_model: str | None) -> ModelConfig:
    """--model, else the spec's `model`, else the packaged pretrained MiniLM."""
    return load_config(cli or spec_model or PACKAGED_MODEL)


def load_base(mc: ModelConfig, num_labels: int):
    """Tokenizer and a fresh sequence-classification model with pretrained weights."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    where = mc.model_dir or mc.ref
    try:
        tok = AutoTokenizer.from_pretrained(where)
        model = AutoModelForSequenceClassification.from_pretrained(where, num_labels=num_labels)
    except OSError as e:
        raise UsageError(f"cannot load weights for model '{mc.ref}': {str(e).splitlines()[0]}", code="U006",
                         help="without network, pass --model DIR (a local model directory) or use the packaged "
                              f"default ({PACKAGED_MODEL})") from None
    return tok, model


# --- run folders ----------------------------------------------------------------------------------

def new_run_dir(opts: RunOptions, task_name: str) -> Path:
    """A fresh folder for this run (``--out`` or runs/<spec>-<task>-k<K>-s<seed>), never reusing one."""
    base = Path(opts.out) if opts.out else Path(RUNS_DIR) / f"{Path(opts.spec).stem}-{task_name}-k{opts.k}-s{opts.seed}"
    if opts.resume:
        if not (base / "run.json").exists():
            raise UsageError(f"nothing to resume in '{base}'", code="U007",
                             help="--resume continues an interrupted run in its folder (pass the same --out)")
        return base
    cand, n = base, 1
    while cand.exists() and any(cand.iterdir()):
        n += 1
        cand = base.with_name(f"{base.name}-{n}")
    cand.mkdir(parents=True, exist_ok=True)
    return cand


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


# --- evaluation on the saved model ----------------------------------------------------------------

def predict_with_gates(model, dataset, tokenizer, batch_size: int = 256):
    """Logits for every example (no grad, large batches, dataset order) and the mean gate value per
    (instance, layer, point) over the examples."""
    import numpy as np
    import torch

    from peltc.compiler.torch.gate import read_gates
    from peltc.runtime.data import collator

    collate = collator(tokenizer)
    cols = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    model.eval()
    logits, sums, n = [], {}, 0
    with torch.no_grad():
        for i in range(0, len(dataset), batch_size):
            rows = dataset[i:i + batch_size]
            feats = [{c: rows[c][j] for c in cols} for j in range(len(rows[cols[0]]))]
            batch = collate(feats)
            out = model(**{k: v for k, v in batch.items() if k in cols})
            logits.append(out.logits.float().cpu().numpy())
            for key, g in read_gates(model).items():
                sums[key] = sums.get(key, 0.0) + float(g.float().sum())
            n += len(feats)
    gates = {key: s / max(n, 1) for key, s in sums.items()}
    return np.concatenate(logits) if logits else np.zeros((0, 1)), gates


def evaluate_saved(model, tokenizer, dataset, task):
    from peltc.runtime.metrics import compute, degenerate_warning, to_predictions

    logits, gates = predict_with_gates(model, dataset, tokenizer)
    preds = to_predictions(task, logits)
    metrics = compute(task, preds, dataset["label"])
    return metrics, gates, degenerate_warning(task, preds, "test", metrics)


def gates_table(gates: dict[tuple, float]) -> dict[str, dict[str, float]]:
    """{"kv": {"0": 0.51, ...}, "qv/attention.query": {...}} — one row per gated module."""
    per_inst_points: dict[str, set] = {}
    for inst, _, point in gates:
        per_inst_points.setdefault(inst, set()).add(point)
    table: dict[str, dict[str, float]] = {}
    for (inst, layer, point), v in sorted(gates.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1] or -1)):
        row = inst if len(per_inst_points[inst]) == 1 else f"{inst}/{point}"
        table.setdefault(row, {})["all" if layer is None else str(layer)] = round(v, 6)
    return table


def plot_gates(table: dict[str, dict[str, float]], path: Path, title: str) -> Path | None:
    """A heatmap, layers × gated modules: the picture UniPELT's gate analysis wants."""
    if not table:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers = sorted({k for row in table.values() for k in row}, key=lambda s: (s == "all", int(s) if s != "all" else 0))
    rows = list(table)
    data = np.array([[table[r].get(lay, np.nan) for lay in layers] for r in rows])
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(layers), 1.0 + 0.45 * len(rows)))
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("layer")
    for i in range(len(rows)):
        for j in range(len(layers)):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] < 0.6 else "black")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="mean gate on test")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- the job --------------------------------------------------------------------------------------

def resolve_spec(spec: str, cli_model: str | None) -> tuple[str, IR, ModelConfig]:
    """The spec's text, its IR checked against the model to use, and that model's config
    (--model, else the spec's `model`, else the packaged MiniLM)."""
    from peltc.compiler.pipeline import build_ir, check_file
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read spec '{spec}': {getattr(e, 'strerror', None) or e}", code="U001") from None
    mc = resolve_model(cli_model, build_ir(text, spec).ir.settings.model)
    return text, check_file(spec, model=mc).ir, mc


def _with_head_pool(ir: IR, pool: str) -> IR:
    s = ir.settings
    if s.head.get("pool") is None:
        ir.replace(s.model_copy(update={"head": {**s.head, "pool": pool}}))
    return ir


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _shared_run_dir(opts: RunOptions, task_name: str) -> Path:
    """Rank 0 picks the folder; under torchrun every rank gets the same one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return new_run_dir(opts, task_name)
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    obj = [str(new_run_dir(opts, task_name)) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(obj, src=0)
    return Path(obj[0])


def train_run(opts: RunOptions) -> dict[str, Any]:
    """Compile, train, evaluate and save one run; returns what ``metrics.json`` holds."""
    from transformers import set_seed

    from peltc.api import compile_model
    from peltc.compiler.torch.artifact import save_artifact
    from peltc.compiler.torch.rewrite import fold_prefix
    from peltc.runtime import data as D
    from peltc.runtime.tasks import task as get_task
    from peltc.runtime.train import default_recipe, resolve_settings, train

    t0 = time.time()
    task = get_task(opts.task)
    k = D.parse_k(opts.k)
    opts.k = k
    text, ir, mc = resolve_spec(opts.spec, opts.model)
    ir = _with_head_pool(ir, default_recipe["pool"])
    finetune = any(a.method == "finetune" for a in ir.attachments())
    settings = resolve_settings(ir.settings.train, {**opts.overrides, "seed": opts.seed}, finetune=finetune)

    run_dir = _shared_run_dir(opts, task.name)
    main = _is_main()
    if main:
        (run_dir / "spec.pelt").write_text(text, encoding="utf-8")
        _write_json(run_dir / "ir.json", ir.to_dict())
        _write_json(run_dir / "run.json", {**asdict(opts), "model_ref": mc.ref, "task_name": task.name})
        if opts.render:
            _render(ir, run_dir / "architecture.svg")

    set_seed(settings.seed)
    tokenizer, model = load_base(mc, task.num_labels)
    report = compile_model(ir, model)
    if main:
        print(report.render())

    ds = D.sample(D.load_glue(task, opts.data_dir), k, settings.seed, dev_size=opts.dev_size)
    enc = D.tokenize(ds, tokenizer, task, max_length=settings.max_length)
    result = train(model, tokenizer, enc, task, settings, run_dir / "trainer", resume=opts.resume,
                   progress=opts.progress, evaluate_test=False)
    if not main:
        return result
    fold_prefix(model)
    save_artifact(model, run_dir / "adapter", ir_dict=ir.to_dict(), spec_text=text,
                  spec_hash=ir.settings.spec_hash, base_model=mc.ref,
                  extra={"task": task.name, "labels": list(task.labels) if task.labels else None})
    t_eval = time.time()
    test, gates, warn = evaluate_saved(model, tokenizer, enc["test"], task)
    eval_s = time.time() - t_eval
    table = gates_table(gates)
    _write_json(run_dir / "gates.json", table)
    plot_gates(table, run_dir / "gates.png", f"{Path(opts.spec).stem} on {task.name}, K={k}, seed {settings.seed}")
    _write_json(run_dir / "trainer_log.json", result.pop("log_history"))
    warnings = [w for w in result.get("warnings", []) if w]
    if warn and warn not in warnings:
        warnings.append(warn)
    metrics = {
        **result,
        "test": test,
        "warnings": warnings,
        "spec": opts.spec,
        "model": mc.ref,
        "k": k,
        "seed": settings.seed,
        "wall_seconds": round(time.time() - t0, 1),
        "eval_examples_per_second": round(len(enc["test"]) / max(eval_s, 1e-9), 1),
        "final": True,
    }
    _write_json(run_dir / "metrics.json", metrics)
    metrics["run_dir"] = str(run_dir)
    return metrics


def _render(ir: IR, path: Path) -> None:
    try:
        from peltc.compiler.render import render
        render(ir, path)
    except Exception as e:   # a missing `dot` must not cost a training run
        print(f"warning: architecture diagram not written: {e}")


# --- reloading a run ------------------------------------------------------------------------------

def load_run(run_dir: str | Path):
    """A fresh base model with the run's artifact loaded: (model, tokenizer, task, manifest)."""
    from peltc.api import compile_model
    from peltc.compiler.torch.artifact import load_into, load_tensors
    from peltc.compiler.torch.rewrite import fold_prefix
    from peltc.runtime.tasks import task as get_task

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder '{run_dir}' does not exist", code="U008")
    manifest, tensors = load_tensors(run_dir / "adapter")
    try:
        ir = IR.from_dict(manifest["ir"])
    except Exception as e:  # pydantic / key errors: the manifest's IR is not ours
        raise ArtifactError(f"the artifact's IR cannot be read: {e}", code="A012") from None
    task = get_task(manifest.get("task") or "")
    mc = load_config(manifest["base_model"]["name"])
    tokenizer, model = load_base(mc, task.num_labels)
    compile_model(ir, model)
    fold_prefix(model)
    load_into(model, manifest, tensors, spec_hash=ir.settings.spec_hash)
    return model, tokenizer, task, manifest, ir


def eval_run(run_dir: str | Path, data_dir: str | None = None) -> dict[str, Any]:
    """Re-score a run's test set on a freshly loaded artifact."""
    from peltc.runtime import data as D

    run_dir = Path(run_dir)
    model, tokenizer, task, manifest, ir = load_run(run_dir)
    opts = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    max_length = (json.loads((run_dir / "metrics.json").read_text()).get("settings", {}).get("max_length", 128)
                  if (run_dir / "metrics.json").exists() else 128)
    ds = D.load_glue(task, data_dir or opts.get("data_dir"), splits=("dev",))
    import datasets
    test = D.tokenize(datasets.DatasetDict({"test": ds["dev"]}), tokenizer, task, max_length=max_length)["test"]
    metrics, _, warn = evaluate_saved(model, tokenizer, test, task)
    return {"test": metrics, "warning": warn}


def predict_text(run_dir: str | Path, text: str, pair: str | None = None) -> dict[str, Any]:
    import torch

    model, tokenizer, task, manifest, ir = load_run(run_dir)
    if task.is_pair and pair is None:
        raise UsageError(f"{task.name} takes a sentence pair", code="U009", help="add --text-pair \"…\"")
    enc = tokenizer(text, pair, truncation=True, max_length=128, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = model(**enc).logits[0]
    if task.is_regression:
        return {"score": float(logits[0])}
    probs = torch.softmax(logits, -1)
    i = int(probs.argmax())
    return {"label": task.labels[i], "probability": float(probs[i])}
