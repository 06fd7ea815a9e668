"""Every user-facing error of peltc, defined in one place.

A diagnostic carries a stable code, a message, a source span and a help line. Tests assert on the
structured fields (code, line, column), never on message text. Exit codes are computed here too:

    0  success
    1  spec errors (syntax or semantic; the spec file is wrong)
    2  usage errors (bad command line, missing file, unknown model)
    3  runtime errors (bad checkpoint, bad data file, compile failure on a loaded model)
  130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM (128 + the signal number, as shells report)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence

EXIT_OK = 0
EXIT_SPEC = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3


@dataclass(frozen=True)
class Span:
    """A 1-based source range. ``end_col`` is exclusive."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "col": self.col,
                "end_line": self.end_line, "end_col": self.end_col}


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    help: str | None = None
    severity: str = "error"  # "error" | "warning" | "note"

    def render(self, source: str | None = None) -> str:
        where = f"{self.span}: " if self.span else ""
        lines = [f"{self.severity}: {where}{self.message} [{self.code}]"]
        if self.span and source is not None:
            src_lines = source.split("\n")   # as the parser counts lines (not str.splitlines)
            if 1 <= self.span.line <= len(src_lines):
                text = src_lines[self.span.line - 1].rstrip("\r").expandtabs(1)
                num = str(self.span.line)
                width = 1
                if self.span.end_line in (None, self.span.line) and self.span.end_col:
                    width = max(1, self.span.end_col - self.span.col)
                width = min(width, max(1, len(text) - self.span.col + 1))
                lines.append(f" {num} | {text}")
                lines.append(f" {' ' * len(num)} | {' ' * (self.span.col - 1)}{'^' * width}")
        if self.help:
            lines.append(f"help: {self.help}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "severity": self.severity,
                "help": self.help, "span": self.span.to_dict() if self.span else None}


class PeltError(Exception):
    """Root of every peltc error. ``exit_code`` says how the CLI ends."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, *, code: str = "E000", span: Span | None = None,
                 help: str | None = None):
        super().__init__(message)
        self.diagnostic = Diagnostic(code=code, message=message, span=span, help=help)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [self.diagnostic]

    def render(self, sources: dict[str, str] | None = None) -> str:
        return "\n".join(_render_all(self.diagnostics, sources))


class SpecError(PeltError):
    """One or more errors in a spec (syntax or semantics). Carries all of them."""

    exit_code = EXIT_SPEC

    def __init__(self, diagnostics: Sequence[Diagnostic], sources: dict[str, str] | None = None):
        diagnostics = list(diagnostics)
        first = diagnostics[0]
        super().__init__(first.message, code=first.code, span=first.span, help=first.help)
        self._diagnostics = diagnostics
        self.sources = dict(sources or {})

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return self._diagnostics

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self._diagnostics if d.severity == "error"]

    def render(self, sources: dict[str, str] | None = None) -> str:
        return "\n".join(_render_all(self.diagnostics, {**self.sources, **(sources or {})}))


class UsageError(PeltError):
    """A bad command line, a missing input file, an unknown model name."""

    exit_code = EXIT_USAGE


class CompileError(PeltError):
    """A valid spec that cannot be applied to the loaded model (e.g. a family lacks a feature)."""


class ArtifactError(PeltError):
    """A checkpoint or adapter artifact that is missing, corrupt or does not match."""


class DataError(PeltError):
    """A data file that is missing or malformed (names the file and line)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A ``BaseException`` (like ``KeyboardInterrupt``), so library code
    that catches ``Exception`` cannot swallow it; the CLI prints its one line and exits with
    ``exit_code`` (128 + the signal number)."""

    def __init__(self, signum: int, message: str = ""):
        import signal as _signal
        self.signum = signum
        self.signame = _signal.Signals(signum).name
        self.exit_code = 128 + signum
        self.explained = bool(message)       # the message says what was kept
        self.message = message or f"interrupted ({self.signame})"
        super().__init__(self.message)

    def render(self, sources: dict[str, str] | None = None) -> str:
        return self.message


def _render_all(diags: Iterable[Diagnostic], sources: dict[str, str] | None) -> list[str]:
    sources = sources or {}
    return [d.render(sources.get(d.span.file) if d.span else None) for d in diags]


def nearest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The closest valid names to a misspelt one (for help lines)."""
    choices = sorted(set(choices))
    return difflib.get_close_matches(name, choices, n=n, cutoff=0.5)


def did_you_mean(name: str, choices: Iterable[str], what: str = "") -> str:
    choices = sorted(set(choices))
    close = nearest(name, choices)
    listing = ", ".join(choices)
    valid = f"valid {what}: {listing}" if what else f"valid: {listing}"
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}? {valid}"
    return valid
