"""The one place that looks for fused kernels.

* CUDA: mamba_ssm's SSD scan and causal_conv1d's convolution, used only for CUDA tensors and only when
  they import.
* CPU: medvid's own kernels (``csrc/mamba_cpu.cpp``): convolution + SiLU over gathered rows, and the
  gated RMSNorm summed over scans; built on first use by torch's C++ extension loader (once per
  machine, under ``TORCH_EXTENSIONS_DIR``, about a minute on two cores) and used for float32/float64.
  ``MEDVID_CPU_KERNELS=0`` switches them off; without a C++ compiler they are skipped with one log line.

Everything else runs the pure-PyTorch path in ``mamba2.py``, which is always present and always tested.
The choices are logged once per process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from pathlib import Path
from types import SimpleNamespace

import torch

_log = logging.getLogger("medvid.models")
_FUSED: SimpleNamespace | None | bool = False  # False = not probed yet, None = unavailable
_CPU: object | None | bool = False
CPU_SOURCE = Path(__file__).with_name("csrc") / "mamba_cpu.cpp"
CPU_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]


def _cpu_signature() -> str:
    """What the build depends on besides its source (torch's loader hashes that): the CPU's instruction
    sets (-march=native) and torch's version, so machines sharing a cache directory do not share a build."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        flags = platform.processor()
    return hashlib.sha1(f"{flags}|{torch.__version__}".encode()).hexdigest()[:10]


def cpu_ops():
    """The CPU kernels (``forward``, ``backward``, ``fold_rows``: the convolution; ``norm_forward``,
    ``norm_backward``: the gated norm), or None: switched off, or no compiler. Built on the first call of a
    process that needs them."""
    global _CPU
    if _CPU is False:
        if os.environ.get("MEDVID_CPU_KERNELS", "1") == "0":
            _CPU = None
            _log.info("medvid CPU kernels switched off (MEDVID_CPU_KERNELS=0): eager PyTorch")
            return None
        try:
            from torch.utils.cpp_extension import load

            _log.info("medvid CPU kernels: loading %s (the first time on a machine it is compiled: about a minute)",
                      CPU_SOURCE.name)
            _CPU = load(name=f"medvid_cpu_{_cpu_signature()}", sources=[str(CPU_SOURCE)], extra_cflags=CPU_FLAGS,
                        extra_ldflags=["-fopenmp"], verbose=False)
        except Exception as exc:  # no compiler or ninja, a failed build
            _CPU = None
            _log.warning("medvid CPU kernels could not be built (%s); using the eager PyTorch convolution and "
                         "gated norm (slower; set MEDVID_CPU_KERNELS=0 to skip trying)",
                         str(exc).splitlines()[0][:300])
    return _CPU


def fused_ops(device: torch.device) -> SimpleNamespace | None:
    """Fused kernels for ``device``, or None (CPU, no GPU, or mamba_ssm not installed)."""
    global _FUSED
    if device.type != "cuda":
        return None
    if _FUSED is False:
        try:
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

            try:
                from causal_conv1d import causal_conv1d_fn
            except ImportError:
                causal_conv1d_fn = None
            _FUSED = SimpleNamespace(chunk_scan=mamba_chunk_scan_combined, conv1d=causal_conv1d_fn)
            _log.info("Mamba2: using fused mamba_ssm kernels on CUDA")
        except Exception as exc:  # ImportError, or a CUDA/triton build problem
            _FUSED = None
            _log.info("Mamba2: mamba_ssm not usable (%s); using the pure-PyTorch SSD scan", exc)
    return _FUSED
