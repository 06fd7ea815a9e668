"""`peltc lsp` without the lsp extra (pygls / lsprotocol not installed): a registered usage error, U137,
exit 2, one error line and a help line, no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from peltc import errors

ROOT = Path(__file__).resolve().parents[2]
# Python reads `sys.modules[name] = None` as "not installed": the import raises ImportError (name set)
DRIVER = ("import sys\nfor m in ('pygls', 'pygls.lsp', 'pygls.lsp.server', 'lsprotocol', 'lsprotocol.types'):\n"
          "    sys.modules[m] = None\nfrom peltc.cli import main\nraise SystemExit(main(['lsp']))\n")


def test_peltc_lsp_without_the_lsp_extra_is_a_registered_usage_error():
    p = subprocess.run([sys.executable, "-c", DRIVER], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().split("\n")
    m = re.match(r"^error: .*\[([A-Z]\d{3})\]$", lines[0])
    assert m, p.stderr
    assert m.group(1) == "U137" and errors.REGISTRY["U137"].kind == "UsageError"
    assert p.returncode == errors.REGISTRY["U137"].exit_code == 2
    assert lines[1].startswith("help: ") and "Traceback" not in p.stderr
