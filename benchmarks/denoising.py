"""Medical-image denoising: convolutional denoising autoencoders vs median filter, NL-means and BM3D.

Reproduces the comparison of Gondara (2016), "Medical image denoising using convolutional
denoising autoencoders": small sets of X-rays at 64×64, Gaussian and Poisson noise, PSNR and SSIM.
The methods and schedules are ``benchmarks/denoising.yaml``; the noise settings are the grid fragment
``configs/noise/denoising_grid.yaml`` (its ``init_args.noises``); the DAEs are the experiment configs'
``model`` blocks (``configs/dae_xray64.yaml``, ``configs/dae_residual_xray64.yaml``), built through
``ae_lightning.config`` with only the noise (and, for the quick mode's fine-tune, the learning rate)
overridden.

    python -m benchmarks.denoising --quick                 # embedded chest X-rays, split by patient (make benchmark)
    python -m benchmarks.denoising --full                  # 100 epochs, one net per setting (GPU if any)
    python -m benchmarks.denoising --data all-mias/        # any folder / .npz the X-ray DataModule reads
    python -m benchmarks.denoising --data all-mias/ --data dental/   # combined: train on the union
    python -m benchmarks.denoising --data all-mias/ --group-by image # other names: say what a patient is

Writes ``benchmarks/results/denoising_<dataset>.{csv,md,png}``.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from ae_lightning import classical_denoisers as classical
from ae_lightning.config import CONFIGS, instantiate, load_config
from ae_lightning.data import XRayDataset
from ae_lightning.data.common import ArrayImageDataset
from ae_lightning.data.locate import locate
from ae_lightning.inference import in_eval_batches
from ae_lightning.metrics import SSIM_NOTE, psnr_ssim
from ae_lightning.noise import NoiseModel, Poisson, ScaledPoisson
from benchmarks.common import build, config_file, scaled_lr
from benchmarks.core import Benchmark, Context, Results, markdown_table, relative

TRAINING = {
    "per_setting": "trained from scratch per noise setting",
    "blind": "trained noise-blind over the whole grid (one net each, DnCNN-B style)",
    "blind+finetune": "trained noise-blind over the whole grid, then fine-tuned briefly per setting",
}
COLUMNS = ["dataset", "train_size", "noise", "method", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "ms_per_image",
           "config", "val_psnr_mean", "selected"]
SELECTION = ("per setting, the suite's DAE is the DAE with the best mean PSNR on the validation split (CSV column "
             "`selected`); the test split chooses nothing")
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
    kind: str = "dae"  # "input" (the noisy image), "classical", "dae" (trained in this run) or "pretrained" (shipped)
    subset: int | None = None  # scored on the first `subset` test images only (blind BM3D)
    config: str = ""  # the experiment config that produced a DAE's row (configs/...)
    val_psnr: float | None = None  # a DAE's mean PSNR on the noisy validation copies: what selects it
    selected: bool = False  # the validation-selected DAE of its setting and training size

    def row(self, dataset: str) -> dict:
        return dict(
            dataset=dataset, train_size=self.train_size, noise=self.noise, method=self.method,
            psnr_mean=self.psnr.mean().item(), psnr_std=self.psnr.std().item(),
            ssim_mean=self.ssim.mean().item(), ssim_std=self.ssim.std().item(), ms_per_image=self.ms_per_image,
            config=self.config, val_psnr_mean="" if self.val_psnr is None else self.val_psnr,
            selected=str(self.selected).lower(),
        )


def noise_specs(cfg: dict) -> list[dict]:
    """The grid's settings (``noise_grid.init_args.noises``), scored one at a time."""
    return cfg["noise_grid"]["init_args"]["noises"]


def blind_noise(cfg: dict) -> dict:
    """The noise-blind training noise: the grid (one setting drawn per image) over this run's settings."""
    grid = copy.deepcopy(cfg["noise_grid"])
    grid["init_args"]["noises"] = copy.deepcopy(noise_specs(cfg))
    return grid


# --- data --------------------------------------------------------------------------------------
def dataset_name(data: Sequence[Path] | None) -> str:
    if not data:
        return "xray64"  # the embedded chest X-rays
    if len(data) > 1:
        return "combined"
    p = Path(data[0])
    return (p.stem if p.suffix else p.name).replace(" ", "_") or "data"


def data_sources(data: str | Sequence[str] | None) -> list[Path] | None:
    """The X-ray sources by the DataModules' lookup (``--data``, ``$AE_XRAY_ROOT``, ``data/xray``); ``None``: the
    embedded chest X-rays."""
    root = locate("xray", data).root
    return None if root is None else root if isinstance(root, list) else [root]


def load_splits(data: Sequence[Path] | None, split: dict) -> dict[str, torch.Tensor]:
    """Clean ``(N, 1, S, S)`` images per split; several sources are pooled (the combined mode). No group of
    ``split["group_by"]`` (the patient, for the Kermany chest X-rays) is in two splits."""
    root = [str(d) for d in data] if data and len(data) > 1 else (str(data[0]) if data else None)
    kw = dict(image_size=split["image_size"], val_fraction=split["val_fraction"],
              test_fraction=split["test_fraction"], seed=split["seed"], group_by=split.get("group_by", "image"))
    return {s: XRayDataset(root, s, **kw).images for s in ("train", "val", "test")}


NOISE_SEEDS = {"val": 100, "test": 200}  # setting i's noisy copy of a split is drawn with seed NOISE_SEEDS[split] + i


def split_rule(split: dict) -> str:
    """The split rule in words, for every table."""
    rule = split.get("group_by", "image")
    what = ("by image (no grouping)" if rule == "image" else "by parent folder" if rule == "parent"
            else f"by patient (patient = the match of `{rule}` in the file name)")
    return (f"{what}, seeded ({split['seed']}), {1 - split['val_fraction'] - split['test_fraction']:.0%} / "
            f"{split['val_fraction']:.0%} / {split['test_fraction']:.0%} train / val / test of the images; "
            "no group in two splits")


def noisy_copy(noise: NoiseModel, images: torch.Tensor, seed: int) -> torch.Tensor:
    """The same corrupted copy for every method: noise drawn from a generator seeded per setting."""
    return noise(images, torch.Generator().manual_seed(seed))


# --- classical baselines ----------------------------------------------------------------------
def run_classical(
    pool: classical.Pool, method: str, fn, noisy: torch.Tensor, clean: torch.Tensor, noise: str, **kwargs
) -> Scores:
    t0 = time.perf_counter()
    out = pool.map_images(fn, list(noisy[:, 0].numpy()), **kwargs)
    ms = 1000 * (time.perf_counter() - t0) / len(noisy)
    images = torch.from_numpy(out).unsqueeze(1)  # (N, 1, H, W)
    psnr, ssim = psnr_ssim(images, clean)
    return Scores(method, noise, 0, psnr, ssim, ms, images, kind="classical")


def tune_nl_means(pool: classical.Pool, noisy_val: torch.Tensor, clean_val: torch.Tensor, cfg: dict,
                  sigma: float | None = None) -> float:
    """The ``h`` factor with the best mean PSNR on the validation images (the test split is never used);
    ``sigma``: the known σ (oracle) or ``None`` (estimated per image, blind)."""
    n = cfg["tune_images"]
    best = max(
        cfg["h_factors"],
        key=lambda h: run_classical(pool, "", classical.nl_means, noisy_val[:n], clean_val[:n], "", h_factor=h,
                                    patch_size=cfg["patch_size"], patch_distance=cfg["patch_distance"],
                                    sigma=sigma).psnr.mean(),
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


def daes_of(s: dict) -> list[dict]:
    """The DAEs a mode trains: every ``daes`` entry, unless it names its ``modes`` (a net too slow for the
    2-core CPU's quick mode, e.g. the 17-layer DnCNN, is ``modes: [full]``; smoke walks the full mode's)."""
    mode = "full" if s["mode"] == "smoke" else s["mode"]
    return [d for d in s["daes"] if mode in d.get("modes", [mode])]


def train_dae(
    ctx: Context, model_spec: dict, noise_spec: dict, train: torch.Tensor, epochs: int, batch_size: int,
    mode_cfg: dict, init_state: dict | None = None, lr_factor: float = 1.0,
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
    ctx.trainer(epochs, limit_val_batches=0).fit(model, loader)
    return model.eval(), time.perf_counter() - t0


def run_dae(model, name: str, noisy: torch.Tensor, clean: torch.Tensor, noise: str, train_size: int,
            precision: str) -> Scores:
    """Batched inference on the noisy test images (bf16 autocast on a GPU when the run uses it)."""
    t0 = time.perf_counter()
    images = in_eval_batches(model, lambda b: model(b).reconstruction.float().clamp(0, 1), noisy, 256, precision)
    ms = 1000 * (time.perf_counter() - t0) / len(noisy)
    psnr, ssim = psnr_ssim(images, clean)
    return Scores(name, noise, train_size, psnr, ssim, ms, images)


def dae_scores(
    ctx: Context, dae: dict, ts: int, train: torch.Tensor, m: dict, grid: dict, st: Setup,
    train_log: dict[str, list[tuple[str, int, float]]],
) -> Iterator[list[Scores]]:
    """Train one DAE of the config as the mode says and yield its test scores (with its validation PSNR,
    which selects the suite's DAE) after each trained net.

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
        model, secs = train_dae(ctx, model_spec, noise_spec, train, n_epochs, batch_size, m, **kw)
        kind = "noise-blind" if label == "noise-blind" else "fine-tune" if "fine-tuned" in label else "per-setting"
        train_log.setdefault(f"{dae['name']} (train {ts}, batch {batch_size})", []).append((kind, n_epochs, secs))
        return model

    labels = st.labels

    def score(model: L.LightningModule, label: str) -> Scores:
        scores = run_dae(model, dae["name"], st.noisy_test[label], st.clean_test, label, ts, ctx.precision)
        scores.config = config
        scores.val_psnr = run_dae(model, "", st.noisy_val[label], st.clean_val, label, ts,
                                  ctx.precision).psnr.mean().item()
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


def pretrained_scores(ctx: Context, entry: dict, st: Setup) -> list[Scores]:
    """A shipped denoiser's test scores at every setting: its weights as they ship (``ae_lightning.pretrained``),
    no training in this run (``train_size`` 0, like the classical rows)."""
    from ae_lightning import pretrained

    model = pretrained.load(entry["weights"]).to("cuda" if ctx.accelerator == "gpu" else "cpu")
    out = []
    for label in st.labels:
        scores = run_dae(model, entry["name"], st.noisy_test[label], st.clean_test, label, 0, ctx.precision)
        scores.kind, scores.config = "pretrained", entry["config"]
        out.append(scores)
    return out


# --- reports ----------------------------------------------------------------------------------
def fmt(s: Scores) -> str:
    return f"{s.psnr.mean():.2f} / {s.ssim.mean():.3f}"


def is_classical(s: Scores) -> bool:
    return s.kind == "classical"


def quality_bar_rows(rows: list[Scores]) -> list[Scores]:
    """What the quality bar compares the suite's DAE with: NL-means (oracle and blind rows) and the median filters."""
    return [s for s in rows if s.method.startswith(("NL-means", "median")) and is_classical(s)]


def verdict(dae: Scores, refs: list[Scores]) -> str:
    """``wins`` (above every ref in PSNR and SSIM), ``loses`` (below the best in both) or ``splits``; a ref
    scored on a subset of the test images is compared on that subset."""
    dp = [(dae.psnr[: r.subset or len(dae.psnr)].mean().item(), r.psnr.mean().item()) for r in refs]
    ds = [(dae.ssim[: r.subset or len(dae.ssim)].mean().item(), r.ssim.mean().item()) for r in refs]
    if all(a > b for a, b in dp + ds):
        return "wins"
    if any(a < b for a, b in dp) and any(a < b for a, b in ds):  # below the best ref in PSNR and in SSIM
        return "loses"
    return "splits"


def strongest_bm3d(rows: list[Scores]) -> Scores | None:
    """A setting's BM3D reference: the stronger (PSNR, then SSIM) of its BM3D rows scored on every test image
    (oracle σ; on Poisson settings the bias-corrected oracle and the Anscombe rows)."""
    bm3d = [s for s in rows if is_classical(s) and s.subset is None and s.method.startswith("BM3D")]
    return max(bm3d, key=lambda s: (s.psnr.mean(), s.ssim.mean())) if bm3d else None


def saturation_note(share: float) -> str:
    return f"saturated ({share:.0%} of the noisy pixels clipped to 0 or 1): no verdict"


def shipped_headline(scores: list[Scores], labels: list[str], saturated: dict[str, float]) -> list[str]:
    """The headline: the shipped pretrained denoiser (no training in this run) against BM3D, per setting."""
    out = []
    for model in dict.fromkeys(s.method for s in scores if s.kind == "pretrained"):
        rows, wins, counted = [], 0, 0
        for label in labels:
            ours = next(s for s in scores if s.noise == label and s.method == model)
            ref = strongest_bm3d([s for s in scores if s.noise == label])
            if label in saturated or ref is None:
                note = saturation_note(saturated[label]) if label in saturated else "no BM3D row"
                rows.append([label, fmt(ours), "–", "–", "–", note])
                continue
            dp, ds = (ours.psnr.mean() - ref.psnr.mean()).item(), (ours.ssim.mean() - ref.ssim.mean()).item()
            counted += 1
            wins += dp > 0 and ds > 0
            rows.append([label, fmt(ours), f"{ref.method}: {fmt(ref)}", f"{dp:+.2f}", f"{ds:+.3f}",
                         "**wins**" if dp > 0 and ds > 0 else "loses" if dp < 0 and ds < 0 else "splits"])
        n = len(next(s for s in scores if s.method == model).psnr)
        out += [f"**{model} vs BM3D**, on all {n} scored test images: it beats BM3D in PSNR and SSIM at {wins} of "
                f"{counted} settings (the saturated setting excluded). BM3D gets the noise's known σ (oracle), on "
                "Poisson settings also the Anscombe transform with the exact unbiased inverse; the stronger row is "
                "the reference.\n",
                markdown_table(["setting", f"{model} (PSNR / SSIM)", "BM3D reference", "Δ PSNR dB", "Δ SSIM",
                                "verdict"], rows)]
    return out


def headline(scores: list[Scores], labels: list[str], saturated: dict[str, float]) -> list[str]:
    """Per training size, one row per setting: the validation-selected DAE against the best classical method
    and against BM3D (the stronger of its oracle-σ and Anscombe-VST rows), with the verdicts."""
    out = []
    for ts in sorted({s.train_size for s in scores if s.train_size}):
        rows = []
        for label in labels:
            here = [s for s in scores if s.noise == label and s.train_size in (0, ts)]
            dae = next((s for s in here if s.selected and s.train_size), None)
            if dae is None:
                continue
            if label in saturated:
                rows.append([label, f"{dae.method}: {fmt(dae)}", "–", saturation_note(saturated[label]), "–", "–", "–"])
                continue
            full = [s for s in here if is_classical(s) and s.subset is None]
            best = max(full, key=lambda s: (s.psnr.mean(), s.ssim.mean()))
            bm3d = [s for s in full if s.method.startswith("BM3D")]
            strong = max(bm3d, key=lambda s: (s.psnr.mean(), s.ssim.mean())) if bm3d else None
            bar = verdict(dae, quality_bar_rows(here)) == "wins"
            rows.append([label, f"{dae.method}: {fmt(dae)}", f"{best.method}: {fmt(best)}", verdict(dae, full),
                         f"{strong.method}: {fmt(strong)}" if strong else "–",
                         verdict(dae, bm3d) if bm3d else "–", "met" if bar else "**not met**"])
        out += [f"**Train {ts}.** The suite's DAE is selected on validation PSNR. \"vs\" verdicts: `wins` = above "
                "in PSNR and SSIM (against every classical row, or both BM3D rows); `loses` = below in both; `splits` "
                "otherwise. Quality bar: above NL-means (oracle and blind σ) and both median filters in both metrics.\n",
                markdown_table(["setting", "suite's DAE (val-selected)", "best classical (PSNR)", "DAE vs classical",
                                "BM3D (stronger of oracle σ / VST)", "DAE vs BM3D", "quality bar"], rows)]
    return out


def winners(scores: list[Scores], labels: list[str], saturated: dict[str, float]) -> list[str]:
    """One sentence per (train size, noise setting): every DAE's verdict against the classical methods."""
    lines = []
    for ts in sorted({s.train_size for s in scores if s.train_size}):
        for label in labels:
            if label in saturated:
                lines.append(f"- **{label}**: {saturation_note(saturated[label])}.")
                continue
            rows = [s for s in scores if s.noise == label and s.train_size in (0, ts) and s.method != "noisy"]
            full = [s for s in rows if s.subset is None]
            daes = sorted((s for s in full if s.train_size), key=lambda s: not s.selected)
            if not daes:
                continue
            best_p = max(full, key=lambda s: s.psnr.mean())
            best_s = max(full, key=lambda s: s.ssim.mean())
            text = f"- **{label}** (train {ts}): best PSNR {best_p.method} ({best_p.psnr.mean():.2f} dB), " \
                   f"best SSIM {best_s.method} ({best_s.ssim.mean():.3f})"
            for dae in daes:
                tag = " (selected: best val PSNR" + (f", {dae.val_psnr:.2f} dB)" if dae.val_psnr is not None else ")") \
                    if dae.selected else f" (val PSNR {dae.val_psnr:.2f} dB)" if dae.val_psnr is not None else ""
                beaten = [s.method for s in full if is_classical(s)
                          and (s.psnr.mean() >= dae.psnr.mean() or s.ssim.mean() >= dae.ssim.mean())]
                text += f"; {dae.method}{tag} beats every classical method in both" if not beaten else \
                    f"; {', '.join(beaten)} ties or beats {dae.method}{tag} in PSNR or SSIM"
                for b in (s for s in rows if s.subset and dae.selected):
                    n = b.subset
                    dp, ds = dae.psnr[:n].mean(), dae.ssim[:n].mean()
                    text += f"; on the first {n} test images {dae.method} {verdict(dae, [b])} against " \
                            f" {b.method} ({dp:.2f}/{ds:.3f} vs {b.psnr.mean():.2f}/{b.ssim.mean():.3f})"
            lines.append(text + ".")
    return lines


def markdown(dataset: str, scores: list[Scores], labels: list[str], meta: dict) -> str:
    methods = list(dict.fromkeys((s.method, s.train_size) for s in scores))
    rows = []
    for method, ts in methods:
        by_noise = {s.noise: s for s in scores if s.method == method and s.train_size == ts}
        subset = next(iter(by_noise.values())).subset
        name = method + (f" (train {ts})" if ts else "") + (f" (first {subset} test images)" if subset else "")
        rows.append([name] + [(fmt(by_noise[n]) + (" ✓" if by_noise[n].selected else "")) if n in by_noise else "–"
                              for n in labels])
    text = [
        f"# Denoising benchmark — {dataset}\n",
        f"PSNR (dB) / SSIM, mean over {meta['n_test']} test images ({SSIM_NOTE}).\n",
        f"- **Split**: {meta['split']}.",
        f"- **Selection**: {SELECTION}; ✓ marks it below.",
        "- **Classical baselines**: oracle rows get the noise's known σ (p for p·N(0,1), σ/255 for AWGN, p·√λ for "
        "p·Poisson(λ)), blind rows estimate σ per image (`estimate_sigma`). On p·Poisson(λ) the noise has a known mean "
        f"p·λ: rows marked \"{BIAS_CORRECTED.strip()}\" get the bias-corrected input; \"BM3D (Anscombe VST, σ = 1)\" "
        "runs BM3D with σ = 1 on 2·√(y/p + 3/8) of the raw input and inverts (exact unbiased inverse) before removing "
        "λ. This noise does not depend on the image, so the VST only approximately stabilises it; both rows are "
        "reported. Noisy inputs are clipped to [0, 1] before any of this (as the DAEs see them), so p·λ over-corrects "
        "bright pixels at λ = 5. Photon-limited Poisson(peak·x)/peak: BM3D on the Anscombe transform of the counts "
        f"(σ = 1) with the exact unbiased inverse (\"{PHOTON_BM3D}\"), NL-means blind.",
        f"- **Saturated settings** (more than {meta['threshold']:.0%} of the noisy validation pixels clipped to 0 or 1): "
        + (", ".join(f"{k} ({v:.0%})" for k, v in meta["saturated"].items()) or "none")
        + ": reported with the noisy input and the medians only, left out of every verdict.\n",
        *(["## The shipped denoiser vs BM3D\n", *shipped_headline(scores, labels, meta["saturated"])]
          if any(s.kind == "pretrained" for s in scores) else []),
        "## The suite's DAE vs the classical methods\n",
        *headline(scores, labels, meta["saturated"]),
        "## All rows\n",
        markdown_table(["method"] + labels, rows),
        "## Setup\n",
        f"- **Ours**: {meta['setup']}",
        f"- **Paper**: {PAPER}\n",
        "## Who wins\n",
        *winners(scores, labels, meta["saturated"]),
        "",
        "Standard deviations, ms/image and the DAEs' validation PSNR: the CSV beside this file. Figure: the PNG "
        "beside this file.",
    ]
    return "\n".join(text) + "\n"


def figure(clean: torch.Tensor, scores: list[Scores], labels: list[str], index: int = 0):
    import matplotlib.pyplot as plt

    ts = max(s.train_size for s in scores)
    # per setting its own rows (the Poisson settings have bias-corrected and VST rows): clean, then every method
    per_row = [[s for s in scores if s.noise == label and s.train_size in (0, ts)] for label in labels]
    n_cols = 1 + max(len(r) for r in per_row)
    fig, axes = plt.subplots(len(labels), n_cols, figsize=(1.9 * n_cols, 2.1 * len(labels)), squeeze=False)
    for r, row in enumerate(per_row):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c == 0:
                img, title = clean[index, 0], "clean"
            elif c <= len(row):
                s = row[c - 1]
                img = s.images[index, 0]
                name = s.method.replace(BIAS_CORRECTED, " −pλ").replace("Anscombe VST, σ = 1", "VST")
                title = f"{name}{' ✓' if s.selected else ''}\n{s.psnr[index]:.1f} dB / {s.ssim[index]:.2f}"
            else:
                continue
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
        axes[r, 0].text(-8, 32, labels[r], rotation=90, va="center", ha="right", fontsize=8)
    fig.tight_layout()
    return fig


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
    n_bm3d: int  # test images the blind BM3D row is scored on (the oracle and VST rows: every test image)
    noises: list[NoiseModel] = field(default_factory=list)  # one per label
    n_test_split: int = 0  # images in the test split (the mode may score the first `test_images` of them)
    #: settings whose clipped noisy inputs are mostly 0 or 1 (label → clipped share): no method can restore them,
    #: so they are reported, marked, and left out of every verdict
    saturated: dict[str, float] = field(default_factory=dict)

    @property
    def clean_val(self) -> torch.Tensor:
        return self.splits["val"]

    @property
    def clean_test(self) -> torch.Tensor:
        return self.splits["test"]


def prepare(cfg: dict, m: dict, data: Sequence[Path] | None) -> Setup:
    """Load the splits, check the training sizes, draw every setting's noisy val / test copies once."""
    name = dataset_name(data)
    splits = load_splits(data, cfg["split"])
    n_train_all = len(splits["train"])
    train_sizes = [n_train_all if s == "all" else int(s) for s in m["train_sizes"]]
    for s in train_sizes:
        if s > n_train_all:
            raise ValueError(f"train size {s} > the {n_train_all} training images of {name}; "
                             "fix: lower train_sizes in denoising.yaml or add data")
    noises = [instantiate(spec, NoiseModel) for spec in noise_specs(cfg)]
    n_test_split = len(splits["test"])
    if m.get("test_images"):  # the mode scores every method on the same first N test images (a seeded choice)
        splits["test"] = splits["test"][: int(m["test_images"])]
    n_test = len(splits["test"])
    return Setup(
        name=name, data=data, splits=splits, train_sizes=train_sizes, labels=[n.label for n in noises],
        noises=noises, n_test_split=n_test_split,
        noisy_val={n.label: noisy_copy(n, splits["val"], NOISE_SEEDS["val"] + i) for i, n in enumerate(noises)},
        noisy_test={n.label: noisy_copy(n, splits["test"], NOISE_SEEDS["test"] + i) for i, n in enumerate(noises)},
        n_bm3d=n_test if m["bm3d_images"] == "all" else min(int(m["bm3d_images"]), n_test),
        saturated=saturated_settings(noises, splits["val"], m["saturation"]),
    )


def saturated_settings(noises: list[NoiseModel], clean_val: torch.Tensor, threshold: float) -> dict[str, float]:
    """The settings whose noisy validation copies have more than ``threshold`` of their pixels clipped to 0 or 1
    (p = 0.2·Poisson(5): its mean offset 1.0 saturates the clipped input), with that share."""
    out = {}
    for i, n in enumerate(noises):
        y = noisy_copy(n, clean_val, NOISE_SEEDS["val"] + i)
        share = float(((y == 0) | (y == 1)).float().mean())
        if share > threshold:
            out[n.label] = share
    return out


BIAS_CORRECTED = " (input − p·λ)"  # method-name suffix where the classical input is bias-corrected
PHOTON_BM3D = "BM3D (Anscombe, exact unbiased inverse)"  # the photon-limited settings' classical reference


def classical_scores(cfg: dict, st: Setup, progress: bool) -> list[Scores]:
    """The noisy input, the median filters, NL-means (h tuned on val) and BM3D, per noise setting.

    Fair settings: where the noise carries a known mean offset (``x + p·Poisson(λ)``: p·λ) every classical
    method gets the bias-corrected input ``y − p·λ``, and BM3D also runs through the Anscombe VST on the raw
    input. NL-means and BM3D each get an oracle row (the known σ of the noise) and a blind row (σ from
    ``estimate_sigma``; BM3D's blind row on the first ``n_bm3d`` test images only)."""
    from tqdm.auto import tqdm

    scores: list[Scores] = []
    nl = cfg["nl_means"]
    nl_kw = dict(patch_size=nl["patch_size"], patch_distance=nl["patch_distance"])
    clean = st.clean_test
    with classical.Pool() as pool:
        bar = tqdm(total=len(st.labels), desc="classical baselines", disable=not progress)
        for noise, label in zip(st.noises, st.labels, strict=True):
            noisy = st.noisy_test[label]
            psnr, ssim = psnr_ssim(noisy, clean)
            scores.append(Scores("noisy", label, 0, psnr, ssim, 0.0, noisy, kind="input"))
            offset, sigma = noise.additive_moments() or (0.0, None)
            tag = BIAS_CORRECTED if offset else ""
            inp, inp_val = noisy - offset, st.noisy_val[label] - offset  # (N, 1, H, W), unclipped
            for k in cfg["median_sizes"]:
                scores.append(run_classical(pool, f"median {k}×{k}{tag}", classical.median, inp, clean, label, size=k))
            if label in st.saturated:  # the medians show it; the costly methods would only confirm the clipping
                bar.update()
                continue
            for kind, sig in (("oracle σ", sigma), ("blind σ", None)):
                if kind == "oracle σ" and sig is None:
                    continue
                h = tune_nl_means(pool, inp_val, st.clean_val, nl, sigma=sig)
                scores.append(run_classical(pool, f"NL-means ({kind}){tag}", classical.nl_means, inp, clean, label,
                                            h_factor=h, sigma=sig, **nl_kw))
            if not classical.bm3d_available():
                continue
            if sigma is not None:
                scores.append(run_classical(pool, f"BM3D (oracle σ){tag}", classical.bm3d, inp, clean, label,
                                            sigma=sigma))
            if isinstance(noise, ScaledPoisson):
                scores.append(run_classical(pool, "BM3D (Anscombe VST, σ = 1)", classical.bm3d_anscombe, noisy, clean,
                                            label, p=noise.p, lam=noise.lam))
            if isinstance(noise, Poisson):  # photon-limited: the Anscombe transform is the standard reference
                scores.append(run_classical(pool, PHOTON_BM3D, classical.bm3d_photon, noisy, clean, label,
                                            peak=noise.peak))
            if st.n_bm3d:
                n = st.n_bm3d
                b = run_classical(pool, f"BM3D (blind σ){tag}", classical.bm3d, inp[:n], clean[:n], label)
                b.subset = n if n < len(clean) else None
                scores.append(b)
            bar.update()
        bar.close()
    if not classical.bm3d_available():
        print(classical.BM3D_MISSING)
    return scores


def select(scores: list[Scores]) -> None:
    """Mark, per (training size, setting), the DAE with the best validation PSNR as the suite's DAE."""
    for key in {(s.train_size, s.noise) for s in scores if s.train_size}:
        daes = [s for s in scores if (s.train_size, s.noise) == key]
        best = max(daes, key=lambda s: s.val_psnr)
        for s in daes:
            s.selected = s is best


class Report:
    """The outputs, rewritten after every trained net so that a cut-off run keeps its rows."""

    def __init__(self, ctx: Context, s: dict, st: Setup) -> None:
        self.ctx, self.cfg, self.m, self.mode, self.st = ctx, s, s, ctx.mode, st
        self.results = ctx.results()
        self.scores: list[Scores] = []
        self.train_log: dict[str, list[tuple[str, int, float]]] = {}  # net → (kind, epochs, seconds) per fit

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

    def ours(self, final: bool) -> str:
        """The Markdown's "Ours" sentence: data, split, training schedule, configs, baselines' settings."""
        cfg, m, st = self.cfg, self.m, self.st
        nl, size = cfg["nl_means"], cfg["split"]["image_size"]
        source = ("the embedded real chest X-rays (Kermany et al. 2018)" if not st.data
                  else ", ".join(relative(str(Path(d).resolve())) for d in st.data))
        configs = ", ".join(f"{config_file(d['config'])} ({d['name']})" for d in daes_of(cfg))
        return (
            f"{st.name} = {source}: {len(st.splits['train'])} train / {len(st.clean_val)} val / {len(st.clean_test)} "
            f"test images at {size}×{size} (split {split_rule(cfg['split'])}"
            + (f"; every method scored on the first {len(st.clean_test)} of the {st.n_test_split} test-split images "
               "(in the seeded patient order), to keep BM3D's oracle row on every scored image within the "
               "2-core budget" if len(st.clean_test) < st.n_test_split else "")
            + f"); training sizes {st.train_sizes}; "
            f"DAEs from the experiment configs {configs}, noise from configs/noise/denoising_grid.yaml, "
            + TRAINING[m["training"]]
            + (f" on random {m['crop']}×{m['crop']} crops" if m.get("crop") else " on whole images")
            + (f", fine-tune learning rate {m.get('finetune_lr_factor', 1.0):g}× the config's"
               if m["training"] == "blind+finetune" else "")
            + f" ({self.fits()}); {SELECTION}; NL-means h tuned on {nl['tune_images']} val images "
            f"over factors {nl['h_factors']} of σ (oracle and blind rows tuned separately); BM3D oracle σ and Anscombe "
            "VST rows on every scored test image, the blind-σ row "
            + (f"on the first {st.n_bm3d} of them" if st.n_bm3d < len(st.clean_test) else "on every one")
            + "; median filters with reflected borders."
            + ("" if final else " **Run incomplete: cut off before every net was trained.**")
        )

    def write(self, final: bool) -> Results:
        """(Re)write the CSV / Markdown (and, at the end, the figure and the terminal summary)."""
        st, results = self.st, self.results
        select(self.scores)
        stem = f"denoising_{st.name}"
        results.rows = []
        results.table(stem, [s.row(st.name) for s in self.scores], COLUMNS)
        meta = dict(n_test=len(st.clean_test), split=split_rule(self.cfg["split"]), setup=self.ours(final),
                    saturated=st.saturated, threshold=self.cfg["saturation"])
        results.markdown(stem, markdown(st.name, self.scores, st.labels, meta))
        if final:
            results.figure(stem, figure(st.clean_test, self.scores, st.labels))
            print_summary(self.scores, st.labels, f"denoising on {st.name} ({self.mode}, {self.ctx.device})")
            results.files = list(dict.fromkeys(results.files))
        return results


class Denoising(Benchmark):
    name = "denoising"
    data = ("xray",)
    doc = ("medical-image denoising (Gondara 2016): conv denoising autoencoders vs median filter, NL-means and BM3D "
           "on X-rays, PSNR / SSIM")

    def settings(self, mode: str, overrides=None) -> dict:
        """``denoising.yaml`` with its ``noise_grid`` fragment read in place (``noise/denoising_grid.yaml``)."""
        s = super().settings(mode, overrides)
        if isinstance(s.get("noise_grid"), str):
            s["noise_grid"] = load_config(CONFIGS / s["noise_grid"])
        if s["training"] not in TRAINING:
            raise ValueError(f"training: {s['training']!r} in mode {mode!r}; choose one of {sorted(TRAINING)}")
        return s

    def add_arguments(self, parser) -> None:
        parser.add_argument("--group-by", help="split rule: 'image', 'parent' (folder per patient) or a regex over the "
                            "file names whose match is the patient (default: the settings', for the Kermany names)")

    def models(self, s: dict) -> dict[str, L.LightningModule]:
        """The untrained DAEs the benchmark trains first, keyed by name: noise-blind over the grid (the quick
        mode's pretraining) or with the grid's first setting (the full mode's per-setting nets)."""
        noise = blind_noise(s) if s["training"] != "per_setting" else noise_specs(s)[0]
        out = {}
        for dae in daes_of(s):
            L.seed_everything(s["split"]["seed"], verbose=False)
            out[dae["name"]] = build(dae_spec(load_config(dae["config"])["model"], noise))
        return out

    def run(self, ctx: Context, s: dict) -> Results:
        """Run the comparison; every output is rewritten after each trained net, so a cut-off run keeps its rows."""
        if ctx.options.get("group_by"):
            s["split"]["group_by"] = ctx.options["group_by"]
        L.seed_everything(s["split"]["seed"], verbose=False)
        st = prepare(s, s, data_sources(ctx.data_root("xray")))
        print(f"denoising benchmark [{ctx.mode}] on {st.name}: {len(st.splits['train'])} train / {len(st.clean_val)} "
              f"val / {len(st.clean_test)} test images; {ctx.device}; {classical.available_cores()} worker processes "
              "for the classical methods", flush=True)
        report = Report(ctx, s, st)
        report.scores += classical_scores(s, st, ctx.progress)
        for entry in s.get("pretrained") or []:
            report.scores += pretrained_scores(ctx, entry, st)
        report.write(final=False)
        grid = blind_noise(s)
        for ts in st.train_sizes:
            train = st.splits["train"][:ts]  # the split is already a seeded permutation
            for dae in daes_of(s):
                for batch in dae_scores(ctx, dae, ts, train, s, grid, st, report.train_log):
                    report.scores.extend(batch)
                    report.write(final=False)
        return report.write(final=True)


main = Denoising.main


if __name__ == "__main__":
    sys.exit(main())
