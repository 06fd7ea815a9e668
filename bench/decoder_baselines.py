"""Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/decoder_baselines.py [OUT.json]

Baselines of the two validation runs, one load of the base SmolLM2 (CausalLM, frozen):
(a) gen:arith test exact match of the untrained base (greedy, as the run scores it);
(b) SST-2 K=100 seed 1 (the run's 100 examples): majority class, and a logistic-regression probe on the
frozen final hidden states (masked mean; last real token) of the same 100 examples, scored on the test set."""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np, torch
torch.set_num_threads(1)
from peltc.compiler.archs import load_config
from peltc.runtime import data as D
from peltc.runtime.models import load_base
from peltc.runtime.run import evaluate_generation
from peltc.runtime.tasks import gen_task, task
import datasets
t0 = time.time()
tok, model = load_base(load_config("smollm2-135m"), 0, causal_lm=True)
model.eval()
out = {}
gt = gen_task("gen:arith")
test, _ = D.gen_test_split(gt)
enc = D.tokenize_gen(datasets.DatasetDict({"test": test}), tok)["test"]
out["arith_test_exact_match_base"] = evaluate_generation(model, tok, enc, gt)["exact_match"]
print(out, time.time() - t0, flush=True)
sst = task("sst2")
splits = D.sample(D.load_glue(sst, os.environ.get("PELT_GLUE_DIR", "../shared/glue")), 100, 1, dev_size=500)
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
ytr, yte = np.array(splits["train"]["label"]), np.array(splits["test"]["label"])
ftr, fte = feats(splits["train"]["sentence"]), feats(splits["test"]["sentence"])
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
for name, a, b in (("mean", ftr[0], fte[0]), ("last", ftr[1], fte[1])):
    sc = StandardScaler().fit(a)
    clf = LogisticRegression(max_iter=2000).fit(sc.transform(a), ytr)
    out[f"sst2_probe_{name}"] = float((clf.predict(sc.transform(b)) == yte).mean())
maj = np.bincount(ytr).argmax()
out["sst2_majority_of_train_on_test"] = float((yte == maj).mean())
out["sst2_test_majority"] = float(np.bincount(yte).max() / len(yte))
out["seconds"] = round(time.time() - t0)
print(json.dumps(out, indent=1))
dest = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/decoder_baselines.json")
dest.parent.mkdir(parents=True, exist_ok=True)
dest.write_text(json.dumps(out, indent=1) + "\n")
