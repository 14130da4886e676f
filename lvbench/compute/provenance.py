"""Where the numbers came from: the machine (CPU, torch, threads, the route and the calibrated kernels) and
the source."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from lvbench.compute.kernels import kernel_report
from lvbench.compute.matmul import cpu_matmul_backend
from lvbench.compute.routes import current_route
from lvbench.core.code_identity import VERSION

__all__ = ["machine_info", "source_info"]


def source_info() -> dict[str, Any]:
    """The lvbench version and, for a git checkout, its commit (with a mark if it has local changes)."""
    import subprocess

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the lvbench package folder
    info: dict[str, Any] = {"lvbench": VERSION, "commit": None}
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip() + ("+local changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """Where the numbers came from; the CPU kernels are those chosen for ``threads`` torch threads (the
    cells' count; default the current one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "route": current_route(),
        "cpu_matmul": cpu_matmul_backend(threads),
        "cpu_kernels": kernel_report(threads),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info
