"""The anchors of ``bench/overhead.py --anchors``: the same methods built by the reference libraries.

Imported by the benchmark's worker processes (``benchlib.workers``), in peltc's environment ("main") or in a
second one ("anchor", ``--anchor-python``; AdapterHub ``adapters`` 1.3 pins transformers 4.57, which peltc
cannot use). So this module imports neither peltc nor a library at module level.

A *configuration* is ``system@env:method``:

- ``peltc@main:M``  — ``specs/M.pelt`` compiled by peltc (served: + ``fold_prefix``);
- ``ref@ENV:finetune`` / ``ref@ENV:base`` — each environment's references: full fine-tuning (every
  parameter trains, no library) and the plain base model (inference);
- ``torch@main:bitfit`` — BitFit as usually written: the biases train in place (``requires_grad``
  only on every ``*.bias``, plus the task head);
- ``peft@ENV:M`` — peft 0.21: ``LoraConfig`` / ``PrefixTuningConfig`` (task type SEQ_CLS: the
  classifier trains as a ``modules_to_save`` copy). Where: ``main`` for LoRA (same transformers as
  peltc, so peltc / peft isolates the method), ``anchor`` for prefix-tuning (peft's prefix goes in as
  ``past_key_values``, which transformers 5's BERT no longer takes: "Model does not support past key
  values which are required for prefix tuning");
- ``adapters@anchor:M`` — AdapterHub ``adapters`` 1.3 on the HF ``BertForSequenceClassification``
  (``adapters.init``, ``add_adapter``, ``train_adapter``; the HF classifier trains). Served prefix
  configurations are ``eject_prefix_tuning``-ed (the MLP replaced by the flat prefix, as peltc folds).

The hyper-parameters follow peltc's specs (``ANCHOR_NOTES`` says where a library's default differs).
Every anchor trains the classifier as peltc does (``head_trainable``); base weights that train in
place are cloned first (the configurations of a worker share the template's frozen storage).
"""

from __future__ import annotations

import sys
from typing import Any

from benchlib.methods import compile_method

ADAPTER_NAME = "anchor"
SYSTEMS = ("torch", "peft", "adapters")
ENVS = ("main", "anchor")

# method → the anchors that implement it: system → where it runs by default ("main" / "anchor")
ANCHORS: dict[str, dict[str, str]] = {
    "bitfit": {"torch": "main"},
    "lora": {"peft": "main", "adapters": "anchor"},
    "adapter": {"adapters": "anchor"},                 # peft has no bottleneck adapter
    "prefix": {"peft": "anchor", "adapters": "anchor"},
    "unipelt_ap": {"adapters": "anchor"},
    "unipelt_apl": {"adapters": "anchor"},
    "mam": {"adapters": "anchor"},
    "dora": {"peft": "main"},
    "rslora": {"peft": "main"},
    "ia3": {"peft": "main"},
    "prompt": {"peft": "main"},
    "loreft": {"adapters": "anchor"},
}
# where a system can run at all (peft's prefix-tuning needs transformers 4.x)
RUNS_IN = {("torch", m): ENVS for m in ANCHORS} | {("peft", "lora"): ENVS, ("peft", "prefix"): ("anchor",)} | \
    {("peft", m): ENVS for m in ("dora", "rslora", "ia3", "prompt")} | {("adapters", m): ("anchor",) for m in ANCHORS}

ANCHOR_NOTES = {
    "bitfit": "torch: every *.bias trains in place (102,912 on bert-base, as specs/bitfit.pelt) + the head; "
              "peltc trains zero-initialised deltas beside frozen biases",
    "lora": "peft LoraConfig(r=8, lora_alpha=16, target_modules=[query, value], dropout 0); adapters "
            "LoRAConfig(r=8, alpha=16, attn_matrices=[q, v]) — as specs/lora.pelt (adapters' default alpha is 8)",
    "adapter": "adapters SeqBnConfig (Pfeiffer: after the FFN, relu), reduction_factor = hidden / 48 so the "
               "bottleneck is 48 as specs/adapter.pelt (the default 16 gives 48 on bert-base, 24 on MiniLM)",
    "prefix": "peft PrefixTuningConfig(num_virtual_tokens=10, prefix_projection=True, encoder_hidden_size=512); "
              "adapters PrefixTuningConfig(prefix_length=10, bottleneck_size=512, tanh) — as specs/prefix.pelt "
              "(adapters' default length is 30)",
    "unipelt_ap": "adapters ConfigUnion(PrefixTuningConfig(prefix_length=10), SeqBnConfig(reduction_factor="
                  "hidden/48)), use_gating=True on both (UniPELTConfig without its LoRA)",
    "unipelt_apl": "adapters UniPELTConfig with sizes as specs/unipelt_apl.pelt: prefix 10 (MLP 512), SeqBn "
                   "reduction hidden/48 (the default 16: 48 on bert-base, 24 on MiniLM), LoRA r 8 on q, v, alpha 2 "
                   "(the default; its gate multiplies alpha/r, peltc's gate replaces alpha/r); gates: adapters' "
                   "per-example mean of sigmoid(Linear(h, 1)) as peltc's, prefix gate shared over K and V",
    "dora": "peft LoraConfig(r=8, lora_alpha=16, target_modules=[query, value], use_dora=True) — as specs/dora.pelt",
    "rslora": "peft LoraConfig(r=8, lora_alpha=16, target_modules=[query, value], use_rslora=True) — as "
              "specs/rslora.pelt",
    "ia3": "peft IA3Config(target_modules=[key, value, output.dense of the FFN], feedforward_modules=[the FFN's "
           "output.dense]) — as specs/ia3.pelt",
    "prompt": "peft PromptTuningConfig(num_virtual_tokens=20, init RANDOM) — specs/prompt.pelt starts from "
              "vocabulary rows (the init does not change a step's cost)",
    "loreft": "adapters LoReftConfig(r=4, prefix_positions=3, suffix_positions=3, tied_weights=False) on every "
              "layer — as specs/loreft.pelt",
    "mam": "adapters MAMConfig with sizes as specs/mam_adapter.pelt: PrefixTuningConfig(prefix_length=30, "
           "bottleneck_size=512) (MAMConfig's default bottleneck is 800) + ParBnConfig(reduction_factor=1.5, "
           "scaling 4) (default reduction 2: hidden/2)",
}


def env_of(system: str, method: str, forced: str | None) -> str | None:
    """Where ``system`` implements ``method``: ``forced`` if it can run there, else its default; None if
    the system has no such anchor."""
    if method not in ANCHORS or system not in ANCHORS[method]:
        return None
    if forced is not None:
        return forced if forced in RUNS_IN[(system, method)] else None
    return ANCHORS[method][system]


# --- building -------------------------------------------------------------------------------------------

def _adapters_config(method: str, hidden: int):
    import adapters as ah
    red = hidden / 48                                          # bottleneck 48, as the specs
    if method == "lora":
        return ah.LoRAConfig(r=8, alpha=16, attn_matrices=["q", "v"])
    if method == "adapter":
        return ah.SeqBnConfig(reduction_factor=red)
    if method == "prefix":
        return ah.PrefixTuningConfig(prefix_length=10, bottleneck_size=512)
    if method == "unipelt_apl":
        return ah.UniPELTConfig(prefix_tuning=ah.PrefixTuningConfig(prefix_length=10, bottleneck_size=512),
                                adapter=ah.SeqBnConfig(reduction_factor=red), lora=ah.LoRAConfig(r=8, alpha=2))
    if method == "unipelt_ap":
        return ah.ConfigUnion(ah.PrefixTuningConfig(prefix_length=10, bottleneck_size=512, use_gating=True),
                              ah.SeqBnConfig(reduction_factor=red, use_gating=True))
    if method == "loreft":
        return ah.LoReftConfig(r=4, prefix_positions=3, suffix_positions=3, tied_weights=False)
    if method == "mam":
        return ah.MAMConfig(prefix_tuning=ah.PrefixTuningConfig(prefix_length=30, bottleneck_size=512),
                            adapter=ah.ParBnConfig(reduction_factor=1.5))
    raise ValueError(f"adapters: no anchor for {method!r}")


def _peft_config(method: str):
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType
    if method in ("lora", "dora", "rslora"):
        return LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.0,
                          target_modules=["query", "value"], use_dora=method == "dora",
                          use_rslora=method == "rslora")
    if method == "ia3":
        ffn = r".*layer\.\d+\.output\.dense"
        return IA3Config(task_type=TaskType.SEQ_CLS, target_modules=rf".*\.(key|value)|{ffn}",
                         feedforward_modules=ffn)
    if method == "prompt":
        return PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=20)
    if method == "prefix":
        return PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=10, prefix_projection=True,
                                  encoder_hidden_size=512)
    raise ValueError(f"peft: no anchor for {method!r}")


def _own_trainables(model) -> None:
    """Trainable parameters get their own storage (a worker's configurations share the template's)."""
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.clone()


def apply(system: str, method: str, model, served: bool = False):
    """Apply an anchor (or a reference) to ``model``, a fresh copy of the template; return the model to
    run (peft wraps it) and a short report. ``served``: the inference form (AdapterHub prefixes ejected)."""
    info: dict[str, Any] = {}
    if system == "ref":
        if method == "finetune":
            for p in model.parameters():
                p.requires_grad = True
            _own_trainables(model)
        elif method != "base":
            raise ValueError(method)
    elif system == "torch":
        if method != "bitfit":
            raise ValueError(method)
        for n, p in model.named_parameters():
            p.requires_grad = n.endswith(".bias") or n.startswith("classifier.")
        _own_trainables(model)
    elif system == "peft":
        from peft import get_peft_model
        model = get_peft_model(model, _peft_config(method))
        info["config"] = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                          for k, v in model.peft_config["default"].to_dict().items()}
    elif system == "adapters":
        import adapters as ah
        ah.init(model)
        cfg = _adapters_config(method, model.config.hidden_size)
        model.add_adapter(ADAPTER_NAME, config=cfg)
        model.train_adapter(ADAPTER_NAME)
        for n, p in model.named_parameters():
            p.requires_grad = f".{ADAPTER_NAME}" in n or n.startswith("classifier.")
        _own_trainables(model)
        info["config"] = cfg.to_dict()
        if served and method in ("prefix", "unipelt_ap", "unipelt_apl", "mam"):
            model.eject_prefix_tuning(ADAPTER_NAME)
            info["ejected_prefix"] = True
    elif system == "peltc":
        from peltc.compiler.torch.rewrite import fold_prefix
        rep = compile_method(model, method)
        info["report"] = {f: getattr(rep, f) for f in ("pelt_trainable", "head_trainable", "base_trainable",
                                                       "trainable_total", "saved_total")}
        if served:
            info["folded"] = fold_prefix(model)
    else:
        raise ValueError(f"unknown system {system!r}")
    info["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, info


def parse_id(cid: str) -> tuple[str, str, str]:
    """``system@env:method`` → (system, env, method)."""
    sys_env, method = cid.split(":")
    system, env = sys_env.split("@")
    return system, env, method


def versions() -> dict:
    import importlib.metadata as md
    v = {"python": sys.version.split()[0], "executable": sys.executable}
    for p in ("torch", "transformers", "peft", "adapters", "peltc"):
        try:
            v[p] = md.version(p)
        except md.PackageNotFoundError:
            v[p] = None
    return v
