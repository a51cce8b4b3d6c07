"""Training: config dataclasses, the loop (checkpoints, EMA, DDP), `medvid train`."""

from medvid.training.config import TrainConfig
from medvid.training.trainer import TrainingDivergedError, train

__all__ = ["TrainConfig", "TrainingDivergedError", "train"]
