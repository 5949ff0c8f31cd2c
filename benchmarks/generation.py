"""Generation on dynamically binarised MNIST: the VAE's ELBO and importance-weighted NLL, samples, interpolations,
a 2-D latent and the CVAE grid, from the experiment configs (only ``test_samples`` = k and the 2-D row's latent size
are set here). Per test image, in nats: ``elbo`` (one-sample reconstruction term, closed-form KL) and ``nll_k``
(importance-weighted with ``k`` samples; ``-elbo ≥ nll_k``; the CVAE's is the class-conditional −log p(x | y)).
Anchor: Burda et al. (2016)'s 784-200-200-50 VAE (``configs/vae_mnist.yaml``), 86.76 nats at k = 5000 after 3,280
epochs on the 60k digits; quick mode's embedded 10k digits (split 7k/1k/2k) are far from that.

    python -m benchmarks.generation --quick                 # offline: real MNIST test digits, CPU, ~2 min
    python -m benchmarks.generation --full --data ~/mnist    # full 60k set (torchvision layout), GPU
"""

from __future__ import annotations

import sys
import time

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

from ae_lightning.callbacks.generation import scalar_labels, scatter_figure
from ae_lightning.data import MNISTDataModule
from ae_lightning.data.common import ArrayImageDataset
from ae_lightning.inference import in_eval_batches
from ae_lightning.models import VAE, ConditionalVAE
from benchmarks.common import build, config_file, model_spec, with_latent_dim
from benchmarks.core import Benchmark, Context, Results, markdown_table, relative, threads

COLUMNS = ["model", "latent_dim", "train_size", "elbo", "nll_k", "k", "config"]


def spec_of(entry: dict, k: int) -> dict:
    """The config's ``model`` block with ``test_samples`` = ``k``; a VAE's latent size set to the entry's
    (encoder's last width 2·latent, decoder's last width latent), the CVAE's its config's."""
    spec = model_spec(entry["config"], test_samples=k)
    return with_latent_dim(spec, entry["latent"]) if entry["set_latent"] else spec


def build_model(entry: dict, k: int) -> VAE:
    torch.manual_seed(0)  # each model from the same seed; its training goes on from there
    model = build(spec_of(entry, k))
    if model.latent_dim != entry["latent"]:  # the CVAE's latent size is its config's: the row must say so
        raise ValueError(f"{entry['name']}: the config gives latent_dim {model.latent_dim}, the benchmark "
                         f"expects {entry['latent']}")
    return model


def label_of(entry: dict) -> str:
    """The row's ``config`` entry: the file, and the latent size when the benchmark set it to another value."""
    native = model_spec(entry["config"])["init_args"]["latent_dim"]
    changed = entry["set_latent"] and entry["latent"] != native
    return config_file(entry["config"]) + (f" (latent {entry['latent']})" if changed else "")


def optimiser_of(spec: dict) -> str:
    """``Adam lr 0.001``: the optimiser a ``model`` block sets (the table's setup line)."""
    opt = spec["init_args"].get("optimizer", {"class_path": "torch.optim.Adam", "init_args": {}})
    lr = opt.get("init_args", {}).get("lr")
    return opt["class_path"].rsplit(".", 1)[-1] + (f" lr {lr:g}" if lr is not None else "")


def fit_and_score(ctx: Context, model: VAE, dm: MNISTDataModule, s: dict, test_set: ArrayImageDataset) -> dict:
    """Train on the ELBO, then ``trainer.test`` on ``test_set`` (binarised once, the same for every model): the
    module logs ``test/elbo`` and ``test/nll_k{K}``. No checkpoint: the model after the last epoch is scored.
    fp32 on purpose: k-sample log-likelihoods sum 784 Bernoulli terms and log-sum-exp thousands of weights."""
    ctx.trainer(s["epochs"], precision="32-true", limit_val_batches=0).fit(model, dm)
    n = len(test_set) if s["test_images"] is None else min(s["test_images"], len(test_set))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(test_set, range(n)), batch_size=s["batch_size"])
    metrics = ctx.trainer(1, precision="32-true").test(model, loader, verbose=False)[0]
    return {"elbo": metrics["test/elbo"], "nll_k": metrics[f"test/nll_k{s['k']}"], "k": s["k"]}


# --- figures ---------------------------------------------------------------------------------------
def _grid(images: torch.Tensor, nrow: int):
    return make_grid(images.float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0).permute(1, 2, 0).numpy()


def _titled(fig, axes, title: str):
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@torch.no_grad()
def figure_vae(model: VAE, test_x: torch.Tensor, title: str):
    """Prior samples and latent interpolations between pairs of test digits."""
    model.eval()
    samples = model.sample(64, generator=torch.Generator(device=model.device).manual_seed(0))  # (64, 1, 28, 28)
    x = test_x[:16].to(model.device)  # 8 pairs
    z = model.encode(x)  # (16, D)
    t = torch.linspace(0, 1, 10, device=z.device).view(1, -1, 1)
    walk = model.decode(((1 - t) * z[0::2, None] + t * z[1::2, None]).flatten(0, 1)).view(8, 10, *x.shape[1:])
    rows = torch.cat([x[0::2, None], walk, x[1::2, None]], dim=1).flatten(0, 1)  # (8*12, 1, 28, 28)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), dpi=110, gridspec_kw={"width_ratios": [8, 12]})
    axes[0].imshow(_grid(samples, 8))
    axes[0].set_title("samples from the prior (Bernoulli means)")
    axes[1].imshow(_grid(rows, 12))
    axes[1].set_title("test image | linear interpolation of posterior means | test image")
    return _titled(fig, axes, title)


@torch.no_grad()
def figure_cvae(model: ConditionalVAE, title: str):
    """One row per requested digit, the same prior codes in every row."""
    model.eval()
    gen = torch.Generator(device=model.device).manual_seed(0)
    z = model.prior.sample(10, generator=gen, device=model.device).repeat(10, 1)  # (100, D)
    digits = torch.arange(10, device=model.device).repeat_interleave(10)  # row r: digit r
    images = model.decode(z, model.condition((None, digits)))
    fig, ax = plt.subplots(figsize=(6, 6.4), dpi=110)
    ax.imshow(_grid(images, 10))
    return _titled(fig, [ax], title + "\nrow = requested digit 0-9, column = the same prior code")


def figure_latent2d(model: VAE, test_x: torch.Tensor, test_y: torch.Tensor, title: str):
    """The test codes of a 2-D VAE by digit, and the decoded grid of N(0, 1) quantiles."""
    codes = in_eval_batches(model, model.encode, test_x)  # (N, 2)
    fig_s = scatter_figure(codes.numpy(), scalar_labels(test_y).numpy(), "test codes (posterior means)")
    fig_s.canvas.draw()
    side = 15  # quantiles per axis
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, side))
    zz = torch.stack(torch.meshgrid(q.flip(0), q, indexing="ij"), dim=-1).view(-1, 2)[:, [1, 0]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5), dpi=110)
    axes[0].imshow(fig_s.canvas.buffer_rgba())
    axes[1].imshow(_grid(in_eval_batches(model, model.decode, zz), side))
    axes[1].set_title("decoded z on a grid of N(0, 1) quantiles (5%-95%)")
    plt.close(fig_s)
    return _titled(fig, axes, title)


class Generation(Benchmark):
    name = "generation"
    data = ("mnist",)
    doc = "VAE likelihood on dynamically binarised MNIST (Burda et al. 2016), samples, interpolations, CVAE grid"

    def models(self, s: dict) -> dict[tuple[str, int], VAE]:
        return {(entry["name"], entry["latent"]): build_model(entry, s["k"]) for entry in s["models"]}

    def run(self, ctx: Context, s: dict) -> Results:
        with threads(s["threads"]):
            torch.manual_seed(0)
            dm = ctx.mnist(self.name, batch_size=s["batch_size"], binarize=True, num_workers=s["workers"], seed=0)
            train_size, source = len(dm.train_set), relative(dm.source)
            print(f"generation ({ctx.mode}): {source}: {train_size} train / {len(dm.test_set)} test digits, "
                  f"dynamically binarised; {s['epochs']} epochs, k = {s['k']}; {ctx.device}", flush=True)
            # the test digits binarised once from a seeded generator: every model is scored on the same binary
            # images (the loader's dynamic binarisation would draw new ones for each model)
            binary = torch.bernoulli(dm.test_set.images, generator=torch.Generator().manual_seed(
                s["test_binarisation_seed"]))
            test_set = ArrayImageDataset(binary, dm.test_set.labels)
            rows, trained = [], {}
            for entry in s["models"]:
                t = time.perf_counter()
                model = trained[(entry["name"], entry["latent"])] = build_model(entry, s["k"])
                scores = fit_and_score(ctx, model, dm, s, test_set)
                rows.append(dict(model=entry["name"], latent_dim=entry["latent"], train_size=train_size, **scores,
                                 config=label_of(entry)))
                print(f"  {entry['name']:4s} latent {entry['latent']:2d}: ELBO {scores['elbo']:8.2f}  "
                      f"NLL_k{s['k']} {scores['nll_k']:7.2f} nats  ({time.perf_counter() - t:.0f} s)", flush=True)

            results = ctx.results()
            where = "quick, MNIST test digits" if ctx.mode == "quick" else "full MNIST"
            test_x, test_y, fig = binary[:2000], test_set.labels[:2000], s["figures"]
            results.figure("generation_mnist_vae", figure_vae(trained[tuple(fig["vae"])], test_x,
                                                              f"VAE 784-200-200-50 ({where})"))
            results.figure("generation_mnist_cvae", figure_cvae(trained[tuple(fig["cvae"])],
                                                                f"CVAE, 8-d latent ({where})"))
            results.figure("generation_mnist_latent2d", figure_latent2d(
                trained[tuple(fig["latent2d"])], test_x, test_y, f"VAE with a 2-D latent ({where})"))
            results.table("generation_mnist", rows, COLUMNS)
            table = markdown_table(
                ["model", "latent", "train images", "test ELBO (nats)", f"test NLL, k={s['k']} (nats)", "config"],
                [[r["model"], r["latent_dim"], r["train_size"], f"{r['elbo']:.2f}", f"{r['nll_k']:.2f}", r["config"]]
                 for r in rows])
            paper, n_test = s["paper"], s["test_images"] or len(dm.test_set)
            used = ", ".join(dict.fromkeys(optimiser_of(spec_of(e, s["k"])) for e in s["models"]))
            burda = (f"{paper['model']}, on the full 60k set, {paper['epochs']:,} epochs: NLL {paper['nll']} nats at "
                     f"k = {paper['k']}; ours ({where}): {rows[0]['nll_k']:.2f} nats at k = {s['k']}, "
                     f"{rows[0]['nll_k'] - paper['nll']:+.2f} nats from the paper.")
            figures = "".join(f"![{alt}]({results.path(stem, 'png').name})\n\n" for alt, stem in (
                ("samples and interpolations", "generation_mnist_vae"), ("CVAE", "generation_mnist_cvae"),
                ("2-D latent", "generation_mnist_latent2d")))
            results.markdown("generation_mnist", (
                f"# Generation on dynamically binarised MNIST ({ctx.mode})\n\n{source}, {train_size} training digits, "
                f"{s['epochs']} epochs, {used} (the configs'), batch {s['batch_size']}; test metrics on {n_test} test "
                "digits, binarised once from a seeded generator (the same for every model).\n\n"
                "Models: each config's `model` block as is, except `test_samples` = k and, for the 2-D row, the latent "
                "size (encoder's last width 2·latent, decoder's last width latent, `latent_dim`).\n\n"
                f"{table}\n{burda}\nThe CVAE's NLL is the class-conditional −log p(x | y).\n\n{figures}"))
            print("\n" + table + burda)
            return results


main = Generation.main

if __name__ == "__main__":
    sys.exit(main())
