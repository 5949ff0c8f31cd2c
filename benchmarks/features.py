"""Feature quality: does the encoder "learn important hidden features"? A linear probe says how much.

For every autoencoder type (the experiment configs listed in ``benchmarks/features.yaml``, each
with its code size set to the same ``code_dim``) the encoder is trained on MNIST without labels,
frozen, and a logistic regression on its codes is scored on held-out digits. Baselines: raw pixels
and PCA at the same dimension. The stacked denoising autoencoder is probed after pretraining and
also fine-tuned with labels; its test error stands beside Vincent et al. (2010)'s SDAE-3 1.28 %.

    python -m benchmarks.features --quick          # < 2.5 min on 2 CPU cores
    python -m benchmarks.features --full           # every config's own schedule (GPU when present)
    python -m benchmarks.features --data ~/mnist   # a folder with the full MNIST (torchvision layout)

Data (:func:`benchmarks.common.find_mnist`): the first of ``--data``, ``$AE_MNIST_ROOT``,
``data/mnist``, then ``../shared/data/mnist`` (quick; the real 10k test set, split train/val/test
with a fixed seed) or ``../shared/data/mnist_full`` (full); else the 3,000 embedded digits. The
output states which. ``--full`` refuses to run unless it found the full 60k training set. Writes
``benchmarks/results/features_mnist.{csv,md}`` and ``features_mnist_embedding.png`` (other modes:
``features_mnist_<mode>.*``).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import yaml

from ae_lightning.config import load_config
from ae_lightning.data import MNISTDataModule
from ae_lightning.inference import in_eval_batches
from benchmarks.common import (
    RESULTS,
    build,
    config_file,
    find_mnist,
    hardware,
    is_full_mnist,
    markdown_table,
    mnist_main,
    quiet,
    relative,
    require_full_mnist,
    scaled_schedule,
    trainer,
    with_code_dim,
    write_csv,
)

CONFIG = Path(__file__).with_name("features.yaml")
COLUMNS = ["model", "code_dim", "train_size", "probe_accuracy", "finetune_error", "config"]
__all__ = ["run", "models", "model_spec_of", "scaled_schedule", "with_code_dim"]  # the last two: benchmarks.common's


# --- data -------------------------------------------------------------------------------------
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


@dataclass
class Digits:
    """The three splits as tensors, and a sentence saying where they came from."""

    images: dict[str, torch.Tensor]  # split → (N, 1, 28, 28)
    labels: dict[str, torch.Tensor]  # split → (N,)
    what: str
    dm: MNISTDataModule = field(repr=False)

    @property
    def n_train(self) -> int:
        return len(self.images["train"])


def digits(mode: str, data: str | None, split: dict, train_size: int | None) -> Digits:
    """MNIST from :func:`benchmarks.common.find_mnist`; full mode refuses anything but the 60k training set."""
    dm = load_data(find_mnist(data, mode), split, train_size)
    if mode == "full":
        require_full_mnist(dm, "features")
    sets = {"train": dm.train_set, "val": dm.val_set, "test": dm.test_set}
    images = {k: tensors(s)[0] for k, s in sets.items()}
    labels = {k: tensors(s)[1] for k, s in sets.items()}
    what = (f"{relative(dm.source)}: {len(images['train'])} train / {len(images['val'])} val / "
            f"{len(images['test'])} test digits" + ("" if is_full_mnist(dm) else f" (split with seed {split['seed']})"))
    return Digits(images, labels, what, dm)


# --- models from the experiment configs --------------------------------------------------------
def read_config(config: Path | dict) -> dict:
    return yaml.safe_load(Path(config).read_text()) if not isinstance(config, dict) else copy.deepcopy(config)


def model_spec_of(entry: dict, code_dim: int, epoch_scale: float, schedule: dict | None = None
                  ) -> tuple[dict, int, dict]:
    """``(model block, epochs, experiment config)`` of one ``models`` entry: the experiment config's
    model with its code size set to ``code_dim`` and its schedule scaled by ``epoch_scale``; ``schedule``
    (the mode's ``schedules`` entry for this model) then sets schedule entries outright."""
    exp = load_config(entry["config"])
    spec, epochs = scaled_schedule(exp, epoch_scale)
    spec["init_args"].update(copy.deepcopy(schedule or {}))
    return with_code_dim(spec, code_dim), epochs, exp


def models(mode: str = "quick", config: Path | dict = CONFIG) -> dict[str, L.LightningModule]:
    """The untrained models the benchmark trains, keyed by their table name."""
    cfg = read_config(config)
    m = cfg["modes"][mode]
    out = {}
    for entry in cfg["models"]:
        spec, _, exp = model_spec_of(entry, cfg["code_dim"], m["epoch_scale"], m.get("schedules", {}).get(entry["name"]))
        L.seed_everything(exp.get("seed_everything", 0), verbose=False)
        out[entry["name"]] = build(spec)
    return out


def codes_of(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Frozen codes ``(N, D)`` of ``images`` (N, C, H, W); a posterior-like code contributes its mean."""

    def code(x: torch.Tensor) -> torch.Tensor:
        c = model.encode(x)
        return (c if torch.is_tensor(c) else getattr(c, "mean", c)).float().flatten(1)

    return in_eval_batches(model, code, images, batch_size)


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
              f"{100 * r['finetune_error']:.2f}" if r["finetune_error"] != "" else "–", meta["seconds"].get(r["model"], "–"),
              r["config"] or "–"]
             for r in rows]
    table.append([f"*{paper['model']}* (paper)", 1000, 60000, "–", f"{100 * paper['finetune_error']:.2f}", "–", "–"])
    text = [
        "# Feature quality on MNIST — linear probe on frozen codes\n",
        f"Data: {meta['data']}. Mode `{meta['mode']}`, {meta['hardware']}, total {meta['total'] / 60:.1f} min.\n",
        markdown_table(["model", "code dim", "train size", "probe accuracy %", "fine-tuned test error %", "fit s",
                        "config"], table),
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
class Probes:
    """The table being built: one row per probed feature set, the test embeddings and fit times."""

    def __init__(self, d: Digits, probe: dict) -> None:
        self.d, self.probe = d, probe
        self.rows: list[dict] = []
        self.embeddings: dict[str, torch.Tensor] = {}
        self.seconds: dict[str, str] = {}

    def add(self, name: str, feats: dict[str, torch.Tensor], finetune_error: float | str = "", config: str = "") -> None:
        acc, l2 = linear_probe(feats, self.d.labels, self.probe["l2"], self.probe["max_iter"])
        self.rows.append(dict(model=name, code_dim=feats["train"].shape[1], train_size=self.d.n_train,
                              probe_accuracy=acc, finetune_error=finetune_error, config=config))
        self.embeddings[name] = feats["test"]
        extra = f", fine-tuned test error {100 * finetune_error:.2f} %" if finetune_error != "" else ""
        print(f"  {name:<26} code {feats['train'].shape[1]:>4}  probe accuracy {100 * acc:6.2f} %  (L2 {l2:g}){extra}",
              flush=True)


def train_and_probe(entry: dict, cfg: dict, m: dict, d: Digits, probes: Probes, accelerator: str,
                    precision: str) -> None:
    """Train one config's autoencoder without labels, then probe its frozen codes (a supervised fine-tuning
    stage: probe the codes from before it, and score the fine-tuned head's test error)."""
    name = entry["name"]
    spec, epochs, exp = model_spec_of(entry, cfg["code_dim"], m["epoch_scale"], m.get("schedules", {}).get(name))
    L.seed_everything(exp.get("seed_everything", 0), verbose=False)
    model = build(spec)
    epochs = getattr(model, "total_epochs", epochs)  # a staged model runs its own schedule
    d.dm.batch_size = m.get("batch_size") or exp.get("data", {}).get("init_args", {}).get("batch_size", 128)
    snapshot = CodesBeforeFinetuning(d.images)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer(epochs, accelerator, precision, limit_val_batches=0, callbacks=[snapshot]).fit(model, d.dm)
    probes.seconds[name] = f"{time.perf_counter() - t0:.0f}"
    print(f"  [{name}: {epochs} epochs, {probes.seconds[name]} s wall, {time.process_time() - c0:.0f} s CPU]",
          flush=True)
    final = {k: codes_of(model, x) for k, x in d.images.items()}
    head = getattr(model, "head", None)
    config = config_file(entry["config"])
    if snapshot.codes is not None and head is not None:
        with torch.no_grad():
            logits = head(final["test"].to(next(head.parameters()).device)).float().cpu()
        error = float((logits.argmax(1) != d.labels["test"]).float().mean())
        probes.add(name, snapshot.codes, finetune_error=error, config=config)
        probes.embeddings[f"{name} (fine-tuned)"] = final["test"]
    else:
        probes.add(name, final, config=config)


def setup_text(cfg: dict, m: dict) -> str:
    probe, scale = cfg["probe"], m["epoch_scale"]
    schedule = "the configs’ own schedules" if scale == 1 else f"{scale:g}× the configs’ epochs"
    for name, entries in (m.get("schedules") or {}).items():
        schedule += f", except {name}: " + ", ".join(f"{k} {v}" for k, v in entries.items())
    return (f"every encoder trained without labels from its experiment config (`config` column; configs/), code "
            f"size set to {cfg['code_dim']}, {schedule}; "
            f"probe: multinomial logistic regression (L-BFGS, ≤ {probe['max_iter']} iterations) on standardised "
            f"codes, L2 weight from {probe['l2']} chosen on the val split, accuracy on the test split; the stacked "
            "DAE is probed after layer-wise pretraining, then fine-tuned with the labels (test error of its head).")


def write_outputs(out_dir: Path, mode: str, cfg: dict, m: dict, d: Digits, probes: Probes, hw: str,
                  total: float) -> str:
    """The CSV, the Markdown table and the embedding figure; returns the files' stem."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "features_mnist" if mode == "quick" else f"features_mnist_{mode}"  # the committed quick run keeps its name
    write_csv(out_dir / f"{stem}.csv", probes.rows, COLUMNS)
    meta = dict(data=d.what, mode=mode, hardware=hw, total=total, setup=setup_text(cfg, m), seconds=probes.seconds,
                figure=f"{stem}_embedding.png")
    write_markdown(out_dir / f"{stem}.md", probes.rows, meta, cfg["paper"])
    shown = {k: probes.embeddings[k] for k in cfg.get("embedding", []) if k in probes.embeddings}
    write_figure(out_dir / meta["figure"], shown, d.labels["test"],
                 f"MNIST test codes, 2-D PCA ({mode}; {len(d.labels['test'])} digits)")
    return stem


def run(mode: str = "quick", data: str | None = None, out_dir: Path = RESULTS, config: Path | dict = CONFIG,
        overrides: dict | None = None) -> list[dict]:
    """Train every autoencoder of the config, probe its codes; returns the CSV rows."""
    quiet()
    t_start = time.perf_counter()
    cfg = read_config(config)
    if mode not in cfg["modes"]:
        raise ValueError(f"unknown mode {mode!r}; choose one of {sorted(cfg['modes'])} ({CONFIG.name})")
    m = {**cfg["modes"][mode], **(overrides or {})}
    accelerator, precision, hw = hardware()
    d = digits(mode, data, cfg["split"], m["train_size"])
    print(f"features benchmark [{mode}] on {d.what}; {hw}", flush=True)

    probes = Probes(d, cfg["probe"])
    pixels = {k: x.flatten(1) for k, x in d.images.items()}
    probes.add("raw pixels", pixels)
    probes.add("PCA", pca_features(pixels, cfg["code_dim"]))
    for entry in cfg["models"]:
        train_and_probe(entry, cfg, m, d, probes, accelerator, precision)

    total = time.perf_counter() - t_start
    stem = write_outputs(out_dir, mode, cfg, m, d, probes, hw, total)
    print(f"\nfeatures benchmark ({mode}, {total / 60:.1f} min, {hw}); data: {d.what}")
    print(markdown_table(COLUMNS, [[r[c] if not isinstance(r[c], float) else f"{r[c]:.4f}" for c in COLUMNS]
                                   for r in probes.rows]))
    paper = cfg["paper"]
    print(f"paper anchor: {paper['model']} fine-tuned test error {100 * paper['finetune_error']:.2f} %  |  ours: "
          + ", ".join(f"{r['model']} {100 * r['finetune_error']:.2f} %" for r in probes.rows if r["finetune_error"] != ""))
    print(f"results in {out_dir}/{stem}.{{csv,md}} and {stem}_embedding.png")
    return probes.rows


def main(argv=None) -> int:
    return mnist_main(__doc__, "every config's own schedule", run, argv)

if __name__ == "__main__":
    sys.exit(main())
