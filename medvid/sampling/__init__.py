"""Checkpoint -> videos: mp4 + gif + npz per video and a PNG contact sheet (`medvid sample`)."""

from medvid.sampling.generate import SampleSpec, generate_to_dir, sample_videos

__all__ = ["SampleSpec", "generate_to_dir", "sample_videos"]
