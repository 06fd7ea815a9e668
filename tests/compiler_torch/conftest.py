"""The torch back-end tests run on a 2-core machine shared with others: one thread each.

Tests import their helpers from ``torch_models`` (this folder; put on sys.path here because the
project runs pytest with ``--import-mode=importlib``)."""

import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def batch():
    from torch_models import tiny_batch
    return tiny_batch()
