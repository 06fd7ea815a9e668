"""One run, spec to saved adapter: what `peltc compile --train`, `peltc eval` and `peltc predict` do.

    run = RunOptions(spec="specs/unipelt_apl.pelt", task="glue/cola", k=100, seed=1)
    result = train_run(run)         # a new folder under runs/ with everything below

A run folder holds ``spec.pelt``, ``ir.json``, ``architecture.svg``, ``adapter/`` (the artifact),
``metrics.json``, ``gates.json``, ``gates.png``, ``trainer_log.json`` and ``run.json`` (the options
and the run's *identity*: spec hash, task, K, seed, dev size, model and resolved settings, hashed).
The test metrics are computed on the *saved* model (prefix MLPs folded), with the same evaluation
`peltc eval` uses, so a reload reproduces them exactly.

Nothing is lost:
- every input (flags, spec, model, data files) is checked before a folder is made or weights load;
- a folder belongs to one identity: ``--out`` naming an existing folder is refused unless
  ``--resume`` is given *and* the folder's identity matches — before a byte is written; a finished
  run is reported, never redone; a default name that is taken gets a suffix, said on the first line;
- the folder is made only once the model is loaded and the data tokenised, and removed again when
  the run fails or is interrupted before its first complete checkpoint (nothing there to resume);
- checkpoints are marked complete once written (signals held meanwhile), validated before resuming;
- after training, the artifact and ``trainer/result.json`` are written before the test set is
  scored, so an interruption while scoring resumes by scoring the saved artifact; ``metrics.json``
  (the "finished" mark) comes last and checkpoints are deleted only after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peltc.compiler.archs import ModelConfig, load_config
from peltc.compiler.ir import IR
from peltc.errors import ArtifactError, Interrupted, UsageError
from peltc.runtime import signals
from peltc.runtime.models import load_base, resolve_model, weights_source

RUNS_DIR = "runs"
RESULT = "result.json"       # trainer/result.json: training done, artifact saved, test not yet scored


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
    diagnostics: bool = True  # diagnostics.json / .png: gates, norms, prefix attention, feature spread


# --- run folders ----------------------------------------------------------------------------------

def run_identity(*, spec_hash: str | None, task: str, k, seed: int, dev_size: int, model: str,
                 settings: dict[str, Any]) -> dict[str, Any]:
    """What a run folder belongs to. Two runs with the same identity compute the same thing."""
    return {"spec_hash": spec_hash, "task": task, "k": k, "seed": seed, "dev_size": dev_size, "model": model,
            "settings": settings}


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if key == "settings" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}: {a.get(k)!r} in the folder, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]
        elif a != b:
            if key == "spec_hash":
                out.append("the spec (its text or an imported file differs)")
            else:
                out.append(f"{key}: {a!r} in the folder, {b!r} now")
    return out


def finished_metrics(run_dir: Path) -> dict[str, Any] | None:
    try:
        m = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return m if isinstance(m, dict) and m.get("final") else None


def _describe(m: dict[str, Any]) -> str:
    main = m.get("main_metric")
    score = m.get("test", {}).get(main)
    return (f"{Path(str(m.get('spec'))).name} on {m.get('task')}, K={m.get('k')}, seed {m.get('seed')}"
            + (f": test {main} {score:.4f}" if isinstance(score, (int, float)) else ""))


@dataclass
class RunPlan:
    """Where a run goes and in which state it starts (decided before anything is written)."""

    path: Path
    resume: bool = False              # continue the folder's run (its identity matched)
    finished: dict | None = None      # the folder already holds this finished run
    note: str | None = None           # said on the first line (a default name that was taken)


def default_run_dir(opts: RunOptions, task_name: str) -> Path:
    return Path(RUNS_DIR) / f"{Path(opts.spec).stem}-{task_name}-k{opts.k}-s{opts.seed}"


def plan_run_dir(opts: RunOptions, task_name: str, identity: dict[str, Any]) -> RunPlan:
    """Decide the folder, refusing anything that would change another run's folder."""
    base = Path(opts.out) if opts.out else default_run_dir(opts, task_name)
    if opts.resume:
        run_json = base / "run.json"
        if not run_json.is_file():
            raise UsageError(f"nothing to resume in '{base}': no run.json there", code="U007",
                             help="--resume continues an interrupted run in its folder (pass the same --out)")
        try:
            old = json.loads(run_json.read_text(encoding="utf-8")).get("identity")
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise UsageError(f"cannot read '{run_json}': {e}", code="U007") from None
        if old is None:
            raise UsageError(f"'{base}' was written by an older peltc that did not record what the run was: "
                             "cannot tell whether it matches", code="U011",
                             help="start the run again in a new --out folder")
        diffs = _differences(old, identity)
        if diffs:
            raise UsageError(f"'{base}' belongs to another run; --resume refused (nothing was changed): "
                             + "; ".join(diffs), code="U011",
                             help="resume with the spec, task, K, seed, model and settings the run started with, "
                                  "or give this run its own --out folder")
        return RunPlan(base, resume=True, finished=finished_metrics(base))
    if opts.out:
        if base.exists() and (not base.is_dir() or any(base.iterdir())):
            done = finished_metrics(base) if base.is_dir() else None
            if done is not None:
                raise UsageError(f"'{base}' holds a finished run ({_describe(done)}); a run folder is never "
                                 "overwritten", code="U010",
                                 help=f"choose another --out (peltc eval {base} re-scores that run)")
            if (base / "run.json").is_file():
                raise UsageError(f"'{base}' holds an unfinished run", code="U010",
                                 help="add --resume to continue it (same spec and settings), or choose another --out")
            raise UsageError(f"'{base}' exists and is not an empty folder", code="U010",
                             help="choose another --out")
        return RunPlan(base)
    cand, n = base, 1
    while cand.exists():
        n += 1
        cand = base.with_name(f"{base.name}-{n}")
    note = None if cand == base else f"note: '{base}' is taken; this run goes to '{cand}'"
    return RunPlan(cand, note=note)


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
    """Test metrics, mean gates and a warning for a constant or near-constant predictor (or None)."""
    from peltc.runtime.metrics import compute, degenerate_warning, near_constant, to_predictions

    logits, gates = predict_with_gates(model, dataset, tokenizer)
    preds = to_predictions(task, logits)
    metrics = compute(task, preds, dataset["label"])
    warn = degenerate_warning(task, preds, "test", metrics) or near_constant(task, preds, dataset["label"], "test")
    return metrics, gates, warn


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
    fig, ax = plt.subplots(figsize=(3.0 + 0.9 * len(layers), 1.8 + 0.6 * len(rows)))
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("layer")
    for i in range(len(rows)):
        for j in range(len(layers)):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if data[i, j] < 0.6 else "black")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="mean gate on test")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
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


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _shared_plan(opts: RunOptions, task_name: str, identity: dict[str, Any]) -> RunPlan:
    """Rank 0 plans the folder; under torchrun every rank gets the same plan, or the same error."""
    if _world_size() <= 1:
        return plan_run_dir(opts, task_name, identity)
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    obj: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            obj = [plan_run_dir(opts, task_name, identity)]
        except UsageError as e:
            obj = [e]
    dist.broadcast_object_list(obj, src=0)
    if isinstance(obj[0], UsageError):
        raise obj[0]
    return obj[0]


def _say(msg: str) -> None:
    if _is_main():
        print(msg, flush=True)


def prepare(opts: RunOptions):
    """Everything that can be checked without weights or data — spec, model, task, K, flags — and the
    run's folder plan. Raises on any bad input before anything is loaded or written."""
    from peltc.runtime import data as D
    from peltc.runtime.tasks import task as get_task
    from peltc.runtime.train import default_recipe, resolve_settings

    task = get_task(opts.task)
    opts.k = D.parse_k(opts.k)
    if opts.dev_size < 1:
        raise UsageError(f"--dev-size {opts.dev_size} is out of range", code="U106",
                         help="--dev-size (training examples held out for checkpoint selection) must be ≥ 1")
    if opts.seed < 0:
        raise UsageError(f"--seed {opts.seed} is out of range", code="U106", help="--seed must be ≥ 0")
    text, ir, mc = resolve_spec(opts.spec, opts.model)
    ir = _with_head_pool(ir, default_recipe["pool"])
    finetune = any(a.method == "finetune" for a in ir.attachments())
    settings = resolve_settings(ir.settings.train, {**opts.overrides, "seed": opts.seed}, finetune=finetune)
    identity = run_identity(spec_hash=ir.settings.spec_hash, task=task.name, k=opts.k, seed=opts.seed,
                            dev_size=opts.dev_size, model=mc.ref, settings=settings.to_dict())
    plan = _shared_plan(opts, task.name, identity)
    return task, text, ir, mc, settings, identity, plan


def train_run(opts: RunOptions) -> dict[str, Any]:
    """Compile, train, evaluate and save one run; returns what ``metrics.json`` holds (with
    ``already_finished`` when ``--resume`` found the run done). SIGINT / SIGTERM end it with
    `Interrupted` (exit 130 / 143) whose message says what was kept."""
    with signals.interruptible():
        try:
            return _train_run(opts)
        except Interrupted as e:
            if e.explained:
                raise
            where = "'{}' unchanged".format(opts.out) if opts.resume and opts.out else "nothing was written"
            raise Interrupted(e.signum, f"interrupted ({e.signame}) before training began: {where}") from None


def _train_run(opts: RunOptions) -> dict[str, Any]:
    from transformers import set_seed

    from peltc.api import compile_model
    from peltc.runtime import data as D
    from peltc.runtime.train import last_checkpoint

    t0 = time.time()
    task, text, ir, mc, settings, identity, plan = prepare(opts)
    run_dir, main = plan.path, _is_main()
    if plan.finished is not None:
        _say(f"'{run_dir}' already holds this finished run; nothing to do (peltc eval {run_dir} re-scores it)")
        return {**plan.finished, "run_dir": str(run_dir), "already_finished": True}
    if plan.note:
        _say(plan.note)
    weights_source(mc)                       # a Hub name that cannot load fails now, not after the data
    raw = D.load_glue(task, opts.data_dir)   # data files checked before weights load
    signals.raise_if_interrupted()

    trainer_dir = run_dir / "trainer"
    scoring = plan.resume and (trainer_dir / RESULT).is_file() and (run_dir / "adapter" / "manifest.json").is_file()
    checkpoint = None
    if plan.resume and not scoring:
        checkpoint = last_checkpoint(trainer_dir)
        if checkpoint is None:
            _say(f"resume: no complete checkpoint in '{trainer_dir}' yet; training starts from the beginning")
        else:
            _say(f"resume: {_checkpoint_line(checkpoint, task.main_metric)}")
    elif scoring:
        _say("resume: training had finished and the adapter was saved; scoring the test set")

    set_seed(settings.seed)
    tokenizer, model = load_base(mc, task.num_labels)
    report = compile_model(ir, model)
    if main and not plan.resume:
        print(report.render())
    ds = D.sample(raw, opts.k, settings.seed, dev_size=opts.dev_size)
    enc = D.tokenize(ds, tokenizer, task, max_length=settings.max_length)
    signals.raise_if_interrupted()

    created = False
    if main and not plan.resume:
        created = _make_folder(run_dir, opts)
        (run_dir / "spec.pelt").write_text(text, encoding="utf-8")
        _write_json(run_dir / "ir.json", ir.to_dict())
        _write_json(run_dir / "run.json", {**asdict(opts), "model_ref": mc.ref, "task_name": task.name,
                                           "identity": identity, "identity_hash": identity_hash(identity)})
        if opts.render:
            _render(ir, run_dir / "architecture.svg")
    try:
        return _train_and_score(opts, task, text, ir, mc, settings, model, tokenizer, enc, run_dir,
                                checkpoint, scoring, t0)
    except BaseException as e:
        kept = _resumable(run_dir)
        if main and created and not kept:
            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(e, Interrupted):
            where = (f"'{run_dir}' kept ({kept}); continue it with the same command and --out {run_dir} --resume"
                     if kept else ("nothing was kept" if created or not plan.resume else f"'{run_dir}' unchanged"))
            raise Interrupted(e.signum, f"interrupted ({e.signame}): {where}") from None
        if main and created and not kept and isinstance(e, Exception):
            print(f"note: the run failed before its first checkpoint; '{run_dir}' was removed", file=sys.stderr)
        raise


def _make_folder(run_dir: Path, opts: RunOptions) -> bool:
    """Create the planned folder (True when made here). A default-named folder that appeared since the
    plan (another run started meanwhile) moves this run to the next free suffix."""
    if opts.out:
        made = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        return made
    base, n = run_dir, 1
    while True:
        try:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir()
            return True
        except FileExistsError:
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")


def _resumable(run_dir: Path) -> str | None:
    """What an interrupted run left that --resume continues from, or None."""
    from peltc.runtime.train import last_checkpoint
    if (run_dir / "trainer" / RESULT).is_file():
        return "training finished, adapter saved"
    ckpt = last_checkpoint(run_dir / "trainer")
    return ckpt.name if ckpt else None


def _checkpoint_line(checkpoint: Path, metric: str) -> str:
    from peltc.runtime.train import checkpoint_info
    info = checkpoint_info(checkpoint)
    best = info.get("best_metric")
    best_txt = (f"; best dev {metric} so far {best:.4f} at step {info.get('best_step')}"
                if isinstance(best, (int, float)) else "")
    return f"continuing from {checkpoint} (step {info.get('step')}{best_txt})"


def _train_and_score(opts, task, text, ir, mc, settings, model, tokenizer, enc, run_dir: Path, checkpoint,
                     scoring: bool, t0: float) -> dict[str, Any]:
    from peltc.compiler.torch.artifact import load_into, load_tensors, save_artifact
    from peltc.compiler.torch.rewrite import fold_prefix
    from peltc.runtime.diagnostics import Diagnostics
    from peltc.runtime.train import train

    main = _is_main()
    trainer_dir = run_dir / "trainer"
    if scoring:
        result = json.loads((trainer_dir / RESULT).read_text(encoding="utf-8"))
        fold_prefix(model)
        manifest, tensors = load_tensors(run_dir / "adapter")
        load_into(model, manifest, tensors, spec_hash=ir.settings.spec_hash)
    else:
        diag = (Diagnostics(model, enc["dev"], tokenizer, task, path=run_dir / "diagnostics.json")
                if opts.diagnostics else None)
        result = train(model, tokenizer, enc, task, settings, trainer_dir, resume=checkpoint or False,
                       progress=opts.progress, evaluate_test=False, keep_checkpoints=True,
                       callbacks=[diag] if diag else ())
        if not main:
            return result
        if diag is not None:
            result["diagnostics"] = diag.records

        fold_prefix(model)
        with signals.deferred():
            save_artifact(model, run_dir / "adapter", ir_dict=ir.to_dict(), spec_text=text,
                          spec_hash=ir.settings.spec_hash, base_model=mc.ref,
                          extra={"task": task.name, "labels": list(task.labels) if task.labels else None})
            _write_json(trainer_dir / RESULT, result)
    records = result.pop("diagnostics", None)
    if records:
        from peltc.runtime.diagnostics import plot
        plot(records, run_dir / "diagnostics.png", f"{Path(opts.spec).stem} on {task.name}, K={opts.k}, "
                                                    f"seed {settings.seed}")
    t_eval = time.time()
    test, gates, warn = evaluate_saved(model, tokenizer, enc["test"], task)
    eval_s = time.time() - t_eval
    table = gates_table(gates)
    with signals.deferred():
        _write_json(run_dir / "gates.json", table)
        plot_gates(table, run_dir / "gates.png", f"{Path(opts.spec).stem} on {task.name}, K={opts.k}, "
                                                  f"seed {settings.seed}")
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
            "k": opts.k,
            "seed": settings.seed,
            "wall_seconds": round(time.time() - t0, 1),
            "eval_examples_per_second": round(len(enc["test"]) / max(eval_s, 1e-9), 1),
            "near_constant": bool(warn),
            "final": True,
        }
        _write_json(run_dir / "metrics.json", metrics)
    for ckpt in trainer_dir.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)
    (trainer_dir / RESULT).unlink(missing_ok=True)
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
