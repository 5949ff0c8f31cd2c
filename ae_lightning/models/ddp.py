"""DDP for models that leave parameters without a gradient in some training steps.

An adversarial model trains the discriminator and the autoencoder in separate phases, a stacked or staged
model one part per stage: plain DDP rejects such a step mid-fit, so the strategy must run with
``find_unused_parameters=True``. A model says so with a class attribute::

    class MyPhasedModel(Autoencoder):
        every_parameter_in_each_step = False

and whoever builds the Trainer asks :func:`ddp_strategy` for the strategy to use: the CLI does it for
``--trainer.strategy``; in Python, ``L.Trainer(strategy=ddp_strategy("ddp", MyPhasedModel))``. It picks
Lightning's own registered names (``ddp_find_unused_parameters_true`` and the ``ddp_fork`` / ``ddp_spawn`` /
``ddp_notebook`` variants): the strategy is built with the flag, nothing is patched afterwards.
"""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_warn

#: the DDP strategy names that have a registered ``<name>_find_unused_parameters_true`` variant
PLAIN_DDP = ("ddp", "ddp_fork", "ddp_spawn", "ddp_notebook")


def trains_every_parameter_in_each_step(model) -> bool:
    """Whether each training step of ``model`` (a class or an instance) gives every trainable parameter a gradient."""
    return getattr(model, "every_parameter_in_each_step", True)


def ddp_strategy(strategy, model, warn: bool = True):
    """The Trainer ``strategy`` to run ``model`` (a class or an instance) with: a plain DDP name becomes its
    ``_find_unused_parameters_true`` variant when the model leaves parameters unused in a step (with a warning
    that says how to ask for it directly); anything else is returned as given."""
    if trains_every_parameter_in_each_step(model) or strategy not in PLAIN_DDP:
        return strategy
    name = f"{strategy}_find_unused_parameters_true"
    if warn:
        who = model.__name__ if isinstance(model, type) else type(model).__name__
        rank_zero_warn(f"{who}: running DDP with find_unused_parameters=True (it trains some parameters per phase or "
                       f"stage); pass --trainer.strategy={name} to silence this")
    return name
