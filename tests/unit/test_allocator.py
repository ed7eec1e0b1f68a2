"""`rlhf.train.runtime.keep_freed_memory`: after it, a large block freed and allocated again is
served from memory the process already has, instead of pages the kernel must map and zero again."""

import subprocess
import sys

import pytest

PROBE = """
import resource, torch
from rlhf.train.runtime import keep_freed_memory

def faults_of_a_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(64 * 2 ** 20).fill_(1.0)  # 256 MiB, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

plain = [faults_of_a_block() for _ in range(3)]
applied = keep_freed_memory()
kept = [faults_of_a_block() for _ in range(8)]  # the heap takes a few blocks to settle where it can grow
print(applied, min(plain), max(kept[-3:]))
"""
PAGES = 256 * 2 ** 20 // 4096  # of one block


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_freed_large_block_is_reused_without_faulting_its_pages_in_again():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    applied, plain, kept = out[0] == "True", int(out[1]), int(out[2])
    if not applied:
        pytest.skip("this C library has no glibc mallopt")
    assert plain > PAGES // 2  # glibc's default: every block a fresh mapping, each page faulted in and zeroed
    assert kept < PAGES // 20  # kept: the same memory again, block after block
