"""peft's prompt-tuning format, both ways (`peft_io.read_peft` and `peft_export.export_peft` call here).

    <dir>/adapter_config.json        peft_type PROMPT_TUNING, task_type SEQ_CLS, num_virtual_tokens n,
                                     token_dim E, num_transformer_submodules 1, num_layers, num_attention_heads,
                                     modules_to_save (the task head)
    <dir>/adapter_model.safetensors  prompt_embeddings (n, E), base_model.<head module>.<param>

peft saves a P-tuning adapter (P_TUNING) the same way: its encoder's output, folded (``prompt_embeddings``);
it imports as a plain prompt, as peltc's own artifacts hold a folded P-tuning instance. Export writes a
run whose only method is one prompt (a ``const`` / ``scalar`` gate folded into the vectors: g·P) with the
model's own head pooling; anything else is listed and refused by the caller (U120).
"""

from __future__ import annotations

from typing import Any

import torch

from peltc.compiler.archs import Family
from peltc.compiler.ir import IR
from peltc.errors import ArtifactError

PROMPT_TYPES = ("PROMPT_TUNING", "P_TUNING")
EMBEDDINGS = "prompt_embeddings"
HEAD_PREFIX = "base_model."        # prompt learning: peft's base_model is the transformers model itself
INSTANCE = "soft"


def prompt_param(fam: Family, instance: str = INSTANCE) -> str:
    """The name of a prompt instance's vectors on a compiled task model of ``fam``."""
    return f"{fam.base}.pelt_prompt.{instance}.embedding.weight"


def read_prompt(config: dict[str, Any], raw: dict[str, torch.Tensor], where: str, fam: Family
                ) -> tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(n, the tensors by peltc's names, the head's tensors) of a peft prompt-tuning / P-tuning adapter."""
    if config.get("task_type") not in ("SEQ_CLS", None):
        raise ArtifactError(f"{where} has task_type {config.get('task_type')!r}; peltc imports sequence-"
                            "classification adapters (SEQ_CLS)", code="A021")
    if int(config.get("num_transformer_submodules") or 1) != 1:
        raise ArtifactError(f"{where}: a prompt for {config['num_transformer_submodules']} transformer "
                            "submodules (an encoder-decoder model)", code="A021")
    emb = raw.get(EMBEDDINGS)
    if emb is None or emb.dim() != 2:
        raise ArtifactError(f"{where}: the adapter holds no {EMBEDDINGS} (n, token_dim) tensor", code="A020")
    n = int(config.get("num_virtual_tokens") or emb.shape[0])
    if int(emb.shape[0]) != n:
        raise ArtifactError(f"{where}: {EMBEDDINGS} has {emb.shape[0]} rows, num_virtual_tokens is {n}",
                            code="A020")
    head, other = {}, []
    for key, t in raw.items():
        if key == EMBEDDINGS:
            continue
        name = key[len(HEAD_PREFIX):] if key.startswith(HEAD_PREFIX) else key
        name = name.replace(".modules_to_save.default.", ".").replace(".modules_to_save.", ".")
        if any(name.startswith(h + ".") for h in fam.head):
            head[name] = t
        else:
            other.append(key)
    if other:
        raise ArtifactError(f"{where}: tensors a peltc spec cannot hold: {', '.join(sorted(other)[:4])}",
                            code="A021", help="peltc imports a prompt (prompt_embeddings) and the task head")
    return n, {prompt_param(fam): emb, **head}, head


def spec_lines(n: int) -> list[str]:
    """The `prompt` instance of an imported adapter."""
    return [f"prompt {INSTANCE} {{", f"  length {n}", "}"]


def refusals(ir: IR) -> list[str]:
    """What keeps a run with a prompt from peft's prompt-tuning format, one line each (none: it exports)."""
    prompts = [i for i in ir.instances() if i.method == "prompt"]
    out = [f"{i.name} ({i.method}): peft's prompt-tuning format holds one prompt and nothing else"
           for i in ir.instances() if i.method != "prompt"]
    out += [f"{i.name}: a second prompt (peft holds one)" for i in prompts[1:]]
    pool = (ir.settings.head or {}).get("pool")
    if pool not in (None, "pooler"):
        out.append(f"head {{ pool {pool} }}: the classifier reads the masked mean over the tokens, past the "
                   "model's pooler; a peft model's head pools as the base model does")
    return out


def export_prompt(ir: IR, fam: Family, tensors: dict[str, torch.Tensor], base_name: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(peft's tensors, its adapter_config, the instance) for a run whose one method is a prompt."""
    inst = next(i for i in ir.instances() if i.method == "prompt")
    key = prompt_param(fam, inst.name)
    emb = tensors.get(key)
    if emb is None:
        raise ArtifactError(f"the artifact lacks the prompt tensor {key!r} (is it folded?)", code="A007")
    g = inst.gate
    scale = 1.0
    if g.kind == "const":
        scale = float(g.value) if g.value is not None else 1.0
    elif g.kind == "scalar":
        w = tensors.get(f"{fam.base}.pelt_prompt.{inst.name}.gate.weight")
        if w is None:
            raise ArtifactError(f"the artifact lacks the scalar gate of {inst.name}", code="A007")
        scale = float(torch.sigmoid(w.detach().float()).reshape(-1)[0])
    out = {EMBEDDINGS: (emb.float() * scale).to(emb.dtype).contiguous()}
    heads = [h for h in fam.head if any(n.startswith(h + ".") for n in tensors)]
    for n, t in tensors.items():
        if any(n.startswith(h + ".") for h in heads):
            out[HEAD_PREFIX + n] = t.contiguous()
    cfg = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "SEQ_CLS",
        "base_model_name_or_path": base_name,
        "num_virtual_tokens": int(emb.shape[0]),
        "token_dim": int(emb.shape[1]),
        "num_transformer_submodules": 1,
        "num_attention_heads": int(ir.settings.dims["heads"]),
        "num_layers": int(ir.settings.dims["layers"]),
        "prompt_tuning_init": "RANDOM",
        "modules_to_save": heads or None,
        "inference_mode": True,
    }
    return out, cfg, inst.name
