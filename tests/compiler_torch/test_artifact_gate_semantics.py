"""An artifact records the gate semantics of its model family (`archs.Family`: gate source norm, how a
prefix gate scales, the prefix gate's start); one whose sigmoid gates were trained under other semantics
is refused on load (A015), not silently read as something else."""

from __future__ import annotations

import json

import pytest
from torch_models import logits, perturb, tiny_batch, tiny_decoder

from peltc.api import compile_model, load_adapter, save_adapter
from peltc.errors import ArtifactError

GATED = """
adapter a { at layers[*].ffn.output  size 8  gate sigmoid(ffn.output) }
lora q { at layers[*].attention.{query, value}  rank 4  gate sigmoid(layer.input) }
"""


def _saved(tmp_path, text=GATED):
    model = tiny_decoder("llama")
    compile_model(text, model)
    perturb(model)
    out = save_adapter(model, tmp_path / "art")
    return model, out


def test_artifact_records_the_family_gate_semantics_and_loads_back(tmp_path):
    model, out = _saved(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["gate_semantics"] == {"gate_source_norm": True, "prefix_gate": "kv_weight",
                                          "prefix_gate_init": -10.0}
    fresh = tiny_decoder("llama")
    load_adapter(fresh, out)                 # compiles the saved spec onto the fresh base, then loads
    batch = tiny_batch()
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() < 1e-5


def test_gated_artifact_from_other_gate_semantics_is_refused(tmp_path):
    _, out = _saved(tmp_path)
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text())
    del manifest["gate_semantics"]          # as written before the record existed: encoder semantics
    mpath.write_text(json.dumps(manifest))
    fresh = tiny_decoder("llama")
    with pytest.raises(ArtifactError) as e:
        load_adapter(fresh, out)
    assert e.value.diagnostic.code == "A015" and "gate_source_norm: False when saved, True now" in str(e.value)


def test_ungated_artifact_loads_whatever_the_semantics(tmp_path):
    text = "lora q { at layers[*].attention.{query, value}  rank 4 }"
    _, out = _saved(tmp_path, text)
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text())
    del manifest["gate_semantics"]
    mpath.write_text(json.dumps(manifest))
    load_adapter(tiny_decoder("llama"), out)
