"""An artifact records the gate behaviour of its model family (`Family.gates`, resolved into its IR: gate
source norm, how a prefix gate scales, the prefix gate's start); one whose sigmoid gates were trained under
another behaviour is refused on load (A015), not silently read as something else. Older manifests (the
behaviour stored beside an IR that lacks it, or not at all) still load."""

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


def _old_format(out, semantics: bool):
    """Rewrite the manifest as a peltc before the resolved IR wrote it: no ``gate_behaviour`` / ``gate_init``
    in the IR; with ``semantics`` the behaviour stored beside it, else (older still) nowhere."""
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text())
    for n in manifest["ir"]["nodes"]:
        n.pop("gate_behaviour", None)
        n.pop("gate_init", None)
    if not semantics:
        del manifest["gate_semantics"]
    mpath.write_text(json.dumps(manifest))


def test_artifact_records_the_family_gate_semantics_and_loads_back(tmp_path):
    model, out = _saved(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["gate_semantics"] == {"gate_source_norm": True, "prefix_gate": "kv_weight",
                                          "prefix_gate_init": -10.0}
    settings = next(n for n in manifest["ir"]["nodes"] if n["kind"] == "settings")
    assert settings["gate_behaviour"] == manifest["gate_semantics"]
    fresh = tiny_decoder("llama")
    load_adapter(fresh, out)                 # compiles the saved spec onto the fresh base, then loads
    batch = tiny_batch()
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() < 1e-5


def test_old_format_manifest_loads_and_scores_identically(tmp_path):
    model, out = _saved(tmp_path, GATED + "prefix p { at layers[*].attention length 3 mlp none "
                                          "gate sigmoid(layer.input) }\n")
    _old_format(out, semantics=True)
    fresh = tiny_decoder("llama")
    load_adapter(fresh, out)
    batch = tiny_batch()
    assert (logits(fresh, batch) - logits(model, batch)).abs().max() < 1e-5


def test_a_saved_ir_resolved_under_other_gate_semantics_is_refused(tmp_path):
    _, out = _saved(tmp_path)
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text())
    settings = next(n for n in manifest["ir"]["nodes"] if n["kind"] == "settings")
    settings["gate_behaviour"]["gate_source_norm"] = False
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError) as e:
        load_adapter(tiny_decoder("llama"), out)
    assert e.value.diagnostic.code == "A015"


def test_gated_artifact_from_other_gate_semantics_is_refused(tmp_path):
    _, out = _saved(tmp_path)
    _old_format(out, semantics=False)       # as written before any record existed: encoder semantics
    fresh = tiny_decoder("llama")
    with pytest.raises(ArtifactError) as e:
        load_adapter(fresh, out)
    assert e.value.diagnostic.code == "A015" and "gate_source_norm: False when saved, True now" in str(e.value)


def test_ungated_artifact_loads_whatever_the_semantics(tmp_path):
    text = "lora q { at layers[*].attention.{query, value}  rank 4 }"
    _, out = _saved(tmp_path, text)
    _old_format(out, semantics=False)
    load_adapter(tiny_decoder("llama"), out)
