"""`peltc import` and `peltc export` as a peft user meets them (issue 22, items 11 and 13): the packaged
MiniLM named by its known name, no transformers load report, own data as the task; a shipped LoRA spec
that exports to peft whole, named where an export is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

peft = pytest.importorskip("peft")

from peltc.cli import main  # noqa: E402
from peltc.errors import UsageError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _perturbed(model, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture(scope="module")
def minilm_peft(tmp_path_factory):
    """A peft LoRA adapter on the packaged MiniLM, as peft writes it: base_model_name_or_path is the
    package's directory under site-packages."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from peltc.compiler.archs import packaged_model_dir
    d = packaged_model_dir()
    if d is None:
        pytest.skip("the packaged MiniLM is not installed")
    torch.manual_seed(0)
    pm = get_peft_model(AutoModelForSequenceClassification.from_pretrained(str(d), num_labels=2),
                        LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=4, target_modules=["query"]))
    _perturbed(pm)
    out = tmp_path_factory.mktemp("peft") / "adapter"
    pm.save_pretrained(str(out))
    assert Path(json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]) == d
    return out, pm.eval()


def test_import_names_the_packaged_model_is_quiet_and_takes_own_data(minilm_peft, tmp_path, capfd):
    from transformers import AutoTokenizer

    from peltc.compiler.archs import packaged_model_dir
    from peltc.compiler.pipeline import check_file
    from peltc.runtime.serve import load_run
    from peltc.runtime.task_own import CustomTask
    d, pm = minilm_peft
    data = tmp_path / "reviews.csv"
    data.write_text("review,sentiment\n" + "".join(f"film {i} was {w},{s}\n" for i in range(10)
                                                   for w, s in (("great", "pos"), ("dull", "neg"))))
    spec, run = tmp_path / "imported.pelt", tmp_path / "run"
    capfd.readouterr()
    assert main(["import", str(d), "-o", str(spec), "--out", str(run), "--task", f"csv:{data}",
                 "--text-column", "review", "--label-column", "sentiment"]) == 0
    out, err = capfd.readouterr()
    # no transformers load report and no notes: only the own-data label set every run on own data states
    assert [line for line in err.splitlines() if not line.startswith("labels: ")] == [], err
    assert len(out.splitlines()) == 2                         # wrote the spec; wrote the run folder
    assert "model minilm" in spec.read_text().splitlines()
    assert check_file(spec).ir.settings.model == "minilm"
    manifest = json.loads((run / "adapter" / "manifest.json").read_text())
    assert manifest["base_model"]["name"] == "minilm" and manifest["labels"] == ["neg", "pos"]
    assert str(packaged_model_dir()) not in (run / "spec.pelt").read_text()
    model, _, task, _, _ = load_run(run)
    assert isinstance(task, CustomTask) and task.labels == ("neg", "pos") and task.text_columns == ("review",)
    tok = AutoTokenizer.from_pretrained(str(packaged_model_dir()))
    batch = tok(["a great film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert (model.eval()(**batch).logits - pm(**batch).logits).abs().max() <= 1e-5
    capfd.readouterr()
    assert main(["eval", str(run)]) == 0                      # scored on the same file's held-out fifth
    assert set(json.loads(capfd.readouterr().out.split("\nwarning")[0])) == {"accuracy", "f1_macro"}


def test_import_task_refusals(minilm_peft, tmp_path, capfd):
    d, _ = minilm_peft
    assert main(["import", str(d), "--out", str(tmp_path / "r"), "--task", "gen:arith"]) == 2
    assert "[U132]" in capfd.readouterr().err
    assert main(["import", str(d), "--out", str(tmp_path / "r"), "--task", "glue/rte", "--text-column", "x"]) == 2
    assert "[U130]" in capfd.readouterr().err
    assert main(["import", str(d), "--out", str(tmp_path / "r"), "--task", f"csv:{tmp_path / 'none.csv'}"]) == 3
    assert not (tmp_path / "r").exists()


def test_shipped_lora_peft_spec_exports_whole(tmp_path, tiny_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    import peltc
    from peltc.api import save_adapter
    from peltc.compiler.torch.peft_export import export_peft

    def base():
        return AutoModelForSequenceClassification.from_pretrained(str(tiny_dir), num_labels=2).eval()

    from peltc.compiler.archs import load_config
    from peltc.compiler.pipeline import check_file
    from peltc.runtime.task_glue import task as glue

    mc = load_config(str(tiny_dir))
    ids = torch.randint(5, 1000, (2, 7), generator=torch.Generator().manual_seed(1))
    for spec, ok in (("lora_peft.pelt", True), ("lora.pelt", False)):
        model = base()                                        # compiled as a run compiles it (the recipe's head)
        peltc.compile_model(glue("rte").prepare_ir(check_file(ROOT / "specs" / spec, model=mc).ir, mc, "glue/rte"),
                            model)
        _perturbed(model)
        art = tmp_path / spec / "adapter"
        save_adapter(model, art)
        if not ok:                                            # the recipe's mean pooling: refused, naming the spec
            with pytest.raises(UsageError) as e:
                export_peft(art, tmp_path / spec / "peft")
            assert e.value.diagnostic.code == "U120" and "specs/lora_peft.pelt" in e.value.diagnostic.help
            continue
        r = export_peft(art, tmp_path / spec / "peft")
        assert r.left_out == [] and r.config["r"] == 8 and r.config["lora_alpha"] == 16
        pm = PeftModel.from_pretrained(base(), str(tmp_path / spec / "peft")).eval()
        with torch.no_grad():
            assert (pm(input_ids=ids).logits - model.eval()(input_ids=ids).logits).abs().max() <= 1e-5
