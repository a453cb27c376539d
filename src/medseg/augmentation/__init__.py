"""Data augmentation in torch, on batches, with parameters drawn from a seeded generator."""

from medseg.augmentation.intensity import IntensityConfig, augment_intensity
from medseg.augmentation.spatial import mirror

__all__ = ["IntensityConfig", "augment_intensity", "mirror"]
