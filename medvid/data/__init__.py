"""Raw videos -> manifest -> training clips.

``open_video`` reads containers (PyAV), DICOM cine, NIfTI 4D series and frame folders behind one
lazy interface; ``prepare`` writes ``manifest.jsonl`` + ``report.json``; ``ClipDataset`` yields
pixel clips in the MedSora protocol and ``LatentDataset`` cached VAE latents.
"""

from medvid.data.datasets import (
    ClipDataset,
    FlowFeatureCache,
    LatentDataset,
    clip_frame_indices,
    make_clip_id,
    parse_clip_id,
    resize_center_crop,
)
from medvid.data.manifest import ManifestError, read_manifest
from medvid.data.prepare import prepare
from medvid.data.readers import VideoReader, VideoReadError, open_video

__all__ = [
    "ClipDataset",
    "FlowFeatureCache",
    "LatentDataset",
    "ManifestError",
    "VideoReadError",
    "VideoReader",
    "clip_frame_indices",
    "make_clip_id",
    "open_video",
    "parse_clip_id",
    "prepare",
    "read_manifest",
    "resize_center_crop",
]
