"""The runtime's commands for the `peltc` CLI: compile, eval, predict, grid.

Imported by peltc/cli.py when the parser is built, so it must stay light: torch and
transformers are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json

from peltc.errors import EXIT_OK

# command-line flags → train settings (None = not given; the spec's `train { }` or the recipe decide)
_SETTING_FLAGS = {
    "lr": float, "epochs": float, "batch_size": int, "warmup": float, "weight_decay": float,
    "patience": int, "min_steps": int, "eval_steps": int, "max_length": int, "head_lr": float,
    "head_bias": str,
}


_SETTING_HELP = {
    "lr": "learning rate of the PELT parameters (default 1e-3; full fine-tuning 2e-5)",
    "epochs": "maximum epochs (default 20)",
    "batch_size": "training batch size (default 16)",
    "warmup": "linear warm-up, fraction of the steps (default 0.06)",
    "weight_decay": "AdamW weight decay (default 0)",
    "patience": "early stopping: evaluations without dev improvement (default 3)",
    "min_steps": "no early stop before this many steps (default 60)",
    "eval_steps": "evaluate on dev every N steps (default 30)",
    "max_length": "truncate inputs to N tokens (default 128)",
    "head_lr": "learning rate of the task head (default 1e-3)",
    "head_bias": "initial bias of the head's output: zero, or prior (the training labels' mean / log class "
                 "frequencies; default prior)",
}


def _overrides(a) -> dict:
    return {k: getattr(a, k) for k in _SETTING_FLAGS if getattr(a, k, None) is not None}


def cmd_compile(a) -> int:
    from peltc.runtime.run import RunOptions, train_run
    if a.train is None:
        return _compile_only(a)
    opts = RunOptions(spec=a.spec, task=a.train, model=a.model, data_dir=a.data_dir, k=a.k, seed=a.seed,
                      dev_size=a.dev_size,
                      out=a.out, overrides=_overrides(a), resume=a.resume, progress=not a.quiet,
                      render=not a.no_render)
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
    return EXIT_OK


def cmd_eval(a) -> int:
    from peltc.runtime.run import eval_run
    out = eval_run(a.run_dir, a.data_dir)
    print(json.dumps(out["test"], indent=2))
    if out["warning"]:
        print(f"warning: {out['warning']}")
    return EXIT_OK


def cmd_predict(a) -> int:
    from peltc.runtime.run import predict_text
    out = predict_text(a.run_dir, a.text, a.text_pair)
    if "label" in out:
        print(f"{out['label']}  (p = {out['probability']:.3f})")
    else:
        print(f"{out['score']:.4f}")
    return EXIT_OK


def cmd_grid(a) -> int:
    from peltc.errors import UsageError
    from peltc.runtime.grid import report, run_grid
    from peltc.runtime.train import check_option
    if a.table:
        order = [s.rsplit("/", 1)[-1].removesuffix(".pelt") for s in a.specs] or None
        print(report(a.table, order))
        return EXIT_OK
    if not a.specs:
        raise UsageError("no specs given", code="U109", help="peltc grid SPEC… [--record FILE.json], or "
                                                              "peltc grid --table FILE.json")
    for k, v in _overrides(a).items():
        check_option(k, v)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        raise UsageError(f"bad --seeds {a.seeds!r}", code="U106", help="a comma list of integers, e.g. 1,2,3") from None
    run_grid(a.specs, tasks=a.tasks.split(","), ks=a.k.split(","), seeds=seeds,
             out=a.out, jobs=a.jobs, model=a.model, data_dir=a.data_dir, overrides=_overrides(a),
             dev_size=a.dev_size, record=a.record)
    return EXIT_OK


def _train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training settings (override the spec's train { } block)")
    for name, typ in _SETTING_FLAGS.items():
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=None,
                       help=_SETTING_HELP[name])


def add_commands(sub) -> None:
    c = sub.add_parser("compile", help="rewrite the model; with --train: train, evaluate, save the adapter")
    c.add_argument("spec", help="the .pelt spec file")
    c.add_argument("--model", help="model name, dir or config.json (default: the spec's, else the packaged MiniLM)")
    c.add_argument("--train", metavar="glue/TASK", help="cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte")
    c.add_argument("--data-dir", help="GLUE in the original TSV layout (default: $PELT_GLUE_DIR, else the Hub)")
    c.add_argument("--k", default="100", help="training examples: 100 | 500 | 1000 | all (default 100)")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--dev-size", type=int, default=1000,
                   help="training examples held out for checkpoint selection (default 1000, as the paper)")
    c.add_argument("--out", help="run folder (default runs/<spec>-<task>-k<K>-s<seed>, with a -N suffix when taken); "
                                 "an existing folder is refused unless --resume")
    c.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out (same spec and settings; a finished run is reported)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument("--no-render", action="store_true", help="skip architecture.svg")
    _train_flags(c)
    c.set_defaults(func=cmd_compile)

    e = sub.add_parser("eval", help="reload a run's adapter on a fresh base model and score the test set")
    e.add_argument("run_dir", help="a run folder written by `peltc compile --train`")
    e.add_argument("--data-dir", help="GLUE in the original TSV layout (default: the run's, $PELT_GLUE_DIR, the Hub)")
    e.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="label a text with a trained run")
    p.add_argument("run_dir", help="a run folder written by `peltc compile --train`")
    p.add_argument("--text", required=True, help="the text to label (the first sentence of a pair task)")
    p.add_argument("--text-pair", help="the second sentence, for pair tasks (mrpc, qqp, stsb, mnli, qnli, rte)")
    p.set_defaults(func=cmd_predict)

    g = sub.add_parser("grid", help="run specs × tasks × K × seeds and tabulate mean ± std")
    g.add_argument("specs", nargs="*", help="the .pelt spec files (one table row each)")
    g.add_argument("--record", metavar="FILE.json", help="keep one record per finished run in this JSON (runs "
                                                         "recorded there count as finished)")
    g.add_argument("--table", metavar="FILE.json", help="print the tables of a recorded grid and exit (specs, if "
                                                        "given, set the row order)")
    g.add_argument("--tasks", default="cola,sst2,mrpc,rte,stsb", help="comma list of GLUE tasks (default %(default)s)")
    g.add_argument("--k", default="100", help="comma list of training sizes: 100, 500, 1000, all (default %(default)s)")
    g.add_argument("--seeds", default="1,2,3", help="comma list of seeds (default %(default)s)")
    g.add_argument("--jobs", type=int, default=1, help="runs in parallel, each on its share of the CPU threads (default 1)")
    g.add_argument("--dev-size", type=int, default=1000,
                   help="training examples held out for checkpoint selection (default 1000, as the paper)")
    g.add_argument("--out", default="runs/grid", help="grid folder: one run folder per combination, finished ones "
                                                      "skipped (default %(default)s)")
    g.add_argument("--model", help="model name or dir (default: each spec's, else the packaged MiniLM)")
    g.add_argument("--data-dir", help="GLUE in the original TSV layout (default: $PELT_GLUE_DIR, else the Hub)")
    _train_flags(g)
    g.set_defaults(func=cmd_grid)
