"""pyproject.toml in the form current setuptools reads without a deprecation warning on every
`.ci/setup` (issue 22, item 15): `license` an SPDX expression string, and a setuptools that reads it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it():
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert data["project"]["license"] == "Apache-2.0"
    (req,) = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    m = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", req.replace(" ", ""))
    assert m and int(m.group(1)) >= 77, req      # 77: the first to read `license` as an SPDX string
    assert not any(c.startswith("License ::") for c in data["project"].get("classifiers", []))
