"""Callbacks that write what a run produced (image grids) to the run directory and the logger."""

from ae_lightning.callbacks.generation import GenerationGrids
from ae_lightning.callbacks.images import ReconstructionGrid, log_image
from ae_lightning.callbacks.prediction import PredictionWriter

__all__ = ["GenerationGrids", "PredictionWriter", "ReconstructionGrid", "log_image"]
