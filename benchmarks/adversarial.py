"""Adversarial autoencoder on MNIST digits, 2-D code: does the adversarial phase match the codes to the prior?

For a Gaussian prior and a supervised 10-component mixture prior, the same nets are trained with the
adversarial phase on and off; on held-out digits we report the reconstruction error (per-pixel MSE
and BCE) and the prior-match statistics of :func:`ae_lightning.priors.prior_match` — the unbiased
MMD² with Gaussian kernels (bandwidths 0.25…4 × the prior's scale) and the largest per-dimension
KS statistic (``scipy.stats.ks_2samp``) against an equal-sized prior sample (lower = closer). The
figure scatters the held-out codes, coloured by digit, over the prior's log-density.

    python -m benchmarks.adversarial --quick    # offline: 10k real MNIST test digits (../shared/data) or the embedded 3k
    python -m benchmarks.adversarial --full     # more steps, GPU when present
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import matplotlib
import torch

from ae_lightning.data import MNISTDataModule
from ae_lightning.models import AdversarialAutoencoder
from ae_lightning.nets import MLPDecoder, MLPDiscriminator, MLPEncoder
from ae_lightning.priors import GaussianPrior, MixtureOfGaussiansPrior, Prior, prior_match
from benchmarks.common import RESULTS, hardware, markdown_table, quiet, trainer, write_csv

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
COLUMNS = ["prior", "adversarial", "code_dim", "train_images", "steps", "test_mse", "test_bce", "prior_mmd", "prior_ks",
           "seconds", "device"]
SETTINGS = {"quick": dict(epochs=15, train_size=None, width=256), "full": dict(epochs=100, train_size=None, width=512)}


def priors() -> dict[str, Prior]:
    return {"gaussian": GaussianPrior(2), "mixture10_supervised": MixtureOfGaussiansPrior(2, 10, supervised=True)}


def build(prior: Prior, adversarial: bool, width: int) -> AdversarialAutoencoder:
    return AdversarialAutoencoder(
        MLPEncoder((1, 28, 28), [width, 2], activation="relu", code_activation=None),
        MLPDecoder((1, 28, 28), [width, 2], activation="relu"),
        MLPDiscriminator(2, [128, 128], num_classes=10 if prior.supervised else 0),
        prior, adversarial=adversarial, lr=1e-3, lr_discriminator=1e-3, lr_generator=1e-3,
    )


def run(mode: str = "quick") -> list[dict]:
    quiet()
    cfg = SETTINGS[mode]
    accelerator, precision, device = hardware() if mode == "full" else ("cpu", "32-true", hardware()[2])
    if mode == "quick":
        # tiny MLPs: one thread is fastest, and on a busy 2-core machine extra OpenMP threads only spin
        torch.set_num_threads(1)
        device = "CPU, 1 thread, fp32"
    print(f"adversarial benchmark ({mode}) on {device}")
    dm = MNISTDataModule(root=str(MNIST) if MNIST.is_dir() else None, batch_size=100, train_size=cfg["train_size"])
    dm.setup()
    x_test, y_test = dm.test_set.images, dm.test_set.labels
    rows, codes = [], {}
    for name, prior in priors().items():
        for adversarial in (True, False):
            L.seed_everything(0)
            model = build(prior, adversarial, cfg["width"])
            t0 = time.time()
            tr = trainer(cfg["epochs"], accelerator=accelerator, precision=precision, limit_val_batches=0)
            tr.fit(model, dm)
            seconds = time.time() - t0
            model = model.cpu().eval()
            with torch.no_grad():
                z = model.encode(x_test)  # (N, 2)
                recon = model.decode(z)
            stats = prior_match(z, prior, labels=y_test)
            rows.append({
                "prior": name, "adversarial": adversarial, "code_dim": 2, "train_images": len(dm.train_set),
                "steps": tr.global_step // (3 if adversarial else 1),  # optimiser steps → batches
                "test_mse": torch.nn.functional.mse_loss(recon, x_test).item(),
                "test_bce": torch.nn.functional.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), x_test).item(),
                "prior_mmd": stats["mmd"], "prior_ks": stats["ks"], "seconds": round(seconds, 1), "device": device,
            })
            codes[(name, adversarial)] = z
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    write_csv(RESULTS / "adversarial_mnist.csv", rows, COLUMNS)
    table = markdown_table(COLUMNS[:-1], [[r[c] if not isinstance(r[c], float) else f"{r[c]:.4f}" for c in COLUMNS[:-1]]
                                          for r in rows])
    (RESULTS / "adversarial_mnist.md").write_text(
        f"# Adversarial autoencoder, MNIST, 2-D code ({mode}; {device})\n\n"
        "MMD² (Gaussian kernels) and max per-dimension KS statistic between held-out codes and the prior: lower is "
        "closer.\n\n" + table
    )
    figure(codes, y_test, RESULTS / "adversarial_mnist_latent.png")
    print(table)
    return rows


def figure(codes: dict, labels: torch.Tensor, path: Path) -> None:
    """Held-out codes coloured by digit over the prior's log-density; one panel per (prior, adversarial)."""
    ps = priors()
    fig, axes = plt.subplots(2, 2, figsize=(10, 10))
    for row, (name, prior) in enumerate(ps.items()):
        lim = 3.5 if name == "gaussian" else 5.0
        grid = torch.linspace(-lim, lim, 200)
        gx, gy = torch.meshgrid(grid, grid, indexing="xy")
        dens = prior.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).view(200, 200).clamp(min=-12)
        for col, adversarial in enumerate((True, False)):
            ax = axes[row, col]
            z = codes[(name, adversarial)][:3000]
            ax.contourf(gx, gy, dens, levels=20, cmap="Greys")
            sc = ax.scatter(z[:, 0], z[:, 1], c=labels[: len(z)], cmap="tab10", s=3, vmin=0, vmax=9)
            if not adversarial:  # the unregularised codes may lie far outside the prior: show them whole
                ax.set_xlim(min(-lim, z[:, 0].min()), max(lim, z[:, 0].max()))
                ax.set_ylim(min(-lim, z[:, 1].min()), max(lim, z[:, 1].max()))
            else:
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
            ax.set_title(f"{name}: adversarial phase {'on' if adversarial else 'off'}", fontsize=9)
    fig.colorbar(sc, ax=axes, shrink=0.6, label="digit")
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="offline, <= 2.5 min on 2 CPU cores (default)")
    group.add_argument("--full", action="store_true", help="longer, GPU when present")
    args = ap.parse_args()
    run("full" if args.full else "quick")
