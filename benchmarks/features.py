"""Feature quality: how much does a linear probe read off the frozen codes of every autoencoder type on MNIST?

Each experiment config of ``features.yaml``, its code size set to ``code_dim``, is trained without labels, frozen,
and a logistic regression on its codes is scored on held-out digits, beside raw pixels and PCA at the same size.
The stacked DAE is probed after pretraining, then fine-tuned with labels: its test error stands beside Vincent et
al. (2010)'s SDAE-3 1.28 % and beside the same net fine-tuned from random initialisation.

    python -m benchmarks.features --quick          # < 2.5 min on 2 CPU cores (the embedded 10k digits)
    python -m benchmarks.features --full           # every config's own schedule on the 60k set (refused without it)
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Sequence

import lightning as L
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from ae_lightning.config import load_config
from ae_lightning.inference import in_eval_batches
from benchmarks.common import build, config_file, scaled_schedule, with_code_dim
from benchmarks.core import Benchmark, Context, Results, Stopwatch, is_full_mnist, markdown_table, relative

COLUMNS = ["model", "code_dim", "train_size", "probe_accuracy", "finetune_error", "config"]
SPLITS = ("train", "val", "test")


def describe(dm, seed: int) -> str:
    """The ``Data:`` line of a set-up MNISTDataModule: where its digits came from, the split sizes."""
    sizes = f"{len(dm.train_set)} train / {len(dm.val_set)} val / {len(dm.test_set)} test digits"
    return f"{relative(dm.source)}: {sizes}" + ("" if is_full_mnist(dm) else f" (split with seed {seed})")


def build_model(entry: dict, s: dict) -> tuple[L.LightningModule, int, dict]:
    """``(untrained model, epochs, experiment config)`` of one ``models`` entry, seeded as its config says: the
    config's model at code size ``code_dim``, its schedule scaled by ``epoch_scale``, then the mode's ``schedules``
    entry and the entry's own ``schedule`` set outright. A staged model's epoch count is its own."""
    exp = load_config(entry["config"])
    spec, epochs = scaled_schedule(exp, s["epoch_scale"])
    for schedule in ((s.get("schedules") or {}).get(entry["name"]), entry.get("schedule")):
        spec["init_args"].update(copy.deepcopy(schedule or {}))
    L.seed_everything(exp.get("seed_everything", 0), verbose=False)
    model = build(with_code_dim(spec, s["code_dim"]))
    return model, getattr(model, "total_epochs", epochs), exp


def codes_of(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Frozen codes ``(N, D)`` of ``images`` (N, C, H, W); a posterior-like code contributes its mean."""

    def code(x: torch.Tensor) -> torch.Tensor:
        c = model.encode(x)
        return (c if torch.is_tensor(c) else getattr(c, "mean", c)).float().flatten(1)

    return in_eval_batches(model, code, images, batch_size)


class CodesBeforeFinetuning(L.Callback):
    """The pretrained stack's codes when a staged model's fine-tuning stage starts: the probe scores unsupervised
    features even when fine-tuning then uses the labels."""

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
    """``(test accuracy, L2 weight)`` of a logistic regression on standardised features, the L2 weight picked on
    ``val``."""
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


class Probes:
    """The table being built: one row per probed feature set, the test embeddings and the fit times."""

    def __init__(self, dm, probe: dict) -> None:
        self.labels = {k: getattr(dm, f"{k}_set").labels for k in SPLITS}
        self.n_train, self.probe = len(dm.train_set), probe
        self.rows: list[dict] = []
        self.embeddings: dict[str, torch.Tensor] = {}
        self.seconds: dict[str, str] = {}

    def add(self, name: str, feats: dict[str, torch.Tensor], finetune_error: float | str = "", config: str = "") -> None:
        acc, l2 = linear_probe(feats, self.labels, self.probe["l2"], self.probe["max_iter"])
        dim = feats["train"].shape[1]
        self.rows.append(dict(model=name, code_dim=dim, train_size=self.n_train, probe_accuracy=acc,
                              finetune_error=finetune_error, config=config))
        self.embeddings[name] = feats["test"]
        extra = f", fine-tuned test error {100 * finetune_error:.2f} %" if finetune_error != "" else ""
        print(f"  {name:<26} code {dim:>4}  probe accuracy {100 * acc:6.2f} %  (L2 {l2:g}){extra}", flush=True)


def train_and_probe(ctx: Context, entry: dict, s: dict, dm, images: dict[str, torch.Tensor], probes: Probes) -> None:
    """Train one config's autoencoder without labels, then probe its frozen codes; a model with a supervised
    fine-tuning stage is probed on its codes from before that stage, and its head's test error is scored."""
    name = entry["name"]
    model, epochs, exp = build_model(entry, s)
    dm.batch_size = s.get("batch_size") or exp.get("data", {}).get("init_args", {}).get("batch_size", 128)
    snapshot = CodesBeforeFinetuning(images)
    watch = Stopwatch()
    ctx.trainer(epochs, limit_val_batches=0, callbacks=[snapshot]).fit(model, dm)
    wall, cpu = watch.elapsed()
    probes.seconds[name] = f"{wall:.0f}"
    print(f"  [{name}: {epochs} epochs, {wall:.0f} s wall, {cpu:.0f} s CPU]", flush=True)
    final = {k: codes_of(model, x) for k, x in images.items()}
    head = getattr(model, "head", None)
    config = config_file(entry["config"]) + "".join(f" ({k} {v})" for k, v in (entry.get("schedule") or {}).items())
    if snapshot.codes is None or head is None:
        probes.add(name, final, config=config)
        return
    logits = in_eval_batches(head, head, final["test"], len(final["test"]))
    error = float((logits.argmax(1) != probes.labels["test"]).float().mean())
    probes.add(name, snapshot.codes, finetune_error=error, config=config)
    probes.embeddings[f"{name} (fine-tuned)"] = final["test"]


# --- outputs -----------------------------------------------------------------------------------
def pretraining_verdict(rows: list[dict]) -> str:
    """The paper's point, read off the table: does layer-wise pretraining beat the same fine-tuning from scratch?"""
    sdae, scratch = "stacked DAE", "same net from random init"
    by = {r["model"]: r["finetune_error"] for r in rows if r["finetune_error"] != ""}
    if sdae not in by or scratch not in by:
        return ""
    said = "beats" if by[sdae] < by[scratch] else "does not beat"
    return (f"- **Pretraining**: the {sdae} fine-tuned ({100 * by[sdae]:.2f} % test error) {said} the same net from "
            f"random initialisation with the same fine-tuning ({100 * by[scratch]:.2f} %).\n")


def markdown(probes: Probes, data: str, figure_name: str, s: dict) -> str:
    probe, scale, paper = s["probe"], s["epoch_scale"], s["paper"]
    schedule = "the configs’ own schedules" if scale == 1 else f"{scale:g}× the configs’ epochs"
    for name, entries in (s.get("schedules") or {}).items():
        schedule += f", except {name}: " + ", ".join(f"{k} {v}" for k, v in entries.items())
    setup = (f"every encoder trained without labels from its experiment config (`config` column; configs/), code "
             f"size set to {s['code_dim']}, {schedule}; "
             f"probe: multinomial logistic regression (L-BFGS, ≤ {probe['max_iter']} iterations) on standardised "
             f"codes, L2 weight from {probe['l2']} chosen on the val split, accuracy on the test split; the stacked "
             "DAE is probed after layer-wise pretraining, then fine-tuned with the labels (test error of its head).")
    table = [[r["model"], r["code_dim"], r["train_size"], f"{100 * r['probe_accuracy']:.2f}",
              f"{100 * r['finetune_error']:.2f}" if r["finetune_error"] != "" else "–",
              probes.seconds.get(r["model"], "–"), r["config"] or "–"] for r in probes.rows]
    table.append([f"*{paper['model']}* (paper)", 1000, 60000, "–", f"{100 * paper['finetune_error']:.2f}", "–", "–"])
    header = ["model", "code dim", "train size", "probe accuracy %", "fine-tuned test error %", "fit s", "config"]
    return (f"# Feature quality on MNIST — linear probe on frozen codes\n\nData: {data}.\n\n"
            f"{markdown_table(header, table)}\n## Setup\n\n- **Ours**: {setup}\n- **Paper anchor**: {paper['setup']}\n"
            f"{pretraining_verdict(probes.rows)}\nFigure: `{figure_name}` (2-D PCA of the test codes, coloured by "
            "digit).\n")


def figure(embeddings: dict[str, torch.Tensor], labels: torch.Tensor, title: str):
    """Each feature set's test codes on their first two principal axes, coloured by digit."""
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


class Features(Benchmark):
    name = "features"
    data = ("mnist",)
    doc = "linear-probe accuracy of every autoencoder type's codes on MNIST; SDAE fine-tuned error (Vincent 2010)"

    def models(self, s: dict) -> dict[str, L.LightningModule]:
        return {entry["name"]: build_model(entry, s)[0] for entry in s["models"]}

    def run(self, ctx: Context, s: dict) -> Results:
        dm = ctx.mnist(self.name, **s["split"])
        if s["train_size"] is not None and s["train_size"] < len(dm.train_set):
            dm = ctx.mnist(self.name, train_size=s["train_size"], **s["split"])
        data = describe(dm, s["split"]["seed"])
        print(f"features benchmark [{ctx.mode}] on {data}; {ctx.device}", flush=True)
        images = {k: getattr(dm, f"{k}_set").images for k in SPLITS}  # (N, 1, 28, 28) each
        probes = Probes(dm, s["probe"])
        pixels = {k: x.flatten(1) for k, x in images.items()}
        probes.add("raw pixels", pixels)
        probes.add("PCA", pca_features(pixels, s["code_dim"]))
        for entry in s["models"]:
            train_and_probe(ctx, entry, s, dm, images, probes)

        results = ctx.results()
        results.table("features_mnist", probes.rows, COLUMNS)
        figure_name = results.path("features_mnist_embedding", "png").name
        results.markdown("features_mnist", markdown(probes, data, figure_name, s))
        shown = {k: probes.embeddings[k] for k in s.get("embedding", []) if k in probes.embeddings}
        title = f"MNIST test codes, 2-D PCA ({ctx.mode}; {len(dm.test_set)} digits)"
        results.figure("features_mnist_embedding", figure(shown, probes.labels["test"], title))
        paper, ours = s["paper"], [r for r in probes.rows if r["finetune_error"] != ""]
        print(markdown_table(COLUMNS, [[f"{r[c]:.4f}" if isinstance(r[c], float) else r[c] for c in COLUMNS]
                                       for r in probes.rows]))
        print(f"paper anchor: {paper['model']} fine-tuned test error {100 * paper['finetune_error']:.2f} %  |  ours: "
              + ", ".join(f"{r['model']} {100 * r['finetune_error']:.2f} %" for r in ours))
        return results


main = Features.main

if __name__ == "__main__":
    sys.exit(main())
