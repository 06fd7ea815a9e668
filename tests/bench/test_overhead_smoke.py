"""Smoke test of bench/overhead.py (and benchlib, its library): a --quick run on a tiny BERT, in-process; checks the JSON's
structure only (timings on a shared machine are not asserted)."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPT = BENCH / "overhead.py"


def _load():
    spec = importlib.util.spec_from_file_location("peltc_bench_overhead", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_writes_table4_json(tmp_path, capsys, bench_lib):
    import torch

    bench = _load()
    threads = torch.get_num_threads()
    result = bench.main(["--shapes", "tiny", "--batch", "2", "--seq", "16", "--quick", "--threads", "1",
                         "--rss", "delta", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads            # main restores the caller's thread count

    files = list(tmp_path.glob("overhead-*.json"))
    assert len(files) == 1 and Path(result["path"]) == files[0]
    data = json.loads(files[0].read_text())
    for key in ("cpu_count", "torch", "transformers", "threads", "loadavg_start"):
        assert key in data["machine"]
    assert data["machine"]["threads"] == 1
    assert data["args"]["rounds"] == 2 and data["args"]["warmup"] == 1
    start = data["startup"]                               # peltc check in fresh processes, once per run
    assert start["runs"] == 3 and start["ms"]["n"] == 3 and start["ms"]["median"] > 0
    assert start["command"] == "peltc check specs/unipelt_apl.pelt --model bert-base-uncased"

    shape = data["shapes"]["tiny"]
    assert shape["config"]["hidden"] == 64 and shape["config"]["layers"] == 2
    methods = shape["methods"]
    keys = bench_lib("methods").DEFAULT_METHODS["encoder"]
    assert "generate" not in shape                        # encoders: no generation phase
    assert list(methods) == ["base"] + keys
    assert methods["base"]["infer_ms"]["n"] == 2
    for k in keys:
        m = methods[k]
        assert m["train_ms"]["n"] == 2 and m["train_ms"]["median"] > 0
        assert m["train_ratio_vs_finetune"]["median"] > 0
        rep = m["report"]
        assert rep["trainable_total"] == rep["pelt_trainable"] + rep["head_trainable"] + rep["base_trainable"]
        assert m["rss"]["mode"] == "delta"
        if k != "finetune":
            assert m["infer_ms"]["n"] == 2 and m["infer_ratio_vs_base"]["median"] > 0
    assert methods["finetune"]["report"]["base_trainable"] > 0
    assert methods["bitfit"]["report"]["pelt_trainable"] == methods["bitfit"]["report"]["saved_total"]
    for k in ("prefix", "unipelt_ap", "unipelt_apl"):    # served = folded; unfolded also measured
        assert methods[k]["served_report"]["folded"] == ["kv"]
        assert methods[k]["infer_unfolded_ratio_vs_base"]["n"] == 2
        assert methods[k]["report"]["saved_total"] < methods[k]["report"]["pelt_trainable"]
    assert set(shape["targets"]) == {"pelt_train_faster_than_finetune", "unipelt_apl_inference_le_1.20x_base"}

    out = capsys.readouterr().out
    assert "| UniPELT (APL) |" in out and "× full FT" in out
    assert "start-up: `peltc check" in out


def test_smollm2_shape_is_the_known_config(bench_lib):
    shapes = bench_lib("shapes")
    from peltc.compiler.archs import KNOWN_MODELS

    cfg = shapes.shape_config("smollm2")
    known = KNOWN_MODELS["smollm2-135m"]
    assert cfg.model_type == "llama" and cfg.num_labels == 2
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                "vocab_size", "pad_token_id", "tie_word_embeddings"):
        assert getattr(cfg, key) == known[key], key
    assert shapes.is_decoder("smollm2") and not shapes.is_decoder("minilm")


def test_quick_decoder_run_generation(tmp_path, capsys, bench_lib):
    """The decoder path on a tiny Llama (the smollm2 shape's code path at toy size): BitFit is reported as
    n/a, every other method trains, infers and generates, with and without the KV cache."""
    bench = _load()
    result = bench.main(["--shapes", "tiny-llama", "--batch", "2", "--seq", "16", "--quick", "--threads", "1",
                         "--rss", "delta", "--out", str(tmp_path)])
    data = json.loads(Path(result["path"]).read_text())
    shape = data["shapes"]["tiny-llama"]
    assert shape["architecture"] == "LlamaForSequenceClassification" and shape["batch"] == 2 and shape["seq"] == 16
    assert shape["rounds"] == {"train": 2, "inference": 2, "generate": 2}
    methods = shape["methods"]
    assert list(methods) == ["base"] + bench_lib("methods").DEFAULT_METHODS["decoder"]
    assert methods["bitfit"]["unsupported"] == "n/a (no biases)" and "E128" in methods["bitfit"]["error"]
    assert "train_ms" not in methods["bitfit"] and "generate" not in methods["bitfit"]
    gen = shape["generate"]
    assert gen["architecture"] == "LlamaForCausalLM" and (gen["batch"], gen["prompt_tokens"], gen["new_tokens"]) == (2, 4, 3)
    for k in ["prefix", "lora", "adapter", "unipelt_ap", "unipelt_apl", "prefix_lora"]:
        m = methods[k]
        assert m["train_ratio_vs_finetune"]["n"] == 2 and m["infer_ratio_vs_base"]["n"] == 2
        for mode in ("cache", "nocache"):
            g = m["generate"][mode]
            assert g["ms_per_token"]["n"] == 2 and g["ratio_vs_base"]["n"] == 2
            assert g["decode_ratio_vs_base"]["n"] == 2 and "overhead_ms_per_token" in g
    for mode in ("cache", "nocache"):
        assert methods["base"]["generate"][mode]["decode_ms_per_token"]["n"] == 2
    assert methods["prefix_lora"]["served_report"]["folded"] == ["kv"]
    assert methods["prefix_lora"]["spec"] == "specs/prefix.pelt + specs/lora.pelt"
    out = capsys.readouterr().out
    assert "| BitFit | n/a (no biases) |" in out and "| Prefix + LoRA |" in out and "no cache: ms/token" in out


def test_unfused_and_cpu_clock_time_the_served_model_both_ways(tmp_path, capsys):
    """--unfused: every served model again with the serving fusions off, in the same interleaved rounds;
    --clock cpu (one thread): thread CPU time; the served table lists both forms."""
    bench = _load()
    result = bench.main(["--shapes", "tiny", "--batch", "2", "--seq", "16", "--quick", "--threads", "1", "--phases",
                         "inference", "--methods", "unipelt_apl,lora", "--unfused", "--merged", "--clock", "cpu",
                         "--rss", "none", "--out", str(tmp_path)])
    assert result["args"]["unfused"] and result["args"]["clock"] == "cpu"
    methods = result["shapes"]["tiny"]["methods"]
    for k in ("unipelt_apl", "lora"):
        for form in ("infer", "infer_unfused"):
            assert methods[k][f"{form}_ratio_vs_base"]["n"] == 2 and methods[k][f"{form}_ms"]["median"] > 0
    assert methods["lora"]["infer_merged_ratio_vs_base"]["n"] == 2
    out = capsys.readouterr().out
    assert "| UniPELT (APL) | served, fusions off |" in out and "| LoRA | merged |" in out
    with pytest.raises(SystemExit):
        bench.main(["--shapes", "tiny", "--clock", "cpu", "--threads", "2"])   # other threads' time is not counted
