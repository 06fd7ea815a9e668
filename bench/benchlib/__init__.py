"""bench's shared library: what more than one instrument uses. Every module imports only the standard library
at module level (torch, transformers, peltc and the anchors' libraries inside its functions), because the
anchors' worker (``bench/anchors.py --worker``) imports it in a second environment without peltc.

- ``shapes``        the benchmark shapes (random-init configs), models, fixed padded batches and prompts;
- ``methods``       the methods (spec files), compiling one, and the timed calls: train step, inference, generate;
- ``timing``        interleaved round-robin timing, summaries, paired ratios;
- ``rss``           peak RSS (VmHWM) and RSS of this process, and of fresh ``--rss-child`` processes;
- ``machine``       the machine, library versions and git state a result records;
- ``anchor_systems`` the anchors: the same methods built by peft, AdapterHub and torch (BitFit in place);
- ``workers``       the anchors' worker scheme: one process per environment, timed one call at a time;
- ``table4``, ``vs_anchors``, ``tables``: ``overhead.py``'s phases (Table 4 per shape, peltc vs the anchors)
  and its markdown tables.

Scripts put ``bench/`` on ``sys.path`` and ``import benchlib.…`` (bench is not a package).
"""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
SPECS = ROOT / "specs"
RESULTS = BENCH / "results"
