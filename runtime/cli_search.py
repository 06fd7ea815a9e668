"""`peltc search` on the command line: a study's run (runtime/search.py) and its ``--status`` (the trials
table, Optuna's plots as PNG). Light to import: optuna and torch load inside the command."""

from __future__ import annotations

import sys
from pathlib import Path

from peltc.errors import EXIT_OK, UsageError

STATUS_HEADER = ("trial", "state", "dev", "test", "seconds", "point", "run folder")
# your own data's flags (compile's): kept in the study, handed to every trial
DATA_FLAGS = ("validation", "test", "text_column", "text_pair_column", "label_column", "task_type")


def cmd_search(a, overrides: dict, progress_bars) -> int:
    from peltc.runtime.search import SearchOptions, search
    if a.status:
        return status(a)
    if a.json:
        raise UsageError("--json goes with --status (it prints a study's trials)", code="U189",
                         help="peltc search --status --study NAME --json")
    if not a.space or not a.train or a.trials is None:
        raise UsageError("peltc search needs a space, --train and --trials", code="U189",
                         help="peltc search SPACE.pelt --train TASK --trials N --study NAME, or "
                              "peltc search --status --study NAME")
    from peltc.runtime.train import check_option
    for k, v in overrides.items():
        check_option(k, v)
    progress_bars(True)
    o = SearchOptions(space=a.space, task=a.train, trials=a.trials, study=a.study, storage=a.storage, jobs=a.jobs,
                      sampler=a.sampler, pruner=a.pruner, emit=a.emit, out=a.out, k=a.k, seed=a.seed,
                      dev_size=a.dev_size, model=a.model, data_dir=a.data_dir, overrides=overrides,
                      data={k: getattr(a, k) for k in DATA_FLAGS if getattr(a, k, None) is not None},
                      heartbeat=a.heartbeat, grace=a.grace)
    search(o, argv=sys.argv[1:] if a.jobs > 1 else None)
    print(table(_study(a)))
    return EXIT_OK


def _study(a):
    from peltc.runtime.study_storage import default_storage, load_study, open_storage
    url = a.storage or default_storage(a.out)
    if "://" not in url and not Path(url).is_file():
        raise UsageError(f"no study file '{url}'", code="U184", help="--storage names the study's storage "
                                                                     "(default OUT/studies.journal)")
    return load_study(open_storage(url, heartbeat=a.heartbeat, grace=a.grace), a.study, url)


def table(study) -> str:
    from peltc.runtime.search import summary
    rows = []
    for t in summary(study)["trials"]:
        metric = t["main_metric"]
        test = (t["test"] or {}).get(metric) if metric else None
        state = t["state"] + (" (surplus)" if t["surplus"] else "") + (
            f" (retry of {t['retry_of']})" if t["retry_of"] is not None else "")
        rows.append((str(t["number"]), state, f"{t['value']:.4f}" if t["value"] is not None else "—",
                     f"{test:.4f}" if isinstance(test, (int, float)) else "—",
                     f"{t['seconds']:.0f}" if t["seconds"] is not None else "—",
                     ", ".join(f"{k}={v}" for k, v in sorted(t["params"].items())), t["run_dir"] or "—"))
    lines = ["| " + " | ".join(STATUS_HEADER) + " |", "|" + "---|" * len(STATUS_HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def status(a) -> int:
    """The trials table, and history.png / importances.png under --plots (default OUT/STUDY)."""
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    study = _study(a)
    if a.json:
        import json

        from peltc.runtime.search import summary
        print(json.dumps(summary(study), indent=1, default=str))
        return EXIT_OK
    print(table(study))
    where = Path(a.plots or Path(a.out) / a.study)
    where.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    plots = {"history.png": plot_optimization_history}
    if len(complete) >= 2 and len({tuple(sorted(t.params.items())) for t in complete}) >= 2:
        plots["importances.png"] = plot_param_importances
    else:
        print("note: importances.png needs two complete trials at different points", file=sys.stderr)
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # optuna marks its matplotlib plots experimental
            ax = plot(study)
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.tight_layout()
        fig.savefig(where / name, dpi=100)
        plt.close(fig)
        print(f"wrote {where / name}")
    return EXIT_OK


def add_search(sub, train_flags, data_dir_help: str, run, own_columns) -> None:
    """The parser of `peltc search` (``train_flags``: compile's training-setting flags; ``own_columns``:
    its column flags for your own data; ``run``: the command, called with the parsed arguments)."""
    from peltc.runtime.search import PRUNERS, SAMPLERS
    from peltc.runtime.study_storage import HEARTBEAT_S
    s = sub.add_parser("search", help="search a space of specs (choices in the spec) with Optuna: each trial an "
                                      "ordinary run; many processes and machines join one study")
    s.add_argument("space", nargs="?", help="the .pelt space (a spec with choice(…), uniform(…), optional …)")
    s.add_argument("--train", metavar="DATA", help="the task, as compile --train takes it (glue/TASK, csv:PATH, …)")
    s.add_argument("--trials", type=int, help="the study's total: a process stops when the study holds N finished "
                                              "(complete or pruned) trials")
    s.add_argument("--study", required=True, help="the study's name (join it by running the same command)")
    s.add_argument("--storage", help="a journal file (default OUT/studies.journal: several processes on one "
                                     "machine) or postgresql://USER@HOST[:PORT]/DB (many machines)")
    s.add_argument("--jobs", type=int, default=1, help="worker processes on this machine (default 1)")
    s.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="tpe (default), random, or grid over the choices")
    s.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="median (default): stop a trial whose dev metric is below the median of the others at "
                        "the same step; none: every trial runs to its end")
    s.add_argument("--emit", metavar="BEST.pelt", help="write the best point as a concrete spec (a new file)")
    s.add_argument("--out", default="runs/search", help="trial run folders go to OUT/STUDY/tNNNN (default %(default)s)")
    s.add_argument("--status", action="store_true", help="print the study's trials and write its plots (history.png, "
                                                         "importances.png) to --plots")
    s.add_argument("--plots", metavar="DIR", help="with --status: where the PNGs go (default OUT/STUDY)")
    s.add_argument("--json", action="store_true", help="with --status: print the study (its settings, and every trial: "
                                                       "state, point, dev and test metrics, steps, seconds) as JSON "
                                                       "instead of the table, and write no plots")
    s.add_argument("--k", default="100", help="training examples per trial (default 100)")
    s.add_argument("--seed", type=int, default=1, help="every trial's seed (default 1)")
    s.add_argument("--dev-size", type=int, default=1000, help="training examples held out as dev (default 1000)")
    s.add_argument("--model", help="model name or dir (default: the spec's, else the packaged MiniLM)")
    s.add_argument("--data-dir", help=data_dir_help)
    s.add_argument("--heartbeat", type=int, default=HEARTBEAT_S,
                   help="seconds between a running trial's heartbeats (default %(default)s)")
    s.add_argument("--grace", type=int, help="seconds without a heartbeat before a trial counts as crashed and is "
                                             "retried (default 4 heartbeats)")
    o = s.add_argument_group("your own data (--train csv:… | json:… | disk:… | hub:…; every trial gets these)")
    o.add_argument("--validation", metavar="DATA", help="the dev set that selects (default: --dev-size training rows "
                                                        "held out)")
    o.add_argument("--test", metavar="DATA", help="the test set (default: a fixed fifth of the training rows)")
    own_columns(o)
    train_flags(s)
    s.set_defaults(func=run)
