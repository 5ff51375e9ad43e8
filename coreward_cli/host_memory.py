"""Keep freed host memory inside the process, so a training or decoding step reuses the pages the
last step touched instead of faulting in new ones.

Why: every step allocates and frees the same activations, logits and gradients (1-2 MB each on the
toy). glibc's malloc serves blocks from 128 KiB up through `mmap` until a freed one raises that
threshold, and hands the free top of its heap back to the kernel past a trim threshold of twice
it. A step's mix of sizes keeps crossing both, so its memory comes back as fresh pages, each a
page fault on first touch: about 2,100 faults per toy update and 1,300 per toy decoding call,
3-4 us each on a VM, 11 % of the update (issue 16). With the mmap threshold at glibc's maximum
(32 MiB) and no trimming below 1 GiB of free heap, the same steps fault 0-1 times. PyTorch's
CUDA caching allocator keeps freed device memory for the same reason; a CPU tensor has none.

The cost: the process's resident memory stays near its peak instead of shrinking between steps.
Blocks of 32 MiB and more (a large model's weights, a big vocabulary's logits) still come from
`mmap` and go back on free. Elsewhere than glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest accepted value on 64-bit
TRIM_THRESHOLD = 1024 * 1024 * 1024

_applied = False


def keep_freed_memory() -> bool:
    """Set the two thresholds once per process; True when they are in force (glibc on Linux)."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc: musl's mallopt does nothing
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; setting either threshold turns glibc's adjustment of both off
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _applied
