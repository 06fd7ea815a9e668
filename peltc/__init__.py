"""peltc — a declarative language and compiler for parameter-efficient tuning.

    import peltc
    report = peltc.compile_model("specs/unipelt_apl.pelt", model)   # needs the torch extra
"""

__version__ = "0.1.0"


def compile_model(spec, model):
    """Rewrite ``model`` (a loaded Hugging Face model) in place as ``spec`` says; see `peltc.api`."""
    from peltc.api import compile_model as _compile   # torch is imported only when compiling
    return _compile(spec, model)


__all__ = ["compile_model", "__version__"]
