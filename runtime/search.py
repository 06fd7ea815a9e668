"""`peltc search`: a space of specs (compiler/space.py) searched with Optuna; each trial an ordinary run.

    peltc search space.pelt --train glue/rte --trials 20 --study rte --emit best.pelt

A trial samples a point of the space (TPE by default; random; grid over the choices), writes the point's
concrete spec (``OUT/STUDY/tNNNN.pelt``) and trains it as `peltc compile --train` does (`run.train_run`,
folder ``OUT/STUDY/tNNNN``), with the study's K, seed, dev size and train settings. Its value is the run's
best dev main metric (the restored checkpoint's); every dev evaluation is reported to the trial, and the
median pruner (`--pruner median`, Optuna's `MedianPruner`: after ``PRUNER_STARTUP`` finished trials, from the
recipe's ``min_steps`` on, a trial whose dev metric is below the median of the other trials at the same
step) stops a hopeless run at that evaluation: it finishes as a shorter ordinary run (best checkpoint
restored, test scored) and the trial is recorded PRUNED. ``--pruner none`` switches it off.

``--trials N`` is the study's total. A worker starts a trial only while fewer than N trials are finished
(COMPLETE or PRUNED) or running, re-checks it once its trial is created (two workers that both saw N − 1
do not both run: the later trial is dropped, recorded FAIL with user attribute ``surplus``), and waits for
the others' running trials before it leaves, failing stale ones (study_storage.py: heartbeats) so that
their retries run. So any number of processes on any number of machines join a study by running the same
command; the study's settings (space, task, K, seed, …) are kept in it, and a command that differs is
refused (U188).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peltc.errors import Interrupted, PeltError, UsageError
from peltc.runtime.study_storage import HEARTBEAT_S, default_storage, open_storage, retry_callback

PRUNER_STARTUP = 4          # the median pruner prunes nothing before this many trials have finished
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class SearchOptions:
    space: str
    task: str
    trials: int
    study: str
    storage: str | None = None
    jobs: int = 1
    sampler: str = "tpe"
    pruner: str = "median"
    emit: str | None = None
    out: str = "runs/search"
    k: str = "100"
    seed: int = 1
    dev_size: int = 1000
    model: str | None = None
    data_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    # your own data's flags, as compile takes them (validation, test, text_column, text_pair_column,
    # label_column, task_type): only those given
    data: dict[str, Any] = field(default_factory=dict)
    heartbeat: int = HEARTBEAT_S
    grace: int | None = None


class Surplus(Exception):
    """A trial created after the study already held ``--trials`` finished or running ones."""


def load(path: str):
    """The space of ``path`` (read, not yet checked: `check`; U185: a plain spec, nothing to search)."""
    from peltc.compiler.space import load_space
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read spec '{path}': {getattr(e, 'strerror', None) or e}", code="U001") from None
    space = load_space(text, path=path)
    if not space.dimensions:
        raise UsageError(f"'{path}' has no choice: there is nothing to search", code="U185",
                         help="make a parameter a choice (rank choice(4, 8, 16), lr loguniform(1e-4, 1e-2), "
                              "optional …), or train the spec with `peltc compile --train`")
    return text, space


def check(space, path: str, model: str | None = None) -> None:
    """Every point of the space checked against the model the trials use (`peltc check`'s spec errors)."""
    from peltc.compiler.pipeline import build_ir
    from peltc.compiler.space_check import check_space
    from peltc.runtime.models import resolve_model
    first = {**next(space.points()), **{d.name: d.low for d in space.continuous()}}
    mc = resolve_model(model, build_ir(space.concrete(first), path).ir.settings.model)
    check_space(space, model=mc)


def grid_space(space) -> dict[str, list]:
    """Every dimension's values, for the grid sampler (U187: a continuous dimension has no grid)."""
    out = {}
    for d in space.dimensions:
        if d.kind != "float":
            out[d.name] = d.values()
        else:
            raise UsageError(f"'{d.name}' is a continuous range ({d.kind} {d.low} … {d.high}): a grid cannot cover "
                             "it", code="U187", help="--sampler tpe or random, or make it a choice(…) of values")
    return out


def suggest(trial, space) -> dict[str, Any]:
    point = {}
    for d in space.dimensions:
        if d.kind == "categorical":
            point[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.kind == "int":
            point[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), log=bool(d.log))
        else:
            point[d.name] = trial.suggest_float(d.name, float(d.low), float(d.high), log=bool(d.log))
    return point


def make_sampler(name: str, space=None, grid: dict[str, list] | None = None):
    import optuna
    if name == "grid":
        return optuna.samplers.GridSampler(grid if grid is not None else grid_space(space))
    if name == "random":
        return optuna.samplers.RandomSampler()
    # constant liar: a worker's running trials count as bad points for the others' proposals
    return optuna.samplers.TPESampler(constant_liar=True)


def make_pruner(name: str):
    import optuna

    from peltc.runtime.settings import default_recipe
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP, n_warmup_steps=default_recipe["min_steps"])


def compile_command(spec: str, o: SearchOptions | dict) -> list[str]:
    """The `peltc compile` that trains ``spec`` as a trial of the study did (its seed, K, dev size, model and
    train settings): what --emit writes into the spec's header."""
    o = o if isinstance(o, dict) else study_settings(o)
    cmd = ["peltc", "compile", spec, "--train", o["task"], "--k", str(o["k"]), "--seed", str(o["seed"]),
           "--dev-size", str(o["dev_size"])]
    if o.get("model"):
        cmd += ["--model", o["model"]]
    for key, v in sorted((o.get("data") or {}).items()):
        cmd += [f"--{key.replace('_', '-')}", str(v)]
    for key, v in sorted((o.get("overrides") or {}).items()):
        cmd += [f"--{key.replace('_', '-')}", str(v)]
    return cmd


def study_settings(o: SearchOptions, space_text: str | None = None) -> dict[str, Any]:
    """What a study is, kept in it: a worker whose command differs is refused."""
    out = {"kind": "search", "task": o.task, "k": str(o.k), "seed": o.seed, "dev_size": o.dev_size,
           "model": o.model, "overrides": dict(sorted(o.overrides.items())), "sampler": o.sampler,
           "pruner": o.pruner}
    if o.data:                       # only when given: a study started before these flags keeps its settings
        out["data"] = dict(sorted(o.data.items()))
    if space_text is not None:
        out["space_sha256"] = hashlib.sha256(space_text.encode()).hexdigest()
    return out


def open_study(o: SearchOptions, settings: dict[str, Any], sampler, pruner, check=None):
    """Create the study, or join it when its kept settings match (U188). ``check()`` (the space's check)
    runs before a study is started: a worker joining one that was started with the same space skips it."""
    import optuna
    url = o.storage or default_storage(o.out)
    storage = open_storage(url, heartbeat=o.heartbeat, grace=o.grace)
    study = optuna.create_study(study_name=o.study, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    if check is not None and study.user_attrs.get("peltc") != settings:
        check()
    keep_settings(study, settings, o.study)
    return study


def keep_settings(study, settings: dict[str, Any], name: str) -> None:
    """Keep what the study is in it; refuse a worker whose command differs (U188)."""
    kept = study.user_attrs.get("peltc")
    if kept is None:
        study.set_user_attr("peltc", settings)
    elif kept != settings:
        diff = [f"{k}: {kept.get(k)!r} in the study, {settings.get(k)!r} now" for k in sorted(set(kept) | set(settings))
                if kept.get(k) != settings.get(k)]
        raise UsageError(f"study '{name}' was started with other settings: {'; '.join(diff)}", code="U188",
                         help="run the study's own command to join it, or name a new --study")


def counts(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _live(study) -> list:
    """The trials that count toward the total: finished (COMPLETE, PRUNED, or FAIL because their run failed —
    `peltc grid` goes on past such a run, as it always did), or running. A crashed or surplus trial does not."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state.name in (*FINISHED, "RUNNING") or (t.state.name == "FAIL" and t.user_attrs.get("run_failed"))]


def reporter(trial):
    """A Trainer callback: each dev evaluation of the task's main metric → ``trial.report``; once the pruner
    says so, the run stops there (``pruned``, ``pruned_at``)."""
    from transformers import TrainerCallback

    class Reporter(TrainerCallback):
        pruned, pruned_at = False, None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            metric = (args.metric_for_best_model or "").removeprefix("eval_")
            v = (metrics or {}).get(f"eval_{metric}")
            if v is None or self.pruned:
                return
            trial.report(float(v), int(state.global_step))
            if trial.should_prune():
                self.pruned, self.pruned_at = True, int(state.global_step)
                control.should_training_stop = True

    return Reporter()


def claim(trial, total: int) -> None:
    """Go on only when this trial is among the study's first ``total`` finished or running ones (Surplus)."""
    if trial.number not in sorted(t.number for t in _live(trial.study))[:total]:
        trial.set_user_attr("surplus", True)
        raise Surplus(f"trial {trial.number}: the study already holds {total} trials")


def unique(trial) -> None:
    """Under a grid, two workers may draw the same point at once (Optuna's GridSampler says so): the later
    trial gives way (Surplus), and the point it would have missed is drawn by the next trial."""
    same = [t.number for t in _live(trial.study) if t.params == trial.params and t.number != trial.number]
    if same and min(same) < trial.number:
        trial.set_user_attr("surplus", True)
        raise Surplus(f"trial {trial.number}: trial {min(same)} runs the same grid point")


def objective_for(o: SearchOptions, point_of, folder_of, train_run=None):
    """The objective: ``point_of(trial)`` → (the trial's concrete spec text, its point), trained in
    ``folder_of(trial)`` by ``train_run`` (`run.train_run`; bench/search_cost.py times the engine alone
    with a run that trains nothing); returns the run's best dev main metric."""
    import optuna

    from peltc.runtime.runfolder import RunOptions
    if train_run is None:
        from peltc.runtime.run import train_run

    def objective(trial):
        claim(trial, o.trials)
        text, point = point_of(trial)
        if o.sampler == "grid":
            unique(trial)
        run_dir, spec = folder_of(trial)
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(text, encoding="utf-8")
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("spec", text)
        trial.set_user_attr("host", os.uname().nodename)
        trial.set_user_attr("pid", os.getpid())
        opts = RunOptions(spec=str(spec), task=o.task, model=o.model, data_dir=o.data_dir, k=o.k, seed=o.seed,
                          dev_size=o.dev_size, out=str(run_dir), overrides=dict(o.overrides), progress=False,
                          render=False, **o.data)
        cb = reporter(trial)
        m = train_run(opts, callbacks=(cb,))
        main = m["main_metric"]
        best = (m.get("dev") or {}).get("best") or {}
        trial.set_user_attr("main_metric", main)
        trial.set_user_attr("dev", best)
        trial.set_user_attr("test", m.get("test"))
        trial.set_user_attr("wall_seconds", m.get("wall_seconds"))
        trial.set_user_attr("steps", (m.get("train") or {}).get("steps"))
        if best.get(main) is None:
            raise UsageError(f"trial {trial.number}: the run recorded no dev {main}", code="U190")
        if cb.pruned:
            raise optuna.TrialPruned(f"dev {main} below the median at step {cb.pruned_at}")
        return float(best[main])

    return objective


def work(study, objective, total: int, *, poll: float, say=print, catch: tuple = (), label: str = "search") -> None:
    """Run trials until the study holds ``total`` finished ones (see the module's docstring)."""
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import fail_stale_trials

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)     # one line of ours per trial instead
    _quiet_user_errors()
    interrupted: list[tuple[BaseException, int]] = []

    def guarded(trial):
        try:
            return objective(trial)
        except Interrupted as e:      # SIGINT / SIGTERM: the trial is FAIL, its point queued again
            interrupted.append((e, trial.number))
            raise KeyboardInterrupt from None

    while True:
        fail_stale_trials(study)
        live = _live(study)
        done = sum(t.state.name != "RUNNING" for t in live)
        if done >= total:
            return
        if len(live) >= total:          # the rest are running elsewhere: wait for them (or their retries)
            time.sleep(poll)
            continue
        try:
            study.optimize(guarded, n_trials=1, catch=(Surplus, *catch))
        except KeyboardInterrupt:
            if interrupted:
                e, number = interrupted[0]
                mine = study.get_trials(deepcopy=False)[number]
                if mine.state.name == "FAIL":
                    retry_callback()(study, mine)
                raise e from None
            raise
        last = study.trials[-1] if study.trials else None
        if last is not None and last.user_attrs.get("surplus"):
            continue
        c = counts(study)
        say(f"{label}: {c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, {c.get('RUNNING', 0)} running, "
            f"{c.get('FAIL', 0)} failed of {total}" + _best_line(study))


class _UserErrorFilter(logging.Filter):
    """Drops Optuna's two "Trial N failed" records (the first with a traceback) when the error is a peltc
    error — a user's mistake, which peltc reports itself as ``error: … [CODE]`` with its help line."""

    def __init__(self):
        super().__init__()
        self.muted: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        words = record.getMessage().split(" ", 3)
        trial = words[1] if len(words) > 2 and words[0] == "Trial" else None
        if isinstance(record.exc_info[1] if record.exc_info else None, PeltError):
            if trial is not None:
                self.muted.add(trial)
            return False
        return not (trial is not None and trial in self.muted and words[2] == "failed")


def _quiet_user_errors() -> None:
    log = logging.getLogger("optuna.study._optimize")        # where Optuna logs a failed trial
    if not any(isinstance(f, _UserErrorFilter) for f in log.filters):
        log.addFilter(_UserErrorFilter())


def _best_line(study) -> str:
    try:
        b = study.best_trial
    except ValueError:
        return ""
    return f"; best: trial {b.number}, dev {b.user_attrs.get('main_metric', 'metric')} {b.value:.4f}"


def _spawn(o: SearchOptions, argv: list[str]) -> list[subprocess.Popen]:
    """``--jobs J``: J − 1 more workers, the same command with --jobs 1, each on its share of the CPU threads."""
    threads = max(1, (os.cpu_count() or 1) // o.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    args, skip = [], False
    for a in argv:                      # the first process alone emits
        if skip or a == "--emit" or a.startswith("--emit="):
            skip = a == "--emit"
            continue
        args.append(a)
    return [subprocess.Popen([sys.executable, "-m", "peltc", *args, "--jobs", "1"], env=env)
            for _ in range(o.jobs - 1)]


def trial_parts(o: SearchOptions, space):
    """A trial's point and concrete spec (``point_of``), and its run folder and spec file (``folder_of``):
    ``OUT/STUDY/tNNNN`` and ``OUT/STUDY/tNNNN.pelt``."""
    base = Path(o.out) / o.study

    from peltc.compiler.space import relocate

    def point_of(trial):       # the spec is saved in OUT/STUDY: its extends / import paths rebased there
        point = suggest(trial, space)
        return relocate(space.concrete(point), space.file, base), point

    def folder_of(trial):
        return base / f"t{trial.number:04d}", base / f"t{trial.number:04d}.pelt"

    return point_of, folder_of


def search(o: SearchOptions, argv: list[str] | None = None, say=print) -> dict[str, Any]:
    """Run (or join) the study; returns its summary (with ``emitted``: the path --emit wrote)."""
    if o.trials < 1 or o.jobs < 1:
        raise UsageError(f"--trials {o.trials} / --jobs {o.jobs} out of range", code="U189", help="both ≥ 1")
    if o.emit and Path(o.emit).exists():
        raise UsageError(f"--emit '{o.emit}' exists", code="U186", help="name a new file (it is never overwritten)")
    text, space = load(o.space)
    check_data(o)
    grid = grid_space(space) if o.sampler == "grid" else None
    settings = study_settings(o, text)
    study = open_study(o, settings, make_sampler(o.sampler, space, grid), make_pruner(o.pruner),
                       check=lambda: check(space, o.space, o.model))
    say(f"search: study '{o.study}' in {o.storage or default_storage(o.out)}: "
        f"{f'{space.size()} points' if space.size() else 'a continuous space'} ({len(space.dimensions)} dimensions), "
        f"{o.trials} trials in all, {o.sampler} sampler, {o.pruner} pruner")
    point_of, folder_of = trial_parts(o, space)
    if o.jobs > 1:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // o.jobs))
    children = _spawn(o, argv) if o.jobs > 1 and argv is not None else []
    try:
        work(study, objective_for(o, point_of, folder_of), o.trials, poll=max(1.0, o.heartbeat / 2), say=say)
    finally:
        for p in children:
            p.wait()
    out = summary(study)
    if o.emit:
        out["emitted"] = emit(study, o.emit)
        say(f"search: wrote the best point to {o.emit}")
    return out


def check_data(o: SearchOptions) -> None:
    """The task's data read and checked as `peltc compile --train` reads it (columns, labels, splits), before
    the study opens: a mistake there is one error, not a failed trial."""
    from peltc.runtime.runfolder import RunOptions
    from peltc.runtime.task import resolve
    resolve(RunOptions(spec=o.space, task=o.task, model=o.model, data_dir=o.data_dir, k=o.k, seed=o.seed,
                       dev_size=o.dev_size, out="", **o.data), say=lambda *_: None)


def summary(study) -> dict[str, Any]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                     "run_dir": t.user_attrs.get("run_dir"), "main_metric": t.user_attrs.get("main_metric"),
                     "dev": t.user_attrs.get("dev"), "test": t.user_attrs.get("test"),
                     "steps": t.user_attrs.get("steps"), "wall_seconds": t.user_attrs.get("wall_seconds"),
                     "retry_of": t.system_attrs.get("failed_trial"), "surplus": bool(t.user_attrs.get("surplus")),
                     "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                     if t.datetime_complete and t.datetime_start else None})
    return {"study": study.study_name, "settings": study.user_attrs.get("peltc"), "trials": rows}


def emit(study, path: str) -> str:
    """The best COMPLETE trial's concrete spec, headed by the `peltc compile` that reproduces it (U190: none)."""
    try:
        best = study.best_trial
    except ValueError:
        raise UsageError(f"study '{study.study_name}' has no complete trial yet: nothing to emit", code="U190",
                         help="run trials first (peltc search … --trials N)") from None
    if Path(path).exists():
        raise UsageError(f"--emit '{path}' exists", code="U186", help="name a new file (it is never overwritten)")
    settings = study.user_attrs.get("peltc") or {}
    main = best.user_attrs.get("main_metric", "metric")
    test = (best.user_attrs.get("test") or {}).get(main)
    head = [f"# peltc search: study '{study.study_name}', trial {best.number} (best of "
            f"{len(study.get_trials(deepcopy=False))}), dev {main} {best.value:.4f}"
            + (f", test {main} {test:.4f}" if isinstance(test, (int, float)) else ""),
            f"# run folder: {best.user_attrs.get('run_dir')}",
            "# reproduce: " + shlex.join(compile_command(Path(path).name, settings)),
            "# point: " + json.dumps(best.params, sort_keys=True)]
    from peltc.compiler.space import relocate
    run_dir = best.user_attrs.get("run_dir")     # the trial's spec was saved beside its run folder
    trial_spec = Path(run_dir).with_suffix(".pelt") if run_dir else "<trial>"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as f:
        f.write("\n".join(head) + "\n" + relocate(best.user_attrs["spec"], str(trial_spec), Path(path).parent))
    return path
