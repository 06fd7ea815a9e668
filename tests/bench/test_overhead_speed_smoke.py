"""Smoke test of bench/overhead.py --compile --precision (benchlib/speed_axes.py) and of bench/gpu.sh in its
tiny CPU mode: a tiny BERT, 2 rounds; checks the JSON's structure only (timings on a shared machine are not
asserted). The backend is dynamo's ``eager`` here: inductor's code generation costs minutes on this CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[2]


def _load():
    import importlib.util
    spec = importlib.util.spec_from_file_location("peltc_bench_overhead_speed", ROOT / "bench" / "overhead.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compile_precision_phase_writes_json(tmp_path, capsys, bench_lib):
    bench = _load()
    result = bench.main(["--shapes", "tiny", "--batch", "2", "--seq", "16", "--rounds", "2", "--warmup", "1",
                         "--threads", "1", "--compile", "--precision", "bf16", "--compile-backend", "eager",
                         "--methods", "lora", "--out", str(tmp_path)])
    data = json.loads(Path(result["path"]).read_text())
    r = data["shapes"]["tiny"]
    ids = {f"{s}:{m}/{p}/{mode}" for s, m in (("ref", "finetune"), ("peltc", "lora"), ("peft", "lora"))
           for p in ("fp32", "bf16") for mode in ("eager", "compiled")}
    for phase in ("train", "inference"):
        assert set(r["phases"][phase]["times_ms"]) == ids
        ratios = r["phases"][phase]["ratios"]
        assert ratios["peltc:lora/bf16/compiled"]["compiled_vs_eager"]["n"] == 2
        assert ratios["peft:lora/fp32/eager"]["vs_finetune_same_mode"]["median"] > 0
        assert r["phases"][phase]["recompiles_while_timed"] >= 0
    assert "compile × precision" in capsys.readouterr().out


def test_gpu_script_tiny_mode_on_cpu(tmp_path):
    env = {**os.environ, "PELT_GPU_TINY": "1", "PELT_GPU_OUT": str(tmp_path), "PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    if not Path(env["PYTHON"]).exists():
        env["PYTHON"] = "python"
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "no CUDA device" in p.stdout + p.stderr          # says what is missing, runs the tiny CPU mode
    files = list(tmp_path.glob("overhead-speed-*.json"))
    assert files and all(json.loads(f.read_text())["shapes"] for f in files)
