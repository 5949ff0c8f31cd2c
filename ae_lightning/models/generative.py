"""What a model that draws new images has: the :class:`Generative` protocol (VAE, CVAE, M2, AAE, CAAE, SSAAE).

A generative model has a prior over its codes and decodes draws from it::

    model.prior.sample(n, labels=None, generator=None, device=None)   # (n, D) codes, an ae_lightning.priors Prior
    model.sample(n, condition=None, generator=None)                   # (n, C, H, W) images in the data's range
    model.example_conditions()                                        # one condition per row of a labelled grid, or None
    model.needs_condition                                             # True: ``sample`` needs a condition

``condition`` is what the model's own ``condition(batch)`` gives for a batch: class labels or one-hot rows for
the CVAE, class labels for a supervised AAE (they pick the prior's mixture component; without them ``sample``
draws from the whole mixture), the ±1 age and gender vector of :meth:`~ae_lightning.models.
ConditionalAdversarialAutoencoder.make_condition` for the CAAE; ``n`` rows of it. The same ``generator`` state
gives the same images.

:class:`~ae_lightning.callbacks.GenerationGrids` draws the sample grids of every such model from these
(``val/samples`` when ``sample`` works without a condition, ``val/samples_by_label`` when the model has example
conditions), and logs the pictures of the optional hook ``extra_grids() -> {key: (grid (3, H, W), caption)}``
(the CAAE's age-progression grid of validation faces, which are not prior samples).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ae_lightning.priors import Prior


@runtime_checkable
class Generative(Protocol):
    """A model that draws images: ``prior`` over its codes, ``sample`` decoded draws (see the module docstring)."""

    #: a plain attribute, no ``nn.Module``: it adds nothing to the state_dict (shipped weights and checkpoints keep
    #: loading), and ``isinstance`` finds it (Python 3.12 reads a protocol's members statically)
    prior: Prior
    #: ``True`` when :meth:`sample` needs a condition (the CVAE, the CAAE); ``False`` when it is optional
    needs_condition: bool

    def sample(
        self, n: int, condition: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` decoded from prior codes (with ``condition``, ``n`` rows, if given)."""
        ...

    def example_conditions(self) -> torch.Tensor | None:
        """One condition per row of a labelled sample grid (``(R, ...)``), or ``None`` for an unlabelled model."""
        ...
