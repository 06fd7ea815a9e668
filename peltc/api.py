"""The library API: compile a spec onto a loaded model, save its trained PELT parameters, load them
onto a fresh copy of the base model.

    import peltc
    from peltc.api import load_adapter, save_adapter
    from peltc.compiler.archs import packaged_model_dir
    path = packaged_model_dir()        # the packaged MiniLM, or any model directory / Hub name
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    report = peltc.compile_model("specs/unipelt_apl.pelt", model)
    print(report.render())
    ...                                # train
    save_adapter(model, "adapter/")
    fresh = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    load_adapter(fresh, "adapter/")
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from peltc.compiler.ir import IR
from peltc.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from peltc.compiler.torch.report import Report

Spec = Union[str, Path, IR]


def _looks_like_path(spec: str) -> bool:
    return "\n" not in spec and "{" not in spec and (spec.endswith(".pelt") or Path(spec).is_file())


# The spec text each compiled model was built from (saved into its artifact's manifest).
_SPEC_TEXT: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def _spec_text(spec: Spec) -> tuple[str, str]:
    """(text, file name) of a spec given as a path or as .pelt text."""
    if isinstance(spec, Path) or _looks_like_path(spec):
        p = Path(spec)
        try:
            return p.read_text(encoding="utf-8"), str(p)
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read spec '{spec}': {getattr(e, 'strerror', None) or e}", code="U001") from None
    return spec, "<string>"


def build_spec_ir(spec: Spec, model: "nn.Module") -> IR:
    """The resolved IR of ``spec`` (a path, .pelt text or an IR) against ``model``'s config."""
    if isinstance(spec, IR):
        return spec
    from peltc.compiler.pipeline import build_ir
    text, file = _spec_text(spec)
    return build_ir(text, file, model=model.config.to_dict()).ir


def compile_model(spec: Spec, model: "nn.Module") -> "Report":
    """Rewrite ``model`` in place as ``spec`` says; return the rewrite `Report`.

    ``spec`` is a path to a .pelt file, .pelt text, or an already resolved IR. The spec is checked
    against ``model.config`` (raises `SpecError`), then applied (raises `CompileError` when the
    loaded model cannot take it). Afterwards only PELT parameters and the task head train.
    """
    from peltc.compiler.torch.rewrite import apply
    report = apply(build_spec_ir(spec, model), model)
    if not isinstance(spec, IR):
        _SPEC_TEXT[model] = _spec_text(spec)[0]
    return report


def save_adapter(model: "nn.Module", out_dir: Union[str, Path]) -> Path:
    """Save what ``model`` trains — its PELT parameters and the task head — to ``out_dir``: one
    safetensors file and a manifest (names, shapes, sha256, the spec and its resolved IR, the base
    model, versions), written atomically. ``model`` must have been compiled by `compile_model`.
    A prefix's reparameterisation MLP is folded into plain prefixes first (identical outputs).
    Returns ``out_dir``."""
    from peltc.compiler.torch.artifact import save_artifact
    from peltc.compiler.torch.compiled import compiled
    from peltc.compiler.torch.rewrite import fold_prefix
    from peltc.errors import CompileError
    c = compiled(model)
    if c.runs:
        raise CompileError(f"this model routes {len(c.runs)} runs on one base (peltc.load_runs); each run's artifact "
                           "is already saved in its own folder", code="C019",
                           help="save a single run's compiled model")
    ir = c.ir
    fold_prefix(model)
    base = getattr(model.config, "_name_or_path", "") or ir.settings.model or "<model>"
    return save_artifact(model, out_dir, ir_dict=ir.to_dict(), spec_text=_SPEC_TEXT.get(model, ""),
                         spec_hash=ir.settings.spec_hash or "", base_model=str(base))


def load_adapter(model: "nn.Module", adapter_dir: Union[str, Path]) -> "Report":
    """Apply a saved artifact to ``model``, a freshly loaded copy of the base model it was trained
    on: the artifact's spec (its resolved IR) is compiled onto ``model`` and every saved tensor is
    loaded strictly (same names, shapes and dtypes, nothing missing or extra; the checksum and the
    base model's config are checked — `ArtifactError` otherwise). Returns the rewrite `Report`."""
    from peltc.compiler.torch.artifact import load_into, read_artifact
    from peltc.compiler.torch.rewrite import apply, fold_prefix
    manifest, tensors, ir = read_artifact(adapter_dir)
    report = apply(ir, model)
    fold_prefix(model)
    load_into(model, manifest, tensors, spec_hash=ir.settings.spec_hash)
    if manifest.get("spec"):
        _SPEC_TEXT[model] = manifest["spec"]
    return report


# --- several runs on one base ------------------------------------------------------------------------

def artifact_dir(run_dir: Union[str, Path]) -> Path:
    """The artifact of a run folder (``RUN/adapter``), or the folder itself when it is an artifact
    (holds ``manifest.json``). A folder that is neither is ArtifactError A002; a missing one UsageError U008."""
    from peltc.errors import ArtifactError
    d = Path(run_dir)
    if not d.is_dir():
        raise UsageError(f"run folder '{d}' does not exist", code="U008")
    if (d / "manifest.json").is_file():
        return d
    if (d / "adapter" / "manifest.json").is_file():
        return d / "adapter"
    raise ArtifactError(f"'{d}' holds no artifact (no adapter/manifest.json): not a finished run folder", code="A002",
                        help="give run folders written by `peltc compile --train` (or artifact folders)")


def run_name(run_dir: Union[str, Path]) -> str:
    """How a run is named by default: its folder's name (for an artifact folder ``RUN/adapter``: RUN's)."""
    d = Path(run_dir).resolve()
    return d.parent.name if d.name == "adapter" and (d / "manifest.json").is_file() else d.name


def resolve_run(run: Union[int, str, Path], dirs: list[Path], names: list[str]) -> int:
    """The index of a run given by index, by name (its folder's name by default) or by folder path (as
    given, or resolved); UsageError U124 for no such run or a name several runs share."""
    if isinstance(run, bool):
        run = int(run)
    if isinstance(run, int):
        if 0 <= run < len(names):
            return run
        raise UsageError(f"no run {run}: {len(names)} run(s) are loaded", code="U124")
    s = str(run)
    try:
        resolved = Path(s).expanduser().resolve()
    except (OSError, RuntimeError):
        resolved = None
    by_path = [i for i, d in enumerate(dirs) if resolved is not None and Path(d).resolve() == resolved]
    if by_path:
        return by_path[0]
    by_name = [i for i, n in enumerate(names) if n == s]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise UsageError(f"run {s!r} is ambiguous: {len(by_name)} runs are named so", code="U127",
                         help="name it by its folder path: " + ", ".join(str(dirs[i]) for i in by_name))
    from peltc.errors import did_you_mean
    raise UsageError(f"no run named {s!r}", code="U124", help=did_you_mean(s, names, "runs"))


def check_same_base(run_dirs: list, manifests: list[dict]) -> None:
    """All runs were trained on one base model (model_type and config hash): ArtifactError A023 otherwise."""
    from peltc.errors import ArtifactError
    first = manifests[0]["base_model"]
    for d, m in zip(run_dirs[1:], manifests[1:]):
        b = m["base_model"]
        if b.get("model_type") != first.get("model_type") or b.get("config_hash") != first.get("config_hash"):
            raise ArtifactError(f"runs on different base models: '{run_dirs[0]}' was trained on {first.get('name')!r} "
                                f"({first.get('model_type')}, config {str(first.get('config_hash'))[:12]}…), '{d}' "
                                f"on {b.get('name')!r} ({b.get('model_type')}, config {str(b.get('config_hash'))[:12]}…)",
                                code="A023", help="serve together only runs trained on the same base model")


class Runs:
    """Several trained runs on one base model, each example of a batch routed to its own run
    (`load_runs`). Call it with one run per example — an index, a name, or a folder path:

        out = runs(["sst2-lora", "rte-apl", 0], input_ids=…, attention_mask=…)
        out.logits            # (batch, widest num_labels): row b = its run's logits, padded with -inf
        runs.unpad(out.logits, ["sst2-lora", "rte-apl", 0])     # [tensor of its run's num_labels, …]

    ``model`` is the shared model (a routed model refuses to run without a route, and to merge);
    ``names``, ``dirs``, ``manifests``, ``num_labels`` and ``labels`` (None for regression or when the
    manifest does not record them) are per run, in the order given."""

    def __init__(self, model: "nn.Module", dirs: list[Path], names: list[str], manifests: list[dict]):
        self.model = model
        self.dirs = dirs
        self.names = names
        self.manifests = manifests
        from torch import nn

        from peltc.compiler.torch.compiled import compiled
        last = model.get_submodule(compiled(model).head_paths[-1]).pelt_heads
        self.num_labels = [[m for m in last[f"r{i}"].modules() if isinstance(m, nn.Linear)][-1].out_features
                           for i in range(len(names))]
        self.labels = [list(m["labels"]) if m.get("labels") else None for m in manifests]

    def __len__(self) -> int:
        return len(self.names)

    def index(self, run: Union[int, str, Path]) -> int:
        """The index of a run given by index, name or folder path; UsageError U124 otherwise."""
        return resolve_run(run, self.dirs, self.names)

    def route(self, runs) -> "torch.Tensor":
        """(batch,) long: the run index of each example."""
        import torch
        if isinstance(runs, torch.Tensor):
            out = runs.to(torch.long).reshape(-1)
            if out.numel() and (int(out.min()) < 0 or int(out.max()) >= len(self.names)):
                raise UsageError(f"a route names run {int(out.max()) if int(out.max()) >= len(self.names) else int(out.min())}:"
                                 f" {len(self.names)} run(s) are loaded", code="U124")
            return out
        return torch.tensor([self.index(r) for r in runs], dtype=torch.long)

    def __call__(self, runs, **inputs):
        """The shared model's output for ``inputs`` (no labels), each example through run ``runs[b]``."""
        from peltc.compiler.torch.compiled import compiled
        route = self.route(runs)
        state = compiled(self.model).state
        if "labels" in inputs:
            raise UsageError("a routed model takes no labels (each run's loss is its own)", code="U128")
        state.route = route.to(next(self.model.parameters()).device)
        try:
            return self.model(**inputs)
        finally:
            state.route = None

    def unpad(self, logits, runs) -> list:
        """Each row of padded ``logits`` cut to its run's number of labels."""
        route = self.route(runs)
        return [logits[b, ..., :self.num_labels[int(r)]] for b, r in enumerate(route)]


def load_runs(run_dirs: list[Union[str, Path]], model: "nn.Module", names: list[str] | None = None) -> Runs:
    """Put several trained runs on ``model``, one fresh copy of the base model they were all trained on
    (any ``AutoModelForSequenceClassification`` of it; its own head is replaced): each artifact — any mix of
    adapter, prefix, LoRA, BitFit and gates, with its own task head (number of labels, head pooling) —
    is compiled onto the model under its own instance names (``r<i>_<name>``) and loaded strictly.
    Returns a `Runs`, which routes each example of a batch to its run: every example's logits equal
    those of its run loaded alone (`load_adapter`). ``names`` default to the run folders' names.

    Errors: a folder that is not a run or artifact (A002), runs trained on different base models (A023),
    a base model other than theirs (A008), a run that cannot share the base (full fine-tuning; C020)."""
    from peltc.compiler.torch.artifact import load_run_into, load_tensors, read_ir
    from peltc.compiler.torch.rewrite import attach_runs
    if not run_dirs:
        raise UsageError("no runs given", code="U134")
    arts = [artifact_dir(d) for d in run_dirs]
    loaded = [load_tensors(a) for a in arts]
    check_same_base(run_dirs, [m for m, _ in loaded])
    from peltc.compiler.torch.artifact import check_base
    check_base(model, loaded[0][0])
    irs = [read_ir(m, where=a) for a, (m, _) in zip(arts, loaded)]
    shapes = [{n: tuple(t.shape) for n, t in tensors.items()} for _, tensors in loaded]
    attach_runs(irs, model, shapes)
    for i, (m, tensors) in enumerate(loaded):
        load_run_into(model, i, m, tensors)
    model.eval()
    names = list(names) if names is not None else [run_name(d) for d in run_dirs]
    if len(names) != len(arts):
        raise UsageError(f"{len(names)} names for {len(arts)} runs", code="U135")
    return Runs(model, [Path(d).resolve() for d in run_dirs], names, [m for m, _ in loaded])


# --- device, precision, torch.compile (runtime/speed.py) ---------------------------------------------

def speed(device: str = "auto", precision: str = "fp32", torch_compile: bool = False):
    """A checked `runtime.speed.Speed`: ``device`` auto (CUDA when present, else the CPU) | cpu | cuda[:N],
    ``precision`` fp32 | bf16 | fp16 (autocast; parameters stay fp32), ``torch_compile``. A device that is not
    there (U196) or a precision it cannot run (U197: fp16 on a CPU, bf16 on a GPU without it) is refused.

        s = peltc.api.speed(precision="bf16", torch_compile=True)
        TrainingArguments(..., **peltc.api.trainer_arguments(s))    # training: the Trainer autocasts
        peltc.api.prepare(model, s)                                 # serving: on the device, compiled
        with peltc.api.autocast(s), torch.no_grad(): model(**batch)
    """
    from peltc.runtime.speed import Speed, resolve
    return resolve(Speed(device=device, precision=precision, torch_compile=torch_compile))


def trainer_arguments(s) -> dict[str, Any]:
    """The ``TrainingArguments`` keywords of a `speed` (``use_cpu``, ``bf16``, ``fp16``, ``torch_compile``)."""
    from peltc.runtime.speed import training_arguments
    return training_arguments(s)


def prepare(model: "nn.Module", s) -> "nn.Module":
    """``model`` on the device of a `speed`, its forward compiled (dynamic shapes) when it says so."""
    from peltc.runtime.speed import serving
    return serving(model, s)


def autocast(s):
    """The autocast context of a `speed` (none in fp32)."""
    from peltc.runtime.speed import autocast as _autocast
    return _autocast(s)
