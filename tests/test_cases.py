"""Golden cases as data: every invalid spec in tests/cases/ fails with exactly the errors its header
names, rendered as `error: file:line:col: message`, the source line, a caret and a help line; and
every spec in specs/ checks clean and is already in canonical form.

A case file starts with its expectations, one per line:

    # expect: E102 4:3                  code, line:column of an error in this file
    # expect: E119 lib/cycle_b.pelt:2:1 an error in another file (relative to tests/cases/)
    # model: bert-base-uncased          optional: validate against this model

Several `# expect:` lines are compared as a set with all the errors of the run. Files under
tests/cases/lib/ are helpers that cases extend or import; they are not cases.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peltc.compiler.pipeline import build_ir
from peltc.compiler.space_check import check_spec
from peltc.errors import SpecError
from peltc.grammar.fmt import format_source

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "cases"
CASES = sorted(CASES_DIR.glob("*.pelt"))
SPECS = sorted((HERE.parent / "specs").glob("*.pelt")) + sorted((HERE.parent / "specs" / "spaces").glob("*.pelt"))
SOURCE_DIRS = [HERE.parent / d for d in ("grammar", "compiler", "peltc")]

_EXPECT = re.compile(r"# expect:\s+([A-Z]\d{3})\s+(?:(\S+):)?(\d+):(\d+)\s*$")
_MODEL = re.compile(r"# model:\s+(\S+)\s*$")


def read_header(path: Path) -> tuple[set[tuple[str, Path, int, int]], str | None]:
    """The expected (code, file, line, col) set and the model of a case file."""
    expected, model = set(), None
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.startswith("#"):
            break
        if m := _EXPECT.match(line):
            code, file, ln, col = m.groups()
            where = (CASES_DIR / file).resolve() if file else path
            expected.add((code, where, int(ln), int(col)))
        elif m := _MODEL.match(line):
            model = m.group(1)
    return expected, model


def run_case(path: Path) -> SpecError:
    """The case checked as `peltc check` checks it (a search space at every point)."""
    text = path.read_text(encoding="utf-8")
    _, model = read_header(path)
    with pytest.raises(SpecError) as info:
        check_spec(text, str(path), model=model)
    return info.value


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_invalid_spec(path: Path):
    assert path.read_text(encoding="utf-8").startswith("# expect:"), "the first line must be `# expect: ...`"
    expected, _ = read_header(path)
    err = run_case(path)
    got = {(d.code, Path(d.span.file).resolve(), d.span.line, d.span.col) for d in err.errors}
    show = lambda s: sorted(f"{c} {f.name}:{ln}:{col}" for c, f, ln, col in s)   # noqa: E731
    assert show(got) == show(expected)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_invalid_spec_renders(path: Path):
    """`error: file:line:col: message [code]`, the source line, a caret under the span, `help:`."""
    err = run_case(path)
    rendered = err.render().split("\n")
    for d in err.errors:
        src = err.sources[d.span.file]
        head = f"error: {d.span.file}:{d.span.line}:{d.span.col}: {d.message} [{d.code}]"
        assert head in rendered, head
        k = rendered.index(head)
        num = str(d.span.line)
        line = src.split("\n")[d.span.line - 1].rstrip("\r").expandtabs(1)
        assert rendered[k + 1] == f" {num} | {line}"
        caret = rendered[k + 2]
        assert re.fullmatch(rf" {' ' * len(num)} \| {' ' * (d.span.col - 1)}\^+", caret), caret
        width = caret.count("^")
        assert d.span.col - 1 + width <= max(len(line), d.span.col), "the caret runs past the line"
        if d.help:
            assert rendered[k + 3] == f"help: {d.help}"


def _emitted_codes() -> set[str]:
    """Every error code the front end can emit (string literals `"E1nn"` in its source)."""
    codes = set()
    for d in SOURCE_DIRS:
        for py in d.rglob("*.py"):
            if "torch" in py.parts:   # the back end is not the front end
                continue
            codes |= set(re.findall(r'"(E\d{3})"', py.read_text(encoding="utf-8")))
    return codes - {"E000"}


def test_every_error_code_has_a_case():
    covered = {code for p in CASES for code, *_ in read_header(p)[0]}
    missing = _emitted_codes() - covered
    assert not missing, f"error codes without a case in tests/cases/: {sorted(missing)}"


def test_enough_cases():
    assert len(CASES) >= 45


def test_lib_helpers_are_not_cases():
    for p in (CASES_DIR / "lib").glob("*.pelt"):
        assert not p.read_text(encoding="utf-8").startswith("# expect:"), p


# --- regressions the fuzzer found (inputs awkward to keep as data files) -----------------------
def test_nul_byte_in_an_import_path_is_a_clean_error():
    with pytest.raises(SpecError) as e:
        build_ir('import "a\x00b.pelt"', "x.pelt")
    assert [d.code for d in e.value.errors] == ["E118"]


@pytest.mark.parametrize("text,pos", [
    ("\r# c\n# d\nadapter", (3, 8)),          # '\r' is not a line break for the parser
    ("adapter a {\n\n\n", (1, 12)),           # just after the last character, not on a blank line
    ("adapter a {\x0c\n  at", (2, 5)),         # form feed is whitespace, not a line break
])
def test_end_of_file_position(text, pos):
    with pytest.raises(SpecError) as e:
        build_ir(text, "x.pelt")
    d = e.value.diagnostics[0]
    assert d.code == "E003" and (d.span.line, d.span.col) == pos
    assert f" {pos[0]} | " in e.value.render()


# --- the valid specs in specs/ ------------------------------------------------------------------
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_checks_clean(path: Path):
    """(A search space at every point.)"""
    result = check_spec(path.read_text(encoding="utf-8"), str(path), model="bert-base-uncased")
    assert not result.diagnostics.errors


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_is_formatted(path: Path):
    """`peltc fmt` is a no-op on every spec in specs/ (they are kept in canonical form)."""
    text = path.read_text(encoding="utf-8")
    once = format_source(text, str(path))
    assert format_source(once, str(path)) == once, "fmt is not idempotent"
    assert once == text, f"{path.name} is not in canonical form: run `peltc fmt` on it"


def test_specs_present_or_skip():
    if not SPECS:
        pytest.skip("specs/ is empty")
    assert len(SPECS) >= 1
