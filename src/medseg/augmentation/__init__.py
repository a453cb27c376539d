"""Data augmentation in torch, on batches: one sampling grid per sample, then intensity steps,
with every sample's parameters recorded as plain data."""

from medseg.augmentation.augmenter import Augmenter, describe
from medseg.augmentation.config import AugmentationConfig
from medseg.augmentation.intensity import augment_intensity
from medseg.augmentation.spatial import mirror

__all__ = ["AugmentationConfig", "Augmenter", "augment_intensity", "describe", "mirror"]
