"""Host-side speed settings of a training process: the C allocator and the optimiser kernel.

``reuse_freed_memory``: keep freed host memory for reuse, so that a CPU training step does not
page-fault its tensors anew. glibc's malloc serves every allocation above its mmap threshold (32 MB at most) with fresh pages
from the kernel and gives them back on free, so a step that makes and frees tensors of tens of MB
pays the kernel to zero every page of them again on the next step. MedSora-S at 32x256 (four spiral
scans of 64 x 128 x 1296 floats per block) faulted in ~3.5 GB per training step this way: 2.8 s of
system time on a 7.3 s step (benchmarks/backbone.py, ``--system-malloc`` shows it). Serving large
blocks from the heap (``mallopt(M_MMAP_MAX, 0)``) and keeping freed heap (``M_TRIM_THRESHOLD``) is
what a preloaded jemalloc or tcmalloc does for PyTorch on CPUs (``torch.backends.xeon.run_cpu
--enable-jemalloc``), with the C library already loaded instead of a second allocator to install.
The cost: the process keeps its peak heap until it exits, as a training run does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

import torch

_log = logging.getLogger("medvid.utils")
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_MAX = -4
_applied: bool | None = None


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse in this process; True when it is in effect.

    A no-op (False) off Linux/glibc, or when ``MEDVID_SYSTEM_MALLOC=1`` asks for the default
    behaviour. Idempotent; affects allocations made after the call.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("MEDVID_SYSTEM_MALLOC", "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _applied = bool(ok)
    _log.debug("malloc keeps freed memory for reuse: %s", _applied)
    return _applied


def fused_optimizer_ok(module: torch.nn.Module) -> bool:
    """Whether torch.optim's fused Adam/AdamW kernel takes ``module``'s trainable parameters: all
    floating point, all on one CPU or CUDA device. The fused kernel updates every parameter in one
    pass instead of a dozen small ops per tensor (benchmarks/backbone.py: 3.7x faster AdamW at
    medsora-s on a CPU, a sixth of a 16x128 training step) and equals the loop to rounding."""
    params = [p for p in module.parameters() if p.requires_grad]
    devices = {p.device for p in params}
    return (bool(params) and len(devices) == 1 and next(iter(devices)).type in ("cpu", "cuda")
            and all(p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) for p in params))
