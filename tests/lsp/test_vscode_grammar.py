"""The VS Code extension's TextMate grammar: its snapshot and scope tests (vscode-tmgrammar-test, npm),
run where `npm ci` installed them in editors/vscode (`.ci/run` does where npm is present)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

VSCODE = Path(__file__).resolve().parents[2] / "editors" / "vscode"


def test_extension_manifest_and_grammar_are_consistent():
    pkg = json.loads((VSCODE / "package.json").read_text())
    grammar = json.loads((VSCODE / "syntaxes" / "pelt.tmLanguage.json").read_text())
    (lang,) = pkg["contributes"]["languages"]
    (g,) = pkg["contributes"]["grammars"]
    assert lang["extensions"] == [".pelt"] and g["scopeName"] == grammar["scopeName"] == "source.pelt"
    assert (VSCODE / g["path"]).is_file() and (VSCODE / lang["configuration"]).is_file()
    conf = json.loads((VSCODE / lang["configuration"]).read_text())
    assert conf["comments"]["lineComment"] == "#"
    assert pkg["contributes"]["configuration"]["properties"]["peltc.server.command"]["default"] == ["peltc", "lsp"]


def test_grammar_snapshots():
    if shutil.which("npm") is None:
        pytest.skip("npm not found: the TextMate grammar tests (editors/vscode, npm test) are skipped")
    if not (VSCODE / "node_modules" / ".bin" / "vscode-tmgrammar-snap").exists():
        pytest.skip("vscode-tmgrammar-test not installed: run `npm ci` in editors/vscode (.ci/run does)")
    r = subprocess.run(["npm", "test", "--silent"], cwd=VSCODE, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
