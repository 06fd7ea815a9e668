"""A run that `peltc grid` starts ends when the grid's process dies, even by SIGKILL (`signals.follow_parent`:
Linux's parent-death signal, SIGTERM, so the run ends as an interrupted run, its checkpoint kept) — not
training on alone beside the run a study retries; without the grid's variable nothing changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")

CHILD = "from peltc.runtime.signals import follow_parent; follow_parent(); import time; time.sleep(120)"
PARENT = f"""
import os, subprocess, sys, time
from peltc.runtime.signals import child_env
p = subprocess.Popen([sys.executable, "-c", {CHILD!r}], env=child_env(dict(os.environ)))
print(p.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state                # ended, not yet reaped by whoever adopted it


def _wait_gone(pid: int, seconds: float = 20.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return False


def test_a_run_ends_when_its_grid_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        time.sleep(1.5)                                      # the child has made its request
        assert not _gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_gone(child), "the run outlived its killed grid"
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_a_run_whose_grid_is_already_gone_ends_at_once_and_without_the_variable_lives_on():
    env = {**os.environ, "PELTC_PARENT_PID": "1"}            # not its parent: the grid is gone
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, timeout=60)
    assert r.returncode == -signal.SIGTERM
    plain = {k: v for k, v in os.environ.items() if k != "PELTC_PARENT_PID"}
    p = subprocess.Popen([sys.executable, "-c", CHILD], env=plain)
    try:
        time.sleep(2)
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()
