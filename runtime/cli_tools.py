"""The `peltc` commands that work on finished runs: generate, export, import, runs, merge.

Split from cli.py (compile, eval, predict, grid), which adds these with `add_tools`; light at import
like it: torch and transformers are imported inside the command functions only.
"""

from __future__ import annotations

import json

from peltc.errors import EXIT_OK
from peltc.runtime.speed import add_flags, from_args


def cmd_export(a) -> int:
    from peltc.compiler.torch.peft_export import export_peft
    r = export_peft(a.run_dir, a.out_dir, partial=a.partial)
    head = ", ".join(r.config.get("modules_to_save") or []) or "none"
    if r.config["peft_type"] == "PROMPT_TUNING":
        print(f"wrote {r.out_dir}: a peft prompt-tuning adapter of {r.config['num_virtual_tokens']} virtual tokens "
              f"({', '.join(r.modules)}); task head: {head}")
        return EXIT_OK
    print(f"wrote {r.out_dir}: a peft LoRA adapter of {len(r.modules)} module(s), r {r.config['r']}, "
          f"lora_alpha {r.config['lora_alpha']}"
          + (" (per-module ranks / alphas in rank_pattern / alpha_pattern)"
             if "rank_pattern" in r.config or "alpha_pattern" in r.config else "") + f"; task head: {head}")
    for n in r.notes:
        print(f"note: {n}")
    for line in r.left_out:
        print(f"left out: {line}")
    return EXIT_OK


def cmd_import(a) -> int:
    from pathlib import Path

    from peltc.errors import UsageError
    from peltc.runtime.runfolder import check_new_folder, import_peft_run, read_peft_import
    if not a.output and not a.out:
        raise UsageError("peltc import writes a spec (-o spec.pelt), a run folder (--out RUN_DIR), or both",
                         code="U123", help="peltc import PEFT_DIR -o spec.pelt [--out RUN_DIR --task glue/NAME]")
    task = None
    if a.out:
        if not a.task:
            raise UsageError("--out makes a run folder for peltc eval / predict, which need the task",
                             code="U123", help="add --task glue/NAME (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte), "
                                               "or your own data: --task csv:PATH | json:PATH | disk:DIR | hub:NAME")
        task = _import_task(a)
        check_new_folder(a.out)
    imp = read_peft_import(a.peft_dir, a.output or str(Path(a.out) / "spec.pelt"), model=a.model, task=task)
    if a.output:
        Path(a.output).write_text(imp.text, encoding="utf-8")
        print(f"wrote {a.output}: {len(imp.adapter.groups)} {imp.adapter.groups[0].get('method', 'lora')} instance(s) "
              f"({', '.join(g['name'] for g in imp.adapter.groups)})")
    if a.out:
        out = import_peft_run(imp, a.out, task)
        print(f"wrote {out}: peltc eval {out} / peltc predict {out} --text \"…\" use it")
    return EXIT_OK


def _import_task(a):
    """The task of `peltc import --task`: a GLUE task, or your own data read and checked as `compile
    --train` reads it (its labels in their order make the head's outputs)."""
    import sys
    from types import SimpleNamespace

    from peltc.errors import UsageError
    from peltc.runtime import task as tasks
    from peltc.runtime import task_gen
    opts = SimpleNamespace(task=a.task, data_dir=None, validation=None, test=a.test, text_column=a.text_column,
                           text_pair_column=a.text_pair_column, label_column=a.label_column, task_type=a.task_type)
    if task_gen.claims(a.task):
        raise UsageError(f"--task {a.task} is a generation task; peltc import reads sequence-classification "
                         "adapters (peft's SEQ_CLS)", code="U132",
                         help="--task glue/NAME, or csv:PATH | json:PATH | disk:DIR | hub:NAME")
    return tasks.resolve(opts, lambda msg: print(msg, file=sys.stderr))[0]


def cmd_generate(a) -> int:
    from peltc.errors import UsageError
    from peltc.runtime.serve import generate_text
    if a.max_new_tokens is not None and a.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens {a.max_new_tokens} is out of range", code="U106",
                         help="--max-new-tokens must be ≥ 1")
    if a.temperature < 0:
        raise UsageError(f"--temperature {a.temperature:g} is out of range", code="U106",
                         help="--temperature: 0 decodes greedily, > 0 samples")
    print(generate_text(a.run_dir, a.prompt, a.max_new_tokens, temperature=a.temperature, seed=a.seed,
                        speed=from_args(a, None)))
    return EXIT_OK


def cmd_runs(a) -> int:
    from peltc.runtime.runfolder import find_runs, run_summary
    rows = [run_summary(d) for d in find_runs(a.dir)]
    if a.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no run folders in {a.dir}")
        return EXIT_OK
    table = [("RUN", "SPEC", "TASK", "TEST METRIC", "STATE")] + [
        (r["path"], r["spec"] or "?", r["task"] or "?",
         f"{r['metric']} {r['value']:.4f}" if r["value"] is not None else "-",
         r["state"] + (f" ({r['resume_from']})" if r.get("resume_from") else "")) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4])
    return EXIT_OK


def cmd_merge(a) -> int:
    from peltc.runtime.serve import merge_run
    r = merge_run(a.run_dir, a.out_dir)
    print(f"wrote {r['out']}: {r['base_model']} with {len(r['merged'])} merged module(s) (save_pretrained; "
          "loads with transformers' AutoModelForSequenceClassification.from_pretrained, no peltc needed)")
    return EXIT_OK


def _add_runs(sub) -> None:
    r = sub.add_parser("runs", help="list run folders: spec, task, test metric and state (finished, imported, "
                                    "resumable, empty)")
    r.add_argument("dir", nargs="?", default="runs", help="where to look (default: runs; a grid folder too)")
    r.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    r.set_defaults(func=cmd_runs)
    m = sub.add_parser("merge", help="write a run's base model with its LoRA / BitFit merged in (save_pretrained)")
    m.add_argument("run_dir", help="a run folder of LoRA (gate none, const or scalar) and / or BitFit with "
                                   "head { pool pooler }")
    m.add_argument("out_dir", help="the folder to write (new or empty)")
    m.set_defaults(func=cmd_merge)


def _add_generate(sub) -> None:
    n = sub.add_parser("generate", help="complete a prompt with a generation run (--train gen:…) on a fresh base")
    n.add_argument("run_dir", help="a run folder written by `peltc compile --train gen:…`")
    n.add_argument("--prompt", required=True, help="the prompt (encoded as in training: the tokenizer's special "
                                                   "tokens, no template)")
    n.add_argument("--max-new-tokens", type=int, default=None,
                   help="at most this many new tokens (default: the run's scoring budget — the longest "
                        "completion; 6 for gen:arith); generation also stops at the end-of-sequence token")
    n.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; > 0: sample at this temperature")
    n.add_argument("--seed", type=int, default=None, help="with --temperature: the sampling seed")
    add_flags(n, training=False)
    n.set_defaults(func=cmd_generate)


def add_tools(sub) -> None:
    """Add generate, runs and merge to ``sub``."""
    _add_generate(sub)
    _add_runs(sub)


def add_interop(sub, own_columns) -> None:
    """Add export and import (peft) to ``sub``."""
    x = sub.add_parser("export", help="write a run's LoRA and task head as a peft LoRA adapter")
    x.add_argument("run_dir", help="a run folder (or an artifact folder holding manifest.json)")
    x.add_argument("--to", required=True, choices=["peft"], help="the format (peft: adapter_config.json + "
                                                                 "adapter_model.safetensors)")
    x.add_argument("out_dir", help="the folder to write (empty, or a previous export)")
    x.add_argument("--partial", action="store_true",
                   help="export what peft can hold and list what is left out (else such a run is refused)")
    x.set_defaults(func=cmd_export)

    i = sub.add_parser("import", help="turn a peft LoRA adapter (SEQ_CLS) into a spec and a run folder")
    i.add_argument("peft_dir", help="the folder peft's save_pretrained wrote")
    i.add_argument("-o", "--output", metavar="SPEC", help="write the spec here (.pelt)")
    i.add_argument("--model", help="the base model: name or dir (default: the adapter's base_model_name_or_path)")
    i.add_argument("--out", metavar="RUN_DIR", help="also make a run folder with the artifact, for peltc eval / predict")
    i.add_argument("--task", metavar="DATA", help="the task the adapter was trained for (needed with --out): "
                                                  "glue/TASK, or your own data as compile --train takes it: "
                                                  "csv:PATH, json:PATH, disk:DIR, hub:NAME[:CONFIG]")
    o = i.add_argument_group("your own data (--task csv:… | json:… | disk:… | hub:…)")
    o.add_argument("--test", metavar="DATA", help="the test set peltc eval scores (default: a fixed fifth of the "
                                                  "data, as compile holds out)")
    own_columns(o)
    i.set_defaults(func=cmd_import)
