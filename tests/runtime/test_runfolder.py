"""Run folders never lose a run (issue 9, items 1–3, 5, 6, 8, 9): a folder belongs to one run, a
finished run is reported and never redone or overwritten, a failed start leaves nothing behind,
--resume says what it continues, a damaged checkpoint and a bad flag are clean errors, inputs are
checked before weights load, known model names resolve offline."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from peltc.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "lora.pelt"
OTHER = ROOT / "specs" / "bitfit.pelt"
FAST = ["--k", "32", "--dev-size", "40", "--epochs", "1", "--batch-size", "16", "--min-steps", "0",
        "--max-length", "32", "--quiet", "--no-render"]


def snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` with the sha256 of its bytes."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_dir, small_glue):
    out = tmp_path_factory.mktemp("safety") / "done"
    assert main(["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir",
                 str(small_glue), "--out", str(out), *FAST]) == 0
    return out


def args(spec, tiny_dir, small_glue, out, *extra):
    return ["compile", str(spec), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir", str(small_glue),
            "--out", str(out), *FAST, *extra]


def test_resume_with_another_spec_is_refused_and_changes_nothing(finished, tiny_dir, small_glue, capsys):
    before = snapshot(finished)
    capsys.readouterr()
    assert main(args(OTHER, tiny_dir, small_glue, finished, "--resume")) == 2
    err = capsys.readouterr().err
    assert "[U011]" in err and "the spec" in err and "Traceback" not in err
    assert snapshot(finished) == before


def test_resume_with_other_settings_names_them(finished, tiny_dir, small_glue, capsys):
    before = snapshot(finished)
    capsys.readouterr()
    assert main(args(SPEC, tiny_dir, small_glue, finished, "--resume", "--lr", "0.01")) == 2
    err = capsys.readouterr().err
    assert "[U011]" in err and "lr: 0.001 in the folder, 0.01 now" in err
    assert snapshot(finished) == before


def test_resume_of_a_finished_run_reports_it(finished, tiny_dir, small_glue, capsys):
    before = snapshot(finished)
    capsys.readouterr()
    assert main(args(SPEC, tiny_dir, small_glue, finished, "--resume")) == 0
    out = capsys.readouterr().out
    assert "already holds this finished run" in out and "finished earlier" in out
    assert snapshot(finished) == before


def test_out_naming_a_finished_run_is_refused(finished, tiny_dir, small_glue, capsys):
    before = snapshot(finished)
    capsys.readouterr()
    assert main(args(SPEC, tiny_dir, small_glue, finished)) == 2
    err = capsys.readouterr().err
    assert "[U010]" in err and "holds a finished run" in err and "never overwritten" in err
    assert snapshot(finished) == before
    assert not list(finished.parent.glob("done-*")), "no silently renamed sibling"


def test_a_failed_start_leaves_no_folder(tiny_dir, small_glue, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((Path(tiny_dir) / "config.json").read_text())   # no weights
    monkeypatch.chdir(tmp_path)
    base = ["compile", str(SPEC), "--train", "glue/rte", "--model", str(broken), "--data-dir", str(small_glue), *FAST]
    assert main(base) == 2
    assert "[U006]" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert main([*base, "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_a_taken_default_name_is_said_on_the_first_line(tiny_dir, small_glue, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    taken = tmp_path / "runs" / "lora-rte-k32-s1"
    taken.mkdir(parents=True)
    (taken / "keep.txt").write_text("mine")
    capsys.readouterr()
    base = ["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir), "--data-dir", str(small_glue), *FAST]
    assert main(base) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "is taken" in first and "lora-rte-k32-s1-2" in first
    assert (tmp_path / "runs" / "lora-rte-k32-s1-2" / "metrics.json").is_file()
    assert (taken / "keep.txt").read_text() == "mine"


def test_resume_before_any_checkpoint_says_so(tiny_dir, small_glue, tmp_path, capsys):
    """A folder with run.json but no checkpoint (interrupted early): --resume says it starts over."""
    out = tmp_path / "early"
    assert main(args(SPEC, tiny_dir, small_glue, out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").unlink()          # as if interrupted before finishing, with no checkpoint left
    capsys.readouterr()
    assert main(args(SPEC, tiny_dir, small_glue, out, "--resume")) == 0
    assert "no complete checkpoint" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["test"] == metrics["test"]


@pytest.mark.parametrize("flag,value", [("--lr", "-1"), ("--epochs", "0"), ("--batch-size", "0"),
                                        ("--warmup", "1.5"), ("--head-lr", "0"), ("--eval-steps", "0"),
                                        ("--dev-size", "0"), ("--lr", "nan")])
def test_out_of_range_flags_are_refused_before_loading(flag, value, tiny_dir, tmp_path, capsys):
    t0 = time.time()
    rc = main(["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir),
               "--data-dir", str(tmp_path / "no-such-dir"), "--out", str(tmp_path / "r"), flag, value])
    err = capsys.readouterr().err
    assert rc == 2 and "[U106]" in err and flag in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    assert time.time() - t0 < 5


def test_missing_data_dir_is_reported_before_weights_load(tmp_path, tiny_dir, capsys, monkeypatch):
    import peltc.runtime.run as R

    def no_load(*a, **k):
        raise AssertionError("weights loaded before the data directory was checked")
    monkeypatch.setattr(R, "load_base", no_load)
    rc = main(["compile", str(SPEC), "--train", "glue/rte", "--model", str(tiny_dir),
               "--data-dir", str(tmp_path / "no-such-dir"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "[U102]" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_known_name_with_packaged_weights_resolves_offline():
    from peltc.compiler.archs import load_config, packaged_model_dir
    from peltc.runtime.models import weights_source

    mc = load_config("minilm")
    assert mc.model_dir == str(packaged_model_dir())
    assert weights_source(mc) == mc.model_dir


def test_unavailable_hub_name_fails_fast_offline(monkeypatch):
    from peltc.compiler.archs import load_config
    from peltc.errors import UsageError
    from peltc.runtime.models import weights_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(UsageError) as e:
        weights_source(load_config("roberta-large"))
    assert e.value.diagnostic.code == "U006" and "pip install" in e.value.diagnostic.help
    assert time.time() - t0 < 1.0


def test_bad_flags_and_unavailable_models_fail_before_torch_is_imported(tmp_path):
    """A bad flag or a Hub-only model offline is refused in about a second: torch is never imported."""
    import subprocess
    import sys

    code = ("import sys; from peltc.cli import main; rc = main(sys.argv[1:]); "
            "print('RC', rc, 'torch' in sys.modules)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for extra in (["--lr", "-1"], ["--model", "roberta-large"]):
        p = subprocess.run([sys.executable, "-c", code, "compile", str(SPEC), "--train", "glue/rte", *extra,
                            "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=120)
        assert "RC 2 False" in p.stdout, (p.stdout, p.stderr[-2000:])
        assert not (tmp_path / "r").exists()


def test_a_model_dir_with_another_head_size_loads_with_a_fresh_head(tiny_dir):
    """tiny_dir holds a 2-label head; a regression run (1 label) gets a fresh 1-output head, no traceback."""
    from peltc.compiler.archs import load_config
    from peltc.runtime.models import load_base

    _, model = load_base(load_config(str(tiny_dir)), 1)
    assert model.classifier.out_features == 1
