"""LoReFT against an independent implementation of Φ(h) = h + Rᵀ(W h + b − R h) (the base model's layers
run one by one, the formula applied to the chosen real tokens by index), on right- and left-padded
batches; identity at init (W = R, b = 0), R's rows orthonormal, gates, counts (front end = torch =
AdapterHub's formula), cached generation with `first` positions, artifacts, not merged."""

from __future__ import annotations

import pytest
import torch
from torch_models import logits, perturb, tiny_decoder, tiny_model

from peltc.api import compile_model, load_adapter, save_adapter
from peltc.compiler.pipeline import build_ir
from peltc.compiler.torch import merge
from peltc.compiler.torch.rewrite import force_gates
from peltc.errors import SpecError

SPEC = "loreft f { at layers[*].output rank 3 first 2 last 2 }"


def _batch(left: bool = False):
    """Lengths 7, 5, 1 (a sequence shorter than first + last: the sides overlap)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 99, (3, 7), generator=g)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for i, n in enumerate((7, 5, 1)):
        if left:
            mask[i, 7 - n:] = 1
        else:
            mask[i, :n] = 1
    return {"input_ids": ids * mask, "attention_mask": mask}


def _reference(model, base, batch, first, last, tied=False, gate=None):
    """The logits of ``base`` with the interventions of ``model`` applied by hand: for each example the
    indices of its first / last real tokens, h[i] += Rᵀ(W h[i] + b − R h[i]) (the last side wins where
    the sides overlap)."""
    mask = batch["attention_mask"]
    units = {}
    for name, mod in model.named_modules():
        if name.endswith("pelt_reft.f"):
            layer = int(name.split(".")[-3])
            units[layer] = [(u.R.weight.detach().clone(), u.W.weight.detach().clone(), u.W.bias.detach().clone())
                            for u in mod.units]

    def hook(layer):
        def f(module, args, output):
            h = (output[0] if isinstance(output, tuple) else output).clone()
            new = h.clone()
            for b in range(h.shape[0]):
                real = mask[b].nonzero().flatten().tolist()
                sides = [(0, real[:first])] if first else []
                if last:
                    sides.append((0 if tied else len(sides), real[-last:]))
                for k, where in sides:
                    R, W, bias = units[layer][k]
                    for t in where:
                        x = h[b, t]
                        delta = R.t() @ (W @ x + bias - R @ x)
                        new[b, t] = x + (delta if gate is None else gate * delta)
            return (new, *output[1:]) if isinstance(output, tuple) else new
        return f

    layers = base.get_submodule("bert.encoder.layer" if hasattr(base, "bert") else "model.layers")
    hs = [layers[i].register_forward_hook(hook(i)) for i in units]
    try:
        return logits(base, batch)
    finally:
        for h in hs:
            h.remove()


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("family", ["bert", "llama", "qwen3"])
def test_equals_the_formula(family, left):
    make = (lambda: tiny_model("bert")) if family == "bert" else (lambda: tiny_decoder(family))
    m = make()
    compile_model(SPEC, m)
    perturb(m, std=0.5)
    b = _batch(left)
    for mod in m.modules():           # still orthonormal rows, and not the initial R
        if hasattr(mod, "R") and hasattr(mod, "W"):
            torch.testing.assert_close(mod.R.weight @ mod.R.weight.t(), torch.eye(3), rtol=0, atol=1e-5)
            assert (mod.W.weight - mod.R.weight).abs().max() > 0.1
    got = logits(m, b)
    want = _reference(m, make(), b, 2, 2)
    assert (got - want).abs().max() <= 1e-5
    assert (got - logits(make(), b)).abs().max() > 1e-4          # the interventions matter


def test_tied_and_one_sided():
    for spec, first, last, tied in (("loreft f { at layers[*].output rank 2 first 1 last 3 tied true }", 1, 3, True),
                                    ("loreft f { at layers[*].output rank 2 first 0 last 2 }", 0, 2, False),
                                    ("loreft f { at layers[*].output rank 2 }", 3, 0, False)):
        m = tiny_model("bert")
        compile_model(spec, m)
        perturb(m, std=0.5)
        b = _batch()
        assert (logits(m, b) - _reference(m, tiny_model("bert"), b, first, last, tied)).abs().max() <= 1e-5


def test_identity_at_init_orthonormal_rows_and_closed_gate():
    b = _batch()
    base = logits(tiny_model("bert"), b)
    m = tiny_model("bert")
    compile_model(SPEC, m)
    assert torch.equal(logits(m, b), base)
    for mod in m.modules():
        if hasattr(mod, "R") and hasattr(mod, "W"):
            r = mod.R.weight
            torch.testing.assert_close(r @ r.t(), torch.eye(3), rtol=0, atol=1e-5)
            assert torch.equal(mod.W.weight, r) and not mod.W.bias.any()
    g = tiny_model("bert")
    compile_model(SPEC[:-1] + "gate sigmoid(layer.input) }", g)
    perturb(g, std=0.5)
    force_gates(g, 0.0)
    torch.testing.assert_close(logits(g, b), base, rtol=0, atol=1e-6)


def test_const_gate_scales_the_change():
    m = tiny_model("bert")
    compile_model(SPEC[:-1] + "gate const(0.4) }", m)
    perturb(m, std=0.5)
    b = _batch()
    assert (logits(m, b) - _reference(m, tiny_model("bert"), b, 2, 2, gate=0.4)).abs().max() <= 1e-5


def test_counts_front_end_torch_and_adapterhub_formula():
    m = tiny_model("bert")
    report = compile_model(SPEC, m)
    live = sum(p.numel() for n, p in m.named_parameters() if ".pelt_reft." in n)
    ir = build_ir(SPEC, model=m.config.to_dict()).ir
    # AdapterHub's ReftUnit: learned_source (r × d + r), projection (r × d); untied: two units a layer
    assert live == sum(a.trainable for a in ir.attachments()) == 2 * 2 * (2 * 3 * 32 + 3)
    assert report.instance("f").trainable == live
    bert = build_ir("loreft f { at layers[*].output rank 4 first 3 last 3 }", model="bert-base-uncased").ir
    assert sum(a.trainable for a in bert.attachments()) == 12 * 2 * (2 * 4 * 768 + 4)
    with pytest.raises(SpecError) as e:
        build_ir("loreft f { at layers[*].output first 0 }", model="bert-base-uncased")
    assert [d.code for d in e.value.diagnostics] == ["E151"]


def test_not_merged_and_check_says_so():
    m = tiny_model("bert")
    compile_model(SPEC, m)
    perturb(m, std=0.5)
    b = _batch()
    before = logits(m, b)
    assert merge(m) == []
    torch.testing.assert_close(logits(m, b), before, rtol=0, atol=0)
    from peltc.compiler.summary import summary
    from peltc.runtime.serve import merge_refusals
    ir = build_ir(SPEC + "\nia3 v { at layers[*].ffn.down gate scalar }\nhead { pool pooler }", model="bert-base-uncased").ir
    assert "does not merge" in summary(ir, "s.pelt")
    refused = merge_refusals(ir)                # `peltc merge`: loreft refused, ia3 merges
    assert len(refused) == 1 and refused[0].startswith("f (loreft): LoReFT does not merge")


def test_artifact_round_trip(tmp_path):
    m = tiny_model("bert")
    compile_model(SPEC + "\nia3 v { at layers[*].attention.{key, value}, layers[*].ffn.down }", m)
    perturb(m, std=0.5)
    b = _batch()
    save_adapter(m, tmp_path / "a")
    fresh = tiny_model("bert")
    load_adapter(fresh, tmp_path / "a")
    assert torch.equal(logits(fresh, b), logits(m, b))


def test_cached_generation_equals_recompute_with_first_positions():
    model = tiny_decoder("llama", causal_lm=True)
    compile_model("loreft f { at layers[*].output rank 2 first 3 gate sigmoid(layer.input) }", model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 8, 61], [9, 9, 33, 70, 2]])
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0,
              attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        cached = model.generate(input_ids=ids, use_cache=True, **kw)
        full = model.generate(input_ids=ids, use_cache=False, **kw)
    assert torch.equal(cached, full)


def test_overrides_selectors_lr_and_gates_compose():
    """A per-layer override (rank, positions), a layer selector, `lr` and gates on loreft and ia3 together:
    the front end's counts equal the live ones per layer, and each parameter belongs to its instance (its
    `lr` group)."""
    from peltc.compiler.torch.report import _instance_of
    spec = ("loreft f {\n  at layers[0..1].output\n  rank 2\n  first 2\n  lr 1e-3\n  gate scalar\n"
            "  layers[1] { rank 3 last 1 }\n}\n"
            "ia3 v {\n  at layers[1].attention.{key, value}, layers[*].ffn.down\n  lr 5e-3\n"
            "  layers[0] { gate const(0.5) }\n}\n")
    m = tiny_model("bert")
    compile_model(spec, m)
    ir = build_ir(spec, model=m.config.to_dict()).ir
    for layer in (0, 1):
        want = sum(a.trainable for a in ir.attachments() if a.layer == layer)
        live = sum(p.numel() for n, p in m.named_parameters() if f"layer.{layer}." in n and "pelt_" in n)
        assert live == want
    assert {a.params["lr"] for a in ir.attachments("f")} == {1e-3}
    owners = {_instance_of(n) for n, p in m.named_parameters() if "pelt_" in n}
    assert owners == {"f", "v"}
    perturb(m, std=0.5)
    b = _batch()
    assert (logits(m, b) - logits(tiny_model("bert"), b)).abs().max() > 1e-4


def test_gradients_reach_every_trained_part_and_decay_spares_r():
    """One backward: W, b, R's parametrised original (below its ±1 diagonal, which carries no gradient)
    and the (IA)³ vectors all get gradient; the trainer's weight-decay list leaves R's original out."""
    from peltc.runtime.train import PeltTrainer
    m = tiny_model("bert")
    compile_model(SPEC + "\nia3 v { at layers[*].ffn.down }", m)
    perturb(m, std=0.3)
    m.train()
    m(**_batch()).logits.pow(2).sum().backward()
    for n, p in m.named_parameters():
        if "pelt_" in n:
            g = p.grad if ".parametrizations." not in n else p.grad.tril(-1) + p.grad.triu(1)
            assert g is not None and g.abs().sum() > 0, n
    trainer = object.__new__(PeltTrainer)
    decay = trainer.get_decay_parameter_names(m)
    assert any(".pelt_reft." in n and ".W.weight" in n for n in decay)
    assert not any(".parametrizations." in n for n in decay)


@pytest.mark.parametrize("left", [False, True], ids=["right-aligned", "left-padded"])
def test_cached_generation_equals_uncached_with_last_positions(left):
    """`last` positions are the prompt's while generating (`reft.generate`): cached and uncached generation
    agree token for token, with left padding, beams and a deep copy of the model too; no generated token is
    intervened on; outside generate a forward still counts on its own mask."""
    import copy
    model = tiny_decoder("llama", causal_lm=True)
    compile_model("loreft f { at layers[*].output rank 2 first 2 last 2 gate sigmoid(layer.input) }", model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 8, 61], [9, 9, 33, 70, 2]])
    mask = torch.ones_like(ids)
    if left:
        ids[1, :2], mask[1, :2] = 0, 0
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0, attention_mask=mask)
    with torch.no_grad():
        cached = model.generate(input_ids=ids, use_cache=True, **kw)
        full = model.generate(input_ids=ids, use_cache=False, **kw)
        assert torch.equal(cached, full)
        beams = [model.generate(input_ids=ids, use_cache=c, num_beams=2, **kw) for c in (True, False)]
        assert torch.equal(beams[0], beams[1])
        twin = copy.deepcopy(model)
        assert twin.generate.__self__ is twin
        assert torch.equal(twin.generate(input_ids=ids, use_cache=False, **kw), cached)
        # the prompt's positions: the sequence's next-token logits after generating equal a forward whose
        # interventions sit on the prompt (a forward alone counts `last` at the end of what it is given)
        state = model.__dict__["_pelt"].state
        assert state.prompt is None and state.prompt_kind is None   # cleared when generate returns
        out = model(input_ids=cached, attention_mask=torch.cat([mask, torch.ones(2, 6, dtype=mask.dtype)], 1))
        state.prompt, state.prompt_kind = mask, "generate"
        try:
            on_prompt = model(input_ids=cached, attention_mask=torch.cat([mask, torch.ones(2, 6, dtype=mask.dtype)], 1))
        finally:
            state.prompt, state.prompt_kind = None, None
    assert not torch.allclose(out.logits, on_prompt.logits)
    nxt = on_prompt.logits[:, -7:-1].clone()
    nxt[..., model.generation_config.eos_token_id] = float("-inf")           # min_new_tokens holds EOS back
    assert torch.equal(nxt.argmax(-1), cached[:, 5:11])


def test_training_on_token_labels_intervenes_on_the_prompt():
    """A generation task's forward (token labels, -100 on the prompt and on padding) puts the `last`
    positions on the prompt's last real tokens, as generating does; a forward without token labels counts
    them at the end of its mask; the state is clean after each forward."""
    model = tiny_decoder("llama", causal_lm=True)
    compile_model("loreft f { at layers[*].output rank 2 last 2 }", model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 8, 61, 7, 0], [0, 9, 33, 70, 2, 11, 12]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1]])
    labels = torch.tensor([[-100, -100, -100, 8, 61, 7, -100], [-100, -100, -100, -100, 2, 11, 12]])
    prompt = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0, 0]])
    state = model.__dict__["_pelt"].state
    with torch.no_grad():
        trained = model(input_ids=ids, attention_mask=mask, labels=labels)
        assert state.prompt is None and state.prompt_kind is None
        plain = model(input_ids=ids, attention_mask=mask)
        state.prompt, state.prompt_kind = prompt, "generate"
        try:
            on_prompt = model(input_ids=ids, attention_mask=mask)
        finally:
            state.prompt, state.prompt_kind = None, None
    assert torch.equal(trained.logits, on_prompt.logits)
    assert not torch.allclose(plain.logits, on_prompt.logits)
    assert trained.loss is not None


def test_positions_count_real_tokens_by_rank():
    """Real tokens need not be one run: a soft prompt's columns come before a left-padded row's padding
    (1 1 0 0 1 1 1): `first 2` are the prompt's columns, `last 1` the row's last real token."""
    from peltc.compiler.torch.reft import positions
    from peltc.compiler.torch.state import PeltState
    state = PeltState()
    state.mask = torch.tensor([[1, 1, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    pf, pl = positions(state, torch.zeros(2, 7, 4), 2, 1)
    assert pf.long().tolist() == [[1, 1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]]
    assert pl.long().tolist() == [[0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0, 0]]


def test_a_failed_forward_leaves_no_prompt_behind():
    """The labels' prompt is cleared even when the forward raises (the hook runs always), and generate
    after it starts clean."""
    model = tiny_decoder("llama", causal_lm=True)
    compile_model("loreft f { at layers[*].output rank 2 last 2 }", model)
    perturb(model, std=0.5)
    state = model.__dict__["_pelt"].state
    ids = torch.tensor([[5, 17, 42, 8]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with pytest.raises(Exception):
            model(input_ids=ids, labels=torch.tensor([[-100, -100, 8, 1000]]))   # a label outside the vocabulary
        assert state.prompt is None and state.prompt_kind is None
        assert torch.equal(model(input_ids=ids).logits, want)


@pytest.mark.parametrize("call", ["inputs", "no-mask"])
def test_generate_takes_the_prompt_from_its_first_forward(call):
    """Whatever generate is given (``inputs=``, no attention_mask), the prompt is what its first forward
    saw: cached and uncached generation agree."""
    model = tiny_decoder("llama", causal_lm=True)
    compile_model("loreft f { at layers[*].output rank 2 first 1 last 2 }", model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 8, 61], [9, 9, 33, 70, 3]])
    kw = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    if call == "inputs":
        kw["inputs"] = ids
        kw["attention_mask"] = torch.ones_like(ids)
    else:
        kw["input_ids"] = ids
    with torch.no_grad():
        assert torch.equal(model.generate(use_cache=True, **kw), model.generate(use_cache=False, **kw))


@pytest.mark.parametrize("left", [False, True], ids=["right-aligned", "left-padded"])
def test_with_a_soft_prompt_cached_equals_uncached_and_labels_follow_its_columns(left):
    """A soft prompt (2 vectors, first) and LoReFT on one decoder: generation agrees cached and uncached;
    a forward on token labels puts the positions where a forward told the same prompt (the soft prompt's
    columns included) does."""
    model = tiny_decoder("llama", causal_lm=True)
    compile_model("prompt p { length 2 init random }\nloreft f { at layers[*].output rank 2 first 1 last 1 }", model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 8, 61, 7], [0, 0, 33, 70, 2, 11]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0 if left else 1] * 2 + [1, 1, 1, 1]])
    kw = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0, attention_mask=mask[:, :4])
    state = model.__dict__["_pelt"].state
    labels = torch.tensor([[-100, -100, -100, 8, 61, 7], [-100, -100, -100, 70, 2, 11]])
    with torch.no_grad():
        assert torch.equal(model.generate(input_ids=ids[:, :4], use_cache=True, **kw),
                           model.generate(input_ids=ids[:, :4], use_cache=False, **kw))
        trained = model(input_ids=ids, attention_mask=mask, labels=labels).logits
        state.prompt_kind = "labels"
        state.prompt = ((labels == -100) & (mask != 0)).long()
        try:
            told = model(input_ids=ids, attention_mask=mask).logits
        finally:
            state.prompt, state.prompt_kind = None, None
    assert torch.equal(trained, told)


def test_gen_gates_reads_the_gates_with_the_positions_training_used():
    """The generation task's gate diagnostic (`runtime.generation.gen_gates`, a forward without labels) puts
    LoReFT's positions on each example's prompt, as the training forward given the labels does: its gate
    means equal a labelled forward's (and differ from an unlabelled one's, where `last` lands on the completion)."""
    from datasets import Dataset

    from peltc.compiler.torch.gate import read_gates
    from peltc.runtime.generation import gen_gates

    model = tiny_decoder("llama", causal_lm=True)
    compile_model("loreft f { at layers[*].output rank 2 first 1 last 2 gate sigmoid(layer.input) }", model)
    perturb(model, std=0.5)
    rows = [([5, 17, 42, 8, 61, 7], 3), ([9, 33, 70, 2], 2), ([11, 12, 13, 14, 15], 4)]   # (ids, prompt length)
    ds = Dataset.from_dict({"input_ids": [r for r, _ in rows], "attention_mask": [[1] * len(r) for r, _ in rows],
                            "labels": [[-100] * n + r[n:] for r, n in rows], "length": [len(r) for r, _ in rows]})
    tok = type("Tok", (), {"pad_token_id": 0})()
    got = gen_gates(model, tok, ds)
    n = max(len(r) for r, _ in rows)
    ids = torch.tensor([r + [0] * (n - len(r)) for r, _ in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r, _ in rows])
    labels = torch.tensor([[-100] * p + r[p:] + [-100] * (n - len(r)) for r, p in rows])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, labels=labels)
        trained = {k: float(g.float().mean()) for k, g in read_gates(model).items()}
        model(input_ids=ids, attention_mask=mask)
        unlabelled = {k: float(g.float().mean()) for k, g in read_gates(model).items()}
    assert got.keys() == trained.keys() and len(got) == 2
    assert all(got[k] == pytest.approx(trained[k], abs=1e-6) for k in got)
    assert any(abs(unlabelled[k] - trained[k]) > 1e-4 for k in got)       # the positions matter here


def test_plain_language_model_labels_keep_every_real_token():
    """Labels with no prompt (`labels=input_ids`: every real token learned, -100 on padding only) leave the
    positions on the row's real tokens, as without labels — LoReFT still intervenes and still trains; a row
    with a prompt beside it keeps its prompt."""
    model = tiny_decoder("llama", causal_lm=True)
    compile_model("loreft f { at layers[*].output rank 2 first 1 last 2 }", model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 8, 61, 7], [9, 33, 70, 2, 11, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    lm = torch.where(mask.bool(), ids, -100)
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        as_lm = model(input_ids=ids, attention_mask=mask, labels=lm).logits
    assert torch.equal(plain, as_lm)
    out = model(input_ids=ids, attention_mask=mask, labels=lm)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "pelt_" in n)
    mixed = lm.clone()
    mixed[0, :3] = -100                                   # row 0 has a prompt, row 1 none
    from peltc.compiler.torch.reft import labels_prompt
    assert labels_prompt(mixed, mask).tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]


def test_the_generation_probe_reads_the_model_as_trained():
    """The generation task's probe (`CompletionProbe`, teacher-forced without labels) gives the logits of
    the training forward (labels given: LoReFT on the prompt), not those of a forward counting `last` at
    the completion's end."""
    from datasets import Dataset

    from peltc.runtime.generation import CompletionProbe

    model = tiny_decoder("llama", causal_lm=True)
    compile_model("loreft f { at layers[*].output rank 2 first 1 last 2 }", model)
    perturb(model, std=0.5)
    rows = [([5, 17, 42, 8, 61, 7], 3), ([9, 33, 70, 2], 2)]
    ds = Dataset.from_dict({"input_ids": [r for r, _ in rows], "attention_mask": [[1] * len(r) for r, _ in rows],
                            "labels": [[-100] * n + r[n:] for r, n in rows], "prompt_length": [n for _, n in rows]})
    probe = CompletionProbe(type("Tok", (), {"pad_token_id": 0})(), ds, [[0, 1]])
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            probe.forward(model, torch.device("cpu"))
            b = probe.batches[0]
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    finally:
        hook.remove()
    probed, trained, unlabelled = seen
    assert torch.equal(probed, trained) and not torch.allclose(probed, unlabelled)
