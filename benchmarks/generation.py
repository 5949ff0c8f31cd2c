"""Generation benchmark: VAE likelihood on dynamically binarised MNIST, samples, interpolations, CVAE grid.

    python -m benchmarks.generation --quick                 # offline: real MNIST test digits, CPU, ~2 min
    python -m benchmarks.generation --full --data ~/mnist    # full 60k set (torchvision layout), GPU

Models: the experiment configs' ``model`` blocks, built through ``ae_lightning.config`` (Bernoulli
decoders, trained on the ELBO with fresh binarisation every draw); the only overrides are
``test_samples`` (= the mode's ``k``) and the 2-D row's latent size:

- ``vae``, latent 50: ``configs/vae_mnist.yaml`` as is, Burda et al. (2016)'s one-stochastic-layer
  VAE, 784-200-200-50, tanh. They report −log p(x) = 86.76 nats on the MNIST test set at k = 5000
  (trained k = 1, 3,280 passes over the 60k digits); ``--full`` prints our number beside it.
- ``vae``, latent 2: ``configs/vae_mnist.yaml`` with a 2-D code (encoder's last width 4, decoder's
  last width 2, ``latent_dim`` 2), for the latent scatter and the manifold.
- ``cvae``, latent 8: ``configs/cvae_mnist.yaml`` as is; its ``nll_k`` is the class-conditional −log p(x | y).

Metrics on the test split, per image, in nats: ``elbo`` (one-sample reconstruction term with the
closed-form KL) and ``nll_k`` (importance-weighted estimate with ``k`` samples; ``-elbo ≥ nll_k``).

Outputs (``benchmarks/results/``): ``generation_mnist.csv`` (model, latent_dim, train_size, elbo,
nll_k, k, config), ``generation_mnist.md``, ``generation_mnist_vae.png`` (prior samples and latent
interpolations), ``generation_mnist_cvae.png`` (one row per digit), ``generation_mnist_latent2d.png``.
Settings: ``generation.yaml``. Data (:meth:`benchmarks.core.Context.mnist`): ``--data``, ``$AE_MNIST_ROOT``,
``data/mnist``, then (full mode) torchvision's download into ``data/mnist``, else (quick) the embedded 10k MNIST
test digits, split 7k/1k/2k, so the quick numbers are far from the paper's (60k set); the full mode refuses to
run unless it found the 60k training set.
"""

from __future__ import annotations

import sys
import time

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
IMAGE = (1, 28, 28)


def spec_of(entry: dict, k: int) -> dict:
    """The config's ``model`` block; ``test_samples`` = the mode's ``k``; a VAE's latent size set to the entry's
    (encoder's last width 2·latent, decoder's last width latent); the CVAE's latent size is its config's."""
    spec = model_spec(entry["config"], test_samples=k)
    return with_latent_dim(spec, entry["latent"]) if entry["set_latent"] else spec


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


def binarised_test_set(dm: MNISTDataModule, seed: int = 0) -> ArrayImageDataset:
    """The test digits binarised once, ``x ~ Bernoulli(x)`` from a seeded generator: every model is scored on
    the same binary images (the loader's dynamic binarisation would draw new ones for each model)."""
    images = dm.test_set.images  # (N, 1, 28, 28) grey levels in [0, 1]
    binary = torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))
    return ArrayImageDataset(binary, dm.test_set.labels[: len(binary)])


def fit_and_score(ctx: Context, model: VAE, dm: MNISTDataModule, s: dict, test_set: ArrayImageDataset) -> dict:
    """Train on the ELBO, then ``trainer.test`` on ``test_set`` (binarised once, the same for every model): the
    module logs ``test/elbo`` and ``test/nll_k{K}``. No checkpoint: the model after the last epoch is scored.
    fp32 on purpose: k-sample log-likelihoods sum 784 Bernoulli terms and log-sum-exp thousands of weights."""
    ctx.trainer(s["epochs"], precision="32-true", limit_val_batches=0).fit(model, dm)
    n = len(test_set) if s["test_images"] is None else min(s["test_images"], len(test_set))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(test_set, range(n)), batch_size=s["batch_size"])
    metrics = ctx.trainer(1, precision="32-true").test(model, loader, verbose=False)[0]
    return {"elbo": metrics["test/elbo"], "nll_k": metrics[f"test/nll_k{s['k']}"], "k": s["k"]}


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
    import matplotlib.pyplot as plt

    model.eval()
    samples = model.sample(64, generator=torch.Generator(device=model.device).manual_seed(0))  # (64, 1, 28, 28)
    x = test_x[:16].to(model.device)  # 8 pairs
    z = model.encode(x)  # (16, D)
    t = torch.linspace(0, 1, 10, device=z.device).view(1, -1, 1)
    walk = model.decode(((1 - t) * z[0::2, None] + t * z[1::2, None]).flatten(0, 1)).view(8, 10, *IMAGE)
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
    import matplotlib.pyplot as plt

    model.eval()
    gen = torch.Generator(device=model.device).manual_seed(0)
    z = model.prior.sample(10, generator=gen, device=model.device).repeat(10, 1)  # (100, D)
    digits = torch.arange(10, device=model.device).repeat_interleave(10)  # row r: digit r
    images = model.decode(z, model.condition((None, digits)))
    fig, ax = plt.subplots(figsize=(6, 6.4), dpi=110)
    ax.imshow(_grid(images, 10))
    return _titled(fig, [ax], title + "\nrow = requested digit 0-9, column = the same prior code")


@torch.no_grad()
def figure_latent2d(model: VAE, test_x: torch.Tensor, test_y: torch.Tensor, title: str):
    """The test codes of a 2-D VAE by digit, and the decoded grid of N(0, 1) quantiles."""
    import matplotlib.pyplot as plt

    codes = in_eval_batches(model, model.encode, test_x)  # (N, 2)
    fig_s = scatter_figure(codes.numpy(), scalar_labels(test_y).numpy(), "test codes (posterior means)")
    fig_s.canvas.draw()
    scatter = fig_s.canvas.buffer_rgba()
    m = 15
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, m))
    zz = torch.stack(torch.meshgrid(q.flip(0), q, indexing="ij"), dim=-1).view(-1, 2)[:, [1, 0]]
    manifold = in_eval_batches(model, model.decode, zz)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5), dpi=110)
    axes[0].imshow(scatter)
    axes[1].imshow(_grid(manifold, m))
    axes[1].set_title("decoded z on a grid of N(0, 1) quantiles (5%-95%)")
    plt.close(fig_s)
    return _titled(fig, axes, title)


class Generation(Benchmark):
    name = "generation"
    data = ("mnist",)
    doc = "VAE likelihood on dynamically binarised MNIST (Burda et al. 2016), samples, interpolations, CVAE grid"

    def models(self, s: dict) -> dict[tuple[str, int], VAE]:
        """The untrained models the benchmark trains, keyed ``(name, latent)``, built from their configs."""
        return {(entry["name"], entry["latent"]): self.build(entry, s["k"]) for entry in s["models"]}

    @staticmethod
    def build(entry: dict, k: int) -> VAE:
        torch.manual_seed(0)  # each model from the same seed; its training goes on from there
        model = build(spec_of(entry, k))
        if model.latent_dim != entry["latent"]:  # the CVAE's latent size is its config's: the row must say so
            raise ValueError(f"{entry['name']}: the config gives latent_dim {model.latent_dim}, the benchmark "
                             f"expects {entry['latent']}")
        return model

    def run(self, ctx: Context, s: dict) -> Results:
        with threads(s["threads"]):
            torch.manual_seed(0)
            dm = ctx.mnist(self.name, batch_size=s["batch_size"], binarize=True, num_workers=s["workers"], seed=0)
            train_size, source = len(dm.train_set), relative(dm.source)
            print(f"generation ({ctx.mode}): {source}: {train_size} train / {len(dm.test_set)} test digits, "
                  f"dynamically binarised; {s['epochs']} epochs, k = {s['k']}; {ctx.device}", flush=True)
            test_set = binarised_test_set(dm, s["test_binarisation_seed"])
            test_x, test_y = test_set.images[:2000], test_set.labels[:2000]
            rows, trained = [], {}
            for entry in s["models"]:
                t = time.perf_counter()
                model = trained[(entry["name"], entry["latent"])] = self.build(entry, s["k"])
                scores = fit_and_score(ctx, model, dm, s, test_set)
                rows.append(dict(model=entry["name"], latent_dim=entry["latent"], train_size=train_size, **scores,
                                 config=label_of(entry)))
                print(f"  {entry['name']:4s} latent {entry['latent']:2d}: ELBO {scores['elbo']:8.2f}  "
                      f"NLL_k{s['k']} {scores['nll_k']:7.2f} nats  ({time.perf_counter() - t:.0f} s)", flush=True)
            return self.write(ctx, s, rows, trained, dm, test_x, test_y)

    def write(self, ctx: Context, s: dict, rows: list[dict], trained: dict, dm, test_x, test_y) -> Results:
        results = ctx.results()
        where = "quick, MNIST test digits" if ctx.mode == "quick" else "full MNIST"
        fig = s["figures"]
        results.figure("generation_mnist_vae", figure_vae(trained[tuple(fig["vae"])], test_x,
                                                          f"VAE 784-200-200-50 ({where})"))
        results.figure("generation_mnist_cvae", figure_cvae(trained[tuple(fig["cvae"])], f"CVAE, 8-d latent ({where})"))
        results.figure("generation_mnist_latent2d", figure_latent2d(trained[tuple(fig["latent2d"])], test_x, test_y,
                                                                     f"VAE with a 2-D latent ({where})"))
        results.table("generation_mnist", rows, COLUMNS)
        table = markdown_table(
            ["model", "latent", "train images", "test ELBO (nats)", f"test NLL, k={s['k']} (nats)", "config"],
            [[r["model"], r["latent_dim"], r["train_size"], f"{r['elbo']:.2f}", f"{r['nll_k']:.2f}", r["config"]]
             for r in rows])
        paper = s["paper"]
        used = ", ".join(dict.fromkeys(optimiser_of(spec_of(e, s["k"])) for e in s["models"]))
        burda = (f"{paper['model']}, on the full 60k set, {paper['epochs']:,} epochs: NLL {paper['nll']} nats at "
                 f"k = {paper['k']}; ours ({where}): {rows[0]['nll_k']:.2f} nats at k = {s['k']}, "
                 f"{rows[0]['nll_k'] - paper['nll']:+.2f} nats from the paper.")
        n_test = s["test_images"] or len(dm.test_set)
        results.markdown("generation_mnist", (
            f"# Generation on dynamically binarised MNIST ({ctx.mode})\n\n{relative(dm.source)}, "
            f"{rows[0]['train_size']} training digits, {s['epochs']} epochs, {used} (the configs'), batch "
            f"{s['batch_size']}; test metrics on {n_test} test digits, binarised once from a seeded generator (the "
            "same for every model).\n\n"
            "Models: each config's `model` block as is, except `test_samples` = k and, for the 2-D row, the latent "
            "size (encoder's last width 2·latent, decoder's last width latent, `latent_dim`).\n\n"
            + table + f"\n{burda}\nThe CVAE's NLL is the class-conditional −log p(x | y).\n\n"
            + "".join(f"![{alt}]({results.path(stem, 'png').name})\n\n" for alt, stem in (
                ("samples and interpolations", "generation_mnist_vae"), ("CVAE", "generation_mnist_cvae"),
                ("2-D latent", "generation_mnist_latent2d")))))
        print("\n" + table + burda)
        return results


main = Generation.main

if __name__ == "__main__":
    sys.exit(main())
