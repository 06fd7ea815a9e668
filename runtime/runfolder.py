"""The run folder: what a run is (`RunOptions`, its identity and hash), where it goes and in which state it
starts (`plan_run_dir`: new, resumed or already finished — decided before a byte is written), how its files
are written (`write_json`: whole or not at all), what an interrupted run left to resume from, and making a
run folder from a peft adapter (`import_peft_run`), and listing run folders (`find_runs`, `run_summary`:
`peltc runs`).

A run folder holds ``spec.pelt``, ``ir.json``, ``architecture.svg``, ``adapter/`` (the artifact),
``metrics.json``, ``gates.json``, ``gates.png``, ``trainer_log.json``, ``curves.png`` and ``run.json`` (the options
and the run's *identity*: spec hash, task, K, seed, dev size, model and resolved settings, hashed).
A folder belongs to one identity: ``--out`` naming an existing folder is refused unless ``--resume`` is
given *and* the folder's identity matches; a finished run is reported, never redone; a default name that
is taken gets a suffix. The artifact itself is read by `compiler.torch.artifact.read_artifact`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peltc.errors import UsageError


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
    report_to: str | None = None        # a logger the Trainer also reports to (tensorboard: run_dir/tensorboard)
    # your own data (task = csv:PATH, json:PATH, disk:DIR or hub:NAME[:CONFIG]; see task_own.load_own)
    validation: str | None = None       # the dev set (same format; a split name for disk / hub)
    test: str | None = None             # the test set (else held out from the training data)
    test_size: int | None = None        # generation tasks: score only the test set's first N examples
    text_column: str | None = None      # default: text, else sentence
    text_pair_column: str | None = None
    label_column: str | None = None     # default: label
    task_type: str | None = None        # classification | regression (default: decided from the labels)
    # how it computes (runtime/speed.py): the precision is part of the run's identity (fp32 adds nothing)
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    precision: str = "fp32"             # fp32 | bf16 | fp16 (autocast; parameters and the artifact stay fp32)
    torch_compile: bool = False

    @property
    def speed(self):
        from peltc.runtime.speed import Speed
        return Speed(device=self.device, precision=self.precision, torch_compile=self.torch_compile)


def run_identity(*, spec_hash: str | None, task: str, k, seed: int, dev_size: int, model: str,
                 settings: dict[str, Any], data: dict[str, Any] | None = None,
                 precision: str = "fp32") -> dict[str, Any]:
    """What a run folder belongs to. Two runs with the same identity compute the same thing.
    ``data`` (your own data only): ``{"source": the resolved data spec, "hashes": per split, its
    files' sha256}`` — a GLUE run's identity has no such key. ``precision``: a bf16 / fp16 run computes
    something else than an fp32 one (its rounding changes the trained weights), so it is part of the
    identity; fp32 adds no key, so every fp32 run keeps the hash it had. The device and --torch-compile
    are not: the same run resumes on another device or compiled (run.json records them)."""
    out = {"spec_hash": spec_hash, "task": task, "k": k, "seed": seed, "dev_size": dev_size, "model": model,
           "settings": settings}
    if precision != "fp32":
        out["precision"] = precision
    if data is not None:
        out["data"] = data
    return out


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
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
        diffs = differences(old, identity)
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


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def shared_plan(opts: RunOptions, task_name: str, identity: dict[str, Any]) -> RunPlan:
    """Rank 0 plans the folder; under torchrun every rank gets the same plan, or the same error."""
    if world_size() <= 1:
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


def make_folder(run_dir: Path, opts: RunOptions) -> bool:
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


def resumable(run_dir: Path) -> str | None:
    """What an interrupted run left that --resume continues from, or None."""
    from peltc.runtime.train import last_checkpoint
    if (run_dir / "trainer" / RESULT).is_file():
        return "training finished, adapter saved"
    ckpt = last_checkpoint(run_dir / "trainer")
    return ckpt.name if ckpt else None


def run_max_length(run_dir: Path) -> int:
    from peltc.runtime.data import MAX_LENGTH
    try:
        return int(json.loads((Path(run_dir) / "metrics.json").read_text()).get("settings", {}).get("max_length")
                   or MAX_LENGTH)
    except (OSError, ValueError, TypeError):
        return MAX_LENGTH


# --- a peft adapter as a run folder (`peltc import --out`) -----------------------------------------

def check_new_folder(out: str | Path) -> Path:
    """``out`` does not exist or is an empty folder: a run folder is never written over (U010)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"'{out}' exists and is not an empty folder", code="U010", help="choose another --out")
    return out


@dataclass
class PeftImport:
    """A peft LoRA adapter read and turned into a checked spec (`read_peft_import`)."""

    peft_dir: str
    model: str                 # the base model's reference (a directory made absolute)
    mc: Any                    # its archs.ModelConfig
    adapter: Any               # peft_io.read_peft's record
    text: str                  # the spec
    ir: Any                    # the spec's IR, checked against the model


def _model_ref(ref: str) -> str:
    """A model directory or config.json as an absolute path (the artifact names it for later loads); the
    packaged MiniLM's directory by its known name, ``minilm`` (a site-packages path is no name to keep)."""
    from peltc.compiler.archs import packaged_model_dir

    p = Path(ref).expanduser()
    if not p.exists():
        return ref
    p = p.resolve()
    d = packaged_model_dir()
    if d is not None and p in (d.resolve(), d.resolve() / "config.json"):
        return "minilm"
    return str(p)


def read_peft_import(peft_dir: str | Path, spec_file: str | Path, *, model: str | None = None,
                     task=None) -> PeftImport:
    """Read a peft adapter (SEQ_CLS) and make its spec, checked against the base model (``model``, else
    the adapter's ``base_model_name_or_path``) before anything is written; with ``task`` its head must
    have the task's outputs (U126)."""
    from peltc.compiler.archs import load_config
    from peltc.compiler.pipeline import build_ir
    from peltc.compiler.torch import peft_io

    ref = model or peft_io.read_peft_config(peft_dir).get("base_model_name_or_path")
    if not ref:
        raise UsageError("the adapter does not name its base model (base_model_name_or_path)", code="U125",
                         help="pass --model NAME|DIR")
    ref = _model_ref(ref)
    mc = load_config(ref)
    if peft_io.read_peft_config(peft_dir).get("peft_type") == "IA3":
        from peltc.compiler.torch.peft_ia3 import read_ia3
        adapter = read_ia3(peft_dir, *peft_io.read_peft_dir(peft_dir), mc.config)
    else:
        adapter = peft_io.read_peft(peft_dir, mc.config)
    if task is not None and adapter.num_labels is not None and adapter.num_labels != task.num_labels:
        raise UsageError(f"the adapter's head has {adapter.num_labels} output(s); {task.name} has "
                         f"{task.num_labels}", code="U126", help="pass the task the adapter was trained for")
    text = peft_io.spec_text(adapter, ref)
    ir = build_ir(text, str(spec_file), model=mc).ir       # the spec must check before anything is written
    return PeftImport(str(peft_dir), ref, mc, adapter, text, ir)


def import_peft_run(imp: PeftImport, out: str | Path, task) -> Path:
    """Write the run folder of an imported adapter for ``task`` (GLUE or your own data): ``spec.pelt``, ``ir.json``,
    ``adapter/`` (the artifact, on the base model's weights) and ``import.json``; `peltc eval` and `peltc
    predict` use it. A folder made here is removed again when writing fails."""
    import shutil

    import transformers
    from transformers import AutoModelForSequenceClassification

    from peltc.compiler.torch import peft_io
    from peltc.runtime.models import weights_source

    out = Path(out)
    made = not out.exists()
    transformers.logging.set_verbosity_error()     # no load report (the head is new, as it should be), no bar
    bar = transformers.logging.is_progress_bar_enabled()
    transformers.logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(weights_source(imp.mc),
                                                                   num_labels=task.num_labels)
    except OSError as e:
        raise UsageError(f"cannot load weights for model '{imp.model}': {str(e).splitlines()[0]}",
                         code="U006") from None
    finally:
        if bar:
            transformers.logging.enable_progress_bar()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "spec.pelt").write_text(imp.text, encoding="utf-8")
        write_json(out / "ir.json", imp.ir.to_dict())
        peft_io.build_artifact(model, imp.ir, imp.adapter, out / "adapter", spec=imp.text, base_model=imp.model,
                               extra={**task.artifact_record(),
                                      "imported_from": str(Path(imp.peft_dir).resolve())})
        write_json(out / "import.json", {"peft_dir": str(Path(imp.peft_dir).resolve()), "model": imp.model,
                                         "task": task.name, "peft_config": imp.adapter.config})
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out


# --- listing run folders (`peltc runs`) -----------------------------------------------------------

def _read(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def run_summary(run_dir: Path) -> dict[str, Any]:
    """One run folder as `peltc runs` lists it: ``path``, ``spec``, ``task``, ``metric`` (the main test
    metric's name), ``value`` and ``state``: finished, imported (`peltc import --out`), resumable (an
    interrupted run with a checkpoint, ``resume_from`` says which) or empty (nothing to resume)."""
    run, metrics, imp = _read(run_dir / "run.json"), finished_metrics(run_dir) or {}, _read(run_dir / "import.json")
    main = metrics.get("main_metric")
    value = (metrics.get("test") or {}).get(main) if main else None
    out = {"path": str(run_dir), "spec": Path(str(run.get("spec") or metrics.get("spec") or "")).name or None,
           "task": run.get("task_name") or metrics.get("task") or imp.get("task"), "metric": main,
           "value": value if isinstance(value, (int, float)) else None}
    if metrics:
        out["state"] = "finished"
    elif imp:
        out["spec"] = "spec.pelt (imported)"
        out["state"] = "imported"
    else:
        kept = resumable(run_dir)
        out["state"] = "resumable" if kept else "empty"
        if kept:
            out["resume_from"] = kept
    return out


def find_runs(root: str | Path, depth: int = 3) -> list[Path]:
    """The run folders (holding run.json, or import.json) in ``root``, ``root`` itself included, down
    to ``depth`` levels (a grid's folder holds its runs), in name order."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"folder '{root}' does not exist", code="U008",
                         help="peltc runs DIR lists the run folders in DIR (default: runs)")
    found, level = [], [root]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            if (d / "run.json").is_file() or (d / "import.json").is_file():
                found.append(d)
            else:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        level = nxt
    return sorted(found)
