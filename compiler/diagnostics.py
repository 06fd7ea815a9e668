"""A collector of diagnostics shared by the lowering and the passes (all errors of a run, not the first)."""

from __future__ import annotations

from peltc.errors import Diagnostic, Span, SpecError


class Diagnostics:
    def __init__(self) -> None:
        self.items: list[Diagnostic] = []
        self.sources: dict[str, str] = {}
        self.pending: list[str] = []   # checks that need a model and could not run

    def error(self, code: str, message: str, span: Span | None, help: str | None = None) -> None:
        d = Diagnostic(code, message, span, help, "error")
        if d not in self.items:
            self.items.append(d)

    def warning(self, code: str, message: str, span: Span | None, help: str | None = None) -> None:
        d = Diagnostic(code, message, span, help, "warning")
        if d not in self.items:
            self.items.append(d)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity != "error"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise SpecError(sorted(self.errors, key=_key), self.sources)


def _key(d: Diagnostic):
    s = d.span
    return (s.file, s.line, s.col) if s else ("", 0, 0)
