"""Smoke test of ``bench/overhead.py --anchors`` (peltc vs peft / AdapterHub / BitFit in place): tiny BERT,
--quick, structure only (no time is asserted). The anchors' second environment (AdapterHub pins
transformers 4.57) is used only when PELTC_BENCH_ANCHOR_PYTHON names its interpreter (bench/README.md)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[2] / "bench"
ANCHOR_PYTHON = os.environ.get("PELTC_BENCH_ANCHOR_PYTHON")
QUICK = ["--shapes", "tiny", "--batch", "2", "--seq", "16", "--quick", "--threads", "1"]


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"peltc_bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_main_env_anchors_train_what_peltc_trains(bench_lib):
    """BitFit in place and peft's LoRA train exactly as many parameters as peltc's specs (head included)."""
    pytest.importorskip("peft")
    shapes, methods, A = bench_lib("shapes"), bench_lib("methods"), bench_lib("anchor_systems")
    template = shapes.build_model("tiny", "sdpa")
    for system, method in (("torch", "bitfit"), ("peft", "lora")):
        _, peltc = A.apply("peltc", method, shapes.copy_model(template, share_frozen=True))
        model, anchor = A.apply(system, method, shapes.copy_model(template, share_frozen=True))
        assert anchor["trainable"] == peltc["report"]["trainable_total"] == peltc["trainable"], (system, method)
        methods.train_step_fn(model, shapes.make_batch(model.config, 2, 8))()
    assert A.env_of("peft", "prefix", None) == "anchor" and A.env_of("peft", "prefix", "main") is None
    assert A.env_of("adapters", "bitfit", None) is None


def test_quick_anchors_run_in_one_environment(tmp_path, capsys):
    pytest.importorskip("peft")
    import torch

    bench = _load("overhead")
    threads = torch.get_num_threads()
    result = bench.main(QUICK + ["--rss", "delta", "--anchors", "torch,peft", "--methods", "bitfit,lora,prefix",
                                 "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads
    data = json.loads(Path(result["path"]).read_text())
    assert Path(result["path"]).name.startswith("overhead-anchors-")
    assert data["args"]["anchors"] == ["torch", "peft"]
    s = data["shapes"]["tiny"]
    assert s["mode"] == "anchors" and set(s["envs"]) == {"main"}
    assert s["envs"]["main"]["versions"]["transformers"]
    assert list(s["configs"]) == ["ref@main:finetune", "ref@main:base", "peltc@main:bitfit", "torch@main:bitfit",
                                  "peltc@main:lora", "peft@main:lora", "peltc@main:prefix"]
    assert s["skipped"] == ["peft@anchor:prefix (no --anchor-python)"]
    assert s["rounds"] == {"train": 2, "inference": 2}
    assert len(s["records"]["train"]) == 2 and "peft@main:lora" in s["records"]["train"][0]
    for cid, c in s["configs"].items():
        if not cid.endswith(":base"):
            assert c["train_ms"]["n"] == 2
        if not cid.endswith(":finetune"):
            assert c["infer_ms"]["n"] == 2
        if not cid.startswith("ref@"):
            assert c["train_ratio_vs_finetune"]["n"] == 2 and c["infer_ratio_vs_base"]["n"] == 2
        assert c["rss"]["mode"] == "delta"
    assert s["configs"]["peltc@main:lora"]["train_build"]["trainable"] == s["configs"]["peft@main:lora"]["train_build"]["trainable"]
    cmp = s["compare"]
    assert cmp["bitfit"]["fastest_train"] == "torch@main:bitfit" and cmp["lora"]["fastest_infer"] == "peft@main:lora"
    assert cmp["lora"]["train_ratio"]["n"] == 2 and cmp["lora"]["train_ratio_normalised"]["n"] == 2
    assert cmp["prefix"]["anchors"] == {}
    assert set(s["targets"]["train_le_fastest_anchor"]) == {"bitfit", "lora"}
    out = capsys.readouterr().out
    assert "| peft@main:lora |" in out and "peltc vs the fastest anchor" in out


def test_rss_from_an_earlier_run(tmp_path):
    pytest.importorskip("peft")
    bench = _load("overhead")
    earlier = {"shapes": {"tiny": {"batch": 2, "seq": 16, "configs": {
        "peltc@main:lora": {"rss": {"peak_rss_mb": 500.0, "rss_after_import_mb": 400.0, "mode": "subprocess"}},
        "peft@main:lora": {"rss": {"peak_rss_mb": 510.0, "rss_after_import_mb": 405.0, "mode": "subprocess"}}}}}}
    f = tmp_path / "rss.json"
    f.write_text(json.dumps(earlier))
    result = bench.main(QUICK + ["--anchors", "peft", "--methods", "lora", "--rss-from", str(f),
                                 "--out", str(tmp_path)])
    s = json.loads(Path(result["path"]).read_text())["shapes"]["tiny"]
    assert s["configs"]["peltc@main:lora"]["rss"]["from"] == str(f)
    assert s["compare"]["lora"]["peak_rss_mb"] == {"peltc": 500.0, "anchor": 510.0}
    assert s["targets"]["rss_le_anchor"]["lora"]["met"] is True


def test_anchor_python_required_for_anchor_env():
    bench = _load("overhead")
    with pytest.raises(SystemExit):
        bench.parse_args(["--anchors", "adapters@anchor"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--anchors", "peft", "--shapes", "tiny-llama"])
    a = bench.parse_args(["--anchors", "torch,peft@main"])
    assert a.anchors == [("torch", None), ("peft", "main")]
    assert bench.parse_args([]).anchors is None                      # the default run: no anchors


@pytest.mark.skipif(not ANCHOR_PYTHON, reason="PELTC_BENCH_ANCHOR_PYTHON (the anchors' venv) not set")
def test_quick_anchors_run_with_adapterhub(tmp_path):
    bench = _load("overhead")
    methods = ["bitfit", "lora", "adapter", "prefix", "unipelt_apl", "mam"]
    result = bench.main(QUICK + ["--rss", "delta", "--anchor-python", ANCHOR_PYTHON, "--methods", ",".join(methods),
                                 "--out", str(tmp_path)])
    s = json.loads(Path(result["path"]).read_text())["shapes"]["tiny"]
    assert set(s["envs"]) == {"main", "anchor"} and s["envs"]["anchor"]["versions"]["adapters"]
    c = s["configs"]
    for m in methods[1:]:
        a = f"adapters@anchor:{m}"
        assert "error" not in c[a]["train_build"], c[a]["train_build"]
        # the sizes follow peltc's specs: the same trainable count, head included
        assert c[a]["train_build"]["trainable"] == c[f"peltc@main:{m}"]["train_build"]["trainable"], m
        assert c[a]["train_ms"]["n"] == 2 and c[a]["infer_ms"]["n"] == 2
    for m in ("prefix", "unipelt_apl", "mam"):
        assert c[f"adapters@anchor:{m}"]["served_build"]["ejected_prefix"] is True
    assert c["peft@anchor:prefix"]["train_build"]["trainable"] == c["peltc@main:prefix"]["train_build"]["trainable"]
    assert set(s["env_base_ratio"]) == {"finetune_main_vs_anchor", "base_main_vs_anchor"}
    assert set(s["compare"]["lora"]["anchors"]) == {"peft@main:lora", "adapters@anchor:lora"}


def test_combine_phases_run_separately(tmp_path):
    """--phases train and --phases inference in two runs, then --combine: one result, peltc vs the anchor
    recomputed from the merged per-round records."""
    pytest.importorskip("peft")
    bench = _load("overhead")
    base = QUICK + ["--anchors", "peft", "--methods", "lora", "--rss", "none"]
    train = bench.main(base + ["--phases", "train", "--out", str(tmp_path / "t")])["path"]
    infer = bench.main(base + ["--phases", "inference", "--out", str(tmp_path / "i")])["path"]
    result = bench.main(["--combine", train, infer, "--out", str(tmp_path / "c")])
    s = json.loads(Path(result["path"]).read_text())["shapes"]["tiny"]
    assert [c["path"] for c in json.loads(Path(result["path"]).read_text())["combined_from"]] == [train, infer]
    assert set(s["records"]) == {"train", "inference"} and s["rounds"] == {"train": 2, "inference": 2}
    c = s["configs"]["peft@main:lora"]
    assert c["train_ms"]["n"] == 2 and c["infer_ms"]["n"] == 2
    assert s["compare"]["lora"]["train_ratio"]["n"] == 2 and s["compare"]["lora"]["infer_ratio"]["n"] == 2
    assert "lora" in s["targets"]["train_le_fastest_anchor"]
    # more rounds of a phase from another run are pooled
    pooled = bench.main(["--combine", train, infer, train, "--out", str(tmp_path / "c")])
    s = json.loads(Path(pooled["path"]).read_text())["shapes"]["tiny"]
    assert s["rounds"] == {"train": 4, "inference": 2} and s["compare"]["lora"]["train_ratio"]["n"] == 4
    assert s["configs"]["peft@main:lora"]["train_ms"]["n"] == 4


def test_repeated_rss_children_report_the_median(tmp_path, bench_lib):
    rss = bench_lib("rss")
    counter = tmp_path / "n"
    counter.write_text("0")
    child = ("import json, pathlib; p = pathlib.Path(%r); n = int(p.read_text()); p.write_text(str(n + 1)); "
             "print('noise'); print(json.dumps({'peak_rss_mb': [900.0, 1000.0, 950.0][n], "
             "'rss_after_import_mb': 400.0 + n, 'ran': 'x'}))" % str(counter))
    r = rss.run_rss_child([sys.executable, "-c", child], 3)
    assert r["peak_rss_mb"] == 950.0 and r["rss_after_import_mb"] == 401.0 and r["ran"] == "x"
    assert r["peak_rss_samples_mb"] == [900.0, 1000.0, 950.0] and r["repeats"] == 3
    bad = rss.run_rss_child([sys.executable, "-c", "raise SystemExit('no memory for you')"], 3)
    assert "no memory for you" in bad["error"]
