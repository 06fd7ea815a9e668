"""Devices, precision and torch.compile (runtime/speed.py): a shipped spec trained with --precision bf16 (CPU
autocast) end to end, its artifact fp32 and `peltc eval` scoring it as recorded; the run's identity (an fp32
run's hash unchanged, bf16 another run); the flags' errors; the library's `peltc.api.speed`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peltc.cli import main
from peltc.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "unipelt_apl.pelt"
FAST = ["--k", "32", "--dev-size", "40", "--epochs", "1", "--batch-size", "16", "--min-steps", "0",
        "--max-length", "32", "--quiet", "--no-render"]


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, tiny_dir, small_glue):
    out = tmp_path_factory.mktemp("runs") / "apl-bf16"
    rc = main(["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir", str(small_glue),
               "--out", str(out), "--precision", "bf16", "--device", "cpu", *FAST])
    assert rc == 0
    return out


def test_bf16_run_records_its_speed_and_saves_fp32(bf16_run):
    run = json.loads((bf16_run / "run.json").read_text())
    assert run["speed"] == {"device": "cpu", "precision": "bf16", "torch_compile": False}
    assert run["identity"]["precision"] == "bf16"
    m = json.loads((bf16_run / "metrics.json").read_text())
    assert m["speed"]["precision"] == "bf16" and m["final"]
    manifest = json.loads((bf16_run / "adapter" / "manifest.json").read_text())
    assert {t["dtype"] for t in manifest["tensors"].values()} == {"float32"}


def test_bf16_artifact_loads_in_fp32_and_scores_as_recorded(bf16_run, small_glue, capsys):
    import torch

    from peltc.runtime.serve import load_run
    model, *_ = load_run(bf16_run)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    capsys.readouterr()
    assert main(["eval", str(bf16_run), "--data-dir", str(small_glue)]) == 0   # the run's precision: bf16
    out = capsys.readouterr()
    assert json.loads(out.out.split("\nwarning")[0]) == json.loads((bf16_run / "metrics.json").read_text())["test"]
    assert "agree: yes" in out.err
    # in fp32 it scores too (rounding may move a prediction, not the metric's kind)
    assert main(["eval", str(bf16_run), "--data-dir", str(small_glue), "--precision", "fp32"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out.split("\nwarning")[0])["accuracy"] <= 1.0


def test_bf16_trains_pelt_parameters_in_fp32_under_autocast(tiny_model):
    """Autocast computes in bf16; the parameters the optimiser steps (the master weights) stay fp32."""
    import torch

    from peltc.runtime.speed import Speed, autocast, resolve
    model = tiny_model()
    s = resolve(Speed(device="cpu", precision="bf16"))
    x = torch.randint(5, 100, (2, 6))
    with autocast(s):
        out = model(input_ids=x, labels=torch.tensor([0, 1]))
    assert out.logits.dtype == torch.bfloat16
    out.loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trained)


def test_fp32_identity_hash_is_unchanged():
    """An fp32 run's identity has no precision key, so its hash is the one it had before precision existed."""
    from peltc.runtime.runfolder import identity_hash, run_identity
    kw = dict(spec_hash="abc", task="rte", k=100, seed=1, dev_size=1000, model="m", settings={"lr": 0.001})
    fp32 = run_identity(**kw)
    assert "precision" not in fp32 and run_identity(**kw, precision="fp32") == fp32
    # the hash main (before this change) computes for this identity
    assert identity_hash(fp32) == "210f6468c513af323dfd9f02ef1e3423d7cf273033b3101807bd2015ae3297eb"
    assert identity_hash(run_identity(**kw, precision="bf16")) != identity_hash(fp32)


def test_resuming_an_fp32_folder_in_bf16_is_refused(bf16_run, tiny_dir, small_glue, capsys):
    rc = main(["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir", str(small_glue),
               "--out", str(bf16_run), "--resume", *FAST])
    assert rc != 0
    assert "U011" in capsys.readouterr().err


@pytest.mark.parametrize("flags, code, said", [
    (["--precision", "fp16", "--device", "cpu"], "U197", "CPU"),
    (["--device", "tpu"], "U196", "not a device"),
    (["--device", "cuda:7"], "U196", "cuda:7"),
])
def test_bad_device_or_precision_is_a_clear_error(flags, code, said, tiny_dir, small_glue, tmp_path, capsys):
    import torch

    if "cuda:7" in flags and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    rc = main(["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir", str(small_glue),
               "--out", str(tmp_path / "r"), *flags, *FAST])
    err = capsys.readouterr().err
    assert rc != 0 and code in err and said in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_library_speed():
    import torch

    from peltc import api
    s = api.speed(device="cpu", precision="bf16")
    assert api.trainer_arguments(s) == {"use_cpu": True, "bf16": True, "fp16": False, "torch_compile": False,
                                        "bf16_full_eval": False, "fp16_full_eval": False}
    with api.autocast(s):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(UsageError) as e:
        api.speed(device="cpu", precision="fp16")
    assert e.value.diagnostic.code == "U197"


def test_speed_flags_for_grid_runs():
    from peltc.runtime.speed import Speed, flags
    assert flags(Speed()) == []
    assert flags(Speed(device="cpu", precision="bf16", torch_compile=True)) == [
        "--device", "cpu", "--precision", "bf16", "--torch-compile"]


@pytest.mark.slow
def test_bf16_compiled_training_end_to_end(tiny_dir, small_glue, tmp_path, capsys, monkeypatch):
    """`--precision bf16 --torch-compile` through the Trainer (its torch_compile, batches marked dynamic), the
    artifact fp32, `peltc eval --torch-compile` scoring it as recorded. The backend is aot_eager here (the
    same capture and autograd as inductor, without inductor's minutes of C++ code generation on a shared CPU)."""
    import torch

    from peltc.runtime import speed
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    out = tmp_path / "lora-bf16-compiled"
    rc = main(["compile", str(ROOT / "specs" / "lora.pelt"), "--train", "glue/rte", "--model", str(tiny_dir),
               "--data-dir", str(small_glue), "--out", str(out), "--precision", "bf16", "--torch-compile",
               "--device", "cpu", *FAST])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["speed"] == {"device": "cpu", "precision": "bf16", "torch_compile": True}
    manifest = json.loads((out / "adapter" / "manifest.json").read_text())
    assert {t["dtype"] for t in manifest["tensors"].values()} == {"float32"}
    capsys.readouterr()
    assert main(["eval", str(out), "--data-dir", str(small_glue), "--torch-compile"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out.split("\nwarning")[0]) == json.loads((out / "metrics.json").read_text())["test"]
