"""Run `peltc` with a signal sent to itself at a chosen moment of a run (for test_interrupts.py).

    python _interrupt_driver.py PHASE SIGNAL -- peltc arguments...

PHASE: loading (while the base model loads), hashing (inside `datasets`' fingerprint hashing, which
swallows every exception under a bare ``except:``), tokenising (as tokenisation starts), training
(after the first complete checkpoint), saving (while the adapter is written), none.
"""

from __future__ import annotations

import os
import signal
import sys


def kill(sig):
    os.kill(os.getpid(), sig)


def main() -> int:
    phase, signame = sys.argv[1], sys.argv[2]
    argv = sys.argv[sys.argv.index("--") + 1:]
    sig = getattr(signal, signame)
    fired = []

    def once():
        if not fired:
            fired.append(True)
            kill(sig)

    if phase == "loading":
        import peltc.runtime.models as M
        import peltc.runtime.run as R
        orig = M.load_base

        def load_base(*a, **k):
            once()
            return orig(*a, **k)
        R.load_base = load_base
    elif phase == "hashing":
        import datasets.fingerprint as F
        orig_update = F.Hasher.update

        def update(self, value):
            once()
            return orig_update(self, value)
        F.Hasher.update = update
    elif phase == "tokenising":
        from peltc.runtime import classify
        orig_tok = classify.tokenize

        def tokenize(*a, **k):
            once()
            return orig_tok(*a, **k)
        classify.tokenize = tokenize
    elif phase == "training":
        import peltc.runtime.train as T
        orig_save = T._write_marker

        def marker(folder):
            orig_save(folder)
            once()
        T._write_marker = marker
    elif phase == "saving":
        import peltc.compiler.torch.artifact as A
        orig_art = A.save_artifact

        def save_artifact(*a, **k):
            once()
            return orig_art(*a, **k)
        A.save_artifact = save_artifact
    from peltc.cli import main as peltc_main
    return peltc_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
