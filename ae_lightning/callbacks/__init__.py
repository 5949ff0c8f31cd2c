"""Callbacks that write what a run produced (image grids) to the run directory and the logger, and
the divergence guard every ``ae-lightning`` run has."""

from ae_lightning.callbacks.divergence import NonFiniteLossError, StopOnNonFinite
from ae_lightning.callbacks.generation import GenerationGrids
from ae_lightning.callbacks.images import ReconstructionGrid, log_image

__all__ = ["GenerationGrids", "NonFiniteLossError", "ReconstructionGrid", "StopOnNonFinite", "log_image"]
