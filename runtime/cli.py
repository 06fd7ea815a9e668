"""The runtime's commands for the `peltc` CLI: compile, eval, predict, grid (search: cli_search.py; generate,
export, import, runs, merge: cli_tools.py).

Imported by peltc/cli.py when the parser is built, so it must stay light: torch and
transformers are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json

from peltc.errors import EXIT_OK
from peltc.runtime.speed import add_flags, from_args

# command-line flags → train settings (None = not given; the spec's `train { }` or the recipe decide)
_SETTING_FLAGS = {
    "lr": float, "epochs": float, "batch_size": int, "warmup": float, "weight_decay": float,
    "patience": int, "min_steps": int, "eval_steps": int, "max_length": int, "head_lr": float,
    "head_bias": str, "head_weights": str, "gate_lr": float,
}


_SETTING_HELP = {
    "lr": "learning rate of the PELT parameters (default 1e-3; full fine-tuning 2e-5)",
    "epochs": "maximum epochs (default 20)",
    "batch_size": "training batch size (default 16)",
    "warmup": "linear warm-up, fraction of the steps (default 0.06)",
    "weight_decay": "AdamW weight decay (default 0)",
    "patience": "early stopping: evaluations without dev improvement (default 3)",
    "min_steps": "no early stop, and no restored best checkpoint, before this many steps (default 60)",
    "eval_steps": "evaluate on dev every N steps (default 30)",
    "max_length": "truncate inputs to N tokens (default 128)",
    "head_lr": "learning rate of the task head (default 1e-3)",
    "gate_lr": "learning rate of every gate's parameters (default: its instance's lr, else --lr)",
    "head_bias": "initial bias of the head's output: zero, or prior (the training labels' mean / log class "
                 "frequencies; default prior)",
    "head_weights": "initial weights of the head's output: random (default) or zero",
}


_DATA_DIR_HELP = ("a folder holding GLUE in the original TSV layout (CoLA/train.tsv, SST-2/dev.tsv, …); default: "
                  "$PELT_GLUE_DIR, else the Hub (nyu-mll/glue, which needs network: offline, a task not in the "
                  "datasets cache fails at once)")


def progress_bars(quiet: bool) -> bool:
    """Progress bars only when standard error is a terminal and --quiet is not given: piped into a log, a
    bar's carriage-return redraws are a soup of escape codes (the Trainer then logs plain lines instead).
    Off, the bars of `datasets` (tokenising), transformers (loading weights, writing checkpoints) and the
    Hub client are off too."""
    import sys

    on = not quiet and sys.stderr.isatty()
    if not on:
        import datasets
        import huggingface_hub.utils
        import transformers.utils.logging

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()
    return on


def _overrides(a) -> dict:
    return {k: getattr(a, k) for k in _SETTING_FLAGS if getattr(a, k, None) is not None}


def cmd_compile(a) -> int:
    from peltc.runtime.run import train_run
    from peltc.runtime.runfolder import RunOptions
    if a.train is None:
        return _compile_only(a)
    from peltc.runtime.signals import follow_parent
    follow_parent()                   # a run of `peltc grid` ends with the grid, even a SIGKILLed one
    opts = RunOptions(spec=a.spec, task=a.train, model=a.model, data_dir=a.data_dir, k=a.k, seed=a.seed,
                      dev_size=a.dev_size,
                      out=a.out, overrides=_overrides(a), resume=a.resume, progress=progress_bars(a.quiet),
                      render=not a.no_render, validation=a.validation, test=a.test, test_size=a.test_size,
                      text_column=a.text_column,
                      text_pair_column=a.text_pair_column, label_column=a.label_column, task_type=a.task_type,
                      report_to=a.report_to, device=a.device, precision=a.precision,
                      torch_compile=a.torch_compile)
    m = train_run(opts)
    if "run_dir" not in m:      # a non-zero rank under torchrun
        return EXIT_OK
    main = m["main_metric"]
    for w in m.get("warnings", []):
        print(f"warning: {w}")
    dev = m["dev"]["best"].get(main)
    dev_txt = f"dev {main}: {dev:.4f}; " if isinstance(dev, (int, float)) else ""
    print(f"test {main}: {m['test'][main]:.4f}   ({dev_txt}{m['train']['steps']} steps, "
          f"{m['wall_seconds']:.0f} s{', finished earlier' if m.get('already_finished') else ''})")
    print(f"run folder: {m['run_dir']}")
    return EXIT_OK


def _compile_only(a) -> int:
    from peltc.api import compile_model
    from peltc.runtime.models import load_base
    from peltc.runtime.run import resolve_spec
    _, ir, mc = resolve_spec(a.spec, a.model)
    _, model = load_base(mc, 2)
    print(compile_model(ir, model).render())
    print("note: no --train: nothing was trained or written (--train glue/TASK | csv:PATH | … trains and saves)")
    return EXIT_OK


def cmd_eval(a) -> int:
    from peltc.runtime.serve import eval_run
    import sys
    out = eval_run(a.run_dir, a.data_dir, train=a.train, test=a.test, speed=from_args(a, None))
    print(json.dumps(out["test"], indent=2))
    if out["warning"]:
        print(f"warning: {out['warning']}")
    # stdout stays the metrics (JSON); the comparison with what the run recorded goes to stderr
    if out["recorded"] is None:
        print("recorded: none (no metrics.json in the run folder): nothing to compare", file=sys.stderr)
    else:
        print(f"recorded (metrics.json): {json.dumps(out['recorded'])}", file=sys.stderr)
        if out["agree"]:
            print("agree: yes (every metric equal to the recorded one)", file=sys.stderr)
        else:
            said = "; ".join(f"{k} {_num(a)} now, {_num(b)} recorded" for k, a, b in out["differences"])
            print(f"agree: no: {said}", file=sys.stderr)
    return EXIT_OK


def _num(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("absent" if v is None else str(v))


def cmd_predict(a) -> int:
    import sys

    from peltc.errors import UsageError
    from peltc.runtime.serve import predict_file, predict_text
    if len(a.run_dir) > 1:
        return _predict_runs(a)
    a.run_dir = a.run_dir[0]
    if (a.text is None) == (a.file is None):
        raise UsageError("peltc predict takes --text \"…\" or --file INPUTS.jsonl", code="U009",
                         help="--text labels one text (--text-pair: its second); --file labels every row of a "
                              "JSON Lines file")
    if a.file is not None:
        if a.text_pair is not None:
            raise UsageError("--text-pair goes with --text", code="U009",
                             help="with --file each row holds its pair (the run's column names, or text_pair)")
        if a.batch_size < 1:
            raise UsageError(f"--batch-size {a.batch_size} is out of range", code="U106", help="--batch-size must be ≥ 1")
        r = predict_file(a.run_dir, a.file, a.out, batch_size=a.batch_size, progress=progress_bars(a.quiet),
                         probs=a.probs, speed=from_args(a, None))
        for k in r["renamed"]:
            print(f"note: the input's '{k}' field is kept as 'input_{k}'", file=sys.stderr)
        if a.out is not None:
            print(f"wrote {r['rows']} predictions to {a.out}")
        return EXIT_OK
    if a.out is not None:
        raise UsageError("--out goes with --file", code="U009", help="with --text the prediction is printed")
    out = predict_text(a.run_dir, a.text, a.text_pair, probs=a.probs, speed=from_args(a, None))
    if "label" in out:
        print(f"{out['label']}  (p = {out['probability']:.3f})")
        for label, p in (out.get("probabilities") or {}).items():
            print(f"  {label}: {p:.4f}")
    else:
        print(f"{out['score']:.4f}")
    return EXIT_OK


def _predict_runs(a) -> int:
    """Several runs on one base: every row of --file names its run (``run``)."""
    import sys

    from peltc.errors import UsageError
    from peltc.runtime.multirun import predict_runs_file
    if a.file is None or a.text is not None or a.text_pair is not None:
        raise UsageError(f"peltc predict with {len(a.run_dir)} runs takes --file INPUTS.jsonl", code="U009",
                         help="each row names its run in a 'run' field (the folder or its name); --text labels "
                              "one text with one run")
    if a.batch_size < 1:
        raise UsageError(f"--batch-size {a.batch_size} is out of range", code="U106", help="--batch-size must be ≥ 1")
    r = predict_runs_file(a.run_dir, a.file, a.out, batch_size=a.batch_size, progress=progress_bars(a.quiet),
                          probs=a.probs, speed=from_args(a))
    for k in r["renamed"]:
        print(f"note: the input's '{k}' field is kept as 'input_{k}'", file=sys.stderr)
    if a.out is not None:
        per = ", ".join(f"{n}: {k}" for n, k in r["per_run"].items())
        print(f"wrote {r['rows']} predictions to {a.out} ({per})")
    return EXIT_OK


def _own_columns(o) -> None:
    """Your own data's column and task-type flags (`compile` and `grid` alike)."""
    o.add_argument("--text-column", metavar="NAME", help="the text's column (default: text, else sentence)")
    o.add_argument("--text-pair-column", metavar="NAME", help="the second text's column, for text pairs (default: none)")
    o.add_argument("--label-column", metavar="NAME", help="the label's column (default: label)")
    o.add_argument("--task-type", choices=("classification", "regression"),
                   help="default: from the labels (strings, integers → classification; numbers with a fractional "
                        "part → regression)")


def cmd_grid(a) -> int:
    from peltc.errors import UsageError
    from peltc.runtime.grid import OWN_FLAGS, report, run_grid
    if a.table:   # the tables of a recorded grid: no torch, no transformers, no datasets
        order = [s.rsplit("/", 1)[-1].removesuffix(".pelt") for s in a.specs] or None
        print(report(a.table, order))
        return EXIT_OK
    from peltc.runtime.train import check_option
    if not a.specs:
        raise UsageError("no specs given", code="U109", help="peltc grid SPEC… [--record FILE.json], or "
                                                              "peltc grid --table FILE.json")
    for k, v in _overrides(a).items():
        check_option(k, v)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        raise UsageError(f"bad --seeds {a.seeds!r}", code="U106", help="a comma list of integers, e.g. 1,2,3") from None
    common = dict(tasks=a.tasks.split(","), ks=a.k.split(","), seeds=seeds, out=a.out, jobs=a.jobs, model=a.model,
                  data_dir=a.data_dir, overrides=_overrides(a), dev_size=a.dev_size, record=a.record,
                  own={k: getattr(a, k) for k in OWN_FLAGS}, speed=from_args(a))
    if a.storage:       # the grid as a study (runtime/grid_study.py): many processes and machines share it
        from peltc.runtime.grid_study import run_grid_study
        run_grid_study(a.specs, storage=a.storage, study=a.study, **common)
    else:
        run_grid(a.specs, **common)
    return EXIT_OK


def cmd_search(a) -> int:
    from peltc.runtime.cli_search import cmd_search as run
    return run(a, _overrides(a), progress_bars)


def _train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training settings (override the spec's train { } block)")
    for name, typ in _SETTING_FLAGS.items():
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=None,
                       help=_SETTING_HELP[name])


def add_commands(sub) -> None:
    c = sub.add_parser("compile", help="rewrite the model and print the table of what attached where (nothing "
                                       "else without --train); with --train: train, evaluate, save the adapter")
    c.add_argument("spec", help="the .pelt spec file")
    c.add_argument("--model", help="model name, dir or config.json (default: the spec's, else the packaged MiniLM)")
    c.add_argument("--train", metavar="DATA", help="glue/TASK (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte; read from "
                                                   "--data-dir or $PELT_GLUE_DIR, else the Hub), or your "
                                                   "own: csv:PATH, json:PATH (JSON or JSON Lines), disk:DIR "
                                                   "(save_to_disk), hub:NAME[:CONFIG]; or, with a decoder "
                                                   "(--model smollm2-135m), a generation task: gen:arith, "
                                                   "gen:jsonl:PATH (prompt / completion pairs)")
    c.add_argument("--data-dir", help=_DATA_DIR_HELP)
    o = c.add_argument_group("your own data (--train csv:… | json:… | disk:… | hub:… | gen:…)")
    o.add_argument("--validation", metavar="DATA", help="the dev set, same format as --train (a split name for disk / "
                                                        "hub; a JSON Lines file for gen:jsonl; default: --dev-size "
                                                        "training rows held out per seed)")
    o.add_argument("--test", metavar="DATA", help="the test set, same format as --train (a split name for disk / hub; "
                                                  "a JSON Lines file for gen:jsonl; default: a fixed fifth of the "
                                                  "training rows)")
    o.add_argument("--test-size", type=int, metavar="N", help="generation tasks (gen:…): score only the test set's "
                                                              "first N examples (default: all; gen:arith's is 500)")
    _own_columns(o)
    c.add_argument("--k", default="100", help="training examples: 100 | 500 | 1000 | all (default 100)")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--dev-size", type=int, default=1000,
                   help="training examples held out for checkpoint selection (default 1000, as the paper)")
    c.add_argument("--out", help="run folder (default runs/<spec>-<task>-k<K>-s<seed>, with a -N suffix when taken); "
                                 "an existing folder is refused unless --resume")
    c.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out (same spec and settings; a finished run is reported)")
    c.add_argument("--quiet", action="store_true", help="no progress bars (shown only when standard error is a terminal)")
    c.add_argument("--no-render", action="store_true", help="skip architecture.svg")
    c.add_argument("--report-to", choices=("tensorboard",), default=None,
                   help="also send the Trainer's logs to tensorboard (event files in RUN_DIR/tensorboard; needs "
                        "the tensorboard package); the learning curves are in RUN_DIR/curves.png either way")
    _train_flags(c)
    add_flags(c, training=True)
    c.set_defaults(func=cmd_compile)

    e = sub.add_parser("eval", help="reload a run's adapter on a fresh base model and score the test set")
    e.add_argument("run_dir", help="a run folder written by `peltc compile --train`")
    e.add_argument("--data-dir", help="GLUE in the original TSV layout (default: the run's, $PELT_GLUE_DIR, the Hub)")
    e.add_argument("--train", metavar="DATA", help="your own data: the run's training file (or disk: folder) at its "
                                                   "new place, when it moved (a held-out test set is rebuilt from it)")
    e.add_argument("--test", metavar="DATA", help="your own data: the run's test file at its new place, or another "
                                                  "labelled file of the run's format and columns to score")
    add_flags(e, training=False)
    e.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="label a text, or a file of them, with a trained run (or several runs on one "
                                       "base: each row of --file names its run)")
    p.add_argument("run_dir", nargs="+", metavar="RUN_DIR",
                   help="a run folder written by `peltc compile --train`; several (with --file): served together "
                        "on one base model, each row of the file naming its run in a 'run' field (folder or name)")
    p.add_argument("--text", help="the text to label (the first sentence of a pair task)")
    p.add_argument("--text-pair", help="the second sentence, for pair tasks (mrpc, qqp, stsb, mnli, qnli, rte)")
    p.add_argument("--file", metavar="INPUTS.jsonl", help="label every row of a JSON Lines file, a JSON array or a .csv "
                                                          "(each row's texts under the run's column names, or text / "
                                                          "text_pair); other fields are kept; - reads standard input")
    p.add_argument("--out", metavar="PREDS.jsonl", help="with --file: write the predictions here (default: stdout)")
    p.add_argument("--batch-size", type=int, default=64, help="with --file: rows per forward pass (default 64)")
    p.add_argument("--quiet", action="store_true", help="with --file: no progress bar")
    p.add_argument("--probs", action="store_true", help="every label's probability too (--text: one line each; "
                                                        "--file: a 'probabilities' field, label → p)")
    add_flags(p, training=False)
    p.set_defaults(func=cmd_predict)

    from peltc.runtime.cli_tools import add_interop, add_tools
    add_tools(sub)

    g = sub.add_parser("grid", help="run specs × tasks × K × seeds and tabulate mean ± std")
    g.add_argument("specs", nargs="*", help="the .pelt spec files (one table row each)")
    g.add_argument("--record", metavar="FILE.json", help="keep one record per finished run in this JSON (runs "
                                                         "recorded there count as finished)")
    g.add_argument("--table", metavar="FILE.json", help="print the tables of a recorded grid and exit (specs, if "
                                                        "given, set the row order)")
    g.add_argument("--tasks", default="cola,sst2,mrpc,rte,stsb",
                   help="comma list of GLUE tasks and / or your own data: csv:PATH, json:PATH, disk:DIR, "
                        "hub:NAME[:CONFIG] (named by the file's stem; default %(default)s)")
    g.add_argument("--k", default="100", help="comma list of training sizes: 100, 500, 1000, all (default %(default)s)")
    g.add_argument("--seeds", default="1,2,3", help="comma list of seeds (default %(default)s)")
    g.add_argument("--jobs", type=int, default=1, help="runs in parallel, each on its share of the CPU threads (default 1)")
    g.add_argument("--dev-size", type=int, default=1000,
                   help="training examples held out for checkpoint selection (default 1000, as the paper)")
    g.add_argument("--out", default="runs/grid", help="grid folder: one run folder per combination, finished ones "
                                                      "skipped (default %(default)s)")
    g.add_argument("--storage", help="run the grid as a study in this storage (a journal file, or "
                                     "postgresql://USER@HOST[:PORT]/DB): every process and machine running the same "
                                     "command shares it; --record is written from it (docs/search.md)")
    g.add_argument("--study", help="with --storage: the study's name (default grid-<the --out folder's name>)")
    g.add_argument("--model", help="model name or dir (default: each spec's, else the packaged MiniLM)")
    g.add_argument("--data-dir", help=_DATA_DIR_HELP)
    o = g.add_argument_group("your own data (--tasks csv:… | json:… | disk:… | hub:…; every such task gets these)")
    o.add_argument("--validation", metavar="DATA", help="the dev set (one dataset of your own only; default: "
                                                        "--dev-size training rows held out per seed)")
    o.add_argument("--test", metavar="DATA", help="the test set (one dataset of your own only; default: a fixed "
                                                  "fifth of the training rows)")
    _own_columns(o)
    _train_flags(g)
    add_flags(g, training=True)
    g.set_defaults(func=cmd_grid)

    from peltc.runtime.cli_search import add_search
    add_search(sub, _train_flags, _DATA_DIR_HELP, cmd_search, _own_columns)
    add_interop(sub, _own_columns)
