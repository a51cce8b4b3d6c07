"""The one place that looks for fused Mamba kernels (mamba_ssm, causal_conv1d).

They are used only for CUDA tensors and only when they import; everything else runs the
pure-PyTorch path in ``mamba2.py``, which is always present and always tested. The choice is
logged once per process.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch

_log = logging.getLogger("medvid.models")
_FUSED: SimpleNamespace | None | bool = False  # False = not probed yet, None = unavailable


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
