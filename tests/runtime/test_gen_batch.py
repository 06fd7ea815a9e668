"""Scoring a generation run quickly (issue 22, item 9): greedy completions generated in left-padded batches
of mixed prompt lengths, each equal to that prompt's completion alone; `--test-size N` scoring only the
first N test examples, recorded so that `peltc eval` scores the same ones."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from peltc.cli import main

ROOT = Path(__file__).resolve().parents[2]
LORA = ROOT / "specs" / "lora.pelt"
FAST = ["--k", "32", "--dev-size", "40", "--epochs", "1", "--batch-size", "16", "--min-steps", "0",
        "--max-length", "48", "--quiet", "--no-render"]


def _helpers():
    spec = importlib.util.spec_from_file_location("_gen_helpers", Path(__file__).with_name("test_task_gen.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return _helpers().make_tiny_decoder_dir(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.mark.parametrize("spec", [
    "lora l { at layers[*].attention.{query, value} rank 4 }",
    # gated adapter, a prefix behind an open per-token gate, gated LoRA: each must skip the left padding
    "adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
    "prefix p { at layers[*].attention length 3 gate sigmoid(layer.input, init=0.01) }\n"
    "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }",
])
def test_batched_greedy_generation_equals_each_prompt_alone(llama_dir, spec, monkeypatch):
    import torch

    from peltc.api import compile_model
    from peltc.compiler.archs import load_config
    from peltc.runtime import task_gen
    from peltc.runtime.generation import greedy_completions
    from peltc.runtime.models import load_base

    tok, model = load_base(load_config(str(llama_dir)), 0, causal_lm=True)
    compile_model(spec, model)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "pelt_" in n:
                p.add_(torch.randn_like(p) * 0.3)
        model.lm_head.weight[tok.eos_token_id] += 0.4   # some completions end early, inside a batch
    prompts = [r["prompt"] for r in task_gen.gen_examples(30, 3)]
    ids = [task_gen.encode_gen(tok, p)[0] for p in prompts]
    assert len({len(i) for i in ids}) > 1, "prompts of several lengths share a batch"

    calls = []
    generate = model.generate

    def counted(*a, **k):
        calls.append(k["input_ids"].shape)
        return generate(*a, **k)

    monkeypatch.setattr(model, "generate", counted)
    batched = greedy_completions(model, tok, ids, 6, batch_size=16)
    assert len(calls) == math.ceil(len(ids) / 16)           # batches of mixed lengths, left-padded
    alone = [greedy_completions(model, tok, [i], 6, batch_size=1)[0] for i in ids]
    assert batched == alone
    assert any(c == "" or len(c) < 6 for c in alone) or len(set(alone)) > 1


def test_test_size_shrinks_a_generation_runs_test_set(llama_dir, tmp_path, capsys):
    out = tmp_path / "arith"
    rc = main(["compile", str(LORA), "--model", str(llama_dir), "--train", "gen:arith", "--out", str(out),
               "--test-size", "8", *FAST])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["sizes"]["test"] == 8
    run = json.loads((out / "run.json").read_text())
    assert run["test_size"] == 8 and run["identity"]["data"]["test_size"] == 8
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.split("\nwarning")[0])
    assert printed == m["test"]


def test_test_size_is_refused_for_a_classification_task(tmp_path, capsys):
    rc = main(["compile", str(LORA), "--train", "glue/rte", "--test-size", "8", "--out", str(tmp_path / "r")])
    assert rc == 2 and "[U130]" in capsys.readouterr().err
    rc = main(["compile", str(LORA), "--train", "gen:arith", "--model", "smollm2-135m", "--test-size", "0",
               "--out", str(tmp_path / "r")])
    assert rc == 2 and "[U106]" in capsys.readouterr().err
