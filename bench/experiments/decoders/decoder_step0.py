"""Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/decoders/decoder_step0.py [OUT.json]

Step 0 on the packaged SmolLM2 (no training): how far an *untrained* spec moves the model from its base, on
the first 32 training sentences of SST-2 K=100 seed 1 (dev 500). Per variant: the pooled (masked-mean)
final features' cosine to the base model's and ‖f − f_base‖ / ‖f_base‖; the first token's largest
layer-input entry per layer (SmolLM2's attention sink: ≈ 24,000 from layer ~12 on in the base model); the
attention mass real tokens put on prefix positions per layer; gate values. Also the base model's layer-input
norms (what a sigmoid gate reading `layer.input` sees). Variants: specs under the decoder defaults of
`compiler/archs.py`, and under the encoders' gate defaults (`prefix_gate` "kv", no gate-source norm, prefix
gate bias 0 — the behaviour before those defaults), and a prefix started from copies of the first token's
keys and values (the attention sink's own, from `<|im_start|>`, SmolLM2's first chat token)."""
import copy
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
import peltc
from peltc.compiler import archs
from peltc.compiler.archs import load_config
from peltc.compiler.torch.gate import read_gates
from peltc.compiler.torch.prefix import PrefixEncoder, observe_prefix_attention
from peltc.runtime import data, task_glue
from peltc.runtime.models import load_base
from peltc.runtime.task_glue import task

ENCODER_GATES = {"gate_source_norm": False, "prefix_gate": "kv", "prefix_gate_init": None}
APL = "specs/unipelt_apl.pelt"
PREFIX = "prefix kv { at layers[*].attention length 10 mlp 512 }"
VARIANTS = [  # name, spec, family-default override, prefix init
    ("unipelt_apl, encoder gate defaults (before)", APL, ENCODER_GATES, None),
    ("unipelt_apl, encoder gate defaults, prefix gate init=-4", APL.replace(".pelt", "") + "+init-4", ENCODER_GATES, None),
    ("prefix (no gate)", PREFIX, None, None),
    ("prefix (no gate), keys/values = the sink's (<|im_start|>) at every position", PREFIX, None, "sink"),
    ("unipelt_apl, encoder gate defaults, prefix = the sink's keys/values", APL, ENCODER_GATES, "sink"),
    ("unipelt_apl, decoder defaults, prefix gate init=-6", APL.replace(".pelt", "") + "+init-6", None, None),
    ("unipelt_apl, decoder defaults (now: init -10)", APL, None, None),
    ("lora", "specs/lora.pelt", None, None),
]


def spec_text(spec):
    if "+init" in spec:
        base, init = spec.split("+init")
        return (f'extends "{Path(base + ".pelt").resolve()}"\n'
                f"prefix kv {{\n  gate sigmoid(layer.input, init={init})\n}}\n")
    return Path(spec).read_text() if spec.endswith(".pelt") else spec


def main():
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/decoders/step0.json")
    tok, base = load_base(load_config("smollm2-135m"), 2)
    base.eval()
    splits = data.sample(task_glue.load_glue(task("sst2"), os.environ.get("PELT_GLUE_DIR", "../shared/glue")), 100, 1,
                      dev_size=500)
    b = tok(splits["train"]["sentence"][:32], padding=True, truncation=True, max_length=128, return_tensors="pt")
    mask = b["attention_mask"].unsqueeze(-1).float()
    n_layers = len(base.model.layers)

    def run(model):
        acts, hooks = {}, []
        for i, layer in enumerate(model.model.layers):
            hooks.append(layer.register_forward_pre_hook(lambda m, a, i=i: acts.__setitem__(i, a[0].detach())))
        with torch.no_grad():
            h = model.model(**b).last_hidden_state
        for x in hooks:
            x.remove()
        return (h * mask).sum(1) / mask.sum(1), acts

    fb, ab = run(base)
    out = {"examples": 32, "base": {"layer_input_l2_mean": {}, "token0_max_abs": {}, "other_tokens_max_abs": {}}}
    real = b["attention_mask"].bool()
    for i in range(n_layers):
        x = ab[i]
        out["base"]["layer_input_l2_mean"][i] = float(x.norm(dim=-1)[real].mean())
        out["base"]["token0_max_abs"][i] = float(x[:, 0].abs().amax(-1).mean())
        out["base"]["other_tokens_max_abs"][i] = float(x[:, 1:].abs().amax(-1)[real[:, 1:]].mean())
    # the sink's keys and values: layer by layer, position 0 of the one-token sequence <|im_start|>
    first = tok.convert_tokens_to_ids("<|im_start|>")
    seen, hooks = {}, []
    for i, layer in enumerate(base.model.layers):
        for j, proj in enumerate((layer.self_attn.k_proj, layer.self_attn.v_proj)):
            hooks.append(proj.register_forward_hook(lambda m, a, o, k=(i, j): seen.__setitem__(k, o[0, 0].detach())))
    with torch.no_grad():
        base.model(input_ids=torch.tensor([[first]]))
    for x in hooks:
        x.remove()
    cos = lambda a, c: float(torch.nn.functional.cosine_similarity(a, c, dim=-1).mean())
    saved = dict(archs.FAMILIES)
    out["variants"] = {}
    for name, spec, override, init in VARIANTS:
        try:
            if override:
                for k, fam in saved.items():
                    if fam.causal:
                        archs.FAMILIES[k] = dataclasses.replace(fam, gates=fam.gates.model_copy(update=override))
            torch.manual_seed(0)
            m = copy.deepcopy(base)
            peltc.compile_model(spec_text(spec), m)
        finally:
            archs.FAMILIES.update(saved)
        m.eval()
        if init == "sink":
            enc = next(x for x in m.modules() if isinstance(x, PrefixEncoder))
            kv = torch.stack([torch.stack([seen[(i, 0)].expand(enc.length, -1), seen[(i, 1)].expand(enc.length, -1)])
                              for i in range(n_layers)])
            enc.init_kv(kv)
        with observe_prefix_attention(m) as mass:
            f, a = run(m)
        gates = {}
        for (inst, layer, point), v in read_gates(m).items():
            gates.setdefault(f"{inst}/{point}", []).append(float(v.mean()))
        r = {"feature_cosine_to_base": cos(f, fb), "feature_relative_change": float((f - fb).norm() / fb.norm()),
             "token0_max_abs": {i: float(a[i][:, 0].abs().amax(-1).mean()) for i in range(n_layers)},
             "prefix_mass": {int(k): float(v) for k, v in mass.items()},
             "gates_mean": {k: sum(v) / len(v) for k, v in gates.items()}}
        out["variants"][name] = r
        print(f"{name}: cosine {r['feature_cosine_to_base']:.3f}, change {r['feature_relative_change']:.3f}, "
              f"token 0 max |x| layer 15 {r['token0_max_abs'][15]:.0f} (base {out['base']['token0_max_abs'][15]:.0f}), "
              f"prefix mass max {max(r['prefix_mass'].values(), default=0):.3f}", flush=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
