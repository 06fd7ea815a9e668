"""peltc — a declarative language and compiler for parameter-efficient tuning.

    import peltc
    report = peltc.compile_model("specs/unipelt_apl.pelt", model)   # needs the torch extra
    peltc.load_spec("specs/unipelt_apl.pelt", model="minilm")        # a notebook: its diagram and table
    peltc.open_run("runs/apl")                                       # a run's metrics and gate heatmap
"""

from peltc.version import __version__

# The subpackages live at the repository's top level (grammar/, compiler/, runtime/), mapped into
# this namespace by pyproject.toml's package-dir. When Python imports this folder straight from a
# source checkout (``python -m peltc`` run in the repository root, which shadows an installed copy),
# let it find them there too.
import os as _os

_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "grammar", "pelt.lark")) and _root not in __path__:
    __path__.append(_root)
del _os, _root

from peltc.notebook import Run, Spec, load_spec, open_run  # noqa: E402  (torch-free, light)


def compile_model(spec, model):
    """Rewrite ``model`` (a loaded Hugging Face model) in place as ``spec`` says; see `peltc.api`."""
    from peltc.api import compile_model as _compile   # torch is imported only when compiling
    return _compile(spec, model)


def save_adapter(model, out_dir):
    """Save a compiled model's trainable tensors, spec and IR as an artifact; see `peltc.api`."""
    from peltc.api import save_adapter as _save
    return _save(model, out_dir)


def load_adapter(model, artifact_dir):
    """Compile the artifact's spec onto a fresh ``model`` and load its tensors; see `peltc.api`."""
    from peltc.api import load_adapter as _load
    return _load(model, artifact_dir)


def load_runs(run_dirs, model, names=None):
    """Put several trained runs on one base ``model``, each example routed to its own run; see `peltc.api`."""
    from peltc.api import load_runs as _load_runs
    return _load_runs(run_dirs, model, names)


__all__ = ["compile_model", "save_adapter", "load_adapter", "load_runs", "load_spec", "open_run", "Spec", "Run",
           "__version__"]
