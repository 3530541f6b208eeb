"""A predictor process keeps the memory it frees (glibc): large arrays
freed and made again reuse resident pages instead of faulting in new
ones. Each side runs in a fresh interpreter, since the policy is for the
process's lifetime."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A decoding job's cache in small: 24 arrays of 20 MiB, made, freed, made
# again; page faults counted on 4 kB pages (transparent huge pages off for
# the probe, as they would hide the faults).
PROBE = """
import ctypes, json, resource, sys
import numpy as np
from predictor.machines.host_memory import keep_freed_memory
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def job_cache():
    return [np.ones(20 << 20, np.uint8) for _ in range(24)]
def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
job_cache()
before = minor_faults()
job_cache()
print(json.dumps({"kept": kept, "faults": minor_faults() - before}))
"""


def second_job(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is glibc's mallopt")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = 24 * (20 << 20) // 4096
    plain, kept = second_job("plain"), second_job("keep")
    assert not plain["kept"] and kept["kept"]
    assert plain["faults"] > pages // 2  # glibc gave the first array back: every page faults again
    assert kept["faults"] < pages // 10  # the heap kept it: the pages are still there
