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
Data (:func:`benchmarks.common.find_mnist`): ``--data``, ``$AE_MNIST_ROOT``, ``data/mnist``, then the
shared copy. The quick mode trains on the 10k real test digits in ``../shared/data/mnist`` (split
7k/1k/2k; the embedded 3,000 when absent), so its numbers are far from the paper's, which used the
60k set; the full mode looks in ``../shared/data/mnist_full`` and refuses to run unless it found the
60k training set.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.utils import make_grid

from ae_lightning.callbacks.generation import scalar_labels, scatter_figure
from ae_lightning.data import MNISTDataModule
from ae_lightning.data.common import ArrayImageDataset
from ae_lightning.models import VAE, ConditionalVAE
from benchmarks.common import (
    MNIST_DATA_HELP,
    RESULTS,
    benchmark_parser,
    build,
    config_file,
    find_mnist,
    hardware,
    markdown_table,
    model_spec,
    quiet,
    relative,
    require_full_mnist,
    run_main,
    trainer,
    with_latent_dim,
    write_csv,
)

COLUMNS = ["model", "latent_dim", "train_size", "elbo", "nll_k", "k", "config"]
BURDA_NLL = 86.76  # Burda et al. 2016, Table 1: VAE, 1 stochastic layer, k = 1 training, k = 5000 test

MODES = {
    # epochs, test-time k, test images used for nll_k (None: all), batch size, loader workers
    "quick": dict(epochs=15, k=200, test_images=500, batch_size=100, workers=0),
    # per-draw binarisation happens in the loader: workers keep a GPU fed (~20 ms/step without them)
    "full": dict(epochs=500, k=5000, test_images=None, batch_size=100, workers=4),
}
IMAGE = (1, 28, 28)


# (name, latent size, experiment config, latent override): the models the table reports, in its row order
MODELS = [("vae", 50, "vae_mnist", True), ("vae", 2, "vae_mnist", True), ("cvae", 8, "cvae_mnist", False)]


def spec_of(config: str, latent: int | None, k: int) -> dict:
    """The config's ``model`` block; ``test_samples`` = the mode's ``k``; a VAE's latent size set to ``latent``
    (encoder's last width 2·latent, decoder's last width latent); the CVAE's latent size is its config's."""
    spec = model_spec(config, test_samples=k)
    return with_latent_dim(spec, latent) if latent is not None else spec


def label_of(config: str, latent: int, overridden: bool) -> str:
    """The row's ``config`` entry: the file, and the latent size when the benchmark set it to another value."""
    native = model_spec(config)["init_args"]["latent_dim"]
    return config_file(config) + (f" (latent {latent})" if overridden and latent != native else "")


def optimiser_of(spec: dict) -> str:
    """``Adam, lr 0.001``: the optimiser a ``model`` block sets (the table's setup line)."""
    opt = spec["init_args"].get("optimizer", {"class_path": "torch.optim.Adam", "init_args": {}})
    lr = opt.get("init_args", {}).get("lr")
    return opt["class_path"].rsplit(".", 1)[-1] + (f" lr {lr:g}" if lr is not None else "")


def models(mode: str = "quick", k: int | None = None) -> dict[tuple[str, int], VAE]:
    """The untrained models the benchmark trains, keyed ``(name, latent)``, built from their configs."""
    k = k or MODES[mode]["k"]
    out = {}
    for name, latent, config, overridden in MODELS:
        torch.manual_seed(0)
        out[(name, latent)] = build(spec_of(config, latent if overridden else None, k))
    for (name, latent), model in out.items():  # the CVAE's latent size is its config's: the row must say so
        if model.latent_dim != latent:
            raise ValueError(f"{name}: the config gives latent_dim {model.latent_dim}, the benchmark expects {latent}")
    return out


class _Limited(torch.utils.data.Dataset):
    def __init__(self, ds, n: int | None) -> None:
        self.ds, self.n = ds, len(ds) if n is None else min(n, len(ds))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.ds[i]


def binarised_test_set(dm: MNISTDataModule, seed: int = 0) -> ArrayImageDataset:
    """The test digits binarised once, ``x ~ Bernoulli(x)`` from a seeded generator: every model is scored on
    the same binary images (the loader's dynamic binarisation would draw new ones for each model)."""
    images = dm.test_set.images  # (N, 1, 28, 28) grey levels in [0, 1]
    binary = torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))
    return ArrayImageDataset(binary, dm.test_set.labels[: len(binary)])


def fit_and_score(model: VAE, dm: MNISTDataModule, cfg: dict, accelerator: str, test_set: ArrayImageDataset) -> dict:
    """Train on the ELBO, then ``trainer.test`` on ``test_set`` (binarised once, the same for every model): the
    module logs ``test/elbo`` and ``test/nll_k{K}``. No checkpoint: the model after the last epoch is scored."""
    fit = trainer(cfg["epochs"], accelerator=accelerator, precision="32-true", limit_val_batches=0)
    fit.fit(model, dm)
    test_loader = torch.utils.data.DataLoader(_Limited(test_set, cfg["test_images"]), batch_size=cfg["batch_size"])
    tester = trainer(1, accelerator=accelerator, precision="32-true")
    # fp32 on purpose: k-sample log-likelihoods sum 784 Bernoulli terms and log-sum-exp thousands of weights
    metrics = tester.test(model, test_loader, verbose=False)[0]
    return {"elbo": metrics["test/elbo"], "nll_k": metrics[f"test/nll_k{cfg['k']}"], "k": cfg["k"]}


def _grid(images: torch.Tensor, nrow: int):
    return make_grid(images.float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0).permute(1, 2, 0).numpy()


def _save(fig, axes, title: str, path: Path) -> None:
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)


@torch.no_grad()
def figure_vae(model: VAE, test_x: torch.Tensor, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    g = torch.Generator(device=model.device).manual_seed(0)
    samples = model.sample(64, generator=g)  # (64, 1, 28, 28)
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
    _save(fig, axes, title, path)


@torch.no_grad()
def figure_cvae(model: ConditionalVAE, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    g = torch.Generator(device=model.device).manual_seed(0)
    z = model.prior(10).sample(generator=g).repeat(10, 1)  # (100, D): the same 10 codes in every row
    digits = torch.arange(10, device=model.device).repeat_interleave(10)  # row r: digit r
    images = model.decode(z, model.condition((None, digits)))
    fig, ax = plt.subplots(figsize=(6, 6.4), dpi=110)
    ax.imshow(_grid(images, 10))
    ax.set_title(title + "\nrow = requested digit 0-9, column = the same prior code")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@torch.no_grad()
def figure_latent2d(model: VAE, test_x: torch.Tensor, test_y: torch.Tensor, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    codes = torch.cat([model.encode(b.to(model.device)).cpu() for b in test_x.split(500)])  # (N, 2)
    fig_s = scatter_figure(codes.numpy(), scalar_labels(test_y).numpy(), "test codes (posterior means)")
    fig_s.canvas.draw()
    scatter = fig_s.canvas.buffer_rgba()
    m = 15
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, m))
    zz = torch.stack(torch.meshgrid(q.flip(0), q, indexing="ij"), dim=-1).view(-1, 2)[:, [1, 0]]
    manifold = model.decode(zz.to(model.device))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5), dpi=110)
    axes[0].imshow(scatter)
    axes[1].imshow(_grid(manifold, m))
    axes[1].set_title("decoded z on a grid of N(0, 1) quantiles (5%-95%)")
    _save(fig, axes, title, path)
    plt.close(fig_s)


def load_data(mode: str, data: str | None, download: bool, batch_size: int, workers: int = 0) -> MNISTDataModule:
    """Dynamically binarised MNIST from :func:`benchmarks.common.find_mnist`; full mode needs the 60k set."""
    root = find_mnist(data, mode)
    dm = MNISTDataModule(None if root is None else str(root), download=download, batch_size=batch_size,
                         binarize=True, num_workers=workers, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    if mode == "full":
        require_full_mnist(dm, "generation")
    return dm


def run(
    mode: str = "quick", data: str | None = None, out_dir: Path = RESULTS, download: bool = False, **overrides
) -> list[dict]:
    """Train and score the three models; ``overrides`` replace entries of ``MODES[mode]`` (e.g. ``epochs=50``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    quiet()
    cfg = {**MODES[mode], **{k: v for k, v in overrides.items() if v is not None}}
    threads = torch.get_num_threads()
    if mode == "quick":
        # 784-200-200 MLPs at batch 100 are too small to split across threads: a second thread
        # costs more in synchronisation than it gains (5x slower on a busy 2-core machine)
        torch.set_num_threads(1)
    try:
        return _run(mode, cfg, data, out_dir, download)
    finally:
        torch.set_num_threads(threads)


def _run(mode: str, cfg: dict, data: str | None, out_dir: Path, download: bool) -> list[dict]:
    accelerator, _, hw = hardware()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    dm = load_data(mode, data, download, cfg["batch_size"], cfg["workers"])
    train_size = len(dm.train_set)
    source = relative(dm.source)
    print(f"generation ({mode}): {source}: {train_size} train / {len(dm.test_set)} test digits, dynamically "
          f"binarised; {cfg['epochs']} epochs, k = {cfg['k']}; {hw.split(',')[0]}, fp32", flush=True)
    test_set = binarised_test_set(dm)  # one seeded binarisation for every model
    test_x, test_y = test_set.images[:2000], test_set.labels[:2000]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, trained = [], {}
    for name, latent, config, overridden in MODELS:
        t = time.perf_counter()
        torch.manual_seed(0)
        model = build(spec_of(config, latent if overridden else None, cfg["k"]))
        scores = fit_and_score(model, dm, cfg, accelerator, test_set)
        rows.append(dict(model=name, latent_dim=latent, train_size=train_size, **scores,
                         config=label_of(config, latent, overridden)))
        trained[(name, latent)] = model
        print(f"  {name:4s} latent {latent:2d}: ELBO {scores['elbo']:8.2f}  NLL_k{cfg['k']} {scores['nll_k']:7.2f} nats"
              f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    where = "quick, MNIST test digits" if mode == "quick" else "full MNIST"
    figure_vae(trained[("vae", 50)], test_x, out_dir / "generation_mnist_vae.png", f"VAE 784-200-200-50 ({where})")
    figure_cvae(trained[("cvae", 8)], out_dir / "generation_mnist_cvae.png", f"CVAE, 8-d latent ({where})")
    figure_latent2d(trained[("vae", 2)], test_x, test_y, out_dir / "generation_mnist_latent2d.png",
                    f"VAE with a 2-D latent ({where})")
    seconds = time.perf_counter() - t0
    write_csv(out_dir / "generation_mnist.csv", rows, COLUMNS)
    table = markdown_table(
        ["model", "latent", "train images", "test ELBO (nats)", f"test NLL, k={cfg['k']} (nats)", "config"],
        [[r["model"], r["latent_dim"], r["train_size"], f"{r['elbo']:.2f}", f"{r['nll_k']:.2f}", r["config"]]
         for r in rows],
    )
    used = ", ".join(dict.fromkeys(optimiser_of(spec_of(c, None, cfg["k"])) for _, _, c, _ in MODELS))
    burda = (f"Burda et al. (2016), same VAE on the full 60k set, 3,280 epochs: NLL {BURDA_NLL} nats at k = 5000; "
             f"ours ({where}): {rows[0]['nll_k']:.2f} nats at k = {cfg['k']}.")
    (out_dir / "generation_mnist.md").write_text(
        f"# Generation on dynamically binarised MNIST ({mode})\n\n{source}, {train_size} training digits, "
        f"{cfg['epochs']} epochs, {used} (the configs'), batch {cfg['batch_size']}; test metrics on "
        f"{cfg['test_images'] or len(dm.test_set)} test digits, binarised once from a seeded generator (the same for "
        f"every model). {hw}; {seconds / 60:.1f} min.\n\n"
        + "Models: each config's `model` block as is, except `test_samples` = k and, for the 2-D row, the latent "
        "size (encoder's last width 2·latent, decoder's last width latent, `latent_dim`).\n\n"
        + table + f"\n{burda}\nThe CVAE's NLL is the class-conditional −log p(x | y).\n\n"
        "![samples and interpolations](generation_mnist_vae.png)\n\n![CVAE](generation_mnist_cvae.png)\n\n"
        "![2-D latent](generation_mnist_latent2d.png)\n"
    )
    print("\n" + table)
    print(burda)
    print(f"generation: {seconds / 60:.1f} min; results in {out_dir}/generation_mnist.*")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, "Burda et al.'s setting")
    ap.add_argument("--data", help=MNIST_DATA_HELP)
    ap.add_argument("--download", action="store_true", help="download MNIST into --data (needs internet)")
    ap.add_argument("--epochs", type=int, help="override the mode's number of epochs")
    ap.add_argument("-k", type=int, help="override the mode's number of importance samples")
    args = ap.parse_args(argv)
    return run_main(lambda: run(args.mode, args.data, args.out, args.download, epochs=args.epochs, k=args.k))

if __name__ == "__main__":
    sys.exit(main())
