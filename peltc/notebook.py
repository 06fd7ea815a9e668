"""Specs and run folders that display themselves in Jupyter.

    import peltc
    spec = peltc.load_spec("specs/unipelt_apl.pelt", model="minilm")   # no weights: the config only
    spec                  # the diagram (SVG) over `peltc check`'s table (HTML)
    run = peltc.open_run("runs/apl")
    run                   # the test metrics, the dev history and the gate heatmap (HTML)

`Spec` wraps the front end's result (torch-free: nothing here imports torch); `Run` reads a run folder's
JSON files (`run.json`, `metrics.json`, `gates.json`, `architecture.svg`). A compiled model's torch
`Report` (`peltc.compile_model`) has its own `_repr_html_` (compiler/torch/report.py).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Union

from peltc.errors import UsageError

PathLike = Union[str, Path]


class Spec:
    """A spec checked against a model config (no weights), as `peltc check` checks it.

    ``ir`` is the resolved IR, ``warnings`` `peltc check`'s warnings, ``total`` the exact trainable count
    (None without a model). In Jupyter it shows its diagram (``_repr_svg_``), the diagram over the check
    table (``_repr_html_``) and the check as text (``_repr_markdown_``)."""

    def __init__(self, result: Any, name: str):
        self.result = result
        self.ir = result.ir
        self.name = name
        self.warnings = list(result.warnings)
        self._svg: str | None = None

    @property
    def total(self) -> int | None:
        if self.ir.settings.family is None:
            return None
        return sum(a.saved or 0 for a in self.ir.attachments())

    def summary(self) -> str:
        """`peltc check`'s report (text)."""
        from peltc.compiler.summary import summary
        return summary(self.ir, self.name)

    def table_html(self) -> str:
        """`peltc check`'s report as an HTML table."""
        from peltc.compiler.summary import summary_html
        return summary_html(self.ir, self.name)

    def svg(self) -> str:
        """The architecture diagram as SVG text (`peltc render`'s; needs Graphviz's `dot`: U014)."""
        if self._svg is None:
            from peltc.compiler.render import to_svg
            self._svg = to_svg(self.ir, title=Path(self.name).name)
        return self._svg

    def _svg_or_none(self) -> str | None:
        try:
            return self.svg()
        except UsageError:   # no Graphviz: the table still shows
            return None

    def _repr_svg_(self) -> str | None:
        return self._svg_or_none()

    def _repr_html_(self) -> str:
        svg = self._svg_or_none()
        diagram = f'<div class="peltc-diagram">{svg}</div>' if svg else \
            "<p><i>no diagram: Graphviz's <code>dot</code> is not installed</i></p>"
        return f'<div class="peltc-spec">{diagram}{self.table_html()}</div>'

    def _repr_markdown_(self) -> str:
        return f"```\n{self.summary()}\n```"

    def __repr__(self) -> str:
        n = len(list(self.ir.instances()))
        s = self.ir.settings
        on = f", {self.total:,} trainable on {s.model or '?'}" if self.total is not None else ", no model bound"
        return f"<peltc.Spec {self.name}: {n} instance{'s' if n != 1 else ''}{on}>"


def load_spec(spec: PathLike, model: str | None = None) -> Spec:
    """Check a spec (a path to a .pelt file, or .pelt text) against ``model`` (a name, model directory or
    config.json; default: the spec's own `model`) — the config only, no weights, no torch. Raises
    `SpecError` / `UsageError` as `peltc check` reports them (in IPython: the rendered error, no traceback)."""
    from peltc.compiler.pipeline import build_ir, check_file
    s = str(spec)
    if isinstance(spec, Path) or ("\n" not in s and "{" not in s):
        return Spec(check_file(s, model=model), s)
    return Spec(build_ir(s, "<string>", model=model), "<string>")


# --- run folders --------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"cannot read '{path}': {getattr(e, 'strerror', None) or e}", code="U136",
                         help="open a folder written by `peltc compile --train`") from None
    if not isinstance(data, dict):
        raise UsageError(f"'{path}' is not a run folder's JSON object", code="U136",
                         help="open a folder written by `peltc compile --train`")
    return data


def _num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return html.escape(str(v))
    return f"{v:,}" if isinstance(v, int) else f"{v:.4f}"


# viridis at 0, .25, .5, .75, 1 (the colour map of gates.png)
_VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def _colour(v: float) -> str:
    v = min(max(v, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(v), len(_VIRIDIS) - 2)
    f = v - i
    r, g, b = (round(a + (b - a) * f) for a, b in zip(_VIRIDIS[i], _VIRIDIS[i + 1]))
    return f"#{r:02x}{g:02x}{b:02x}"


class Run:
    """A run folder written by `peltc compile --train`: ``options`` (run.json), ``metrics``
    (metrics.json), ``gates`` (gates.json: gated module → layer → mean gate on test). In Jupyter it shows
    its test metrics, dev history and gate heatmap (``_repr_html_``, ``_repr_markdown_``)."""

    def __init__(self, run_dir: Path, options: dict, metrics: dict, gates: dict):
        self.dir = run_dir
        self.options = options
        self.metrics = metrics
        self.gates = gates

    @property
    def finished(self) -> bool:
        return bool(self.metrics.get("final"))

    @property
    def test(self) -> dict[str, float]:
        return {k: v for k, v in (self.metrics.get("test") or {}).items() if isinstance(v, (int, float))}

    @property
    def history(self) -> list[dict]:
        return list((self.metrics.get("dev") or {}).get("history") or [])

    def title(self) -> str:
        m, o = self.metrics, self.options
        task = m.get("task") or o.get("task_name") or o.get("task") or "?"
        bits = [f"spec {m.get('spec') or o.get('spec') or '?'}", f"task {task}",
                f"model {m.get('model') or o.get('model_ref') or '?'}"]
        bits += [f"{k} {m[k]}" for k in ("k", "seed") if m.get(k) is not None]
        return f"{self.dir.name}: " + " · ".join(bits) + ("" if self.finished else " (not finished)")

    def metrics_html(self) -> str:
        main = self.metrics.get("main_metric")
        rows = "".join(f"<tr><td>{'<b>' + html.escape(k) + '</b>' if k == main else html.escape(k)}</td>"
                       f'<td style="text-align:right">{_num(v)}</td></tr>' for k, v in self.test.items())
        out = f'<table class="peltc-test"><thead><tr><th>test</th><th></th></tr></thead><tbody>{rows}</tbody></table>'
        hist = self.history
        if hist:
            cols = [c for c in ("step", "epoch", "loss", main) if c and any(c in h for h in hist)]
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            body = "".join("<tr>" + "".join(f'<td style="text-align:right">{_num(h[c]) if c in h else ""}</td>'
                                            for c in cols) + "</tr>" for h in hist)
            out += f'<table class="peltc-dev"><thead><tr><th colspan="{len(cols)}">dev</th></tr><tr>{head}</tr>' \
                   f"</thead><tbody>{body}</tbody></table>"
        return out

    def gates_html(self) -> str:
        """The gate heatmap, layers × gated modules (gates.png's picture as an HTML table); '' without gates."""
        if not self.gates:
            return ""
        layers = _layers(self.gates)
        head = "".join(f"<th>{html.escape(x)}</th>" for x in layers)
        body = []
        for name, row in self.gates.items():
            cells = []
            for x in layers:
                v = row.get(x)
                cells.append("<td></td>" if v is None else
                             f'<td style="background:{_colour(v)};color:{"white" if v < 0.6 else "black"};'
                             f'text-align:center">{v:.2f}</td>')
            body.append(f"<tr><th style=\"text-align:left\">{html.escape(name)}</th>{''.join(cells)}</tr>")
        return (f'<table class="peltc-gates"><thead><tr><th>mean gate on test / layer</th>{head}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table>")

    def architecture_svg(self) -> str | None:
        p = self.dir / "architecture.svg"
        if not p.is_file():
            return None
        svg = p.read_text(encoding="utf-8")
        return svg[svg.find("<svg"):] if "<svg" in svg else svg

    def _repr_html_(self) -> str:
        svg = self.architecture_svg()
        return (f'<div class="peltc-run"><div><b>{html.escape(self.title())}</b></div>{self.metrics_html()}'
                f"{self.gates_html()}" + (f'<details><summary>architecture</summary>{svg}</details>' if svg else "")
                + "</div>")

    def _repr_markdown_(self) -> str:
        lines = [f"**{self.title()}**", "", "| test | |", "|---|---:|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in self.test.items()]
        if self.gates:
            layers = _layers(self.gates)
            lines += ["", "| gate | " + " | ".join(layers) + " |", "|---|" + "---:|" * len(layers)]
            lines += [f"| {n} | " + " | ".join(f"{row[x]:.2f}" if x in row else "" for x in layers) + " |"
                      for n, row in self.gates.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<peltc.Run {self.title()}>"


def open_run(run_dir: PathLike) -> Run:
    """Open a run folder (`peltc compile --train --out DIR`) to look at it: UsageError U008 when the folder
    does not exist, U136 when it holds no readable run.json / metrics.json. Loads no model."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UsageError(f"run folder '{d}' does not exist", code="U008")
    if not (d / "metrics.json").is_file() and not (d / "run.json").is_file():
        raise UsageError(f"'{d}' is not a run folder (no metrics.json or run.json)", code="U136",
                         help="open a folder written by `peltc compile --train`")
    options = _read_json(d / "run.json") if (d / "run.json").is_file() else {}
    metrics = _read_json(d / "metrics.json") if (d / "metrics.json").is_file() else {}
    gates = _read_json(d / "gates.json") if (d / "gates.json").is_file() else {}
    return Run(d, options, metrics, gates)


def _layers(gates: dict[str, dict[str, float]]) -> list[str]:
    """The layer columns of a gate table (``gates.json``): layers in order, then ``all``."""
    return sorted({k for row in gates.values() for k in row}, key=lambda s: (s == "all", int(s) if s.isdigit() else 0))
