"""The method registry's door for plug-ins: check a `Method` and add it to `schema.METHODS` (the one table
every reader looks methods up in, built-ins included), from a Python file (`--plugin FILE`, `import
"my_methods.py"` in a spec) or from an installed package's entry point (group ``peltc.methods``).

A plug-in file is plain Python: every module-level `Method` in it is registered (docs/extending.md). An
entry point names a `Method`, a list of them, or a module holding them. Loading is idempotent per source;
a name may belong to one source only (a built-in's name never). What goes wrong is a `PluginProblem` with
a ``kind`` (missing / raises / invalid / clash / entry); the caller turns it into its own error code (a
spec's `import` into E14x with a span, the command line into U17x). Torch-free: nothing here imports a
plug-in's torch part, which runs only when a model is compiled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Iterable

from peltc.compiler import schema
from peltc.compiler.method import HOSTS, Drawing, Method, ParamSpec

GROUP = "peltc.methods"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_RESERVED = {"model", "extends", "import", "remove", "layers", "at", "gate", "from", *schema.SECTIONS}
_TYPES = ("int", "float", "choice", "int_or_none", "bool", "str")
_LOADED: dict[str, list[str]] = {}      # source key (a resolved file path, "entry point NAME") → its methods
_DIGESTS: dict[str, str] = {}           # a plug-in file loaded here → the sha256 of the bytes it ran


class PluginProblem(Exception):
    """A plug-in that cannot be used: ``kind`` is missing / raises / invalid / clash / entry."""

    def __init__(self, kind: str, message: str, help: str = ""):
        super().__init__(message)
        self.kind, self.message, self.help = kind, message, help


def origin_of(name: str) -> str | None:
    """Where method ``name`` came from ("built-in", a plug-in file, "entry point …"); None: unknown."""
    m = schema.METHODS.get(name)
    return None if m is None else m.origin


def plugin_methods() -> dict[str, Method]:
    return {n: m for n, m in schema.METHODS.items() if not m.builtin}


# --- checking one method ----------------------------------------------------------------------------

def _param_problem(name: str, p: Any) -> str | None:
    if not isinstance(p, ParamSpec):
        return f"parameter '{name}' is {type(p).__name__}, not a ParamSpec"
    if not _NAME.match(name):
        return f"parameter name '{name}' is not a NAME (letters, digits, _ and -)"
    if p.type not in _TYPES:
        return f"parameter '{name}' has type {p.type!r}; types: {', '.join(_TYPES)}"
    if p.type == "choice" and (not p.choices or (p.default is not None and p.default not in p.choices)):
        return f"choice parameter '{name}' needs choices that include its default"
    if p.type in ("int", "float", "int_or_none") and isinstance(p.default, (int, float)) \
            and not isinstance(p.default, bool):
        bad = p.out_of_range(float(p.default))
        if bad is not None:
            return f"parameter '{name}': default {p.default} is out of its own range ({bad})"
    return None


def check_method(m: Any, origin: str) -> Method:
    """``m`` checked as a plug-in method: the row to register (``lr`` added, ``origin`` set), else
    PluginProblem("invalid")."""
    def bad(why: str) -> PluginProblem:
        label = getattr(m, "name", "?")
        return PluginProblem("invalid", f"{origin}: method '{label}' is not valid: {why}",
                             "docs/extending.md lists what a Method needs")

    if not isinstance(m, Method):
        raise bad(f"it is {type(m).__name__}, not a peltc.methods.Method")
    if not isinstance(m.name, str) or not _NAME.match(m.name) or m.name in _RESERVED:
        raise bad("its name must be a NAME (letters, digits, _ and -) and no keyword of the language")
    if not isinstance(m.params, dict):
        raise bad("params must be a dict of name → ParamSpec")
    for name, p in m.params.items():
        why = _param_problem(name, p)
        if why:
            raise bad(why)
    known = set(schema.LAYER_POINTS) | set(schema.GLOBAL_POINTS) | {schema.WHOLE_LAYER}
    points = frozenset(m.points) if isinstance(m.points, (set, frozenset, list, tuple)) else frozenset()
    if not points or not points <= known:
        raise bad(f"points must be a non-empty set of {', '.join(sorted(known))}")
    if not set(m.default_at) <= points:
        raise bad("default_at must name points it may attach at")
    if m.host not in HOSTS:
        raise bad(f"host must be one of {', '.join(HOSTS)}")
    if not callable(m.count):
        raise bad("count must be a function of a CountContext (its trainable parameters per attachment)")
    if m.host == "linear" and not (callable(m.build) or callable(m.attach)):
        raise bad("a method on linears needs build(ctx) -> nn.Module (or attach(ctx))")
    if m.host != "linear" and not callable(m.attach):
        raise bad(f"a method on host '{m.host}' needs attach(ctx)")
    if m.host == "linear" and not points <= {p for p, k in schema.LAYER_POINTS.items() if k == "linear"}:
        raise bad("a method on linears attaches at linear points only (attention.query, ffn.up, …)")
    if not isinstance(m.drawing, Drawing):
        raise bad("drawing must be a peltc.methods.Drawing")
    params = m.params if "lr" in m.params else {**m.params, "lr": schema.LR}
    return dataclasses.replace(m, params=params, points=points, origin=origin)


def register(m: Method, origin: str = "<code>") -> Method:
    """Add plug-in method ``m`` (checked) to the registry; the same source may register it again."""
    row = check_method(m, origin)
    have = schema.METHODS.get(row.name)
    if have is not None and have.builtin:
        raise PluginProblem("clash", f"{origin}: method '{row.name}' clashes with the built-in method of that name",
                            "give the plug-in method another name")
    if have is not None and have.origin != origin:
        raise PluginProblem("clash", f"{origin}: method '{row.name}' is already defined by {have.origin}",
                            "load one of the two plug-ins, or rename one method")
    schema.METHODS[row.name] = row
    schema.params_model.cache_clear()
    return row


def unregister(name: str) -> None:
    """Drop plug-in method ``name`` (tests; a built-in stays)."""
    m = schema.METHODS.get(name)
    if m is not None and not m.builtin:
        del schema.METHODS[name]
        schema.params_model.cache_clear()
        for names in _LOADED.values():
            if name in names:
                names.remove(name)


def _methods_in(obj: Any) -> list[Any]:
    if isinstance(obj, Method):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return list(obj)
    return [v for k, v in vars(obj).items() if isinstance(v, Method) and not k.startswith("_")] \
        if hasattr(obj, "__dict__") else [obj]


def _register_all(found: Iterable[Any], origin: str) -> list[str]:
    found = list(found)
    if not found:
        raise PluginProblem("invalid", f"{origin} defines no method (no module-level peltc.methods.Method)",
                            "define a Method at the top level of the file (docs/extending.md)")
    rows = [check_method(m, origin) for m in found]    # all checked before any is registered
    return [register(r, origin).name for r in rows]


def _raised(origin: str, e: BaseException) -> PluginProblem:
    frames = traceback.extract_tb(e.__traceback__)
    where = next((f"line {f.lineno}" for f in reversed(frames) if f.filename == origin), "")
    return PluginProblem("raises", f"plug-in {origin} raised {type(e).__name__} on import"
                                   f"{' at ' + where if where else ''}: {e}",
                         "fix the plug-in (python -c \"import runpy; runpy.run_path('FILE')\" shows the traceback)")


# --- sources ------------------------------------------------------------------------------------------

def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_digest(origin: str) -> str | None:
    """The sha256 of the plug-in file ``origin`` as this process ran it (a file edited since it was loaded
    still answers for the code that runs), else of the file as it is; None for an origin that is no file (an
    entry point)."""
    if origin in _DIGESTS:
        return _DIGESTS[origin]
    return file_digest(origin) if Path(origin).is_file() else None


def load_file(path: str | Path) -> list[str]:
    """Run plug-in file ``path`` and register its methods; returns their names (again: the same)."""
    p = Path(path)
    try:
        key = str(p.resolve())
        source = p.read_bytes()
    except (OSError, ValueError, RuntimeError) as e:
        raise PluginProblem("missing", f"cannot read plug-in '{path}': {getattr(e, 'strerror', None) or e}",
                            "check the path (in a spec: relative to the spec)") from None
    if key in _LOADED and _LOADED[key]:
        return list(_LOADED[key])
    modname = "peltc_plugin_" + hashlib.sha256(key.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(modname, key)
    if spec is None or spec.loader is None or not key.endswith(".py"):
        raise PluginProblem("missing", f"'{path}' is not a Python file", "a plug-in is a .py file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    try:
        exec(compile(source, key, "exec"), mod.__dict__)
    except Exception as e:   # the plug-in's own code: any error it raises is the plug-in's
        sys.modules.pop(modname, None)
        raise _raised(key, e) from None
    _LOADED[key] = _register_all(_methods_in(mod), key)
    _DIGESTS[key] = hashlib.sha256(source).hexdigest()
    return list(_LOADED[key])


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points
    return list(entry_points(group=GROUP))


def entry_point_names() -> list[str]:
    """Names of the installed entry points of group ``peltc.methods`` (nothing loaded)."""
    return [ep.name for ep in _entry_points()]


def load_entry_point(name: str) -> list[str] | None:
    """Load the installed entry point ``name`` (its methods registered); None when none is installed."""
    key = f"entry point {GROUP}:{name}"
    if _LOADED.get(key):
        return list(_LOADED[key])
    ep = next((e for e in _entry_points() if e.name == name), None)
    if ep is None:
        return None
    origin = f"{key} ({ep.value})"
    try:
        obj = ep.load()
    except Exception as e:   # the package's own code
        raise PluginProblem("entry", f"the installed plug-in {origin} failed to load: {type(e).__name__}: {e}",
                            "reinstall or fix the package that provides it") from None
    _LOADED[key] = _register_all(_methods_in(obj), origin)
    return list(_LOADED[key])


def find_method(name: str) -> Method | None:
    """Method ``name``: registered, or loaded now from an installed entry point of that name."""
    if name not in schema.METHODS:
        load_entry_point(name)
    return schema.METHODS.get(name)


def plugin_files() -> list[str]:
    """The plug-in files loaded in this process (what `peltc grid` hands each run's process: --plugin)."""
    return sorted(k for k, names in _LOADED.items() if names and not k.startswith("entry point "))


def plugin_record(method_names: Iterable[str]) -> list[dict[str, str]]:
    """What a saved run records about the plug-in methods it uses: name, origin, and a plug-in file's sha256."""
    out = []
    for n in sorted(set(method_names)):
        m = schema.METHODS.get(n)
        if m is None or m.builtin:
            continue
        rec = {"method": n, "origin": m.origin}
        digest = source_digest(m.origin)
        if digest is not None:
            rec["sha256"] = digest
        out.append(rec)
    return out
