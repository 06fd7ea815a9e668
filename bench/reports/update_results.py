"""Regenerate the generated tables of docs/results.md from the committed JSON (one command):

    .venv/bin/python bench/reports/update_results.py

- between ``<!-- diagnosis:begin -->`` and ``<!-- diagnosis:end -->``: the diagnosis runs' table
  (``bench/reports/diagnosis_table.py`` over ``docs/results/diagnosis/*.json``);
- between ``<!-- control:begin -->`` and ``<!-- control:end -->``: the anchors control
  (``bench/experiments/diagnosis/control_anchors.py``) from ``docs/results/control_anchors.json``;
- between ``<!-- grid:begin -->`` and ``<!-- grid:end -->``: Table 1 per K and the paper's Table 2
  from ``docs/results/grid-k100.json`` (``peltc grid --table``);
- between ``<!-- dynamics:begin -->`` and ``<!-- dynamics:end -->``: the grid runs' training dynamics and
  UniPELT's gates (``bench/reports/grid_dynamics.py --table``) from ``docs/results/grid-k100-dynamics.json``;
- between ``<!-- selection:begin -->`` and ``<!-- selection:end -->``: the grid under the old checkpoint
  selection (any evaluation) against the recipe's (from ``min_steps`` on), ``bench/reports/selection_rule.py``;
- between ``<!-- served:begin -->`` and ``<!-- served:end -->``: served inference vs the base model (UniPELT APL
  with and without the serving fusions, LoRA / BitFit merged), ``bench/overhead.py --unfused --merged``, one
  column per shape from ``docs/results/served-*/served-*.json`` (the newest folder);
- between ``<!-- grid-methods:begin -->`` and ``<!-- grid-methods:end -->``: the new methods' rows of the grid
  (issue 18) beside LoRA, from ``docs/results/grid-k100.json``;
- between ``<!-- search:begin -->`` and ``<!-- search:end -->``: the search experiment (issue 19)
  (``bench/reports/search_table.py``) from ``docs/results/search-k100/`` and the grid;
- between ``<!-- prefix-stability:begin -->`` and ``<!-- prefix-stability:end -->``: prefix-tuning alone on
  STS-B beyond the grid's seeds, on seed 3's sample under other initialisations, and each sample's linear
  signal (``bench/experiments/prefix_stability.py --table``) from ``docs/results/prefix-stability.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPECS = ["finetune", "bitfit", "adapter", "prefix", "lora", "unipelt_ap", "unipelt_apl", "unipelt_apl_nogate"]
METHODS = ["lora", "dora", "rslora", "ia3", "prompt", "loreft"]      # issue 18's rows, LoRA as the reference
TASKS = ["sst2", "cola", "mrpc", "rte", "stsb"]


def _replace(text: str, name: str, body: str) -> str:
    pat = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"docs/results.md lacks the <!-- {name}:begin/end --> markers")
    return pat.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def control_table(path: Path) -> str:
    """The anchors control (bench/experiments/diagnosis/control_anchors.py, its own environment) from its committed JSON."""
    import json
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    lines = ["| implementation | head bias | best dev Spearman (step) | test Spearman | features' cosine to mean "
             "(restored) | prefix attention mass (restored) |", "|---|---|---:|---:|---:|---:|"]
    for r in runs:
        probe = r.get("restored_probe", {})
        mass = probe.get("prefix_mass_mean")
        name = r["config"] + (f" (positions {r['peft_positions']})" if r.get("peft_positions") else "")
        lines.append(f"| {name} | {r['head_bias']} | {r['best_dev']['spearman']:.3f} ({r['best_step']}) | "
                     f"{r['test']['spearman']:.3f} | {probe.get('feature_cosine_to_mean', float('nan')):.3f} | "
                     f"{'—' if mass is None else f'{mass:.2f}'} |")
    return "\n".join(lines) + "\n"


def served_block(results: Path) -> str:
    """The served-overhead table: per shape, its newest measurement among the ``served-<date>/`` folders'
    ``overhead.py`` JSONs (the Data line names each column's file)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.tables import served_table
    newest: dict[str, tuple[Path, dict, dict]] = {}
    for folder in sorted(p for p in results.glob("served-*") if p.is_dir()):
        for f in sorted(folder.glob("served-*.json")):
            r = json.loads(f.read_text(encoding="utf-8"))
            for name, s in r["shapes"].items():
                newest[name] = (f, r, s)
    shapes, notes = {}, []
    for name, (f, r, s) in newest.items():
        shapes[name] = s
        m = r["machine"]
        load = ", ".join(f"{x:.1f}" for x in (m["loadavg_start"][0], m["loadavg_end"][0]))
        notes.append(f"{name}: {f.relative_to(ROOT).as_posix()} ({r['args']['clock']} clock, "
                     f"{r['args']['threads']} thread, load average {load} at start / end)")
    return served_table(shapes) + "\n\nData: " + "; ".join(notes) + ".\n"


def speed_section(folder: Path) -> str:
    """The compile × precision tables (bench/overhead.py --compile --precision) of the newest committed
    ``overhead-speed-*.json``, or a line saying none is committed."""
    files = sorted(folder.glob("overhead-speed-*.json"))
    if not files:
        return "(not measured yet: no docs/results/overhead-speed-*.json is committed)\n"
    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib.speed_axes import speed_table
    data = json.loads(files[-1].read_text(encoding="utf-8"))
    m = data.get("machine", {})
    head = (f"From `docs/results/{files[-1].name}` (torch {data.get('torch')}, {m.get('cpu_count')} CPUs, "
            f"{m.get('threads')} threads, load average {m.get('loadavg_start')} at the start).\n\n")
    return head + "\n".join(speed_table(shape, r) for shape, r in data["shapes"].items())


def main() -> int:
    sys.path.insert(0, str(ROOT / "bench" / "reports"))
    sys.path.insert(0, str(ROOT / "bench" / "experiments"))
    from diagnosis_table import main as diagnosis
    from grid_dynamics import table as dynamics_table
    from prefix_stability import table as stability_table
    from search_table import table as search_table
    from selection_rule import main as selection

    from peltc.runtime.grid import report

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        diagnosis(str(ROOT / "docs" / "results" / "diagnosis"))
    path = ROOT / "docs" / "results.md"
    text = _replace(path.read_text(encoding="utf-8"), "diagnosis", buf.getvalue())
    text = _replace(text, "control", control_table(ROOT / "docs" / "results" / "control_anchors.json"))
    text = _replace(text, "grid", report(ROOT / "docs" / "results" / "grid-k100.json", SPECS, TASKS))
    text = _replace(text, "grid-methods", report(ROOT / "docs" / "results" / "grid-k100.json", METHODS, TASKS))
    text = _replace(text, "search", search_table())
    dyn = ROOT / "docs" / "results" / "grid-k100-dynamics.json"
    text = _replace(text, "dynamics", dynamics_table(json.loads(dyn.read_text(encoding="utf-8"))))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if selection():
            raise SystemExit("bench/reports/selection_rule.py: the two grids do not hold the same runs")
    text = _replace(text, "selection", buf.getvalue())
    stab = ROOT / "docs" / "results" / "prefix-stability.json"
    text = _replace(text, "prefix-stability", stability_table(json.loads(stab.read_text(encoding="utf-8"))))
    text = _replace(text, "served", served_block(ROOT / "docs" / "results"))
    text = _replace(text, "speed", speed_section(ROOT / "docs" / "results"))
    path.write_text(text, encoding="utf-8")
    print(f"updated {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
