"""peltc.compiler.torch — the torch back end: apply a resolved IR to a Hugging Face model.

    from peltc.compiler.torch import apply, fold_prefix, merge, read_gates
    report = apply(ir, model)          # rewrite in place; returns a Report

Modules (one job each): ``state`` (per-forward context), ``gate`` (the one gate module),
``adapter``, ``lora``, ``prefix``, ``bitfit``, ``pooling`` (head mean pooling), ``targets``
(pure path resolution), ``plan`` (resolve and check one run, changing nothing), ``rewrite`` (the only
package that mutates nn.Modules), ``compiled`` (the record of what it did), ``report``,
``artifact`` (saving / loading), ``peft_io`` (peft's LoRA format, import), ``peft_export`` (export to it).
"""

from peltc.compiler.torch.gate import read_gates
from peltc.compiler.torch.report import InstanceReport, Report, build_report
from peltc.compiler.torch.compiled import compiled
from peltc.compiler.torch.rewrite import apply, disable, fold_prefix, force_gates, merge

__all__ = ["apply", "fold_prefix", "merge", "disable", "force_gates", "read_gates", "compiled",
           "build_report", "Report", "InstanceReport"]
