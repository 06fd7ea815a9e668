"""`peltc lsp`: how long after a change the diagnostics arrive, for every shipped spec.

    .venv/bin/python bench/lsp_latency.py                      # every spec in specs/, 30 changes each
    .venv/bin/python bench/lsp_latency.py --changes 100 --model bert-base-uncased

    .venv/bin/python bench/lsp_latency.py --spaces --model minilm   # search spaces: kept checks vs fresh

A real client (pygls's) starts `python -m peltc lsp` over stdio and opens each spec. Each change
edits the text in place — alternately a misspelt parameter (the server answers with E102) and the
original text (the diagnostics clear) — and the latency is the wall time from sending
`textDocument/didChange` to receiving that version's `textDocument/publishDiagnostics` (JSON-RPC
both ways included; the server runs the whole front end, the `extends` / `import` files, and the
hover model's counts). Reported per spec: median, p95 and max over the changes, after ``--warmup``
untimed ones. A table on stdout; JSON in ``bench/results/lsp_latency-<time>.json``. The target
(issue 20) is 50 ms for any shipped spec; this is a measurement, not a test.

``--spaces``: every space in ``specs/spaces/``, in this process (`peltc.lsp.analysis.analyse`, what the server
runs per change): each change writes a new number into the space's first `choice(…)` (typing a value), and
is checked twice, interleaved — with the checks the editor keeps between edits (``memo``) and from scratch
— so the ratio is measured side by side. JSON in ``bench/results/lsp_spaces-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
RESULTS = ROOT / "bench" / "results"


def _misspell(text: str) -> str:
    """The spec with one error: its first parameter line's name misspelt (or an unknown one added)."""
    lines = text.split("\n")
    for k, ln in enumerate(lines):
        s = ln.strip()
        if ln.startswith("  ") and s and not s.startswith(("#", "at ", "gate ", "layers", "}")):
            lines[k] = ln.replace(s.split()[0], s.split()[0] + "x", 1)
            return "\n".join(lines)
    return text.replace("{", "{\n  sizex 1", 1)


async def run(specs: list[Path], changes: int, warmup: int, model: str | None) -> dict:
    client = LanguageClient("lsp-latency", "0")
    got: dict[tuple[str, int], float] = {}
    events: dict[tuple[str, int], asyncio.Event] = {}

    @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def _diags(params: lsp.PublishDiagnosticsParams):
        key = (params.uri, params.version)
        got[key] = time.perf_counter()
        if key in events:
            events[key].set()

    await client.start_io(sys.executable, "-m", "peltc", "lsp")
    await client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities(), process_id=os.getpid(),
                                                       initialization_options={"model": model}))
    client.initialized(lsp.InitializedParams())
    out = {}
    for spec in specs:
        uri = spec.resolve().as_uri()
        text = spec.read_text(encoding="utf-8")
        bad = _misspell(text)
        version = 1
        events[(uri, version)] = asyncio.Event()
        client.text_document_did_open(lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(uri=uri, language_id="pelt", version=version, text=text)))
        await asyncio.wait_for(events[(uri, version)].wait(), 30)
        times = []
        for k in range(warmup + changes):
            version += 1
            new = bad if k % 2 == 0 else text
            events[(uri, version)] = asyncio.Event()
            t0 = time.perf_counter()
            client.text_document_did_change(lsp.DidChangeTextDocumentParams(
                text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=new)]))
            await asyncio.wait_for(events[(uri, version)].wait(), 30)
            if k >= warmup:
                times.append((got[(uri, version)] - t0) * 1000)
        client.text_document_did_close(lsp.DidCloseTextDocumentParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri)))
        times.sort()
        out[spec.name] = {"median_ms": statistics.median(times),
                          "p95_ms": times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))],
                          "max_ms": times[-1], "n": len(times)}
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return out


def _retype(text: str, k: int) -> str:
    """The space with the last value of its first `choice(…)` list replaced by a number of this change's own."""
    import re
    m = re.search(r"choice\(([^()]*?)(\d+)\)", text)
    if m is None:
        raise SystemExit("no choice(…) ending in a number to edit")
    return text[:m.start(2)] + str(100 + k) + text[m.end(2):]


def spaces(paths: list[Path], changes: int, warmup: int, model: str | None) -> dict:
    from peltc.lsp.analysis import analyse
    out = {}
    for path in paths:
        text, memo, kept, fresh = path.read_text(encoding="utf-8"), {}, [], []
        analyse(text, str(path), model=model, memo=memo)
        for k in range(warmup + changes):
            new = _retype(text, k)
            t0 = time.perf_counter()
            a = analyse(new, str(path), model=model, memo=memo)
            t1 = time.perf_counter()
            b = analyse(new, str(path), model=model)
            t2 = time.perf_counter()
            assert [d.message for d in a.diagnostics] == [d.message for d in b.diagnostics]
            if k >= warmup:
                kept.append((t1 - t0) * 1000)
                fresh.append((t2 - t1) * 1000)
        out[path.name] = {"kept_median_ms": statistics.median(kept), "fresh_median_ms": statistics.median(fresh),
                          "ratio_median": statistics.median(f / k for k, f in zip(kept, fresh)),
                          "kept_ms": kept, "fresh_ms": fresh}
    return out


def _write(stem: str, a, res: dict) -> None:
    """``bench/results/STEM-<time>.json`` (benchlib's writer: atomic): the machine, the options and the results."""
    from benchlib.machine import write_result
    when = datetime.now(timezone.utc)
    out = write_result(RESULTS, stem, {"when": when.strftime("%Y%m%dT%H%M%SZ"), "machine": platform.platform(),
                                       "cpus": os.cpu_count(), "python": platform.python_version(),
                                       "changes": a.changes, "warmup": a.warmup, "model": a.model,
                                       "load_avg": os.getloadavg(), "results": res}, when)
    print(f"wrote {out.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--model", default=None, help="the server's `model` setting (default: each spec's own)")
    ap.add_argument("--spaces", action="store_true", help="search spaces (specs/spaces/): kept checks vs fresh")
    ap.add_argument("specs", nargs="*", help="default: every spec in specs/ (with --spaces: specs/spaces/)")
    a = ap.parse_args()
    if a.spaces:
        paths = [Path(s) for s in a.specs] or sorted((SPECS / "spaces").glob("*.pelt"))
        res = spaces(paths, a.changes, a.warmup, a.model)
        print("| space | after an edit, checks kept (ms) | from scratch (ms) | scratch / kept (median of pairs) |")
        print("|---|---:|---:|---:|")
        for name, r in res.items():
            print(f"| {name} | {r['kept_median_ms']:.0f} | {r['fresh_median_ms']:.0f} | {r['ratio_median']:.1f}× |")
        _write("lsp_spaces", a, res)
        return
    specs = [Path(s) for s in a.specs] or sorted(SPECS.glob("*.pelt"))
    res = asyncio.run(run(specs, a.changes, a.warmup, a.model))
    w = max(len(s) for s in res)
    print(f"{'spec':<{w}}  {'median ms':>9}  {'p95 ms':>7}  {'max ms':>7}")
    for name, r in res.items():
        print(f"{name:<{w}}  {r['median_ms']:9.1f}  {r['p95_ms']:7.1f}  {r['max_ms']:7.1f}")
    worst = max(r["p95_ms"] for r in res.values())
    print(f"worst p95: {worst:.1f} ms (target: 50 ms); {a.changes} changes per spec, model: {a.model or 'each spec s own'}"
          .replace("spec s", "spec's"))
    _write("lsp_latency", a, res)


if __name__ == "__main__":
    main()
