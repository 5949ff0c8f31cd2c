"""Adversarial autoencoder on MNIST digits, 2-D code: does the adversarial phase match the codes to the prior?

``configs/aae_mnist.yaml`` (Gaussian prior) and ``configs/aae_mog_mnist.yaml`` (supervised mixture of 10
Gaussians), each trained with the adversarial phase on and off (``adversarial: false``), their code size set to 2
so that both priors are compared in the plane and drawn. On held-out digits: the reconstruction error (per-pixel
MSE and BCE) and :func:`ae_lightning.priors.prior_match` against an equal-sized prior sample: the unbiased MMD² with
Gaussian kernels (bandwidths 0.25…4 × the prior's scale) and the largest per-dimension KS statistic (lower =
closer). The figure scatters the held-out codes, coloured by digit, over the prior's log-density.

    python -m benchmarks.adversarial --quick    # offline: the embedded 10k real MNIST test digits
    python -m benchmarks.adversarial --full     # more epochs, GPU when present; the 60k set when found
"""

from __future__ import annotations

import sys
import time

import lightning as L
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from ae_lightning.inference import in_eval_batches
from ae_lightning.models import AdversarialAutoencoder
from ae_lightning.priors import Prior, prior_match
from benchmarks.common import build, config_file, model_spec, with_code_dim
from benchmarks.core import Benchmark, Context, Results, hardware, markdown_table, relative, threads

COLUMNS = ["prior", "adversarial", "codes", "code_dim", "train_images", "steps", "test_mse", "test_bce", "prior_mmd",
           "prior_ks", "seconds", "device", "config"]
SHOWN = [c for c in COLUMNS if c != "device"]  # the Markdown table's columns (the device is in its title)
WHITENED = "whitened"  # the `codes` entry of the baseline whose codes are mapped to the prior's mean and covariance


def build_model(s: dict, name: str, adversarial: bool) -> AdversarialAutoencoder:
    """The config's model with the code size set and the adversarial phase on or off."""
    L.seed_everything(0, verbose=False)  # each model from the same seed; its training goes on from there
    return build(with_code_dim(model_spec(s["configs"][name], adversarial=adversarial), s["code_dim"]))


def label_of(config: str, code_dim: int) -> str:
    """The row's ``config`` entry: the file, and the code size when the benchmark changed it."""
    native = model_spec(config)["init_args"]["prior"]["init_args"]["dim"]
    return config_file(config) + (f" (code {code_dim})" if native != code_dim else "")


def whiten_to_prior(z: torch.Tensor, z_train: torch.Tensor, prior: Prior, labels_train: torch.Tensor | None = None,
                    seed: int = 0) -> torch.Tensor:
    """``z`` (N, d) under the affine map that gives the *training* codes ``z_train`` the prior's mean and
    covariance (ZCA whitening, then the prior's covariance square root; the prior's moments from a seeded
    sample, label-conditioned on the training labels for a supervised prior). What the adversarial phase adds
    beyond scale and correlation is then what is left of MMD² / KS."""
    def sqrtm(c: torch.Tensor, power: float) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh(c)
        return vecs @ torch.diag(vals.clamp(min=1e-8) ** power) @ vecs.T

    z, z_train = z.double(), z_train.double()
    ref = prior.sample(len(z_train), labels=labels_train if prior.supervised else None,
                       generator=torch.Generator().manual_seed(seed)).double()  # (N, d)
    w, c = sqrtm(torch.cov(z_train.T), -0.5), sqrtm(torch.cov(ref.T), 0.5)  # (d, d) each
    return ((z - z_train.mean(0)) @ w @ c + ref.mean(0)).float()


class Adversarial(Benchmark):
    name = "adversarial"
    data = ("mnist",)
    doc = "adversarial autoencoder, 2-D code: the codes against the prior (MMD², KS) with the adversarial phase on/off"

    def models(self, s: dict) -> dict[tuple[str, bool], AdversarialAutoencoder]:
        return {(name, adversarial): build_model(s, name, adversarial)
                for name in s["configs"] for adversarial in (True, False)}

    def run(self, ctx: Context, s: dict) -> Results:
        with threads(s["threads"]):
            device = hardware()[2]
            dm = ctx.mnist(self.name, batch_size=100, train_size=s["train_size"])
            print(f"adversarial benchmark ({ctx.mode}) on {device}; {relative(dm.source)}; {s['epochs']} epochs",
                  flush=True)
            x_test, y_test = dm.test_set.images, dm.test_set.labels
            rows, codes, priors = [], {}, {}
            for name, adversarial in ((n, a) for n in s["configs"] for a in (True, False)):
                model = build_model(s, name, adversarial)
                priors[name] = model.prior
                t0 = time.time()
                trainer = ctx.trainer(s["epochs"], limit_val_batches=0)
                trainer.fit(model, dm)
                seconds = time.time() - t0
                model = model.cpu()
                z = codes[(name, adversarial)] = in_eval_batches(model, model.encode, x_test, len(x_test))  # (N, 2)
                recon = in_eval_batches(model, model.decode, z, len(z))
                stats = prior_match(z, model.prior, labels=y_test)
                new = [{"prior": name, "adversarial": adversarial, "codes": "raw", "code_dim": z.shape[1],
                        "train_images": len(dm.train_set),
                        "steps": trainer.global_step // (3 if adversarial else 1),  # optimiser steps → batches
                        "test_mse": F.mse_loss(recon, x_test).item(),
                        "test_bce": F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), x_test).item(),
                        "prior_mmd": stats["mmd"], "prior_ks": stats["ks"], "seconds": round(seconds, 1),
                        "device": device, "config": label_of(s["configs"][name], s["code_dim"])}]
                if not adversarial:  # the baseline with its codes whitened on training codes: scale is not the match
                    n = s["whiten_train_codes"]
                    x_train, y_train = dm.train_set.images[:n], dm.train_set.labels[:n]
                    z_train = in_eval_batches(model, model.encode, x_train, len(x_train))
                    stats = prior_match(whiten_to_prior(z, z_train, model.prior, y_train), model.prior, labels=y_test)
                    new.append({**new[0], "codes": WHITENED, "prior_mmd": stats["mmd"], "prior_ks": stats["ks"]})
                for row in new:
                    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                rows += new
            results = ctx.results()
            results.table("adversarial_mnist", rows, COLUMNS)
            table = markdown_table(SHOWN, [[f"{r[c]:.4f}" if isinstance(r[c], float) else r[c] for c in SHOWN]
                                           for r in rows])
            results.markdown("adversarial_mnist", (
                f"# Adversarial autoencoder, MNIST, 2-D code ({ctx.mode}; {device})\n\n"
                f"Data: {relative(dm.source)}. Models: each config's `model` block (`config` column) trained "
                f"{s['epochs']} epochs, with the adversarial phase on and off (`adversarial: false`) and the code size "
                f"set to {s['code_dim']} (encoder and decoder last width, discriminator `in_features`, prior `dim`); "
                "nets, optimisers and learning rates are the configs'.\n\n"
                "MMD² (Gaussian kernels) and max per-dimension KS statistic between held-out codes and the prior: lower "
                "is closer. `codes` = `whitened`: the baseline (adversarial phase off) with its held-out codes mapped by "
                f"the affine transform that gives its training codes (first {s['whiten_train_codes']:,}) the prior's "
                "mean and covariance, so its MMD² and KS no longer measure scale; reconstruction columns are the raw "
                "model's.\n\n" + table + "\n## Does the adversarial phase help?\n\n" + "\n".join(verdicts(rows))))
            results.figure("adversarial_mnist_latent", figure(codes, y_test, priors))
            print(table)
            return results


def verdicts(rows: list[dict]) -> list[str]:
    """One line per prior and baseline: the adversarial phase on vs off, in MMD² and KS (lower is closer)."""
    lines = []
    for prior in dict.fromkeys(r["prior"] for r in rows):
        mine = {(r["adversarial"], r["codes"]): r for r in rows if r["prior"] == prior}
        on = mine[(True, "raw")]
        for off, what in ((mine.get((False, "raw")), "off"), (mine.get((False, WHITENED)), "off, codes whitened")):
            if off is None:
                continue
            better = [m for m in ("prior_mmd", "prior_ks") if on[m] < off[m]]
            verdict = ("brings the codes closer to the prior in both" if len(better) == 2 else
                       "does **not** bring the codes closer to the prior in this budget (ours loses to the baseline)"
                       if not better else f"helps in {better[0]} only")
            lines.append(f"- **{prior}**, against the baseline ({what}): the adversarial phase {verdict}: MMD² "
                         f"{on['prior_mmd']:.4f} vs {off['prior_mmd']:.4f}, KS {on['prior_ks']:.3f} vs "
                         f"{off['prior_ks']:.3f} (on vs {what}).")
    return lines


def figure(codes: dict, labels: torch.Tensor, priors: dict[str, Prior]):
    """Held-out codes coloured by digit over the prior's log-density; one panel per (prior, adversarial)."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 10))
    for row, (name, prior) in enumerate(priors.items()):
        lim = 3.5 if name == "gaussian" else 5.0
        grid = torch.linspace(-lim, lim, 200)
        gx, gy = torch.meshgrid(grid, grid, indexing="xy")
        dens = prior.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).view(200, 200).clamp(min=-12)
        for col, adversarial in enumerate((True, False)):
            ax = axes[row, col]
            z = codes[(name, adversarial)][:3000]
            ax.contourf(gx, gy, dens, levels=20, cmap="Greys")
            sc = ax.scatter(z[:, 0], z[:, 1], c=labels[: len(z)], cmap="tab10", s=3, vmin=0, vmax=9)
            # the unregularised codes may lie far outside the prior: show them whole
            x_lim, y_lim = ((-lim, lim) if adversarial else (min(-lim, z[:, i].min()), max(lim, z[:, i].max()))
                            for i in (0, 1))
            ax.set(xlim=x_lim, ylim=y_lim)
            ax.set_title(f"{name}: adversarial phase {'on' if adversarial else 'off'}", fontsize=9)
    fig.colorbar(sc, ax=axes, shrink=0.6, label="digit")
    return fig


main = Adversarial.main

if __name__ == "__main__":
    sys.exit(main())
