"""Prediction: sliding window, fold ensembles, export in the scan's own geometry."""

from medseg.inference.predictor import Predictor
from medseg.inference.sliding_window import gaussian_weight, sliding_window

__all__ = ["Predictor", "gaussian_weight", "sliding_window"]
