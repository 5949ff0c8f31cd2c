"""MNIST seen through a trained VAE: the latent codes Kingma et al. (2014) stack M2 on (M1+M2).

Kingma et al.'s best 100-label result (3.33 % test error) is not M2 on pixels (11.97 %) but **M1+M2**: a VAE (M1)
is trained without labels, and M2 then models M1's latent codes ``z1`` instead of the images. Their code
(``learn_yz_x_ss.py``, dataset ``mnist_2layer``) encodes every digit once into M1's posterior ``(mean, log var)``,
draws a fresh ``z1 ~ q(z1 | x)`` for each training minibatch, and classifies validation and test digits from the
posterior mean. :class:`MNISTCodesDataModule` does the same on :class:`MNISTDataModule`'s split and labelled pool
(so M1+M2 sees exactly the 100 labels the pixel models see)::

    ae-lightning fit --config configs/full/vae_burda_mnist.yaml --data.init_args.root MNIST   # M1, no labels
    ae-lightning fit --config configs/full/m1m2_mnist.yaml --data.init_args.root MNIST \\
        --data.init_args.checkpoint runs/vae_burda_mnist/version_0/checkpoints/last.ckpt

The codes are ``(1, 1, D)`` "images" (``image_shape``, from M1's ``latent_dim``), so every net of the M2 config
gets its input size from the data like any image model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ae_lightning.data.common import ArrayImageDataset
from ae_lightning.data.files import DatasetNotFoundError
from ae_lightning.data.mnist import MNISTDataModule

log = logging.getLogger(__name__)


def sample_code(x: torch.Tensor) -> torch.Tensor:
    """A draw ``mean + σ · ε`` from stacked posterior parameters ``(..., 2, 1, D)`` (mean, log variance) →
    ``(..., 1, 1, D)``; one code or a batch, on the tensor's device."""
    mean, log_var = x.unbind(-3)  # (..., 1, D) each
    return (mean + (0.5 * log_var).exp() * torch.randn_like(mean)).unsqueeze(-3)


def _latent_dim(checkpoint: Path) -> int:
    from ae_lightning.config import find_run_config, load_config

    if not checkpoint.is_file():
        raise DatasetNotFoundError(
            f"no VAE checkpoint at {checkpoint}; MNISTCodesDataModule encodes MNIST with a trained VAE (M1); fix: train "
            "one first (ae-lightning fit --config configs/full/vae_burda_mnist.yaml) and pass its checkpoint")
    model = load_config(find_run_config(checkpoint))["model"]
    dim = model.get("init_args", {}).get("latent_dim")
    if not isinstance(dim, int):
        raise ValueError(f"the run of {checkpoint} is a {model.get('class_path')} without a latent_dim; "
                         "fix: pass the checkpoint of a VAE run")
    return dim


class MNISTCodesDataModule(MNISTDataModule):
    """:class:`MNISTDataModule` whose images are replaced by a trained VAE's posterior codes (see the module doc).

    Args:
        checkpoint: the VAE's checkpoint; its run's resolved ``config.yaml`` beside it or one folder up
            (:func:`ae_lightning.config.load_run`).
        encode_batch_size: images per encoder pass when the splits are encoded (once, in ``setup``, on the CPU).
        Other arguments: :class:`MNISTDataModule`'s (the split, the labelled pool and the mixed batches are its own);
        the VAE sees grey levels, as in Kingma et al.'s code (no binarisation).

    Training draws a fresh ``z1 ~ q(z1 | x)`` every time a digit is drawn; validation and test use the posterior mean.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        root: str | None = None,
        download: bool = False,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        train_size: int | None = None,
        labelled_per_class: int | None = None,
        labelled_batch_share: float = 0.5,
        encode_batch_size: int = 2000,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(root=root, download=download, batch_size=batch_size, val_fraction=val_fraction,
                         test_fraction=test_fraction, train_size=train_size, binarize=False,
                         labelled_per_class=labelled_per_class, labelled_batch_share=labelled_batch_share,
                         num_workers=num_workers, seed=seed)
        if checkpoint is None:
            raise ValueError("MNISTCodesDataModule needs the checkpoint of a trained VAE (M1); fix: pass "
                             "--data.init_args.checkpoint runs/<vae run>/version_N/checkpoints/last.ckpt")
        self.checkpoint = Path(checkpoint).expanduser()
        self.image_shape = (1, 1, _latent_dim(self.checkpoint))
        self._encoded: set[str] = set()

    @torch.no_grad()
    def _posterior(self, vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        means, log_vars = [], []
        for chunk in images.split(self.hparams.encode_batch_size):
            q = vae.posterior(chunk)
            means.append(q.mean.float())
            log_vars.append(q.log_var.float())
        return torch.cat(means), torch.cat(log_vars)  # (N, D) each

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        todo = [s for s in ("train", "val", "test") if getattr(self, f"{s}_set") is not None and s not in self._encoded]
        if not todo:
            return
        from ae_lightning.config import load_run

        vae, _ = load_run(self.checkpoint)
        vae = vae.to("cpu").float().eval()
        for split in todo:
            data = getattr(self, f"{split}_set")
            mean, log_var = self._posterior(vae, data.images)
            if split == "train":  # a fresh draw per use: (N, 2, 1, D), the transform samples (N, 1, 1, D)
                codes, transform = torch.stack([mean, log_var], 1)[:, :, None], sample_code
            else:
                codes, transform = mean[:, None, None], None  # (N, 1, 1, D)
            setattr(self, f"{split}_set", ArrayImageDataset(codes, data.labels, transform=transform))
            self._encoded.add(split)
        active = int((mean.std(0) > 0.1).sum())
        log.info("MNIST codes: %s encoded by %s; %d of %d latent units vary (std of the mean > 0.1)",
                 "/".join(todo), self.checkpoint, active, mean.shape[1])
