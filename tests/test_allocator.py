"""The CLI's process keeps the memory it frees: large blocks are reused, not faulted in again each pass."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ellrobust.core.allocator import ENV, keep_freed_memory

_FAULTS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from ellrobust.core.allocator import keep_freed_memory
    assert keep_freed_memory()
torch.empty(64 << 20, dtype=torch.uint8).fill_(1)  # the first block is faulted in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)  # 64 MB, freed at once: a large activation of a pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(policy: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, policy], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    system, kept = _faults("system"), _faults("keep")
    assert system > 10 * 16384 // 2  # glibc maps and unmaps each 64 MB block: ~16 384 faults of 4 kB per block
    assert (
        kept < system / 2
    )  # measured: 163 850 against 16 385 to 49 152 (the heap grows once; reclaim may take pages back)


def test_the_policy_can_be_left_to_the_c_library(monkeypatch):
    monkeypatch.setenv(ENV, "system")
    assert keep_freed_memory() is False
    monkeypatch.delenv(ENV)
    assert keep_freed_memory() is (sys.platform.startswith("linux") and os.path.exists("/proc/self"))
