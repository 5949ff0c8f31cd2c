"""Medical-image denoising: convolutional denoising autoencoders vs median filter, NL-means and BM3D.

Reproduces the comparison of Gondara (2016), "Medical image denoising using convolutional
denoising autoencoders": small sets of X-rays at 64×64, Gaussian and Poisson noise, PSNR and SSIM.
The methods and schedules are ``benchmarks/denoising.yaml``; the noise settings are the grid fragment
``configs/noise/denoising_grid.yaml`` (its ``init_args.noises``); the DAEs are the experiment configs'
``model`` blocks (``configs/dae_xray64.yaml``, ``configs/dae_residual_xray64.yaml``), built through
``ae_lightning.config`` with only the noise (and, for the quick mode's fine-tune, the learning rate)
overridden.

    python -m benchmarks.denoising --quick                 # embedded chest X-rays, < 10 min on 2 cores
    python -m benchmarks.denoising --full                  # 100 epochs, one net per setting (GPU if any)
    python -m benchmarks.denoising --data all-mias/        # any folder / .npz the X-ray DataModule reads
    python -m benchmarks.denoising --data all-mias/ --data dental/   # combined: train on the union

Writes ``benchmarks/results/denoising_<dataset>.{csv,md,png}``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from ae_lightning.config import CONFIGS, instantiate, load_config
from ae_lightning.data import DatasetNotFoundError, XRayDataset
from ae_lightning.data.common import ArrayImageDataset
from ae_lightning.metrics import SSIM_NOTE, psnr_ssim
from ae_lightning.noise import NoiseModel
from benchmarks import classical
from benchmarks.common import (
    RESULTS,
    build,
    config_file,
    hardware,
    markdown_table,
    quiet,
    relative,
    scaled_lr,
    trainer,
    write_csv,
)

CONFIG = Path(__file__).with_name("denoising.yaml")
TRAINING = {
    "per_setting": "trained from scratch per noise setting",
    "blind": "trained noise-blind over the whole grid (one net each, DnCNN-B style)",
    "blind+finetune": "trained noise-blind over the whole grid, then fine-tuned briefly per setting",
}
COLUMNS = ["dataset", "train_size", "noise", "method", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "ms_per_image",
           "config"]
PAPER = (
    "Gondara (2016): mini-MIAS mammograms (322) and ISBI 2015 dental radiographs (400), resized to 64×64; "
    "~300 training images; noise x + p·N(0,1), p ∈ {0.1, 0.25, 0.5}, and x + p·Poisson(λ); conv DAE "
    "(2×conv 3×3/64 + max-pool, mirrored), 100 epochs, batch 10; compared with NL-means and median filter "
    "in SSIM."
)


@dataclass
class Scores:
    """Per-image results of one method on one noise setting."""

    method: str
    noise: str
    train_size: int
    psnr: torch.Tensor  # (N,)
    ssim: torch.Tensor  # (N,)
    ms_per_image: float
    images: torch.Tensor = field(repr=False)  # (N, 1, H, W) outputs, for the figure
    subset: int | None = None  # scored on the first `subset` test images only (BM3D)
    config: str = ""  # the experiment config that produced a DAE's row (configs/...)

    def row(self, dataset: str) -> dict:
        return dict(
            dataset=dataset, train_size=self.train_size, noise=self.noise, method=self.method,
            psnr_mean=self.psnr.mean().item(), psnr_std=self.psnr.std().item(),
            ssim_mean=self.ssim.mean().item(), ssim_std=self.ssim.std().item(), ms_per_image=self.ms_per_image,
            config=self.config,
        )


# --- the benchmark's config ----------------------------------------------------------------------
def read_config(config: Path | dict) -> dict:
    """``benchmarks/denoising.yaml`` (or a dict, in tests) with its ``noise_grid`` fragment read in place."""
    if not isinstance(config, dict):
        return load_config(config)  # the one loader: `noise_grid: noise/denoising_grid.yaml` is inlined
    cfg = copy.deepcopy(config)
    if isinstance(cfg.get("noise_grid"), str):
        cfg["noise_grid"] = load_config(CONFIGS / cfg["noise_grid"])
    return cfg


def noise_specs(cfg: dict) -> list[dict]:
    """The grid's settings (``noise_grid.init_args.noises``), scored one at a time."""
    return cfg["noise_grid"]["init_args"]["noises"]


def blind_noise(cfg: dict) -> dict:
    """The noise-blind training noise: the grid (one setting drawn per image) over this run's settings."""
    grid = copy.deepcopy(cfg["noise_grid"])
    grid["init_args"]["noises"] = copy.deepcopy(noise_specs(cfg))
    return grid


# --- data --------------------------------------------------------------------------------------
def dataset_name(data: Sequence[str] | None) -> str:
    if not data:
        return "xray64"  # the embedded chest X-rays
    if len(data) > 1:
        return "combined"
    p = Path(data[0])
    return (p.stem if p.suffix else p.name).replace(" ", "_") or "data"


def load_splits(data: Sequence[str] | None, split: dict) -> dict[str, torch.Tensor]:
    """Clean ``(N, 1, S, S)`` images per split; several sources are pooled (the combined mode)."""
    root = list(data) if data and len(data) > 1 else (data[0] if data else None)
    kw = dict(image_size=split["image_size"], val_fraction=split["val_fraction"],
              test_fraction=split["test_fraction"], seed=split["seed"])
    return {s: XRayDataset(root, s, **kw).images for s in ("train", "val", "test")}


NOISE_SEEDS = {"val": 100, "test": 200}  # setting i's noisy copy of a split is drawn with seed NOISE_SEEDS[split] + i


def noisy_copy(noise: NoiseModel, images: torch.Tensor, seed: int) -> torch.Tensor:
    """The same corrupted copy for every method: noise drawn from a generator seeded per setting."""
    return noise(images, torch.Generator().manual_seed(seed))


# --- classical baselines ----------------------------------------------------------------------
def run_classical(
    pool: classical.Pool, method: str, fn, noisy: torch.Tensor, clean: torch.Tensor, noise: str, **kwargs
) -> Scores:
    t0 = time.perf_counter()
    out = pool.map(fn, list(noisy[:, 0].numpy()), **kwargs)
    ms = 1000 * (time.perf_counter() - t0) / len(noisy)
    images = torch.from_numpy(out).unsqueeze(1)  # (N, 1, H, W)
    psnr, ssim = psnr_ssim(images, clean)
    return Scores(method, noise, 0, psnr, ssim, ms, images)


def tune_nl_means(pool: classical.Pool, noisy_val: torch.Tensor, clean_val: torch.Tensor, cfg: dict) -> float:
    """The ``h`` factor with the best mean PSNR on the validation images (the test split is never used)."""
    n = cfg["tune_images"]
    best = max(
        cfg["h_factors"],
        key=lambda h: run_classical(pool, "", classical.nl_means, noisy_val[:n], clean_val[:n], "", h_factor=h,
                                    patch_size=cfg["patch_size"], patch_distance=cfg["patch_distance"]).psnr.mean(),
    )
    return float(best)


# --- denoising autoencoders -------------------------------------------------------------------
class RandomCrops(ArrayImageDataset):
    """``crops_per_image`` random ``crop``² windows (with random flips) of each training image per epoch."""

    def __init__(self, images: torch.Tensor, crop: int | None, crops_per_image: int = 1) -> None:
        super().__init__(images)
        self.crop, self.k = crop, crops_per_image

    def __len__(self) -> int:
        return len(self.images) * self.k

    def __getitem__(self, i: int):
        x = self.images[i % len(self.images)]  # (1, H, W)
        if self.crop:
            h, w = x.shape[-2:]
            top, left = (int(torch.randint(0, s - self.crop + 1, ())) for s in (h, w))
            x = x[:, top : top + self.crop, left : left + self.crop]
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, -1


def dae_spec(model_spec: dict, noise_spec: dict, lr_factor: float = 1.0) -> dict:
    """An experiment config's ``model`` block with the benchmark's overrides: its ``noise``, and its
    ``optimizer`` learning rate times ``lr_factor`` (the fine-tune's)."""
    spec = scaled_lr(model_spec, lr_factor) if lr_factor != 1.0 else copy.deepcopy(model_spec)
    spec["init_args"]["noise"] = copy.deepcopy(noise_spec)
    return spec


def models(mode: str = "quick", config: Path | dict = CONFIG) -> dict[str, L.LightningModule]:
    """The untrained DAEs the benchmark trains first, keyed by name: noise-blind over the grid (the quick
    mode's pretraining) or with the grid's first setting (the full mode's per-setting nets)."""
    cfg = read_config(config)
    m = cfg["modes"][mode]
    noise = blind_noise(cfg) if m["training"] != "per_setting" else noise_specs(cfg)[0]
    out = {}
    for dae in cfg["daes"]:
        L.seed_everything(cfg["split"]["seed"], verbose=False)
        out[dae["name"]] = build(dae_spec(load_config(dae["config"])["model"], noise))
    return out


def train_dae(
    model_spec: dict, noise_spec: dict, train: torch.Tensor, epochs: int, batch_size: int,
    mode_cfg: dict, accelerator: str, precision: str, progress: bool,
    init_state: dict | None = None, lr_factor: float = 1.0,
) -> tuple[L.LightningModule, float]:
    """A DAE from an experiment config's ``model`` block, trained with ``noise_spec``; returns (model, seconds).

    ``init_state`` starts from trained weights (fine-tuning, at ``lr_factor`` times the config's rate).
    No validation loop: nothing is selected on validation scores here, and skipping it saves time.
    """
    model = build(dae_spec(model_spec, noise_spec, lr_factor))
    if init_state is not None:
        model.load_state_dict(init_state)
    train_set = RandomCrops(train, mode_cfg.get("crop"), mode_cfg.get("crops_per_image", 1))
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=len(train_set) > batch_size)
    t0 = time.perf_counter()
    trainer(epochs, accelerator, precision, enable_progress_bar=progress, limit_val_batches=0).fit(model, loader)
    return model.eval(), time.perf_counter() - t0


@torch.no_grad()
def run_dae(model, name: str, noisy: torch.Tensor, clean: torch.Tensor, noise: str, train_size: int,
            precision: str) -> Scores:
    """Batched inference on the noisy test images (bf16 autocast on a GPU when the run uses it)."""
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    t0 = time.perf_counter()
    outs = []
    with autocast:
        for batch in noisy.split(256):
            outs.append(model(batch.to(device)).reconstruction.float().clamp(0, 1).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    ms = 1000 * (time.perf_counter() - t0) / len(noisy)
    images = torch.cat(outs)
    psnr, ssim = psnr_ssim(images, clean)
    return Scores(name, noise, train_size, psnr, ssim, ms, images)


def dae_scores(
    dae: dict, ts: int, train: torch.Tensor, m: dict, grid: dict, labels: list[str],
    noisy_test: dict[str, torch.Tensor], clean_test: torch.Tensor, accelerator: str, precision: str,
    progress: bool, train_log: dict[str, list[tuple[str, int, float]]],
) -> Iterator[list[Scores]]:
    """Train one DAE of the config as the mode says and yield its test scores after each trained net.

    ``grid`` is the noise-blind training noise; its ``init_args.noises`` are the settings scored one by one."""
    experiment = load_config(dae["config"])
    config = config_file(dae["config"])
    model_spec = experiment["model"]
    epochs = m["epochs"][dae["name"]]
    # the experiment's own batch size (Gondara: 10) unless the mode sets one
    batch_size = m.get("batch_size") or experiment["data"]["init_args"]["batch_size"]

    def fit(noise_spec: dict, label: str, n_epochs: int, **kw) -> L.LightningModule:
        what = f"{dae['name']} ({label}, train {ts}, {n_epochs} epochs, batch {batch_size})"
        print(f"training {what}", flush=True)
        model, secs = train_dae(model_spec, noise_spec, train, n_epochs, batch_size, m, accelerator, precision,
                                progress, **kw)
        kind = "noise-blind" if label == "noise-blind" else "fine-tune" if "fine-tuned" in label else "per-setting"
        train_log.setdefault(f"{dae['name']} (train {ts}, batch {batch_size})", []).append((kind, n_epochs, secs))
        return model

    def score(model: L.LightningModule, label: str) -> Scores:
        scores = run_dae(model, dae["name"], noisy_test[label], clean_test, label, ts, precision)
        scores.config = config
        return scores

    per_setting = list(zip(grid["init_args"]["noises"], labels, strict=True))
    if m["training"] == "per_setting":  # one net per setting, from scratch (the paper)
        for spec, label in per_setting:
            yield [score(fit(spec, label, epochs), label)]
        return
    model = fit(grid, "noise-blind", epochs)
    if m["training"] == "blind":
        yield [score(model, label) for label in labels]
        return
    state = copy.deepcopy(model.state_dict())  # blind+finetune: a short per-setting fine-tune of the blind net
    for spec, label in per_setting:
        tuned = fit(spec, f"{label}, fine-tuned", m["finetune_epochs"], init_state=state,
                    lr_factor=m.get("finetune_lr_factor", 1.0))
        yield [score(tuned, label)]


# --- reports ----------------------------------------------------------------------------------
def fmt(s: Scores) -> str:
    return f"{s.psnr.mean():.2f} / {s.ssim.mean():.3f}"


def winners(scores: list[Scores], labels: list[str]) -> list[str]:
    """One sentence per (train size, noise setting): who wins, and where a classical method beats a DAE."""
    lines = []
    for ts in sorted({s.train_size for s in scores if s.train_size}):
        for label in labels:
            rows = [s for s in scores if s.noise == label and s.train_size in (0, ts) and s.method != "noisy"]
            full = [s for s in rows if s.subset is None]
            daes = [s for s in full if s.train_size]
            if not daes:
                continue
            dae = max(daes, key=lambda s: (s.psnr.mean(), s.ssim.mean()))
            best_p = max(full, key=lambda s: s.psnr.mean())
            best_s = max(full, key=lambda s: s.ssim.mean())
            text = f"- **{label}** (train {ts}): best PSNR {best_p.method} ({best_p.psnr.mean():.2f} dB), " \
                   f"best SSIM {best_s.method} ({best_s.ssim.mean():.3f})"
            beaten = [s.method for s in full if not s.train_size and s.method != "noisy"
                      and (s.psnr.mean() >= dae.psnr.mean() or s.ssim.mean() >= dae.ssim.mean())]
            text += f"; {dae.method} beats every classical method in both" if not beaten else \
                f"; {', '.join(beaten)} ties or beats {dae.method} in PSNR or SSIM"
            for b in (s for s in rows if s.subset):
                n = b.subset
                dp, ds = dae.psnr[:n].mean(), dae.ssim[:n].mean()
                verdict = "beats" if dp > b.psnr.mean() and ds > b.ssim.mean() else \
                    "loses to" if dp < b.psnr.mean() and ds < b.ssim.mean() else "splits with"
                text += f"; on the first {n} test images {dae.method} {verdict} {b.method} " \
                        f"({dp:.2f}/{ds:.3f} vs {b.psnr.mean():.2f}/{b.ssim.mean():.3f})"
            lines.append(text + ".")
    return lines


def write_markdown(path: Path, dataset: str, scores: list[Scores], labels: list[str], meta: dict) -> None:
    methods = list(dict.fromkeys((s.method, s.train_size) for s in scores))
    rows = []
    for method, ts in methods:
        by_noise = {s.noise: s for s in scores if s.method == method and s.train_size == ts}
        subset = next(iter(by_noise.values())).subset
        name = method + (f" (train {ts})" if ts else "") + (f" (first {subset} test images)" if subset else "")
        rows.append([name] + [fmt(by_noise[n]) if n in by_noise else "–" for n in labels])
    text = [
        f"# Denoising benchmark — {dataset}\n",
        f"PSNR (dB) / SSIM, mean over {meta['n_test']} test images ({SSIM_NOTE}). "
        f"Mode `{meta['mode']}`, {meta['hardware']}, total {meta['seconds'] / 60:.1f} min.\n",
        markdown_table(["method"] + labels, rows),
        "## Setup\n",
        f"- **Ours**: {meta['setup']}",
        f"- **Paper**: {PAPER}\n",
        "## Who wins\n",
        *winners(scores, labels),
        "",
        "Standard deviations and ms/image: the CSV beside this file. Figure: the PNG beside this file.",
    ]
    path.write_text("\n".join(text) + "\n")


def write_figure(path: Path, clean: torch.Tensor, noisy: dict[str, torch.Tensor], scores: list[Scores],
                 labels: list[str], index: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = max(s.train_size for s in scores)
    methods = [m for m in dict.fromkeys(s.method for s in scores if s.train_size in (0, ts)) if m != "noisy"]
    cols = ["clean", "noisy", *methods]
    fig, axes = plt.subplots(len(labels), len(cols), figsize=(1.9 * len(cols), 2.1 * len(labels)), squeeze=False)
    for r, label in enumerate(labels):
        for c, col in enumerate(cols):
            ax = axes[r, c]
            ax.axis("off")
            if col == "clean":
                img, title = clean[index, 0], "clean"
            else:
                s = next(s for s in scores if s.noise == label and s.method == col and s.train_size in (0, ts))
                img = s.images[index, 0]
                title = f"{col}\n{s.psnr[index]:.1f} dB / {s.ssim[index]:.2f}"
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
        axes[r, 0].text(-8, 32, label, rotation=90, va="center", ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(scores: list[Scores], labels: list[str], title: str) -> None:
    """Terminal table: one row per noise setting, one column per method, cells PSNR/SSIM."""
    from rich.console import Console
    from rich.table import Table

    methods = list(dict.fromkeys((s.method, s.train_size) for s in scores))
    table = Table(title=title)
    table.add_column("noise")
    for method, ts in methods:
        first = next(s for s in scores if s.method == method and s.train_size == ts)
        tag = (f" [{ts}]" if ts else "") + (f" [{first.subset} imgs]" if first.subset else "")
        table.add_column(f"{method}{tag}\n{first.ms_per_image:.1f} ms/img", justify="right")
    for label in labels:
        cells = []
        for method, ts in methods:
            s = next((s for s in scores if s.method == method and s.train_size == ts and s.noise == label), None)
            cells.append(f"{s.psnr.mean():.2f}/{s.ssim.mean():.3f}" if s else "–")
        table.add_row(label, *cells)
    console = Console()
    console.width = max(console.width, 150)
    console.print(table)
    console.print("cells: PSNR dB / SSIM (torchmetrics), mean over the test images")


# --- the run ----------------------------------------------------------------------------------
@dataclass
class Setup:
    """What every method is scored on: the splits, the noise settings and the seeded noisy copies."""

    name: str  # dataset name (output files)
    data: Sequence[str] | None
    splits: dict[str, torch.Tensor]  # clean (N, 1, S, S) per split
    train_sizes: list[int]
    labels: list[str]  # one per noise setting
    noisy_val: dict[str, torch.Tensor]
    noisy_test: dict[str, torch.Tensor]
    n_bm3d: int

    @property
    def clean_val(self) -> torch.Tensor:
        return self.splits["val"]

    @property
    def clean_test(self) -> torch.Tensor:
        return self.splits["test"]


def mode_settings(cfg: dict, mode: str, overrides: dict | None) -> dict:
    if mode not in cfg["modes"]:
        raise ValueError(f"unknown mode {mode!r}; choose one of {sorted(cfg['modes'])} (benchmarks/denoising.yaml)")
    m = {**cfg["modes"][mode], **(overrides or {})}
    if m["training"] not in TRAINING:
        raise ValueError(f"training: {m['training']!r} in mode {mode!r}; choose one of {sorted(TRAINING)}")
    return m


def prepare(cfg: dict, m: dict, data: Sequence[str] | None) -> Setup:
    """Load the splits, check the training sizes, draw every setting's noisy val / test copies once."""
    name = dataset_name(data)
    splits = load_splits(data, cfg["split"])
    n_train_all = len(splits["train"])
    train_sizes = [n_train_all if s == "all" else int(s) for s in m["train_sizes"]]
    for s in train_sizes:
        if s > n_train_all:
            raise ValueError(f"train size {s} > the {n_train_all} training images of {name}; "
                             f"fix: lower train_sizes in {CONFIG.name} or add data")
    noises = [instantiate(spec, NoiseModel) for spec in noise_specs(cfg)]
    n_test = len(splits["test"])
    return Setup(
        name=name, data=data, splits=splits, train_sizes=train_sizes, labels=[n.label for n in noises],
        noisy_val={n.label: noisy_copy(n, splits["val"], NOISE_SEEDS["val"] + i) for i, n in enumerate(noises)},
        noisy_test={n.label: noisy_copy(n, splits["test"], NOISE_SEEDS["test"] + i) for i, n in enumerate(noises)},
        n_bm3d=n_test if m["bm3d_images"] == "all" else min(int(m["bm3d_images"]), n_test),
    )


def classical_scores(cfg: dict, st: Setup, progress: bool) -> list[Scores]:
    """The noisy input, the median filters, NL-means (h tuned on val) and BM3D, per noise setting."""
    from tqdm.auto import tqdm

    scores: list[Scores] = []
    nl = cfg["nl_means"]
    clean = st.clean_test
    with classical.Pool() as pool:
        bar = tqdm(total=len(st.labels), desc="classical baselines", disable=not progress)
        for label in st.labels:
            noisy = st.noisy_test[label]
            psnr, ssim = psnr_ssim(noisy, clean)
            scores.append(Scores("noisy", label, 0, psnr, ssim, 0.0, noisy))
            for k in cfg["median_sizes"]:
                scores.append(run_classical(pool, f"median {k}×{k}", classical.median, noisy, clean, label, size=k))
            h = tune_nl_means(pool, st.noisy_val[label], st.clean_val, nl)
            scores.append(run_classical(pool, "NL-means", classical.nl_means, noisy, clean, label, h_factor=h,
                                        patch_size=nl["patch_size"], patch_distance=nl["patch_distance"]))
            if classical.bm3d_available() and st.n_bm3d:
                b = run_classical(pool, "BM3D", classical.bm3d, noisy[: st.n_bm3d], clean[: st.n_bm3d], label)
                b.subset = st.n_bm3d if st.n_bm3d < len(clean) else None
                scores.append(b)
            bar.update()
        bar.close()
    if not classical.bm3d_available():
        print(classical.BM3D_MISSING)
    return scores


class Report:
    """The outputs, rewritten after every trained net so that a cut-off run keeps its rows."""

    def __init__(self, cfg: dict, m: dict, mode: str, st: Setup, out_dir: Path, hw: str, t_start: float) -> None:
        self.cfg, self.m, self.mode, self.st, self.out_dir, self.hw, self.t_start = cfg, m, mode, st, out_dir, hw, t_start
        self.scores: list[Scores] = []
        self.train_log: dict[str, list[tuple[str, int, float]]] = {}  # net → (kind, epochs, seconds) per fit
        out_dir.mkdir(parents=True, exist_ok=True)

    def fits(self) -> str:
        """One clause per DAE: what was trained, how many epochs, how long."""
        out = []
        for net, runs in self.train_log.items():
            parts = []
            for kind in ("noise-blind", "fine-tune", "per-setting"):
                rs = [r for r in runs if r[0] == kind]
                if rs:
                    n = f"{len(rs)} × " if len(rs) > 1 else ""
                    parts.append(f"{kind} {n}{rs[0][1]} epochs, {sum(r[2] for r in rs):.0f} s")
            out.append(f"{net}: " + ", ".join(parts))
        return "; ".join(out) or "none trained yet"

    def setup(self, final: bool) -> str:
        """The Markdown's "Ours" sentence: data, split, training schedule, configs, baselines' settings."""
        cfg, m, st = self.cfg, self.m, self.st
        nl, size = cfg["nl_means"], cfg["split"]["image_size"]
        source = ("the embedded real chest X-rays (Kermany et al. 2018)" if not st.data
                  else ", ".join(relative(str(Path(d).resolve())) for d in st.data))
        configs = ", ".join(f"{config_file(d['config'])} ({d['name']})" for d in cfg["daes"])
        return (
            f"{st.name} = {source}: {len(st.splits['train'])} train / {len(st.clean_val)} val / {len(st.clean_test)} "
            f"test images at {size}×{size} (seeded split {cfg['split']['seed']}); training sizes {st.train_sizes}; "
            f"DAEs from the experiment configs {configs}, noise from configs/noise/denoising_grid.yaml, "
            + TRAINING[m["training"]]
            + (f" on random {m['crop']}×{m['crop']} crops" if m.get("crop") else " on whole images")
            + (f", fine-tune learning rate {m.get('finetune_lr_factor', 1.0):g}× the config's"
               if m["training"] == "blind+finetune" else "")
            + f" ({self.fits()}); NL-means h tuned on {nl['tune_images']} val images "
            f"over factors {nl['h_factors']} of estimate_sigma's σ; BM3D "
            + (f"on the first {st.n_bm3d} test images" if st.n_bm3d < len(st.clean_test) else "on every test image")
            + " with σ from estimate_sigma; median filters with reflected borders."
            + ("" if final else " **Run incomplete: cut off before every net was trained.**")
        )

    def write(self, final: bool) -> list[dict]:
        """(Re)write the CSV / Markdown (and, at the end, the figure and the terminal summary)."""
        st, out = self.st, self.out_dir
        seconds = time.perf_counter() - self.t_start
        rows = [s.row(st.name) for s in self.scores]
        write_csv(out / f"denoising_{st.name}.csv", rows, COLUMNS)
        meta = dict(n_test=len(st.clean_test), mode=self.mode, hardware=self.hw, seconds=seconds,
                    setup=self.setup(final))
        write_markdown(out / f"denoising_{st.name}.md", st.name, self.scores, st.labels, meta)
        if final:
            write_figure(out / f"denoising_{st.name}.png", st.clean_test, st.noisy_test, self.scores, st.labels)
            print_summary(self.scores, st.labels, f"denoising on {st.name} ({self.mode}, {seconds / 60:.1f} min, "
                                                  f"{self.hw})")
            print(f"wrote {out}/denoising_{st.name}.csv, .md, .png")
        return rows


def run(
    mode: str = "quick",
    data: Sequence[str] | None = None,
    out_dir: Path = RESULTS,
    config: Path | dict = CONFIG,
    overrides: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run the comparison; returns the CSV rows. ``overrides`` patches the mode's settings (tests)."""
    quiet()
    t_start = time.perf_counter()
    cfg = read_config(config)
    m = mode_settings(cfg, mode, overrides)
    L.seed_everything(cfg["split"]["seed"], verbose=False)
    accelerator, precision, hw = hardware()
    st = prepare(cfg, m, data)
    print(f"denoising benchmark [{mode}] on {st.name}: {len(st.splits['train'])} train / {len(st.clean_val)} val / "
          f"{len(st.clean_test)} test images; {hw}; {classical.available_cores()} worker processes for the classical "
          f"methods", flush=True)
    report = Report(cfg, m, mode, st, out_dir, hw, t_start)
    report.scores += classical_scores(cfg, st, progress)
    report.write(final=False)
    grid = blind_noise(cfg)
    for ts in st.train_sizes:
        train = st.splits["train"][:ts]  # the split is already a seeded permutation
        for dae in cfg["daes"]:
            for batch in dae_scores(dae, ts, train, m, grid, st.labels, st.noisy_test, st.clean_test, accelerator,
                                    precision, progress, report.train_log):
                report.scores.extend(batch)
                report.write(final=False)
    return report.write(final=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="mode", action="store_const", const="quick", help="the make-benchmark run")
    group.add_argument("--full", dest="mode", action="store_const", const="full", help="the paper-scale run")
    ap.add_argument("--mode", dest="mode", help="any mode of the config")
    ap.add_argument("--data", action="append", help="X-ray folder or .npz (repeat for the combined mode)")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    try:
        run(args.mode or "quick", args.data, args.out, args.config)
    except (DatasetNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
