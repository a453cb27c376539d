"""Segmentation networks by name, built from shared dimension-agnostic blocks."""

from medseg.models.registry import available, create_model, model_entry, register_model

__all__ = ["available", "create_model", "model_entry", "register_model"]
