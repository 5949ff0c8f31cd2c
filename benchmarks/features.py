"""Feature quality: does the encoder "learn important hidden features"? A linear probe says how much.

For every autoencoder type (the experiment configs listed in ``benchmarks/features.yaml``, each
with its code size set to the same ``code_dim``) the encoder is trained on MNIST without labels,
frozen, and a logistic regression on its codes is scored on held-out digits. Baselines: raw pixels
and PCA at the same dimension. The stacked denoising autoencoder is probed after pretraining and
also fine-tuned with labels; its test error stands beside Vincent et al. (2010)'s SDAE-3 1.28 %.

    python -m benchmarks.features --quick          # < 2.5 min on 2 CPU cores
    python -m benchmarks.features --full           # every config's own schedule (GPU when present)
    python -m benchmarks.features --data ~/mnist   # a folder with the full MNIST (torchvision layout)

Data: the full MNIST set when a root holds it (``--data``, ``$AE_MNIST_ROOT``, ``data/mnist``,
``../shared/data/mnist``); else the real 10k test set split train/val/test with a fixed seed;
else the 3,000 embedded digits. The output states which. Writes
``benchmarks/results/features_mnist.{csv,md}`` and ``features_mnist_embedding.png`` (other modes:
``features_mnist_<mode>.*``).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import yaml

from ae_lightning.config import instantiate, load_config
from ae_lightning.data import MNISTDataModule
from benchmarks.common import RESULTS, hardware, markdown_table, quiet, trainer, write_csv

CONFIG = Path(__file__).with_name("features.yaml")
COLUMNS = ["model", "code_dim", "train_size", "probe_accuracy", "finetune_error"]
REPO = Path(__file__).resolve().parent.parent
CODE_KEYS = ("widths", "code_dim", "latent_dim")


# --- data -------------------------------------------------------------------------------------
def find_root(data: str | None) -> Path | None:
    """The first MNIST folder that exists: ``data``, ``$AE_MNIST_ROOT``, ``data/mnist``, ``../shared/data/mnist``."""
    if data:
        return Path(data).expanduser()  # named explicitly: the DataModule reports it if it is wrong
    for cand in (os.environ.get("AE_MNIST_ROOT"), REPO / "data" / "mnist", REPO.parent / "shared" / "data" / "mnist"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def load_data(root: Path | None, split: dict, train_size: int | None) -> MNISTDataModule:
    """The MNIST DataModule, set up, its training set capped at ``train_size`` when that is smaller."""
    dm = MNISTDataModule(root=str(root) if root else None, **split)
    dm.setup("fit")
    if train_size is not None and train_size < len(dm.train_set):
        dm = MNISTDataModule(root=str(root) if root else None, train_size=train_size, **split)
        dm.setup("fit")
    return dm


def tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return dataset.images, dataset.labels  # (N, 1, 28, 28), (N,)


# --- models from the experiment configs --------------------------------------------------------
def with_code_dim(spec: dict, code_dim: int) -> dict:
    """A copy of a config's ``model`` block whose nets produce ``code_dim``-sized codes."""
    spec = copy.deepcopy(spec)
    found = False
    for net in ("encoder", "decoder"):
        args = spec["init_args"].get(net, {}).get("init_args", {})
        for key in CODE_KEYS:
            if key in args:
                if key == "widths":
                    args[key] = [*args[key][:-1], code_dim]
                else:
                    args[key] = code_dim
                found = True
    if not found:
        raise ValueError(f"{spec['class_path']}: no {' / '.join(CODE_KEYS)} in its encoder/decoder init_args "
                         "to set the code size; fix: name the code size with one of these keys in the config")
    return spec


def scaled_schedule(cfg: dict, scale: float) -> tuple[dict, int]:
    """The config's ``model`` block and epoch count with every schedule entry scaled (at least 1 epoch per stage)."""
    spec = copy.deepcopy(cfg["model"])
    args = spec["init_args"]

    def scaled(n: int) -> int:
        return max(1, math.ceil(n * scale)) if n > 0 else 0

    epochs = scaled(cfg.get("trainer", {}).get("max_epochs", 10))
    if "pretrain_epochs" in args:  # staged models: the schedule is the model's, the trainer runs all of it
        pre = args["pretrain_epochs"]
        args["pretrain_epochs"] = [scaled(n) for n in pre] if isinstance(pre, list) else scaled(pre)
        args["finetune_epochs"] = scaled(args.get("finetune_epochs", 0))
        n_layers = len(args["encoder"]["init_args"]["widths"])
        pre = args["pretrain_epochs"]
        epochs = (sum(pre) if isinstance(pre, list) else pre * n_layers) + args["finetune_epochs"]
    return spec, epochs


@torch.no_grad()
def codes_of(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Frozen codes ``(N, D)`` of ``images`` (N, C, H, W); a posterior-like code contributes its mean."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for chunk in images.split(batch_size):
        code = model.encode(chunk.to(device))
        code = getattr(code, "mean", code) if not torch.is_tensor(code) else code
        out.append(code.float().flatten(1).cpu())
    model.train(was_training)
    return torch.cat(out)


class CodesBeforeFinetuning(L.Callback):
    """Keeps the codes of the pretrained stack when a staged model's fine-tuning stage starts, so the
    probe scores unsupervised features even when fine-tuning then uses the labels."""

    def __init__(self, images: dict[str, torch.Tensor]) -> None:
        self.images = images
        self.codes: dict[str, torch.Tensor] | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.codes is None and getattr(pl_module, "stage", -1) == getattr(pl_module, "depth", None):
            self.codes = {k: codes_of(pl_module, x) for k, x in self.images.items()}


# --- the probe ---------------------------------------------------------------------------------
def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int, num_classes: int = 10):
    """Multinomial logistic regression by full-batch L-BFGS; returns ``(weight, bias)``."""
    w = torch.zeros(x.shape[1], num_classes, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def linear_probe(feats: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], l2s: Sequence[float],
                 max_iter: int) -> tuple[float, float]:
    """Test accuracy of a logistic regression on standardised features, its L2 weight picked on ``val``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mean, std = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    x = {k: ((v - mean) / std).to(device) for k, v in feats.items()}  # (N, D) each
    y = {k: v.to(device) for k, v in labels.items()}

    def accuracy(params, split: str) -> float:
        w, b = params
        return float(((x[split] @ w + b).argmax(1) == y[split]).float().mean())

    fits = {l2: fit_logistic(x["train"], y["train"], l2, max_iter) for l2 in l2s}
    best = max(l2s, key=lambda l2: accuracy(fits[l2], "val"))
    return accuracy(fits[best], "test"), best


def pca_features(feats: dict[str, torch.Tensor], dim: int) -> dict[str, torch.Tensor]:
    """Projections on the top ``dim`` principal components of the training features (torch.pca_lowrank)."""
    mean = feats["train"].mean(0)
    torch.manual_seed(0)  # pca_lowrank is randomised
    _, _, v = torch.pca_lowrank(feats["train"] - mean, q=dim, center=False, niter=4)  # v: (D, dim)
    return {k: (f - mean) @ v for k, f in feats.items()}


# --- outputs -----------------------------------------------------------------------------------
def write_markdown(path: Path, rows: list[dict], meta: dict, paper: dict) -> None:
    table = [[r["model"], r["code_dim"], r["train_size"], f"{100 * r['probe_accuracy']:.2f}",
              f"{100 * r['finetune_error']:.2f}" if r["finetune_error"] != "" else "–", meta["seconds"].get(r["model"], "–")]
             for r in rows]
    table.append([f"*{paper['model']}* (paper)", 1000, 60000, "–", f"{100 * paper['finetune_error']:.2f}", "–"])
    text = [
        "# Feature quality on MNIST — linear probe on frozen codes\n",
        f"Data: {meta['data']}. Mode `{meta['mode']}`, {meta['hardware']}, total {meta['total'] / 60:.1f} min.\n",
        markdown_table(["model", "code dim", "train size", "probe accuracy %", "fine-tuned test error %", "fit s"], table),
        "## Setup\n",
        f"- **Ours**: {meta['setup']}",
        f"- **Paper anchor**: {paper['setup']}",
        "",
        f"Figure: `{meta['figure']}` (2-D PCA of the test codes, coloured by digit).",
    ]
    path.write_text("\n".join(text) + "\n")


def write_figure(path: Path, embeddings: dict[str, torch.Tensor], labels: torch.Tensor, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(embeddings)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, feats) in zip(axes.flat, embeddings.items(), strict=False):
        centred = feats - feats.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        xy = (centred @ v[:2].T).numpy()  # (N, 2)
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels.numpy(), cmap="tab10", s=3, alpha=0.7, vmin=-0.5, vmax=9.5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(sc, ax=axes, ticks=range(10), label="digit", shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the run -----------------------------------------------------------------------------------
def run(mode: str = "quick", data: str | None = None, out_dir: Path = RESULTS, config: Path | dict = CONFIG,
        overrides: dict | None = None) -> list[dict]:
    """Train every autoencoder of the config, probe its codes; returns the CSV rows."""
    quiet()
    t_start = time.perf_counter()
    cfg = yaml.safe_load(Path(config).read_text()) if not isinstance(config, dict) else copy.deepcopy(config)
    if mode not in cfg["modes"]:
        raise ValueError(f"unknown mode {mode!r}; choose one of {sorted(cfg['modes'])} ({CONFIG.name})")
    m = {**cfg["modes"][mode], **(overrides or {})}
    accelerator, precision, hw = hardware()
    code_dim = cfg["code_dim"]

    dm = load_data(find_root(data), cfg["split"], m["train_size"])
    sets = {"train": dm.train_set, "val": dm.val_set, "test": dm.test_set}
    images = {k: tensors(s)[0] for k, s in sets.items()}
    labels = {k: tensors(s)[1] for k, s in sets.items()}
    n_train = len(images["train"])
    what = (f"{dm.source}: {n_train} train / {len(images['val'])} val / {len(images['test'])} test digits"
            + (f" (split with seed {cfg['split']['seed']})" if "full MNIST" not in dm.source else ""))
    print(f"features benchmark [{mode}] on {what}; {hw}", flush=True)

    probe = cfg["probe"]
    rows: list[dict] = []
    embeddings: dict[str, torch.Tensor] = {}
    seconds: dict[str, str] = {}

    def add(name: str, feats: dict[str, torch.Tensor], finetune_error: float | str = "") -> None:
        acc, l2 = linear_probe(feats, labels, probe["l2"], probe["max_iter"])
        rows.append(dict(model=name, code_dim=feats["train"].shape[1], train_size=n_train, probe_accuracy=acc,
                         finetune_error=finetune_error))
        embeddings[name] = feats["test"]
        extra = f", fine-tuned test error {100 * finetune_error:.2f} %" if finetune_error != "" else ""
        print(f"  {name:<26} code {feats['train'].shape[1]:>4}  probe accuracy {100 * acc:6.2f} %  (L2 {l2:g}){extra}",
              flush=True)

    pixels = {k: x.flatten(1) for k, x in images.items()}
    add("raw pixels", pixels)
    add("PCA", pca_features(pixels, code_dim))

    for entry in cfg["models"]:
        name = entry["name"]
        exp = load_config(entry["config"])
        spec, epochs = scaled_schedule(exp, m["epoch_scale"])
        L.seed_everything(exp.get("seed_everything", 0), verbose=False)
        model = instantiate(with_code_dim(spec, code_dim), L.LightningModule)
        dm.batch_size = m.get("batch_size") or exp.get("data", {}).get("init_args", {}).get("batch_size", 128)
        snapshot = CodesBeforeFinetuning(images)
        t0, c0 = time.perf_counter(), time.process_time()
        trainer(epochs, accelerator, precision, limit_val_batches=0, callbacks=[snapshot]).fit(model, dm)
        seconds[name] = f"{time.perf_counter() - t0:.0f}"
        print(f"  [{name}: {epochs} epochs, {seconds[name]} s wall, {time.process_time() - c0:.0f} s CPU]", flush=True)
        final = {k: codes_of(model, x) for k, x in images.items()}
        head = getattr(model, "head", None)
        if snapshot.codes is not None and head is not None:
            # supervised fine-tuning: probe the pretrained codes, score the fine-tuned classifier
            with torch.no_grad():
                logits = head(final["test"].to(next(head.parameters()).device)).float().cpu()
            error = float((logits.argmax(1) != labels["test"]).float().mean())
            add(name, snapshot.codes, finetune_error=error)
            embeddings[f"{name} (fine-tuned)"] = final["test"]
        else:
            add(name, final)

    total = time.perf_counter() - t_start
    scale = m["epoch_scale"]
    setup = (f"every encoder trained without labels from its experiment config (configs/), code size set to "
             f"{code_dim}, {'the configs’ own schedules' if scale == 1 else f'{scale:g}× the configs’ epochs'}; "
             f"probe: multinomial logistic regression (L-BFGS, ≤ {probe['max_iter']} iterations) on standardised "
             f"codes, L2 weight from {probe['l2']} chosen on the val split, accuracy on the test split; the stacked "
             "DAE is probed after layer-wise pretraining, then fine-tuned with the labels (test error of its head).")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "features_mnist" if mode == "quick" else f"features_mnist_{mode}"  # the committed quick run keeps its name
    write_csv(out_dir / f"{stem}.csv", rows, COLUMNS)
    meta = dict(data=what, mode=mode, hardware=hw, total=total, setup=setup, seconds=seconds, figure=f"{stem}_embedding.png")
    write_markdown(out_dir / f"{stem}.md", rows, meta, cfg["paper"])
    shown = {k: embeddings[k] for k in cfg.get("embedding", []) if k in embeddings}
    write_figure(out_dir / meta["figure"], shown, labels["test"],
                 f"MNIST test codes, 2-D PCA ({mode}; {len(labels['test'])} digits)")

    print(f"\nfeatures benchmark ({mode}, {total / 60:.1f} min, {hw}); data: {what}")
    print(markdown_table(COLUMNS, [[r[c] if not isinstance(r[c], float) else f"{r[c]:.4f}" for c in COLUMNS]
                                   for r in rows]))
    paper = cfg["paper"]
    print(f"paper anchor: {paper['model']} fine-tuned test error {100 * paper['finetune_error']:.2f} %  |  ours: "
          + ", ".join(f"{r['model']} {100 * r['finetune_error']:.2f} %" for r in rows if r["finetune_error"] != ""))
    print(f"results in {out_dir}/{stem}.{{csv,md}} and {meta['figure']}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="mode", action="store_const", const="quick", help="the make-benchmark run")
    group.add_argument("--full", dest="mode", action="store_const", const="full", help="every config's own schedule")
    ap.add_argument("--data", help="MNIST root (full set in torchvision layout, or the t10k files only)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    run(args.mode or "quick", args.data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
