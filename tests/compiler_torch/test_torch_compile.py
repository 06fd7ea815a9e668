"""torch.compile over what peltc builds: every shipped spec on a tiny encoder (BERT) and a tiny decoder
(Llama) captured whole (``fullgraph=True``: no graph break) for a training step (forward, loss, backward)
and an eval forward, equal to eager (logits and gradients within 1e-6, absolute: the captured graph runs
the same ops); the served path (prefix folded, LoRA / BitFit merged) and cached generation whole too; and
dynamic shapes: batches of GLUE CoLA's dev lengths and varying batch sizes compile once, not per shape.

The capture is dynamo's (``backend="eager"``): whether a graph breaks is decided there, whatever backend
then lowers it; inductor's code generation costs minutes on a shared CPU and is measured in
bench/overhead.py --compile, and run end to end in tests/runtime/test_speed.py."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch_models import tiny_batch, tiny_decoder

from peltc.api import compile_model
from peltc.compiler.torch.rewrite import fold_prefix, merge

SPECS = Path(__file__).resolve().parents[2] / "specs"
SCALE = [(r"size \d+", "size 8"), (r"rank \d+", "rank 4"), (r"length \d+", "length 3"), (r"mlp \d+", "mlp 16")]
TOL = 1e-6


_SCALED: dict[str, Path] = {}


def _spec(name: str) -> Path:
    """The shipped spec scaled to the tiny models' sizes, written beside the others it imports."""
    if not _SCALED:
        import tempfile
        d = Path(tempfile.mkdtemp(prefix="pelt-compile-specs-"))
        for p in SPECS.glob("*.pelt"):
            text = p.read_text()
            for pat, rep in SCALE:
                text = re.sub(pat, rep, text)
            (d / p.name).write_text(text)
            _SCALED[p.name] = d / p.name
    return _SCALED[name]


def _model(arch: str, spec: str):
    layers = 4 if "top_layers" in spec else 2      # lora_top_layers.pelt selects layers[-3..]
    if arch == "bert":
        from transformers import AutoModelForSequenceClassification
        from torch_models import tiny_config
        cfg = tiny_config("bert")
        cfg.num_hidden_layers = layers
        torch.manual_seed(0)
        m = AutoModelForSequenceClassification.from_config(cfg).eval()
    else:
        m = tiny_decoder("llama", num_hidden_layers=layers)
    compile_model(_spec(spec), m)
    return m


def _step(model, batch, labels):
    out = model(**batch, labels=labels)
    out.loss.backward()
    return out.logits.detach()


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _fresh():
    torch._dynamo.reset()
    return CompileCounter()


SHIPPED = sorted(p.name for p in SPECS.glob("*.pelt"))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("spec", SHIPPED)
def test_shipped_spec_is_graph_break_free_and_equal_to_eager(spec, arch):
    from peltc.errors import SpecError
    try:
        model = _model(arch, spec)
    except SpecError as e:
        if arch == "llama" and e.diagnostics[0].code == "E128":
            pytest.skip("Llama has no biases: the spec's BitFit is refused (E128)")
        raise
    batch, labels = tiny_batch(), torch.tensor([0, 1, 1])
    model.train()
    torch.manual_seed(0)
    ref = _step(model, batch, labels)
    ref_grads = _grads(model)
    model.zero_grad(set_to_none=True)
    counter = _fresh()
    compiled = torch.compile(model, fullgraph=True, backend=counter)    # a graph break raises
    torch.manual_seed(0)
    out = _step(compiled, batch, labels)
    assert counter.frame_count == 1
    assert (out - ref).abs().max() <= TOL
    grads = _grads(model)
    assert grads.keys() == ref_grads.keys() and grads
    assert max(float((grads[n] - ref_grads[n]).abs().max()) for n in grads) <= TOL
    model.eval()
    with torch.no_grad():
        ref = model(**batch).logits
        out = compiled(**batch).logits
    assert (out - ref).abs().max() <= TOL


@pytest.mark.parametrize("spec", ["unipelt_apl.pelt", "lora_peft.pelt", "bitfit.pelt"])
def test_served_path_is_graph_break_free(spec):
    """What `peltc eval` / `predict` serve: prefix MLPs folded, ungated LoRA / BitFit merged."""
    model = _model("bert", spec).eval()
    fold_prefix(model)
    merge(model, skip_gated=True)
    batch = tiny_batch()
    with torch.no_grad():
        ref = model(**batch).logits
        counter = _fresh()
        out = torch.compile(model, fullgraph=True, backend=counter)(**batch).logits
    assert counter.frame_count == 1 and (out - ref).abs().max() <= TOL


def test_cached_generation_is_graph_break_free():
    """A decoder's cached decoding step by step (the KV cache, the prefix, the causal gates' running sums
    carried on the cache) under fullgraph, equal to eager; the prompt and every later step reuse one graph."""
    model = tiny_decoder("llama", causal_lm=True)
    compile_model(_spec("unipelt_apl.pelt"), model)
    fold_prefix(model)
    model.eval()
    ids = torch.randint(3, 99, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                             pad_token_id=0)
        counter = _fresh()
        from peltc.compiler.torch.rewrite import compile_forward
        served = copy.deepcopy(model)
        served.compile(fullgraph=True, dynamic=True, backend=counter)
        out = served.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                              do_sample=False, pad_token_id=0)
    assert torch.equal(out, ref)
    assert 1 <= counter.frame_count <= 2      # the prompt (no cache yet) and the cached steps
    assert compile_forward is not None


def _cola_lengths(n: int = 96) -> list[int]:
    """Token counts of GLUE CoLA dev sentences (the local TSVs), else a fixed spread like them."""
    import os
    path = Path(os.environ.get("PELT_GLUE_DIR", "/nonexistent")) / "CoLA" / "dev.tsv"
    if path.is_file():
        rows = [line.split("\t")[-1] for line in path.read_text(encoding="utf-8").splitlines()[:n]]
        return [min(60, 2 + len(r.split())) for r in rows]
    return [5 + (7 * i) % 23 for i in range(n)]


def _batches(lengths: list[int], sizes=(16, 16, 16, 13, 8, 16, 5)):
    out, i = [], 0
    for b in sizes:
        chunk = lengths[i:i + b] or lengths[:b]
        i += b
        n = max(chunk)
        ids = torch.randint(3, 99, (len(chunk), n))
        mask = torch.tensor([[1] * k + [0] * (n - k) for k in chunk])
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def test_marked_dynamic_batches_compile_once():
    """Training batches of CoLA dev lengths (a new padded length almost every batch) and batch sizes 16, 13,
    8, 5: with the batch and sequence dimensions marked dynamic (`runtime.speed.DynamicCollator`) the step
    compiles once; unmarked, torch recompiles at the second shape (automatic dynamic shapes)."""
    from peltc.runtime.speed import mark_dynamic
    batches = _batches(_cola_lengths())
    assert len({tuple(b["input_ids"].shape) for b in batches}) >= 5
    counts = {}
    for marked in (True, False):
        model = _model("bert", "unipelt_apl.pelt").train()
        model.config.problem_type = "single_label_classification"     # as runtime/train.py sets it
        counter = _fresh()
        compiled = torch.compile(model, backend=counter)
        for b in batches:
            b = {**{k: v.clone() for k, v in b.items()}, "labels": torch.zeros(len(b["input_ids"]), dtype=torch.long)}
            compiled(**(mark_dynamic(b) if marked else b)).loss.backward()
        counts[marked] = counter.frame_count
    assert counts[True] == 1
    assert counts[False] > counts[True]


def test_served_dynamic_forward_compiles_once():
    """`runtime.speed.serving`'s compile (``dynamic=True``): every length and batch size, one graph."""
    model = _model("bert", "unipelt_apl.pelt").eval()
    fold_prefix(model)
    counter = _fresh()
    model.compile(dynamic=True, backend=counter)
    with torch.no_grad():
        for b in _batches(_cola_lengths()):
            model(**b)
    assert counter.frame_count == 1
