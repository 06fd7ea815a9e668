"""`peltc … | head -1`: a reader that closes the pipe early ends peltc quietly, with the status a
shell reports for SIGPIPE (141), no traceback, as other Unix tools do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = str(ROOT / "specs" / "unipelt_apl.pelt")


def _closed_pipe_run(args: list[str]) -> tuple[int, str]:
    """Run ``python -m peltc ARGS`` with stdout a pipe whose read end is closed before it writes."""
    r, w = os.pipe()
    os.close(r)   # nobody reads: the first write (or the final flush) fails with EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", "peltc", *args], stdout=w, stderr=subprocess.PIPE,
                           cwd=ROOT, timeout=120)
    finally:
        os.close(w)
    return p.returncode, p.stderr.decode("utf-8", "replace")


@pytest.mark.parametrize("args", [
    ["check", SPEC],                                                    # a short output (one flush at exit)
    ["check", SPEC, "--model", "bert-base-uncased"],
    ["show", SPEC, "--model", "bert-base-uncased", "--json"],           # a long one (many writes)
    ["show", SPEC, "--model", "bert-base-uncased"],
], ids=["check", "check-model", "show-json", "show"])
def test_closed_pipe_exits_141_without_a_traceback(args):
    rc, err = _closed_pipe_run(args)
    assert rc == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert err == ""


def test_head_reads_the_first_line_and_peltc_ends_quietly():
    """The shell pipeline as a user types it: `peltc show SPEC --json | head -c 600`."""
    p = subprocess.run(f"{sys.executable} -m peltc show {SPEC} --model bert-base-uncased --json | head -c 600; "
                       "echo \" rc=${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash", cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.startswith("{")
    assert p.stdout.rstrip().endswith("rc=141")   # the JSON is far longer than the pipe's buffer
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr


def test_an_open_pipe_still_exits_0():
    p = subprocess.run([sys.executable, "-m", "peltc", "check", SPEC], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith(SPEC)


def test_an_error_into_a_closed_stderr_ends_quietly(tmp_path):
    """`peltc check bad.pelt 2>&1 | head -0`: stdout and stderr are one closed pipe; the spec error cannot
    be shown, and peltc still ends with its exit code, not a traceback about the pipe."""
    bad = tmp_path / "missing.pelt"       # a usage error (exit 2): an unhandled pipe error would exit 1
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "peltc", "check", str(bad)], stdout=w, stderr=w, cwd=ROOT,
                           timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 2      # the usage error's code; nothing else went wrong
