"""The GPUs this process may use, whichever engine runs: one predictor
process is started per GPU listed here."""
from __future__ import annotations

import os
import shutil
import subprocess


def visible_gpu_ids() -> list[int]:
    """Device ids 0..N-1 as CUDA numbers them for this process: the GPUs the
    NVIDIA driver lists (nvidia-smi -L), narrowed by CUDA_VISIBLE_DEVICES
    when it is set (CUDA renumbers the ones it names from 0)."""
    listed = driver_gpu_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(listed))
    named = [entry for entry in visible.split(",") if entry.strip() and entry.strip() != "-1"]
    return list(range(min(len(named), listed)))


def driver_gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())
