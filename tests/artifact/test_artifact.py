"""Artifacts: strict loading, clear errors for corrupt/mismatched files, atomic saves (killed writer)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from peltc.compiler.torch.artifact import load_into, load_tensors, read_manifest, save_artifact
from peltc.errors import ArtifactError

sys.path.insert(0, str(Path(__file__).parent))
import _writer  # noqa: E402

CFG = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    m = BertForSequenceClassification(BertConfig(**{**CFG, **kw}))
    for n, p in m.named_parameters():
        p.requires_grad = n.startswith("classifier") or "LayerNorm.bias" in n
    return m


def _save(m, d, **kw):
    return save_artifact(m, d, ir_dict={"nodes": [], "edges": []}, spec_text="bitfit b {}", spec_hash="h" * 64,
                         base_model="tiny", **kw)


def test_round_trip_is_exact(tmp_path):
    a = _model(0)
    _save(a, tmp_path)
    b = _model(1)
    m, t = load_tensors(tmp_path)
    load_into(b, m, t, spec_hash="h" * 64)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        if p.requires_grad:
            assert torch.equal(p, q), n
    man = read_manifest(tmp_path)
    assert man["num_parameters"] == sum(p.numel() for p in a.parameters() if p.requires_grad)
    assert {"peltc", "torch", "transformers"} <= set(man["versions"])
    assert len(list(tmp_path.glob("weights-*.safetensors"))) == 1


def test_missing_and_unexpected_keys_name_the_key(tmp_path):
    a = _model(0)
    _save(a, tmp_path)
    m, t = load_tensors(tmp_path)
    b = _model(0)
    b.bert.pooler.dense.bias.requires_grad = True
    with pytest.raises(ArtifactError) as e:
        load_into(b, m, t)
    assert e.value.diagnostic.code == "A010" and "'bert.pooler.dense.bias'" in e.value.diagnostic.message
    c = _model(0)
    c.classifier.bias.requires_grad = False
    with pytest.raises(ArtifactError) as e:
        load_into(c, m, t)
    assert e.value.diagnostic.code == "A010" and "'classifier.bias'" in e.value.diagnostic.message


def test_shape_arch_and_spec_mismatch(tmp_path):
    _save(_model(0), tmp_path)
    m, t = load_tensors(tmp_path)
    with pytest.raises(ArtifactError) as e:
        load_into(_model(0, hidden_size=32, intermediate_size=40), m, t)
    assert e.value.diagnostic.code == "A008"
    t2 = dict(t)
    t2["classifier.bias"] = torch.zeros(5)
    with pytest.raises(ArtifactError) as e:
        load_into(_model(0), m, t2)
    assert e.value.diagnostic.code == "A011" and "'classifier.bias'" in e.value.diagnostic.message
    with pytest.raises(ArtifactError) as e:
        load_into(_model(0), m, t, spec_hash="x" * 64)
    assert e.value.diagnostic.code == "A009"


def test_corrupt_files_give_errors(tmp_path):
    with pytest.raises(ArtifactError) as e:
        load_tensors(tmp_path)
    assert e.value.diagnostic.code == "A002"
    _save(_model(0), tmp_path)
    w = next(tmp_path.glob("weights-*.safetensors"))
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as e:
        load_tensors(tmp_path)
    assert e.value.diagnostic.code == "A005"
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError) as e:
        load_tensors(tmp_path)
    assert e.value.diagnostic.code == "A003"


_WRITER = """
import sys
sys.path.insert(0, {tests!r})
from _writer import Small, save
i = 0
while True:
    save(Small(i % 7), {out!r})
    i += 1
    print(i, flush=True)
"""


def test_killed_writer_leaves_a_loadable_artifact(tmp_path):
    out = tmp_path / "adapter"
    _writer.save(_writer.Small(0), out)
    code = _WRITER.format(tests=str(Path(__file__).parent), out=str(out))
    versions = [{k: v.detach().clone() for k, v in _writer.Small(i).state_dict().items()} for i in range(7)]
    for delay in (0.0, 0.009, 0.027, 0.061):
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        p.stdout.readline()               # the writer is now saving in a loop
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        m, t = load_tensors(out)           # never raises: the previous or the new artifact
        model = _writer.Small(0)
        load_into(model, m, t)
        got = model.state_dict()           # whole: exactly one of the versions the writer saves
        assert any(all(torch.equal(got[k], v[k]) for k in v) for v in versions)
