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

import contextlib
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
    # your own data (task = csv:PATH, json:PATH, disk:DIR or hub:NAME[:CONFIG]; see data.load_own)
    validation: str | None = None       # the dev set (same format; a split name for disk / hub)
    test: str | None = None             # the test set (else held out from the training data)
    text_column: str | None = None      # default: text, else sentence
    text_pair_column: str | None = None
    label_column: str | None = None     # default: label
    task_type: str | None = None        # classification | regression (default: decided from the labels)


def is_gen(task) -> bool:
    """A generation task (`tasks.GenTask`: a causal LM on prompt → completion pairs)."""
    return bool(getattr(task, "is_generation", False))


def is_custom(task) -> bool:
    """A task over your own data (`tasks.CustomTask`), not a GLUE task."""
    from peltc.runtime.tasks import CustomTask
    return isinstance(task, CustomTask)


# --- run folders ----------------------------------------------------------------------------------

def run_identity(*, spec_hash: str | None, task: str, k, seed: int, dev_size: int, model: str,
                 settings: dict[str, Any], data: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run folder belongs to. Two runs with the same identity compute the same thing.
    ``data`` (your own data only): ``{"source": the resolved data spec, "hashes": per split, its
    files' sha256}`` — a GLUE run's identity has no such key."""
    out = {"spec_hash": spec_hash, "task": task, "k": k, "seed": seed, "dev_size": dev_size, "model": model,
           "settings": settings}
    if data is not None:
        out["data"] = data
    return out


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if key == "settings" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}: {a.get(k)!r} in the folder, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]
        elif key == "data" and isinstance(a, dict) and isinstance(b, dict):
            sa, sb = a.get("source") or {}, b.get("source") or {}
            if isinstance(sa, dict) and isinstance(sb, dict):
                out += [f"data {k}: {sa.get(k)!r} in the folder, {sb.get(k)!r} now"
                        for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
            elif sa != sb:                       # a generation task's record: the task reference
                out.append(f"data: {sa!r} in the folder, {sb!r} now")
            out += [f"data {k}: {a.get(k)!r} in the folder, {b.get(k)!r} now"
                    for k in sorted((set(a) | set(b)) - {"source", "hashes"}) if a.get(k) != b.get(k)]
            ha, hb = a.get("hashes") or {}, b.get("hashes") or {}
            out += [f"the {k} data (its content differs)" for k in sorted(set(ha) & set(hb)) if ha[k] != hb[k]]
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
    from peltc.runtime.settings import check_option, default_recipe, resolve_settings

    for name, value in opts.overrides.items():     # flags first: no torch imported yet
        check_option(name, value)
    task, raw, data_identity = _resolve_task(opts)
    opts.k = D.parse_k(opts.k)
    if opts.dev_size < 1:
        raise UsageError(f"--dev-size {opts.dev_size} is out of range", code="U106",
                         help="--dev-size (training examples held out for checkpoint selection) must be ≥ 1")
    if opts.seed < 0:
        raise UsageError(f"--seed {opts.seed} is out of range", code="U106", help="--seed must be ≥ 0")
    text, ir, mc = resolve_spec(opts.spec, opts.model)
    if is_gen(task):
        _check_causal_lm(ir, mc, opts.task)
    else:
        ir = _with_head_pool(ir, default_recipe["pool"])
    finetune = any(a.method == "finetune" for a in ir.attachments())
    settings = resolve_settings(ir.settings.train, {**opts.overrides, "seed": opts.seed}, finetune=finetune)
    settings = _decoder_settings(settings, ir, mc, opts)
    identity = run_identity(spec_hash=ir.settings.spec_hash, task=task.name, k=opts.k, seed=opts.seed,
                            dev_size=opts.dev_size, model=mc.ref, settings=settings.to_dict(), data=data_identity)
    plan = _shared_plan(opts, task.name, identity)
    return task, text, ir, mc, settings, identity, plan, raw


_OWN_FLAGS = {"validation": "--validation", "test": "--test", "text_column": "--text-column",
              "text_pair_column": "--text-pair-column", "label_column": "--label-column", "task_type": "--task-type"}


def own_data(opts: RunOptions, flag: str = "--train"):
    """The `data.OwnData` that ``opts`` asks for (``opts.task`` is csv:…, json:…, disk:… or hub:…; ``flag``
    names it in errors: `peltc grid` reads it from ``--tasks``)."""
    from peltc.runtime import data as D

    train = D.parse_source(opts.task, flag)
    return D.OwnData(train=train,
                     validation=D.parse_source(opts.validation, "--validation", like=train) if opts.validation else None,
                     test=D.parse_source(opts.test, "--test", like=train) if opts.test else None,
                     text_column=opts.text_column, text_pair_column=opts.text_pair_column,
                     label_column=opts.label_column or "label", task_type=opts.task_type)


def _resolve_task(opts: RunOptions):
    """(task, raw data or None, the identity's data record or None). A GLUE task's data is read later
    (after the model's weights are found); your own data is read and checked here, since its labels
    make the task."""
    from peltc.runtime import data as D
    from peltc.runtime.tasks import task as get_task

    if is_gen_ref(opts.task):
        return _resolve_gen_task(opts)
    if not D.is_own(opts.task):
        given = [flag for key, flag in _OWN_FLAGS.items() if getattr(opts, key, None) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} apply to your own data, not to GLUE task '{opts.task}'",
                             code="U130", help="--train csv:PATH | json:PATH | disk:DIR | hub:NAME[:CONFIG] takes them")
        try:
            return get_task(opts.task or ""), None, None
        except UsageError as e:
            hint = D.hint_for(opts.task or "")
            if hint is None:
                raise
            raise UsageError(e.diagnostic.message, code=e.diagnostic.code, help=hint) from None
    if opts.data_dir is not None:
        raise UsageError("--data-dir is for GLUE tasks", code="U130",
                         help=f"--train {opts.task} names the data itself")
    notes: list[str] = []
    raw, task, hashes = D.load_own(own_data(opts), notes)
    for n in notes:
        _say(f"note: {n}")
    return task, raw, {"source": {k: v for k, v in task.data.items() if k != "label_kind"}, "hashes": hashes}


def _decoder_settings(settings, ir: IR, mc: ModelConfig, opts: RunOptions):
    """A decoder's classification head (``score``) has no bias: the recipe's ``head_bias prior`` becomes
    ``zero`` there (said with --head-bias prior or the spec's ``train { head_bias prior }``, it stays, and
    training refuses it, U107). A generation task has no head at all."""
    from dataclasses import replace

    from peltc.compiler.archs import family_of
    try:
        causal = family_of(mc.config).causal
    except UsageError:
        return settings
    said = "head_bias" in opts.overrides or (ir.settings.train or {}).get("head_bias") is not None
    if causal and not said and settings.head_bias != "zero":
        return replace(settings, head_bias="zero")
    return settings


def is_gen_ref(ref) -> bool:
    from peltc.runtime.tasks import is_gen as _is_gen
    return _is_gen(ref)


def _resolve_gen_task(opts: RunOptions):
    """A generation task (``gen:arith``, ``gen:jsonl:PATH`` [--validation FILE] [--test FILE]): the task,
    its examples (JSONL files are read and checked here, before weights load) and the identity's data
    record (each file's sha256)."""
    from dataclasses import replace

    from peltc.runtime import data as D
    from peltc.runtime.tasks import gen_task

    task = gen_task(opts.task)
    split_flags = ("validation", "test") if task.source == "jsonl" else ()
    given = [flag for key, flag in _OWN_FLAGS.items()
             if key not in split_flags and getattr(opts, key, None) is not None]
    if opts.data_dir is not None:
        given.insert(0, "--data-dir")
    if given:
        raise UsageError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to generation task "
                         f"'{opts.task}'", code="U130",
                         help="a gen:jsonl:PATH file holds prompt / completion pairs (--validation FILE and "
                              "--test FILE name files of the same form); without them its test set is a fixed "
                              "fifth of the pairs, dev and K per seed as for GLUE; gen:arith's splits are built in")
    task = replace(task, **{key: _gen_file(getattr(opts, key), f"--{key}")
                            for key in split_flags if getattr(opts, key, None) is not None})
    raw, record = D.load_gen(task)
    return task, raw, record


def _gen_file(value: str, flag: str) -> str:
    """A --validation / --test value of a gen:jsonl task: a JSON Lines file, as PATH or gen:jsonl:PATH
    (made absolute; read later)."""
    from peltc.runtime import data as D
    from peltc.runtime.tasks import GEN_PREFIX

    v = value.strip()
    if v.lower().startswith(GEN_PREFIX + "jsonl:"):
        v = v[len(GEN_PREFIX + "jsonl:"):]
    elif v.lower().startswith(GEN_PREFIX) or D.is_own(v) or v.lower().startswith("glue/"):
        raise UsageError(f"{flag} {value!r}: a generation task's {flag[2:]} set is a JSON Lines file of prompt / "
                         "completion pairs", code="U114", help=f"{flag} PATH (or {flag} gen:jsonl:PATH)")
    if not v:
        raise UsageError(f"{flag} {value!r} names no file", code="U114", help=f"{flag} PATH")
    return os.path.abspath(os.path.expanduser(v))


def _check_causal_lm(ir: IR, mc: ModelConfig, ref: str) -> None:
    """A generation task trains a decoder's ``*ForCausalLM``; ``head { pool mean }`` cannot apply there."""
    from peltc.compiler.archs import FAMILIES, family_of
    fam = family_of(mc.config)
    if not (fam.causal and fam.lm_head):
        decoders = ", ".join(n for n, f in FAMILIES.items() if f.causal)
        raise UsageError(f"generation task '{ref}' needs a decoder; model '{mc.ref}' is {fam.name}", code="U131",
                         help=f"pass --model smollm2-135m (or a {decoders} model)")
    if (ir.settings.head or {}).get("pool") == "mean":
        raise UsageError(f"the spec's head {{ pool mean }} applies to classifiers, not to generation task '{ref}'",
                         code="U131", help="remove the head { } block for generation tasks")


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
    from peltc.runtime import data as D

    t0 = time.time()
    task, text, ir, mc, settings, identity, plan, raw = prepare(opts)   # no torch imported yet
    run_dir, main = plan.path, _is_main()
    if plan.finished is not None:
        _say(f"'{run_dir}' already holds this finished run; nothing to do (peltc eval {run_dir} re-scores it)")
        return {**plan.finished, "run_dir": str(run_dir), "already_finished": True}
    if plan.note:
        _say(plan.note)
    weights_source(mc)                       # a Hub name that cannot load fails now, not after the data

    from transformers import set_seed

    from peltc.api import compile_model
    from peltc.runtime.train import last_checkpoint
    if raw is None:
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
    gen = is_gen(task)
    tokenizer, model = load_base(mc, task.num_labels, causal_lm=gen)
    report = compile_model(ir, model)
    if main and not plan.resume:
        print(report.render())
    ds = (D.sample_own if is_custom(task) or gen else D.sample)(raw, opts.k, settings.seed, dev_size=opts.dev_size)
    if gen:
        enc = D.tokenize_gen(ds, tokenizer, max_length=settings.max_length)
        if task.source == "jsonl":     # the scoring budget: the longest completion (+ end token) in the data
            from dataclasses import replace
            longest = max(len(ids) - n for s in enc.values() for ids, n in zip(s["input_ids"], s["prompt_length"]))
            task = replace(task, max_new_tokens=longest)
    else:
        enc = D.tokenize(ds, tokenizer, task, max_length=settings.max_length)
    signals.raise_if_interrupted()

    created = False
    if main and not plan.resume:
        created = _make_folder(run_dir, opts)
        (run_dir / "spec.pelt").write_text(text, encoding="utf-8")
        _write_json(run_dir / "ir.json", ir.to_dict())
        _write_json(run_dir / "run.json", {**asdict(opts), "model_ref": mc.ref, "task_name": task.name,
                                           **({"own_data": task.to_dict()} if is_custom(task) else {}),
                                           **({"generation": task.to_dict()} if gen else {}),
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
                          extra={"task": task.name, "labels": list(task.labels) if task.labels else None,
                                 **({"task_type": task.task_type, "own_data": task.to_dict()}
                                    if is_custom(task) else {}),
                                 **({"task_type": "generation", "generation": task.to_dict()}
                                    if is_gen(task) else {})})
            _write_json(trainer_dir / RESULT, result)
    records = result.pop("diagnostics", None)
    if records:
        from peltc.runtime.diagnostics import plot
        plot(records, run_dir / "diagnostics.png", f"{Path(opts.spec).stem} on {task.name}, K={opts.k}, "
                                                    f"seed {settings.seed}")
    t_eval = time.time()
    if is_gen(task):
        test, warn = evaluate_generation(model, tokenizer, enc["test"], task), None
        gates = gen_gates(model, tokenizer, enc["test"])
    else:
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
    """A fresh base model with the run's artifact loaded: (model, tokenizer, task, manifest, ir). The
    task is the GLUE task the manifest names, or the `CustomTask` it records (``own_data``)."""
    from peltc.api import compile_model
    from peltc.compiler.torch.artifact import load_into, load_tensors
    from peltc.compiler.torch.rewrite import fold_prefix
    from peltc.runtime.tasks import CustomTask
    from peltc.runtime.tasks import task as get_task

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder '{run_dir}' does not exist", code="U008")
    manifest, tensors = load_tensors(run_dir / "adapter")
    try:
        ir = IR.from_dict(manifest["ir"])
    except Exception as e:  # pydantic / key errors: the manifest's IR is not ours
        raise ArtifactError(f"the artifact's IR cannot be read: {e}", code="A012") from None
    if manifest.get("own_data") or manifest.get("generation"):
        from peltc.runtime.tasks import GenTask
        try:
            task = (CustomTask.from_dict(manifest["own_data"]) if manifest.get("own_data")
                    else GenTask.from_dict(manifest["generation"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"the artifact's task record cannot be read: {e}", code="A012") from None
    else:
        task = get_task(manifest.get("task") or "")
    mc = load_config(manifest["base_model"]["name"])
    tokenizer, model = load_base(mc, task.num_labels, causal_lm=is_gen(task))
    compile_model(ir, model)
    fold_prefix(model)
    load_into(model, manifest, tensors, spec_hash=ir.settings.spec_hash)
    return model, tokenizer, task, manifest, ir


def _run_max_length(run_dir: Path) -> int:
    from peltc.runtime.data import MAX_LENGTH
    try:
        return int(json.loads((run_dir / "metrics.json").read_text()).get("settings", {}).get("max_length")
                   or MAX_LENGTH)
    except (OSError, ValueError, TypeError):
        return MAX_LENGTH


def eval_run(run_dir: str | Path, data_dir: str | None = None) -> dict[str, Any]:
    """Re-score a run's test set on a freshly loaded artifact. Your own data is read again from where
    the run found it (``warning`` says when a file changed since)."""
    from peltc.runtime import data as D

    run_dir = Path(run_dir)
    model, tokenizer, task, manifest, ir = load_run(run_dir)
    opts = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    max_length = _run_max_length(run_dir)
    import datasets
    notes = []
    if is_gen(task):
        test, record = D.gen_test_split(task)
        before = (opts.get("identity") or {}).get("data", {}).get("hashes", {})
        changed = [k for k, h in record.get("hashes", {}).items() if k in before and before[k] != h]
        if changed:
            notes.append(f"the generation data ({' and '.join(changed)}) changed since the run: this is not its "
                         "test set")
        test = D.tokenize_gen(datasets.DatasetDict({"test": test}), tokenizer, max_length=max_length)["test"]
        warning = "; ".join(notes) or None
        return {"test": evaluate_generation(model, tokenizer, test, task), "warning": warning}
    if is_custom(task):
        test, now, hashes = D.own_test_split(D.OwnData.from_dict(task.data))
        if now.labels != task.labels:
            from peltc.errors import DataError
            raise DataError(f"the data of {run_dir} changed since the run: its labels are now "
                            f"{list(now.labels) if now.labels else 'scores'}, the run's "
                            f"{list(task.labels) if task.labels else 'scores'}", code="D111",
                            help=f"the run trained on {task.data['train']['kind']}:{task.data['train']['path']}")
        before = (opts.get("identity") or {}).get("data", {}).get("hashes", {})
        changed = [k for k in hashes if k in before and before[k] != hashes[k]]
        if changed:
            notes.append(f"the {' and '.join(changed)} data changed since the run: this is not its test set")
    else:
        test = D.load_glue(task, data_dir or opts.get("data_dir"), splits=("dev",))["dev"]
    test = D.tokenize(datasets.DatasetDict({"test": test}), tokenizer, task, max_length=max_length)["test"]
    metrics, _, warn = evaluate_saved(model, tokenizer, test, task)
    warning = "; ".join(w for w in (*notes, warn) if w) or None
    return {"test": metrics, "warning": warning}


def predict_text(run_dir: str | Path, text: str, pair: str | None = None) -> dict[str, Any]:
    import torch

    run_dir = Path(run_dir)
    model, tokenizer, task, manifest, ir = load_run(run_dir)
    _not_generation(task, run_dir)
    if task.is_pair and pair is None:
        raise UsageError(f"{task.name} takes a text pair", code="U013", help="add --text-pair \"…\"")
    enc = tokenizer(text, pair, truncation=True, max_length=_run_max_length(run_dir), return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = model(**enc).logits[0]
    if task.is_regression:
        return {"score": float(logits[0])}
    probs = torch.softmax(logits, -1)
    i = int(probs.argmax())
    return {"label": task.labels[i], "probability": float(probs[i])}


PREDICTION_FIELDS = ("label", "probability", "score")


def _input_columns(task) -> list[tuple[str, ...]]:
    """The names an input row may give its text(s) by: the run's own columns, then text / text_pair."""
    own = tuple(getattr(task, "text_columns", ()) or task.columns)
    return [c for c in (own, tuple(task.columns), ("text", "text_pair")[:len(task.columns)]) if c]


def read_inputs(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSON Lines (or CSV, by its suffix) input file, through `datasets`, in file order;
    an empty or unreadable file is a DataError naming it."""
    from peltc.runtime import data as D

    p = Path(path)
    kind = "csv" if p.suffix.lower() in (".csv", ".tsv") else "json"
    if not p.is_file():
        from peltc.errors import DataError
        raise DataError(f"--file: input file '{path}' not found", code="D101",
                        help="one JSON object per line, with the text(s) to label")
    src = D.Source(kind, str(p.resolve()))
    ds = D._pick_split(D._load_source(src, "input"), "file", src)
    return ds.to_list()


def prediction_fields(task, logits) -> dict[str, Any]:
    """What a prediction adds to an input row: ``score`` (regression), else ``label`` + ``probability``."""
    import numpy as np

    if task.is_regression:
        return {"score": float(logits[0])}
    p = np.exp(logits - logits.max())
    p /= p.sum()
    i = int(p.argmax())
    return {"label": task.labels[i], "probability": float(p[i])}


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
                 batch_size: int = 64, progress: bool = True) -> dict[str, Any]:
    """Label every row of ``path`` (JSON Lines: one object per line, its text(s) under the run's
    column names or ``text`` / ``text_pair``). Writes JSON Lines to ``out`` (stdout when None), one
    row per input row in input order, the input's fields kept and ``label`` + ``probability``
    (classification) or ``score`` (regression) added; an input field of one of those names is kept
    as ``input_<name>``. Returns ``{"rows": n, "renamed": [...], "out": out}``."""
    import torch

    from peltc.errors import DataError, Span, did_you_mean
    from peltc.runtime import data as D

    rows = read_inputs(path)
    run_dir = Path(run_dir)
    model, tokenizer, task, manifest, ir = load_run(run_dir)
    _not_generation(task, run_dir)
    max_length = _run_max_length(run_dir)
    n_texts = len(task.columns)
    keys = rows[0].keys() if rows else ()
    cols = next((c for c in _input_columns(task) if all(k in keys for k in c)), None)
    if cols is None:
        wanted = " or ".join(repr(", ".join(c)) for c in _input_columns(task))
        raise DataError(f"{Path(path).name}: no text column(s) {wanted} in the input", code="D104",
                        span=Span(str(path), 1, 1),
                        help=did_you_mean(_input_columns(task)[0][0], keys, "columns"))
    where = D._Rows(D.Source("csv" if Path(path).suffix.lower() in (".csv", ".tsv") else "json",
                             str(Path(path).resolve())), "input")
    texts = [D._texts({c: [r.get(c) for r in rows]}, c, where) for c in cols]
    renamed = sorted({k for r in rows for k in PREDICTION_FIELDS if k in r})
    from tqdm.auto import tqdm

    model.eval()
    with jsonl_sink(out) as sink, torch.no_grad():
        bar = tqdm(total=len(rows), desc="predicting", unit="row", disable=not progress, file=sys.stderr)
        for start in range(0, len(rows), batch_size):
            batch = [t[start:start + batch_size] for t in texts]
            enc = tokenizer(*batch[:n_texts], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt")
            logits = model(**enc).logits.float().cpu().numpy()
            for j, lg in enumerate(logits):
                row = {(f"input_{k}" if k in PREDICTION_FIELDS else k): v for k, v in rows[start + j].items()}
                row.update(prediction_fields(task, lg))
                sink.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            bar.update(len(logits))
        bar.close()
    return {"rows": len(rows), "renamed": renamed, "out": str(out) if out is not None else None,
            "columns": list(cols)}


# --- generation runs (causal LM) ------------------------------------------------------------------

def _not_generation(task, run_dir) -> None:
    if is_gen(task):
        raise UsageError(f"'{run_dir}' is a generation run ({task.ref}): it completes prompts, it labels nothing",
                         code="U132", help=f"peltc generate {run_dir} --prompt \"…\"")


def greedy_completions(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, *,
                       batch_size: int = 64) -> list[str]:
    """Greedy completions (KV cache on) of tokenised prompts, decoded without special tokens and cut at
    the end-of-sequence token. Prompts are batched by length, so no batch holds padding: each completion
    is what that prompt alone gives."""
    import torch

    out: list[str | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    eos = tokenizer.eos_token_id
    model.eval()
    with torch.no_grad():
        for n, idx in sorted(by_len.items()):
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                ids = torch.tensor([prompts[i] for i in chunk], dtype=torch.long)
                gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=max_new_tokens, use_cache=True,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
                for i, row in zip(chunk, gen[:, n:].tolist()):
                    if eos is not None and eos in row:
                        row = row[:row.index(eos)]
                    out[i] = tokenizer.decode(row, skip_special_tokens=True)
    return [o or "" for o in out]


def gen_gates(model, tokenizer, dataset, batch_size: int = 32) -> dict[tuple, float]:
    """The mean gate value per (instance, layer, point) over a tokenised generation split, each example
    teacher-forced (prompt + reference completion + end token, one forward per batch) and its gate read at
    its last token: a decoder's causal gate pooled over the whole example, as an encoder's gate is."""
    import torch

    from peltc.compiler.torch.gate import read_gates
    from peltc.runtime.data import gen_collator

    collate = gen_collator(tokenizer)
    lengths = dataset["length"]
    order = sorted(range(len(dataset)), key=lambda i: lengths[i])    # little padding per batch
    dev = next(model.parameters()).device
    model.eval()
    sums: dict[tuple, float] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = dataset.select(order[start:start + batch_size])
            batch = collate([{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]} for r in rows])
            model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev),
                  use_cache=False, logits_to_keep=1)      # the gates are what is read, not the logits
            for key, g in read_gates(model).items():
                sums[key] = sums.get(key, 0.0) + float(g.float().sum())
    return {key: v / max(len(dataset), 1) for key, v in sums.items()}


def evaluate_generation(model, tokenizer, dataset, task) -> dict[str, float]:
    """Exact match of greedy completions (stripped) with the references on a tokenised generation split
    (`data.tokenize_gen`): ``exact_match`` and the number of examples."""
    prompts = [ids[:n] for ids, n in zip(dataset["input_ids"], dataset["prompt_length"])]
    preds = greedy_completions(model, tokenizer, prompts, task.max_new_tokens)
    refs = [c.strip() for c in dataset["completion"]]
    hits = sum(p.strip() == r for p, r in zip(preds, refs))
    return {"exact_match": hits / len(refs) if refs else 0.0}


def generate_text(run_dir: str | Path, prompt: str, max_new_tokens: int | None = None, *,
                  temperature: float = 0.0, seed: int | None = None) -> str:
    """Complete ``prompt`` with a generation run's artifact on a fresh base model: greedy (``temperature``
    0), else sampled at that temperature (``seed`` for repeatability); KV cache on. Returns the new text."""
    import torch

    from peltc.runtime import data as D

    run_dir = Path(run_dir)
    model, tokenizer, task, manifest, ir = load_run(run_dir)
    if not is_gen(task):
        raise UsageError(f"'{run_dir}' is a classification run ({task.name}): its model has a classifier head, "
                         "not a language-model head", code="U132", help=f"peltc predict {run_dir} --text \"…\"")
    ids, _ = D.encode_gen(tokenizer, prompt)
    x = torch.tensor([ids], dtype=torch.long)
    sample = temperature > 0
    if sample and seed is not None:
        torch.manual_seed(seed)
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=sample,
                             **({"temperature": temperature, "top_k": 0, "top_p": 1.0} if sample else {}),
                             max_new_tokens=max_new_tokens or task.max_new_tokens, use_cache=True,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
