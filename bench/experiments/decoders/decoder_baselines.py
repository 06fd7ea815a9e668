"""Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/decoders/decoder_baselines.py [OUT.json] [--parts arith,probe,zeroshot]

Baselines of the SmolLM2 validation runs, one load of the base SmolLM2 (CausalLM, frozen):
(a) arith — gen:arith test exact match of the untrained base (greedy, as the run scores it);
(b) probe — SST-2 K=100 seed 1 (the run's 100 examples): majority class, and a logistic-regression probe on
    the frozen final hidden states (masked mean; last real token) of the same 100 examples, on the test set;
(c) zeroshot — the instruct model prompted for the sentiment, no training data: each sentence in the chat
    template (default system prompt) with an instruction, then the assistant turn; the label is the word
    whose next-token log-probability is higher, "positive" vs "negative" (each the log-sum-exp over the
    surface forms `positive`, `Positive`, ` positive` — single tokens in SmolLM2's vocabulary). Two
    instructions fixed in advance; the one with the higher accuracy on the run's 500 dev examples is the
    baseline and its test accuracy is reported (`sst2_zeroshot`); both are recorded. SmolLM2-135M says
    "positive" to nearly everything, so each prompt is also scored calibrated (Zhao et al. 2021, contextual
    calibration, label-free): the margin minus the margin the same prompt gets for the content-free
    sentence "N/A"; the dev set picks among the four (prompt × raw / calibrated).

Parts not run keep the values OUT already holds (default: all parts; OUT docs/results/decoder_baselines.json
is what docs/results.md cites)."""
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
from peltc.compiler.archs import load_config
from peltc.runtime import data, task_gen, task_glue
from peltc.runtime.models import load_base
from peltc.runtime.task_gen import gen_task
from peltc.runtime.task_glue import task

PARTS = ("arith", "probe", "zeroshot")
PROMPTS = {
    "question": "Is the sentiment of this movie review positive or negative?\n\nReview: {s}\n\n"
                "Answer with one word: positive or negative.",
    "classify": "Classify the sentiment of the following sentence as positive or negative.\n\n"
                "Sentence: {s}\nSentiment:",
}
LABEL_WORDS = {0: ("negative", "Negative", " negative"), 1: ("positive", "Positive", " positive")}


def zero_shot(model, tok, sentences, template, batch=16):
    """Predicted labels (0 negative, 1 positive) and the positive-minus-negative log-prob margins."""
    ids = {}
    for label, words in LABEL_WORDS.items():
        ids[label] = []
        for w in words:
            t = tok(w, add_special_tokens=False)["input_ids"]
            assert len(t) == 1, (w, t)
            ids[label].append(t[0])
    prompts = [tok.apply_chat_template([{"role": "user", "content": template.format(s=s.strip())}],
                                       tokenize=False, add_generation_prompt=True) for s in sentences]
    margins = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            b = tok(prompts[i:i + batch], padding=True, return_tensors="pt", add_special_tokens=False)
            logits = model(**b).logits                                  # right padding
            last = b["attention_mask"].sum(1) - 1
            lp = logits[torch.arange(len(last)), last].float().log_softmax(-1)
            pos = lp[:, ids[1]].logsumexp(-1)
            neg = lp[:, ids[0]].logsumexp(-1)
            margins.append((pos - neg).numpy())
    m = np.concatenate(margins)
    return (m > 0).astype(int), m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="docs/results/decoder_baselines.json")
    ap.add_argument("--parts", default=",".join(PARTS))
    a = ap.parse_args()
    parts = [p for p in a.parts.split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; choose from {', '.join(PARTS)}")
    dest = Path(a.out)
    out = json.loads(dest.read_text()) if dest.exists() else {}
    t0 = time.time()
    tok, model = load_base(load_config("smollm2-135m"), 0, causal_lm=True)
    model.eval()
    if "arith" in parts:
        import datasets
        from peltc.runtime.generation import evaluate_generation
        gt = gen_task("gen:arith")
        test, _ = task_gen.gen_test_split(gt)
        enc = task_gen.tokenize_gen(datasets.DatasetDict({"test": test}), tok)["test"]
        out["arith_test_exact_match_base"] = evaluate_generation(model, tok, enc, gt)["exact_match"]
        print(out, time.time() - t0, flush=True)
    splits = data.sample(task_glue.load_glue(task("sst2"), os.environ.get("PELT_GLUE_DIR", "../shared/glue")), 100, 1,
                      dev_size=500)
    ytr, ydev, yte = (np.array(splits[s]["label"]) for s in ("train", "dev", "test"))
    if "probe" in parts:
        def feats(texts):
            m, l = [], []
            with torch.no_grad():
                for i in range(0, len(texts), 32):
                    b = tok(texts[i:i + 32], padding=True, truncation=True, max_length=128, return_tensors="pt")
                    h = model.model(**b).last_hidden_state
                    mask = b["attention_mask"].unsqueeze(-1).float()
                    m.append(((h * mask).sum(1) / mask.sum(1)).numpy())
                    last = b["attention_mask"].sum(1) - 1
                    l.append(h[torch.arange(len(h)), last].numpy())
            return np.concatenate(m), np.concatenate(l)
        ftr, fte = feats(splits["train"]["sentence"]), feats(splits["test"]["sentence"])
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
        for name, x, y in (("mean", ftr[0], fte[0]), ("last", ftr[1], fte[1])):
            sc = StandardScaler().fit(x)
            clf = LogisticRegression(max_iter=2000).fit(sc.transform(x), ytr)
            out[f"sst2_probe_{name}"] = float((clf.predict(sc.transform(y)) == yte).mean())
        maj = np.bincount(ytr).argmax()
        out["sst2_majority_of_train_on_test"] = float((yte == maj).mean())
        out["sst2_test_majority"] = float(np.bincount(yte).max() / len(yte))
    if "zeroshot" in parts:
        res = {}
        for name, template in PROMPTS.items():
            _, md = zero_shot(model, tok, splits["dev"]["sentence"], template)
            _, mt = zero_shot(model, tok, splits["test"]["sentence"], template)
            _, m0 = zero_shot(model, tok, ["N/A"], template)
            for cal, shift in (("raw", 0.0), ("calibrated", float(m0[0]))):
                pd, pt = (md - shift > 0).astype(int), (mt - shift > 0).astype(int)
                res[f"{name}/{cal}"] = {"template": template, "content_free_margin": float(m0[0]),
                                        "dev_accuracy": float((pd == ydev).mean()),
                                        "test_accuracy": float((pt == yte).mean()),
                                        "test_share_predicted_positive": float(pt.mean())}
                print(name, cal, {k: v for k, v in res[f"{name}/{cal}"].items() if k != "template"}, flush=True)
        best = max(res, key=lambda n: res[n]["dev_accuracy"])
        out["sst2_zeroshot"] = res[best]["test_accuracy"]
        out["sst2_zeroshot_prompt"] = best
        out["sst2_zeroshot_prompts"] = res
        out["sst2_zeroshot_scoring"] = ("chat template (default system prompt), user turn = template, then the "
                                        "assistant turn; next-token log-sum-exp over positive/Positive/' positive' "
                                        "vs the negative forms; raw: positive when the margin > 0; calibrated: "
                                        "when it exceeds the margin of the content-free sentence 'N/A'; prompt and "
                                        "calibration chosen on the 500 dev examples")
    out["seconds_last_call"] = round(time.time() - t0)
    out.pop("seconds", None)
    print(json.dumps({k: v for k, v in out.items() if k != "sst2_zeroshot_prompts"}, indent=1))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
