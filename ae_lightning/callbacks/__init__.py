"""Callbacks that write what a run produced (image grids) to the run directory and the logger, and
the divergence guard every ``ae-lightning`` run has."""

from ae_lightning.callbacks.diagnostics import Diagnostics
from ae_lightning.callbacks.divergence import NonFiniteLossError, StopOnNonFinite
from ae_lightning.callbacks.generation import GenerationGrids
from ae_lightning.callbacks.images import ReconstructionGrid, log_image
from ae_lightning.callbacks.prediction import PredictionWriter
from ae_lightning.callbacks.resume import ResumeCheckpoint
from ae_lightning.callbacks.run_dir import SaveRunConfig, run_dir
from ae_lightning.callbacks.speed import Speed
from ae_lightning.callbacks.timing import EpochTimes, StepTimer

__all__ = [
    "Diagnostics", "EpochTimes", "GenerationGrids", "NonFiniteLossError", "PredictionWriter", "ReconstructionGrid",
    "ResumeCheckpoint", "SaveRunConfig", "Speed", "StepTimer", "StopOnNonFinite", "log_image", "run_dir",
]
