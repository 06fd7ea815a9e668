"""The `peltc` command line: parse arguments, call the library, print, return an exit code.

Exit codes (computed in peltc.errors): 0 ok, 1 spec errors, 2 usage errors, 3 runtime errors
(bad checkpoint or data file, a spec that cannot be applied to the loaded model).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from peltc.errors import EXIT_OK, EXIT_SPEC, EXIT_USAGE, Interrupted, PeltError, UsageError

# A reader that stops early (`peltc check SPEC | head -1`) closes the pipe: exit quietly with the
# status a shell reports for a process killed by SIGPIPE (128 + 13), as other Unix tools do.
EXIT_BROKEN_PIPE = 141


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 2 with one line, like black
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _warn(result) -> None:
    for d in result.warnings:
        print(d.render(result.diagnostics.sources.get(d.span.file) if d.span else None), file=sys.stderr)


def _check(a):
    """The spec checked against --model, else its `model` line, else the default model — the packaged
    MiniLM, the one `peltc compile` trains without --model; `--model none`: no model."""
    from peltc.compiler.archs import DEFAULT_MODEL
    from peltc.compiler.pipeline import check_file
    return check_file(a.spec, model=a.model, default_model=DEFAULT_MODEL)


def _space(a):
    """The spec, checked at every point when it is a search space (it has choices); else None."""
    from peltc.compiler.space import load_space
    space = load_space(Path(a.spec))   # a spec that does not read or parse fails here as in check_file
    if not space.dimensions:
        return None
    from peltc.compiler.archs import DEFAULT_MODEL
    from peltc.compiler.space_check import check_space
    return check_space(space, model=a.model, default_model=DEFAULT_MODEL)


def cmd_check(a) -> int:
    from peltc.compiler.summary import summary
    sc = _space(a)
    if sc is not None:
        from peltc.compiler import space_summary
        _warn(sc)
        print(space_summary.summary(sc, a.spec))
        return EXIT_OK
    r = _check(a)
    _warn(r)
    print(summary(r.ir, a.spec))
    if r.defaulted:
        from peltc.compiler.archs import DEFAULT_MODEL
        print(f"note: no --model and no `model` line: checked against {DEFAULT_MODEL}, the packaged MiniLM "
              "`peltc compile` trains by default (--model NAME|DIR|config.json for another, none for no model)")
    if r.pending:
        print(f"note: pending without a model: {', '.join(r.pending)} (pass --model NAME|DIR|config.json)")
    return EXIT_OK


def cmd_show(a) -> int:
    sc = _space(a)
    r = _check(a) if sc is None else sc.result
    _warn(sc or r)
    if a.json and sc is not None:   # a space: its dimensions, then the IR of the point it was drawn at
        import json
        from peltc.compiler.space_summary import to_dict
        print(json.dumps({"space": to_dict(sc), **r.ir.to_dict()}, indent=2))
    elif a.json:
        print(r.ir.to_json())
    else:
        from peltc.compiler.summary import outline
        if sc is not None:
            from peltc.compiler.space_summary import size_text
            print(f"{a.spec}: a search space of {size_text(sc.space)}; its first point:")
        print(outline(r.ir, a.spec))
    return EXIT_OK


def cmd_render(a) -> int:
    from peltc.compiler.render import render
    sc = _space(a)
    if sc is not None:
        from peltc.compiler import space_summary
        _warn(sc)
        out = render(sc.result.ir, a.output, expand=a.expand, title=space_summary.title(sc, Path(a.spec).name),
                     marks=space_summary.marks(sc.space))
        print(f"wrote {out}")
        return EXIT_OK
    r = _check(a)
    _warn(r)
    out = render(r.ir, a.output, expand=a.expand, title=Path(a.spec).name)
    print(f"wrote {out}")
    return EXIT_OK


def cmd_fmt(a) -> int:
    from peltc.grammar.fmt import format_source
    changed = 0
    for spec in a.specs:
        p = Path(spec)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot read spec '{spec}': {e.strerror}", code="U001") from None
        new = format_source(text, spec)
        if new != text:
            changed += 1
            if a.diff:
                import difflib
                sys.stdout.writelines(difflib.unified_diff(text.splitlines(keepends=True), new.splitlines(keepends=True),
                                                           f"{spec} (as written)", f"{spec} (formatted)"))
            elif a.check:
                print(f"would reformat {spec}")
            else:
                p.write_text(new, encoding="utf-8")
                print(f"reformatted {spec}")
    return EXIT_SPEC if a.check and changed else EXIT_OK


def cmd_lsp(a) -> int:
    try:
        from peltc.lsp.server import main as serve
    except ImportError as e:   # pygls / lsprotocol: the `lsp` extra
        raise UsageError(f"peltc lsp needs the lsp extra ({e.name} is not installed)", code="U137",
                         help="pip install 'peltc[lsp]'") from None
    rc = serve()
    if sys.stdout.closed:   # pygls closes stdio when the client says exit
        sys.stdout = open(os.devnull, "w")
    return rc


MODEL_HELP = ("model name, model dir or config.json (default: the spec's `model`, else minilm — the packaged "
              "MiniLM `peltc compile` trains by default); `none`: check without a model")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="peltc", description="A declarative language and compiler for parameter-efficient tuning.")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("check", help="validate a spec (no weights loaded) and print parameter counts")
    c.add_argument("spec")
    c.add_argument("--model", help=MODEL_HELP)
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("show", help="print the resolved IR (an outline; --json: the IR itself)")
    s.add_argument("spec")
    s.add_argument("--model", help=MODEL_HELP)
    s.add_argument("--json", action="store_true", help="the whole IR graph as JSON (loads back losslessly)")
    s.set_defaults(func=cmd_show)

    r = sub.add_parser("render", help="draw the architecture diagram (svg, png or dot)")
    r.add_argument("spec")
    r.add_argument("-o", "--output", required=True)
    r.add_argument("--model", help=MODEL_HELP)
    r.add_argument("--expand", action="store_true", help="draw every layer (default: collapse identical layers)")
    r.set_defaults(func=cmd_render)

    f = sub.add_parser("fmt", help="rewrite specs in canonical form, in place (--diff / --check: write nothing)")
    f.add_argument("specs", nargs="+")
    f.add_argument("--check", action="store_true", help="exit 1 if a spec is not canonical; write nothing")
    f.add_argument("--diff", action="store_true", help="print a unified diff of what would change; write nothing "
                                                       "(exit 0, or 1 with --check)")
    f.set_defaults(func=cmd_fmt)

    ls = sub.add_parser("lsp", help="run the language server (Language Server Protocol over stdio) for editors")
    ls.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default and only transport)")
    ls.set_defaults(func=cmd_lsp)

    try:
        from peltc.runtime.cli import add_commands
    except ImportError:   # the runtime is an optional extra (peltc[torch])
        add_commands = None
    if add_commands is not None:
        add_commands(sub)
    for name, cmd in sub.choices.items():     # every command that reads a spec or a run takes plug-ins
        if name not in ("fmt", "lsp"):
            cmd.add_argument("--plugin", action="append", default=[], metavar="FILE",
                             help="a Python file defining methods (docs/extending.md); repeatable")
    return p


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is still buffered at exit cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):   # stdout is not a file descriptor (captured in a test)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        if getattr(a, "plugin", None):
            from peltc.methods import load_plugin
            for f in a.plugin:
                load_plugin(f)
        rc = a.func(a)
        sys.stdout.flush()   # a closed pipe shows here, not in the interpreter's final flush
        return rc
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except PeltError as e:
        if a.debug:
            raise
        _say_error(e.render())
        return e.exit_code
    except Interrupted as e:
        _say_error(e.render())
        return e.exit_code
    except KeyboardInterrupt:
        _say_error("interrupted (SIGINT)")
        return 130


def _say_error(text: str) -> None:
    """The error on stderr; when stderr is itself a closed pipe (`peltc … 2>&1 | head -1`), nothing."""
    try:
        print(text, file=sys.stderr)
        sys.stderr.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stderr.fileno())
        except OSError:
            pass


if __name__ == "__main__":
    raise SystemExit(main())
