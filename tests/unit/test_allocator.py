"""`rlhf.train.runtime.keep_freed_memory`: after it, a large block freed and allocated again is
served from memory the process already has, instead of pages the kernel must map and zero again;
a CPU stage's `make_accelerator` calls it only with RLHF_KEEP_FREED_MEMORY=1."""

import ctypes
import os
import subprocess
import sys

import pytest

PAGES = 256 * 2 ** 20 // 4096  # of one block
PROBE = """
import resource, torch

def faults_of_a_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(64 * 2 ** 20).fill_(1.0)  # 256 MiB, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

plain = [faults_of_a_block() for _ in range(3)]
{apply}
after = [faults_of_a_block() for _ in range(16)]
print(min(plain), sum(n < {pages} // 20 for n in after))  # blocks that came back (nearly) without faults
"""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"),
    reason="glibc's mallopt: Linux with glibc only")


def page_faults(apply: str, opt_in: str = "") -> tuple[int, int]:
    """Fewest page faults of a 256 MiB block before `apply`, and how many of 16 blocks after it
    came back without faulting their pages in again. (Where the heap can grow in place varies with
    the address-space layout: with the allocator kept, 2 to 7 of the first 8 blocks still fault in
    runs here, the rest do not.)"""
    out = subprocess.run([sys.executable, "-c", PROBE.format(apply=apply, pages=PAGES)], capture_output=True, text=True,
                         check=True, env={**os.environ, "RLHF_DEVICE": "cpu", "RLHF_KEEP_FREED_MEMORY": opt_in})
    before, after = map(int, out.stdout.split())
    return before, after


def test_a_freed_large_block_is_reused_without_faulting_its_pages_in_again():
    before, reused = page_faults("from rlhf.train.runtime import keep_freed_memory; assert keep_freed_memory()")
    assert before > PAGES // 2  # glibc's default: every block a fresh mapping, each page faulted in and zeroed
    assert reused >= 4  # kept: the same memory again


@pytest.mark.parametrize("opt_in", ["1", ""])
def test_a_cpu_stage_keeps_freed_memory_only_when_asked(opt_in):
    before, reused = page_faults("from rlhf.train.runtime import make_accelerator; make_accelerator('no')", opt_in)
    assert before > PAGES // 2
    assert (reused >= 4) if opt_in else (reused == 0)  # off: glibc's default, every block faulted in
