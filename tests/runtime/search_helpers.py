"""What the search tests share: a tiny space, a tiny own-data CSV, the fast flags, `peltc` as a process."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

SPACE = """\
lora qv {
  at layers[*].attention.{query, value}
  rank choice(2, 4)
  alpha 16
}
"""
# K = 32, one dev evaluation per 2 steps over 3 epochs: a trial is a few seconds on the tiny model
FAST = ["--k", "32", "--dev-size", "40", "--epochs", "3", "--batch-size", "16", "--min-steps", "0",
        "--eval-steps", "2", "--max-length", "32"]
POS, NEG = ("good", "great", "fine", "lovely"), ("bad", "awful", "poor", "dull")


def write_data(folder: Path, n: int = 120) -> Path:
    rng = random.Random(0)
    lines = ["text,label"]
    for _ in range(n):
        y = rng.choice(("neg", "pos"))
        words = POS if y == "pos" else NEG
        lines.append(f"a {rng.choice(words)} film really {rng.choice(words)},{y}")
    path = folder / "reviews.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_space(folder: Path, text: str = SPACE) -> Path:
    path = folder / "space.pelt"
    path.write_text(text, encoding="utf-8")
    return path


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def peltc(*args: str, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "a", encoding="utf-8") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "peltc", *args], stdout=out, stderr=subprocess.STDOUT, env=env())


def study(storage: str, name: str):
    """The study as a test reads it (no heartbeats of its own)."""
    import optuna

    from peltc.runtime.study_storage import open_storage
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def states(st) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in st.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out
