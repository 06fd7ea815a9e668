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
