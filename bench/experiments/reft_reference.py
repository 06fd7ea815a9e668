"""peltc's LoReFT against AdapterHub's ``LoReftConfig`` (adapters 1.3.0), identical weights, padded batches.

    .venv/bin/python bench/experiments/reft_reference.py --anchor-python /tmp/anchors-reft/bin/python

A MiniLM-shaped BERT classifier (the packaged MiniLM's config, random weights drawn once, seed 0) gets
``loreft f { at layers[*].output rank R first P last S }`` in peltc; its interventions are set to random,
non-identity values (R through the orthogonal parametrisation, W and b free). The base weights, the
interventions and the batches go to a worker in AdapterHub's environment (transformers 4.57, so a second
venv: bench/anchors_requirements.txt says how to build it), which builds the same model, adds
``LoReftConfig(r=R, prefix_positions=P, suffix_positions=S, tied_weights=…)``, copies the weights in
(``learned_source`` ← W, b; ``projection.weight`` ← R) and returns its logits. Batches: right and left
padding, lengths from the full width down to shorter than P + S (where the two sides overlap) — never
shorter than max(P, S), where AdapterHub's suffix index would leave the sequence. Writes the max logit
difference per case and both systems' trainable counts to ``docs/results/loreft-vs-adapterhub.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "results" / "loreft-vs-adapterhub.json"
CASES = [   # (rank, first, last, tied)
    (4, 3, 3, False),
    (2, 2, 4, True),
    (1, 3, 0, False),
]
LENGTHS = (12, 9, 5, 4)


def _batches(vocab: int):
    import torch
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1000, vocab, (len(LENGTHS), max(LENGTHS)), generator=g)
    out = {}
    for side in ("right", "left"):
        mask = torch.zeros_like(ids)
        for i, n in enumerate(LENGTHS):
            if side == "right":
                mask[i, :n] = 1
            else:
                mask[i, mask.shape[1] - n:] = 1
        out[side] = {"input_ids": ids * mask, "attention_mask": mask}
    return out


def _main(anchor_python: str) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification

    from benchlib.shapes import shape_config
    from peltc.api import compile_model
    cfg = shape_config("minilm")
    cfg.num_labels = 3
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager").eval()
    batches = _batches(cfg.vocab_size)
    results = []
    for rank, first, last, tied in CASES:
        import copy
        model = copy.deepcopy(base)
        spec = f"loreft f {{ at layers[*].output rank {rank} first {first} last {last} tied {str(tied).lower()} }}"
        compile_model(spec, model)
        g = torch.Generator().manual_seed(rank * 100 + first * 10 + last)
        units: dict[int, list[dict]] = {}
        with torch.no_grad():
            for name, mod in model.named_modules():
                if name.endswith("pelt_reft.f"):
                    layer = int(name.split(".")[-3])
                    for u in mod.units:
                        x = u.R.parametrizations.weight.original      # Householder form: keep its ±1 diagonal
                        signs = x.diagonal().clone()
                        x.add_(0.5 * torch.randn(x.shape, generator=g))
                        x.diagonal().copy_(signs)
                        u.W.weight.add_(0.3 * torch.randn(u.W.weight.shape, generator=g))
                        u.W.bias.add_(0.3 * torch.randn(u.W.bias.shape, generator=g))
                    units[layer] = [{"R": u.R.weight.detach().clone(), "W": u.W.weight.detach().clone(),
                                     "b": u.W.bias.detach().clone()} for u in mod.units]
        with torch.no_grad():
            ours = {side: model(**b).logits for side, b in batches.items()}
            change = max(float((ours[side] - base(**b).logits).abs().max()) for side, b in batches.items())
        trainable = sum(p.numel() for n, p in model.named_parameters() if ".pelt_reft." in n)
        with tempfile.TemporaryDirectory() as d:
            job = Path(d) / "job.pt"
            torch.save({"config": cfg.to_dict(), "state": base.state_dict(), "units": units, "batches": batches,
                        "rank": rank, "first": first, "last": last, "tied": tied}, job)
            subprocess.run([anchor_python, __file__, "--worker", str(job)], check=True)
            theirs = torch.load(Path(d) / "out.pt")
        diff = {side: float((ours[side] - theirs["logits"][side]).abs().max()) for side in batches}
        results.append({"spec": spec, "rank": rank, "first": first, "last": last, "tied": tied,
                        "max_abs_logit_diff": diff, "max_abs_change_vs_base": change, "logit_scale": float(ours["right"].abs().max()),
                        "trainable_peltc": trainable, "trainable_adapterhub": theirs["trainable"],
                        "adapterhub_units_per_layer": theirs["units"]})
    return {"what": "peltc loreft vs AdapterHub LoReftConfig, identical weights (MiniLM shape, random base "
                    "weights seed 0, eager attention), padded batches (right / left padding, lengths "
                    f"{list(LENGTHS)})",
            "command": "python bench/experiments/reft_reference.py --anchor-python /tmp/anchors-reft/bin/python",
            "versions": {"adapterhub": theirs["versions"], "peltc_torch": str(torch.__version__)},
            "cases": results}


def _worker(job: str) -> None:
    """AdapterHub's side (its own venv: no peltc import)."""
    import adapters
    import torch
    import transformers
    from adapters import LoReftConfig
    from transformers import BertConfig, BertForSequenceClassification
    j = torch.load(job)
    cfg = BertConfig.from_dict(j["config"])
    cfg._attn_implementation = "eager"
    model = BertForSequenceClassification(cfg)
    model.load_state_dict(j["state"])
    adapters.init(model)
    model.add_adapter("f", config=LoReftConfig(r=j["rank"], prefix_positions=j["first"],
                                                suffix_positions=j["last"], tied_weights=j["tied"]))
    model.train_adapter("f")
    model.set_active_adapters("f")
    model.eval()
    trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "refts" in n)
    n_units = 0
    with torch.no_grad():
        for i, layer in enumerate(model.bert.encoder.layer):
            mod = layer.reft_layer.refts["f"]
            n_units = len(mod.units)
            # peltc's units: [first, last] untied (a side without positions has none), [both] tied;
            # AdapterHub's: [prefix, suffix] untied (always two), [both] tied
            ours = j["units"][i]
            mapping = [0] if j["tied"] else ([0, 1] if len(ours) == 2 else ([0] if j["first"] else [1]))
            for k, u in zip(mapping, ours):
                unit = mod.units[k]
                unit.learned_source.weight.copy_(u["W"])
                unit.learned_source.bias.copy_(u["b"])
                unit.projection.weight = u["R"]          # the orthogonal parametrisation's right inverse
                assert (unit.projection.weight - u["R"]).abs().max() < 1e-6
        logits = {side: model(**b).logits for side, b in j["batches"].items()}
    torch.save({"logits": logits, "trainable": trainable, "units": n_units,
                "versions": {"adapters": adapters.__version__, "transformers": transformers.__version__,
                             "torch": str(torch.__version__)}}, Path(job).parent / "out.pt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anchor-python", default="/tmp/anchors-reft/bin/python")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        _worker(a.worker)
        return
    sys.path.insert(0, str(ROOT / "bench"))   # benchlib (bench is not a package)
    record = _main(a.anchor_python)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print("| spec | max abs logit diff, right pad | left pad | change vs base | trainable peltc | AdapterHub |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in record["cases"]:
        print(f"| `{r['spec']}` | {r['max_abs_logit_diff']['right']:.2e} | {r['max_abs_logit_diff']['left']:.2e} "
              f"| {r['max_abs_change_vs_base']:.2f} | {r['trainable_peltc']:,} | {r['trainable_adapterhub']:,} |")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
