"""Feature quality: does the encoder "learn important hidden features"? A linear probe says how much.

For every autoencoder type (the experiment configs listed in ``benchmarks/features.yaml``, each
with its code size set to the same ``code_dim``) the encoder is trained on MNIST without labels,
frozen, and a logistic regression on its codes is scored on held-out digits. Baselines: raw pixels
and PCA at the same dimension. The stacked denoising autoencoder is probed after pretraining and
also fine-tuned with labels; its test error stands beside Vincent et al. (2010)'s SDAE-3 1.28 %.

    python -m benchmarks.features --quick          # < 2.5 min on 2 CPU cores
    python -m benchmarks.features --full           # every config's own schedule (GPU when present)
    python -m benchmarks.features --data ~/mnist   # a folder with the full MNIST (torchvision layout)

Data (:func:`benchmarks.core.mnist_source`): ``--data``, ``$AE_MNIST_ROOT``, ``data/mnist``, then (full
mode) torchvision's download into ``data/mnist``, else (quick) the embedded 10k MNIST test digits (split
train/val/test with a fixed seed). The
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

import lightning as L
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from ae_lightning.config import load_config
from ae_lightning.data import MNISTDataModule
from ae_lightning.inference import in_eval_batches
from benchmarks.common import build, config_file, scaled_schedule, with_code_dim
from benchmarks.core import Benchmark, Context, Results, is_full_mnist, markdown_table, relative

COLUMNS = ["model", "code_dim", "train_size", "probe_accuracy", "finetune_error", "config"]


# --- data -------------------------------------------------------------------------------------
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


def digits(ctx: Context, split: dict, train_size: int | None) -> Digits:
    """MNIST by the DataModules' lookup, its training set capped at ``train_size`` when that is smaller; full mode
    refuses anything but the 60k training set."""
    dm = ctx.mnist("features", **split)
    if train_size is not None and train_size < len(dm.train_set):
        dm = ctx.mnist("features", train_size=train_size, **split)
    sets = {"train": dm.train_set, "val": dm.val_set, "test": dm.test_set}
    images = {k: tensors(s)[0] for k, s in sets.items()}
    labels = {k: tensors(s)[1] for k, s in sets.items()}
    what = (f"{relative(dm.source)}: {len(images['train'])} train / {len(images['val'])} val / "
            f"{len(images['test'])} test digits" + ("" if is_full_mnist(dm) else f" (split with seed {split['seed']})"))
    return Digits(images, labels, what, dm)


# --- models from the experiment configs --------------------------------------------------------
def model_spec_of(entry: dict, code_dim: int, epoch_scale: float, schedule: dict | None = None
                  ) -> tuple[dict, int, dict]:
    """``(model block, epochs, experiment config)`` of one ``models`` entry: the experiment config's
    model with its code size set to ``code_dim`` and its schedule scaled by ``epoch_scale``; ``schedule``
    (the mode's ``schedules`` entry for this model), then the entry's own ``schedule``, set entries outright."""
    exp = load_config(entry["config"])
    spec, epochs = scaled_schedule(exp, epoch_scale)
    spec["init_args"].update(copy.deepcopy(schedule or {}))
    spec["init_args"].update(copy.deepcopy(entry.get("schedule") or {}))
    return with_code_dim(spec, code_dim), epochs, exp


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
def pretraining_verdict(rows: list[dict], sdae: str = "stacked DAE", scratch: str = "same net from random init"
                        ) -> list[str]:
    """The paper's point, read off the table: does layer-wise pretraining beat the same fine-tuning from scratch?"""
    by = {r["model"]: r for r in rows if r["finetune_error"] != ""}
    if sdae not in by or scratch not in by:
        return []
    a, b = by[sdae]["finetune_error"], by[scratch]["finetune_error"]
    said = "beats" if a < b else "does not beat"
    return [f"- **Pretraining**: the {sdae} fine-tuned ({100 * a:.2f} % test error) {said} the same net from random "
            f"initialisation with the same fine-tuning ({100 * b:.2f} %)."]


def markdown(rows: list[dict], meta: dict, paper: dict) -> str:
    table = [[r["model"], r["code_dim"], r["train_size"], f"{100 * r['probe_accuracy']:.2f}",
              f"{100 * r['finetune_error']:.2f}" if r["finetune_error"] != "" else "–", meta["seconds"].get(r["model"], "–"),
              r["config"] or "–"]
             for r in rows]
    table.append([f"*{paper['model']}* (paper)", 1000, 60000, "–", f"{100 * paper['finetune_error']:.2f}", "–", "–"])
    text = [
        "# Feature quality on MNIST — linear probe on frozen codes\n",
        f"Data: {meta['data']}.\n",
        markdown_table(["model", "code dim", "train size", "probe accuracy %", "fine-tuned test error %", "fit s",
                        "config"], table),
        "## Setup\n",
        f"- **Ours**: {meta['setup']}",
        f"- **Paper anchor**: {paper['setup']}",
        *pretraining_verdict(rows),
        "",
        f"Figure: `{meta['figure']}` (2-D PCA of the test codes, coloured by digit).",
    ]
    return "\n".join(text) + "\n"


def figure(embeddings: dict[str, torch.Tensor], labels: torch.Tensor, title: str):
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
    return fig


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


def train_and_probe(ctx: Context, entry: dict, s: dict, d: Digits, probes: Probes) -> None:
    """Train one config's autoencoder without labels, then probe its frozen codes (a supervised fine-tuning
    stage: probe the codes from before it, and score the fine-tuned head's test error)."""
    name = entry["name"]
    model, epochs, exp = build_model(entry, s)
    d.dm.batch_size = s.get("batch_size") or exp.get("data", {}).get("init_args", {}).get("batch_size", 128)
    snapshot = CodesBeforeFinetuning(d.images)
    t0, c0 = time.perf_counter(), time.process_time()
    ctx.trainer(epochs, limit_val_batches=0, callbacks=[snapshot]).fit(model, d.dm)
    probes.seconds[name] = f"{time.perf_counter() - t0:.0f}"
    print(f"  [{name}: {epochs} epochs, {probes.seconds[name]} s wall, {time.process_time() - c0:.0f} s CPU]",
          flush=True)
    final = {k: codes_of(model, x) for k, x in d.images.items()}
    head = getattr(model, "head", None)
    config = config_file(entry["config"]) + "".join(f" ({k} {v})" for k, v in (entry.get("schedule") or {}).items())
    if snapshot.codes is not None and head is not None:
        with torch.no_grad():
            logits = head(final["test"].to(next(head.parameters()).device)).float().cpu()
        error = float((logits.argmax(1) != d.labels["test"]).float().mean())
        probes.add(name, snapshot.codes, finetune_error=error, config=config)
        probes.embeddings[f"{name} (fine-tuned)"] = final["test"]
    else:
        probes.add(name, final, config=config)


def setup_text(s: dict) -> str:
    probe, scale = s["probe"], s["epoch_scale"]
    schedule = "the configs’ own schedules" if scale == 1 else f"{scale:g}× the configs’ epochs"
    for name, entries in (s.get("schedules") or {}).items():
        schedule += f", except {name}: " + ", ".join(f"{k} {v}" for k, v in entries.items())
    return (f"every encoder trained without labels from its experiment config (`config` column; configs/), code "
            f"size set to {s['code_dim']}, {schedule}; "
            f"probe: multinomial logistic regression (L-BFGS, ≤ {probe['max_iter']} iterations) on standardised "
            f"codes, L2 weight from {probe['l2']} chosen on the val split, accuracy on the test split; the stacked "
            "DAE is probed after layer-wise pretraining, then fine-tuned with the labels (test error of its head).")


def build_model(entry: dict, s: dict) -> tuple[L.LightningModule, int, dict]:
    """``(untrained model, epochs, experiment config)`` of one ``models`` entry, seeded as its config says."""
    spec, epochs, exp = model_spec_of(entry, s["code_dim"], s["epoch_scale"], (s.get("schedules") or {}).get(entry["name"]))
    L.seed_everything(exp.get("seed_everything", 0), verbose=False)
    model = build(spec)
    return model, getattr(model, "total_epochs", epochs), exp  # a staged model runs its own schedule


class Features(Benchmark):
    name = "features"
    data = ("mnist",)
    doc = "linear-probe accuracy of every autoencoder type's codes on MNIST; SDAE fine-tuned error (Vincent 2010)"

    def models(self, s: dict) -> dict[str, L.LightningModule]:
        """The untrained models the benchmark trains, keyed by their table name."""
        return {entry["name"]: build_model(entry, s)[0] for entry in s["models"]}

    def run(self, ctx: Context, s: dict) -> Results:
        """Train every autoencoder of the settings, probe its codes."""
        d = digits(ctx, s["split"], s["train_size"])
        print(f"features benchmark [{ctx.mode}] on {d.what}; {ctx.device}", flush=True)
        probes = Probes(d, s["probe"])
        pixels = {k: x.flatten(1) for k, x in d.images.items()}
        probes.add("raw pixels", pixels)
        probes.add("PCA", pca_features(pixels, s["code_dim"]))
        for entry in s["models"]:
            train_and_probe(ctx, entry, s, d, probes)

        results = ctx.results()
        results.table("features_mnist", probes.rows, COLUMNS)
        fig = results.path("features_mnist_embedding", "png").name
        meta = dict(data=d.what, setup=setup_text(s), seconds=probes.seconds, figure=fig)
        results.markdown("features_mnist", markdown(probes.rows, meta, s["paper"]))
        shown = {k: probes.embeddings[k] for k in s.get("embedding", []) if k in probes.embeddings}
        results.figure("features_mnist_embedding", figure(shown, d.labels["test"], f"MNIST test codes, 2-D PCA "
                                                          f"({ctx.mode}; {len(d.labels['test'])} digits)"))
        print(markdown_table(COLUMNS, [[r[c] if not isinstance(r[c], float) else f"{r[c]:.4f}" for c in COLUMNS]
                                       for r in probes.rows]))
        paper = s["paper"]
        print(f"paper anchor: {paper['model']} fine-tuned test error {100 * paper['finetune_error']:.2f} %  |  ours: "
              + ", ".join(f"{r['model']} {100 * r['finetune_error']:.2f} %" for r in probes.rows
                          if r["finetune_error"] != ""))
        return results


main = Features.main

if __name__ == "__main__":
    sys.exit(main())
