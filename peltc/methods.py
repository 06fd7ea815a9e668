"""The public extension API: define a method of the language in Python and register it (docs/extending.md).

    from peltc.methods import Method, ParamSpec, Drawing
    VERA = Method("vera", "…", {"rank": ParamSpec("int", 256, "rank r", min=1)},
                  frozenset({"attention.query", "attention.value"}), count=…, build=…)

A file holding such module-level `Method`s is a plug-in: `peltc --plugin FILE …` (any command that reads a
spec or a run), `import "my_methods.py"` in a spec, `load_plugin(FILE)` in Python; an installed package
registers them with an entry point in group ``peltc.methods``. Built-ins and plug-ins are rows of one
registry (`METHODS`). Torch-free: a plug-in's torch part runs only when a model is compiled.
"""

from __future__ import annotations

from pathlib import Path

from peltc.compiler import methods as _registry
from peltc.compiler.method import HOSTS, CountContext, Drawing, Method, ParamSpec
from peltc.compiler.schema import METHODS
from peltc.errors import UsageError

__all__ = ["Method", "ParamSpec", "Drawing", "CountContext", "HOSTS", "METHODS", "register", "unregister",
           "load_plugin", "load_entry_point", "GROUP"]

GROUP = _registry.GROUP
unregister = _registry.unregister


def _usage(e: _registry.PluginProblem) -> UsageError:
    if e.kind == "missing":
        return UsageError(e.message, code="U170", help=e.help)
    if e.kind == "raises":
        return UsageError(e.message, code="U171", help=e.help)
    if e.kind == "clash":
        return UsageError(e.message, code="U173", help=e.help)
    if e.kind == "entry":
        return UsageError(e.message, code="U171", help=e.help)
    return UsageError(e.message, code="U172", help=e.help)


def register(method: Method, origin: str = "<code>") -> Method:
    """Add ``method`` to the registry (checked; UsageError U172 / U173 when it is not valid or its name taken)."""
    try:
        return _registry.register(method, origin)
    except _registry.PluginProblem as e:
        raise _usage(e) from None


def load_plugin(path: str | Path) -> list[str]:
    """Run plug-in file ``path`` and register its methods; their names. UsageError U170–U173 when it cannot."""
    try:
        return _registry.load_file(path)
    except _registry.PluginProblem as e:
        raise _usage(e) from None


def load_entry_point(name: str) -> list[str] | None:
    """Load the installed ``peltc.methods`` entry point ``name`` (None: none installed; U171 if it fails)."""
    try:
        return _registry.load_entry_point(name)
    except _registry.PluginProblem as e:
        raise _usage(e) from None
