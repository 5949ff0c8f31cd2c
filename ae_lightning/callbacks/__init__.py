"""Callbacks that write what a run produced (image grids) to the run directory and the logger."""

from ae_lightning.callbacks.generation import GenerationGrids
from ae_lightning.callbacks.images import ReconstructionGrid, log_image

__all__ = ["GenerationGrids", "ReconstructionGrid", "log_image"]
