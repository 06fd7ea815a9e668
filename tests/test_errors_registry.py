"""The error registry (peltc/errors.py) against the source: every code raised in grammar/ compiler/
runtime/ peltc/ is registered, with the kind it is raised as (so its exit code is the registry's);
every registered code is raised somewhere; each has one meaning and a help line; docs/errors.md is
the registry's generated table."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from peltc import errors as E

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = [ROOT / d for d in ("grammar", "compiler", "runtime", "peltc")]
CODE = re.compile(r"^[EWACDU]\d{3}$")
CLASSES = {"PeltError", "UsageError", "CompileError", "ArtifactError", "DataError", "SpecError"}
LETTER_KIND = {"A": "ArtifactError", "C": "CompileError", "D": "DataError", "U": "UsageError",
               "E": "error", "W": "warning"}
# code= passed through from another error (re-raised with a better help line, or a SpecError's first)
PASS_THROUGH = {"e.diagnostic.code", "first.code", "code"}


def _sources():
    for d in SOURCE_DIRS:
        for p in sorted(d.rglob("*.py")):
            yield p, ast.parse(p.read_text(encoding="utf-8"), str(p))


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def raise_sites() -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    """(code, kind, where) for every raise site; the non-literal codes; the uncoded error calls."""
    sites, dynamic, uncoded = [], [], []
    for path, tree in _sources():
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where, name = f"{rel}:{node.lineno}", _name(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if "code" in kw:
                v = kw["code"]
                if isinstance(v, ast.Constant):
                    # `rows.error(i, column, what, code=…)` builds a DataError (runtime's row helper)
                    kind = "DataError" if name == "error" else name
                    sites.append((v.value, kind, where))
                elif ast.unparse(v) not in PASS_THROUGH:
                    dynamic.append(f"{where}: code={ast.unparse(v)}")
            elif name in ("error", "warning") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and CODE.match(node.args[0].value):
                sites.append((node.args[0].value, name, where))          # Diagnostics.error / .warning
            elif name == "Diagnostic" and node.args and isinstance(node.args[0], ast.Constant):
                sites.append((node.args[0].value, "error", where))       # the parser's syntax errors
            elif name in CLASSES - {"SpecError", "PeltError"}:
                uncoded.append(where)
    return sites, dynamic, uncoded


SITES, DYNAMIC, UNCODED = raise_sites()


def test_scan_finds_the_raise_sites():
    assert len(SITES) > 250 and len({c for c, *_ in SITES}) > 120


def test_every_raised_code_is_registered_with_its_kind():
    bad = [f"{where}: {code} raised as {kind}, registry: "
           f"{E.REGISTRY[code].kind if code in E.REGISTRY else 'not registered'}"
           for code, kind, where in SITES if code not in E.REGISTRY or E.REGISTRY[code].kind != kind]
    assert not bad, "\n".join(bad)


def test_codes_are_literal_and_every_error_has_one():
    assert not DYNAMIC, DYNAMIC
    assert not UNCODED, f"errors raised without code=: {UNCODED}"


def test_every_registered_code_is_raised():
    assert not set(E.REGISTRY) - {c for c, *_ in SITES}


def test_every_code_string_in_the_source_is_registered():
    """A code written anywhere else (a constant, a message) must be a registered one too."""
    stray = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.match(node.value) \
                    and node.value not in E.REGISTRY and node.value != "E000":   # E000: PeltError's "no code"
                stray.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert not stray, stray


@pytest.mark.parametrize("code", sorted(E.REGISTRY))
def test_entry(code):
    c = E.REGISTRY[code]
    assert CODE.match(c.code) and c.kind == LETTER_KIND[code[0]]
    assert c.meaning and c.help and "\n" not in c.meaning + c.help
    assert c.exit_code == {"error": 1, "warning": 0, "UsageError": 2}.get(c.kind, 3)
    if c.kind not in ("error", "warning"):
        assert getattr(E, c.kind).exit_code == c.exit_code


def test_one_meaning_per_code():
    meanings = defaultdict(list)
    for c in E.REGISTRY.values():
        meanings[c.meaning.lower()].append(c.code)
    assert all(len(v) == 1 for v in meanings.values()), {m: v for m, v in meanings.items() if len(v) > 1}


def test_help_defaults_to_the_registry():
    assert E.UsageError("x", code="U109").diagnostic.help == E.REGISTRY["U109"].help
    assert E.UsageError("x", code="U109", help="own").diagnostic.help == "own"
    d = E.Diagnostic("W201", "m")
    assert d.help == E.REGISTRY["W201"].help and f"help: {d.help}" in d.render()


def test_unknown_code_is_a_programming_error(monkeypatch):
    monkeypatch.setenv("PELTC_STRICT_CODES", "1")
    with pytest.raises(AssertionError):
        E.DataError("x", code="D999")
    monkeypatch.setenv("PELTC_STRICT_CODES", "0")
    assert E.DataError("x", code="D999").diagnostic.help is None


def test_docs_table_is_generated_from_the_registry():
    committed = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert committed == E.markdown(), "regenerate: python -m peltc.errors --markdown > docs/errors.md"
    for code in E.REGISTRY:
        assert f"| {code} |" in committed


def test_markdown_command():
    out = subprocess.run([sys.executable, "-m", "peltc.errors", "--markdown"], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout == E.markdown()


def test_docs_link_the_table():
    assert "errors.md" in (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    assert "docs/errors.md" in (ROOT / "README.md").read_text(encoding="utf-8")
