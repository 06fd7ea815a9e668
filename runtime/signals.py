"""SIGINT / SIGTERM during a run: stop at once, with one line and exit 130 / 143, never swallowed.

    with interruptible():
        ...              # a signal raises peltc.errors.Interrupted here
        raise_if_interrupted()   # at phase boundaries: re-raise one that library code swallowed

``Interrupted`` is a ``BaseException``, so ``except Exception`` in library code lets it through.
Some code catches everything (``datasets`` hashes ``map`` arguments under a bare ``except:`` and
then goes on with a random fingerprint): the handler also records the signal, and
`raise_if_interrupted` — called between phases and by `InterruptCallback` at every training step —
raises it again. A second signal while the first is being handled is ignored (the first one's
clean-up runs to its end).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from peltc.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending: list[int] = []


def _handler(signum, frame):
    first = not _pending
    _pending.append(signum)
    if first:
        raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise `Interrupted` for a signal that arrived and was swallowed by code that catches everything."""
    if _pending:
        raise Interrupted(_pending[0])


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Install the handlers for the duration (main thread only; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _pending.clear()
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _pending.clear()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A critical section (e.g. renaming files into place): a signal inside it is raised at its end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if held:
            _pending.append(held[0])
            raise Interrupted(held[0])


def callback():
    """A ``TrainerCallback`` that re-raises a swallowed signal at every step and evaluation."""
    from transformers import TrainerCallback

    class InterruptCallback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            raise_if_interrupted()

        def on_evaluate(self, args, state, control, **kwargs):
            raise_if_interrupted()

    return InterruptCallback()


PARENT_ENV = "PELTC_PARENT_PID"     # set by `peltc grid` for each run it starts (`child_env`)


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a run that `peltc grid` starts: it names this process, so that the run ends when this
    process dies, even by SIGKILL (`follow_parent`), instead of training on alone beside the run retried."""
    import os
    return {**env, PARENT_ENV: str(os.getpid())}


def follow_parent() -> None:
    """In a run started by `peltc grid` (``PELTC_PARENT_PID`` set): ask Linux to send this process SIGTERM
    when its parent dies (``prctl(PR_SET_PDEATHSIG)``; the run then ends as an interrupted run does, its
    checkpoint kept), and end at once if the parent is already gone. Elsewhere (no variable, not Linux): nothing."""
    import os
    want = os.environ.get(PARENT_ENV)
    if not want or not want.isdigit():
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return                                   # no prctl here: the run outlives a killed grid
    if os.getppid() != int(want):                # the parent died before the request took hold
        os.kill(os.getpid(), signal.SIGTERM)
