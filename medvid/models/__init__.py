"""Video diffusion backbones: the Mamba-2 mixer, MedSora, the STDiT baseline and their presets.

Model code imports torch and einops only; fused Mamba kernels are looked up in ``kernels.py``.
"""

from .mamba2 import Mamba2, ssd_chunk_scan, ssd_scan_ref
from .medsora import MedSora
from .registry import MODEL_PRESETS, create_model, create_model_from_config, model_options
from .spiral import inverse_order, spiral_order
from .stdit import STDiT

__all__ = [
    "MODEL_PRESETS",
    "Mamba2",
    "MedSora",
    "STDiT",
    "create_model",
    "create_model_from_config",
    "inverse_order",
    "model_options",
    "spiral_order",
    "ssd_chunk_scan",
    "ssd_scan_ref",
]
