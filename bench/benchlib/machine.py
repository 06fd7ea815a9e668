"""What a result records about where it ran: the machine, library versions, the git state, peltc's command."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchlib import ROOT


def peltc_command() -> list[str]:
    """The ``peltc`` console script beside this interpreter (what a user runs), else ``python -m peltc``."""
    script = Path(sys.executable).parent / "peltc"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "peltc"]


def machine_info(threads: int) -> dict:
    import torch
    import transformers
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": threads,
        "torch_num_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        with open("/proc/meminfo") as f:
            info["mem_total_mb"] = int(next(l.split()[1] for l in f if l.startswith("MemTotal"))) // 1024
    except (OSError, StopIteration):
        pass
    try:
        from importlib.metadata import version
        info["peltc"] = version("peltc")
    except Exception:
        pass
    return info


def git_state() -> dict | None:
    """The commit the benchmark ran at, and the tracked files that differed from it (peltc is installed
    editable: uncommitted edits of the compiler are what ran)."""
    try:
        def git(*a: str) -> str:
            return subprocess.run(["git", *a], cwd=str(ROOT), capture_output=True, text=True, check=True).stdout.strip()
        return {"commit": git("rev-parse", "HEAD"), "modified": git("diff", "--name-only", "HEAD").splitlines()}
    except (OSError, subprocess.CalledProcessError):
        return None


def write_result(out: Path, stem: str, result: dict, when=None) -> Path:
    """``result`` as ``OUT/STEM-YYYYmmdd-HHMMSS.json`` (UTC, or ``when``), written atomically (a temporary file
    renamed); ``result["path"]`` is set to it afterwards (not in the file)."""
    import json
    from datetime import datetime, timezone

    when = when or datetime.now(timezone.utc)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}-{when.strftime('%Y%m%d-%H%M%S')}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    result["path"] = str(path)
    return path

