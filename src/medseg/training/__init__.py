"""Training: patch sampling, background loading, the trainer, checkpoints, splits."""

from medseg.training.config import TrainingConfig
from medseg.training.trainer import Trainer

__all__ = ["Trainer", "TrainingConfig"]
