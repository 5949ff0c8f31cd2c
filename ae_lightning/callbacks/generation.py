"""What a generative model makes of its latent space, written each validation epoch to
``<run dir>/images/`` and to the logger (through :func:`~ae_lightning.callbacks.images.log_image`).

For every :class:`~ae_lightning.models.generative.Generative` model (the VAE, CVAE and M2, the AAEs, the CAAE):

- ``val/samples``: decoded prior samples, ``model.sample(n)`` (models that sample without a condition);
- ``val/samples_by_label``: one row per ``model.example_conditions()`` row (class, attribute, supervised prior
  component, CAAE age and gender), the same prior noise in every column (models with example conditions);
- whatever the model's optional ``extra_grids()`` hook returns, ``{key: (grid, caption)}`` (the CAAE's
  ``val/age_progression``).

For models with a ``latent_dim`` (the VAE family: ``encode(x, cond)``, ``decode(z, cond)``, ``condition(batch)``):

- ``val/interpolation``: rows that walk linearly in latent space from one encoded validation
  image to another (the end images are shown at both ends of each row);
- for 2-D latents, ``val/latent_scatter``: validation codes coloured by label, and
  ``val/manifold``: decoded codes on a grid of prior quantiles (Kingma & Welling 2014, Fig. 4).
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torchvision.utils import make_grid

from ae_lightning.batch import images_of
from ae_lightning.callbacks.images import log_image
from ae_lightning.models.generative import Generative


def _grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    return make_grid(images.float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)


def figure_to_tensor(fig) -> torch.Tensor:
    """A Matplotlib figure rendered to a (3, H, W) float tensor in [0, 1]."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4) uint8
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255.0


def scatter_figure(codes: np.ndarray, labels: np.ndarray, title: str = "latent codes"):
    """Matplotlib figure of 2-D ``codes`` (N, 2) coloured by integer ``labels`` (N,)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        sel = labels == c
        ax.scatter(codes[sel, 0], codes[sel, 1], s=4, color=cmap(i % cmap.N), label=str(c))
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(title)
    if 1 < len(classes) <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    return fig


def scalar_labels(labels: torch.Tensor) -> torch.Tensor:
    """Integer colour labels: class indices as they are; attribute vectors → their first attribute."""
    return labels[:, 0].long() if labels.ndim == 2 else labels.long()


class GenerationGrids(L.Callback):
    """Prior samples (any :class:`~ae_lightning.models.generative.Generative` model) and the model's
    ``extra_grids()``; latent interpolations and (2-D latents) scatter + manifold for models with a
    ``latent_dim``; every ``every_n_epochs``.

    Args:
        num_samples: prior samples in the unconditional grid (a square number looks best).
        samples_per_label: columns of the labelled grid.
        num_interpolations: rows of the interpolation grid (pairs of validation images).
        interpolation_steps: codes per row, end points included.
        manifold_size: side of the decoded manifold grid (2-D latents).
        max_scatter: validation codes in the scatter plot (2-D latents).
        seed: the prior samples use the same seeded codes every epoch, so grids are comparable.
    """

    def __init__(
        self,
        num_samples: int = 64,
        samples_per_label: int = 8,
        num_interpolations: int = 8,
        interpolation_steps: int = 10,
        manifold_size: int = 20,
        max_scatter: int = 2000,
        every_n_epochs: int = 1,
        seed: int = 0,
    ) -> None:
        self.num_samples = num_samples
        self.samples_per_label = samples_per_label
        self.num_interpolations = num_interpolations
        self.interpolation_steps = interpolation_steps
        self.manifold_size = manifold_size
        self.max_scatter = max_scatter
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self._pairs: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._codes: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def _due(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._codes, self._labels = [], []

    @staticmethod
    def _has_latent_views(pl_module) -> bool:
        """Interpolations and the 2-D views: the VAE family (a ``latent_dim``)."""
        return getattr(pl_module, "latent_dim", None) is not None

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self._due(trainer) or not self._has_latent_views(pl_module):
            return
        need = 2 * self.num_interpolations
        if self._pairs is None or len(self._pairs[0]) < need:
            x, cond = images_of(batch).detach().cpu(), pl_module.condition(batch)
            cond = None if cond is None else cond.detach().cpu()
            if self._pairs is not None:
                x = torch.cat([self._pairs[0], x])
                cond = None if cond is None else torch.cat([self._pairs[1], cond])
            self._pairs = (x[:need], None if cond is None else cond[:need])
        if pl_module.latent_dim == 2 and sum(len(c) for c in self._codes) < self.max_scatter:
            if not isinstance(batch, list | tuple) or len(batch) < 2:
                return
            self._codes.append(pl_module.encode(images_of(batch), pl_module.condition(batch)).float().cpu())
            self._labels.append(scalar_labels(batch[1]).cpu())

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._due(trainer):
            return
        was_training = pl_module.training
        pl_module.eval()
        if isinstance(pl_module, Generative):
            self._samples(trainer, pl_module)
        if self._has_latent_views(pl_module):
            if self._pairs is not None and len(self._pairs[0]) >= 2:
                self._interpolation(trainer, pl_module)
            if pl_module.latent_dim == 2:
                self._latent_2d(trainer, pl_module)
        extra_grids = getattr(pl_module, "extra_grids", None)
        if callable(extra_grids):
            for key, (grid, caption) in extra_grids().items():
                log_image(trainer, key, grid, caption=caption)
        pl_module.train(was_training)

    def _generator(self, model: Generative) -> torch.Generator:
        """A fresh generator: the same seeded draws every epoch (and for every row of the labelled grid)."""
        return torch.Generator(device=model.device).manual_seed(self.seed)

    def _samples(self, trainer, model: Generative) -> None:
        if not model.needs_condition:
            images = model.sample(self.num_samples, generator=self._generator(model))  # (N, C, H, W)
            nrow = max(1, int(math.sqrt(self.num_samples)))
            log_image(trainer, "val/samples", _grid(images, nrow), caption="samples from the prior")
        conds = model.example_conditions()
        if conds is None:
            return
        cols = self.samples_per_label
        # row r: cols samples with condition r, each row from the same seed: the same prior noise in every column
        images = torch.cat([model.sample(cols, c.expand(cols, *c.shape).contiguous(), generator=self._generator(model))
                            for c in conds])  # (rows*cols, C, H, W)
        log_image(trainer, "val/samples_by_label", _grid(images, cols),
                  caption="one row per label, the same prior codes in every column")

    def _interpolation(self, trainer, pl_module) -> None:
        x, cond = self._pairs
        n = len(x) // 2
        x = x[: 2 * n].to(pl_module.device)  # (2n, C, H, W)
        cond = None if cond is None else cond[: 2 * n].to(pl_module.device)
        z = pl_module.encode(x, cond)  # (2n, D)
        t = torch.linspace(0, 1, self.interpolation_steps, device=z.device).view(1, -1, 1)  # (1, S, 1)
        zs = ((1 - t) * z[0::2, None] + t * z[1::2, None]).flatten(0, 1)  # (n*S, D)
        cs = None
        if cond is not None:  # the condition walks with the code (one-hot → its other class)
            cs = ((1 - t) * cond[0::2, None].float() + t * cond[1::2, None].float()).flatten(0, 1)  # (n*S, L)
        images = pl_module.decode(zs, cs).view(n, self.interpolation_steps, *x.shape[1:])
        rows = torch.cat([x[0::2, None], images, x[1::2, None]], dim=1)  # (n, S+2, C, H, W)
        log_image(trainer, "val/interpolation", _grid(rows.flatten(0, 1), self.interpolation_steps + 2),
                  caption="input | linear interpolation of the codes | input")

    def _latent_2d(self, trainer, pl_module) -> None:
        if self._codes:
            codes, labels = torch.cat(self._codes)[: self.max_scatter], torch.cat(self._labels)[: self.max_scatter]
            import matplotlib.pyplot as plt

            fig = scatter_figure(codes.numpy(), labels.numpy(), "validation codes (posterior means)")
            log_image(trainer, "val/latent_scatter", figure_to_tensor(fig), caption="codes coloured by label")
            plt.close(fig)
        side = self.manifold_size
        # codes at evenly spaced prior quantiles, so the grid covers N(0, I) where it has mass
        q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, side)).to(pl_module.device)
        zz = torch.stack(torch.meshgrid(q.flip(0), q, indexing="ij"), dim=-1).view(-1, 2)  # (side², 2): y up, x right
        zz = zz[:, [1, 0]]
        conds = pl_module.example_conditions()
        c = None if conds is None else conds[:1].expand(len(zz), -1)
        images = pl_module.decode(zz, c)  # (side², C, H, W)
        log_image(trainer, "val/manifold", _grid(images, side), caption="decoded codes on a grid of prior quantiles")
