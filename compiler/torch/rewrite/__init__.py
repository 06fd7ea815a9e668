"""The one package that mutates ``nn.Module``s: apply a resolved IR to a loaded Hugging Face model.

    report = apply(ir, model)       # attach everything, freeze the base, return a Report
    fold_prefix(model)              # prefix MLPs → plain per-layer prefixes (identical outputs)
    merge(model)                    # ungated LoRA / BitFit → base weights (zero-overhead inference)
    disable(model, "kv")            # switch one instance off (ablations, tests)
    force_gates(model, 0.0)         # pin every gate (or one instance's) to a value
    serve_fused(model, False)       # no-grad forwards without the serving fusions (compiler/torch/served.py)
    attach_runs([ir0, ir1], model, head_shapes)   # several runs on one base, each example routed (`routing`)

What ``apply`` does, in order (nothing is touched before every target resolved):

1. resolve every attachment to module paths (``targets``) and check they exist, that the family
   supports the method (prefix needs the AttentionInterface) and that gates can be computed;
2. freeze every base parameter, except the task head (``family.head``, always trained) — and
   except when the spec has ``finetune``, the only method that trains base weights;
   Then, for prefixes with ``init tokens``, one forward of the (still bare, frozen) base model on
   ``prefix.token_ids`` records each covered layer's key and value projections of those tokens;
3. attach: adapters wrap the LayerNorm of their value point (`AdapterPoint`), LoRA wraps its
   linear (`LoraLinear`), BitFit adds a delta + forward hook on its bias-holding modules, prefixes
   live on the attention modules and run through a registered attention function (starting at the
   recorded keys and values with ``init tokens``); every new
   parameter's path contains ``pelt_`` (``...output.LayerNorm.pelt_adapters.<instance>.down.weight``);
4. install the `PeltState` hooks (mask, layer inputs, gate-source values), fuse sigmoid gates that
   read the same value of the same layer, and the head-pooling hook for ``head { pool mean }``.

Prefixes also switch the attention implementation, as the last step of 1: the model first gets its
own copy of its config (the caller's config object, perhaps shared with other models, is never
changed), then each covered attention module is checked to really call the prefix attention
function (C015 otherwise, with the model put back as it was).

Modules: ``inject`` (``apply`` and ``attach_runs``: plan each run with `plan.plan_run`, then inject it;
switch the attention implementation; install the state and pooling hooks), ``attach`` (one attachment's
modules at its targets, by method), ``after`` (fold, merge, switch off, pin gates, serving fusions).
"""

from peltc.compiler.torch.rewrite.after import compile_forward, disable, fold_prefix, force_gates, merge, serve_fused
from peltc.compiler.torch.rewrite.inject import apply, attach_runs

__all__ = ["apply", "attach_runs", "fold_prefix", "merge", "disable", "force_gates", "serve_fused"]
