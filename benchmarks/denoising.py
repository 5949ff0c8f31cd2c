"""Medical-image denoising (Gondara 2016): conv denoising autoencoders vs median filter, NL-means and BM3D on 64×64
X-rays, Gaussian and Poisson noise, PSNR and SSIM. Methods and schedules: ``benchmarks/denoising.yaml``; the noise
settings: the grid fragment ``configs/noise/denoising_grid.yaml``; the DAEs: the experiment configs' ``model`` blocks,
only their noise (and the fine-tune's learning rate) overridden.

    python -m benchmarks.denoising --quick                 # embedded chest X-rays, split by patient (make benchmark)
    python -m benchmarks.denoising --full                  # 100 epochs, one net per setting (GPU if any)
    python -m benchmarks.denoising --data all-mias/ --data dental/   # X-ray folders / .npz files; several: the union
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
from torchvision import transforms as T

from ae_lightning import classical_denoisers as classical
from ae_lightning.config import CONFIGS, instantiate, load_config
from ae_lightning.data import XRayDataset
from ae_lightning.data.common import ArrayImageDataset
from ae_lightning.inference import in_eval_batches
from ae_lightning.metrics import SSIM_NOTE, psnr_ssim
from ae_lightning.noise import NoiseModel, Poisson, ScaledPoisson
from benchmarks.common import build, config_file, scaled_lr
from benchmarks.core import Benchmark, Context, Results, markdown_table, split_by, xray_source

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
NOISE_SEEDS = {"val": 100, "test": 200}  # setting i's noisy copy of a split is drawn with seed NOISE_SEEDS[split] + i
BIAS_CORRECTED = " (input − p·λ)"  # method-name suffix where the classical input is bias-corrected
PHOTON_BM3D = "BM3D (Anscombe, exact unbiased inverse)"  # the photon-limited settings' classical reference


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
    config: str = ""  # the experiment config that produced a DAE's row
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


def noise_specs(settings: dict) -> list[dict]:
    """The grid's settings (``noise_grid.init_args.noises``), scored one at a time."""
    return settings["noise_grid"]["init_args"]["noises"]


# --- data --------------------------------------------------------------------------------------
def load_splits(data: Sequence[Path] | None, split: dict) -> dict[str, torch.Tensor]:
    """Clean ``(N, 1, S, S)`` images per split, several sources pooled; no group of ``split["group_by"]`` (the
    patient, for the Kermany chest X-rays) is in two splits."""
    kw = {k: split[k] for k in ("image_size", "val_fraction", "test_fraction", "seed")}
    return {s: XRayDataset(data, s, group_by=split.get("group_by", "image"), **kw).images for s in ("train", "val", "test")}


def split_rule(split: dict) -> str:
    """The split rule in words, for every table."""
    return (f"{split_by(split.get('group_by', 'image'))}, seeded ({split['seed']}), "
            f"{1 - split['val_fraction'] - split['test_fraction']:.0%} / {split['val_fraction']:.0%} / "
            f"{split['test_fraction']:.0%} train / val / test of the images; no group in two splits")


def noisy_copy(noise: NoiseModel, images: torch.Tensor, seed: int) -> torch.Tensor:
    """The same corrupted copy for every method: noise drawn from a generator seeded per setting."""
    return noise(images, torch.Generator().manual_seed(seed))


@dataclass
class Setup:
    """What every method is scored on: the splits, the noise settings and their seeded noisy copies."""

    name: str  # the dataset's name (output files)
    source: str  # the X-ray sources in words
    splits: dict[str, torch.Tensor]  # clean (N, 1, S, S) per split
    train_sizes: list[int]
    noises: list[NoiseModel]
    noisy_val: dict[str, torch.Tensor]  # by setting label
    noisy_test: dict[str, torch.Tensor]
    n_bm3d: int  # test images the blind BM3D row is scored on (the oracle and VST rows: every test image)
    n_test_split: int  # images in the test split (the mode may score the first `test_images` of them)
    #: settings whose clipped noisy inputs are mostly 0 or 1 (label → clipped share): no method can restore them,
    #: so they are reported, marked, and left out of every verdict
    saturated: dict[str, float]

    @property
    def labels(self) -> list[str]:
        return [n.label for n in self.noises]

    @property
    def clean_val(self) -> torch.Tensor:
        return self.splits["val"]

    @property
    def clean_test(self) -> torch.Tensor:
        return self.splits["test"]


def prepare(settings: dict, data: str | Sequence[str] | None) -> Setup:
    """Load the splits of the X-rays ``data`` names (:func:`~benchmarks.core.xray_source`), check the training
    sizes, draw every setting's noisy val / test copies once."""
    roots, name, source = xray_source(data)
    splits = load_splits(roots, settings["split"])
    n_train = len(splits["train"])
    train_sizes = [n_train if s == "all" else int(s) for s in settings["train_sizes"]]
    for s in train_sizes:
        if s > n_train:
            raise ValueError(f"train size {s} > the {n_train} training images of {name}; "
                             "fix: lower train_sizes in denoising.yaml or add data")
    noises = [instantiate(spec, NoiseModel) for spec in noise_specs(settings)]
    n_test_split = len(splits["test"])
    if settings.get("test_images"):  # the mode scores every method on the same first N test images (a seeded choice)
        splits["test"] = splits["test"][: int(settings["test_images"])]
    n_test, n_bm3d = len(splits["test"]), settings["bm3d_images"]
    noisy = {split: {n.label: noisy_copy(n, splits[split], NOISE_SEEDS[split] + i) for i, n in enumerate(noises)}
             for split in ("val", "test")}
    return Setup(name=name, source=source, splits=splits, train_sizes=train_sizes, noises=noises,
                 noisy_val=noisy["val"], noisy_test=noisy["test"], n_test_split=n_test_split,
                 n_bm3d=n_test if n_bm3d == "all" else min(int(n_bm3d), n_test),
                 saturated=saturated_settings(noises, splits["val"], settings["saturation"]))


def saturated_settings(noises: list[NoiseModel], clean_val: torch.Tensor, threshold: float) -> dict[str, float]:
    """The settings whose noisy validation copies have more than ``threshold`` of their pixels clipped to 0 or 1
    (p = 0.2·Poisson(5): its mean offset 1.0 saturates the clipped input), with that share."""
    noisy = {n.label: noisy_copy(n, clean_val, NOISE_SEEDS["val"] + i) for i, n in enumerate(noises)}
    shares = {label: float(((y == 0) | (y == 1)).float().mean()) for label, y in noisy.items()}
    return {label: share for label, share in shares.items() if share > threshold}


# --- classical baselines ----------------------------------------------------------------------
def run_classical(pool: classical.Pool, method: str, fn, noisy: torch.Tensor, clean: torch.Tensor, noise: str,
                  **kwargs) -> Scores:
    t0 = time.perf_counter()
    images = torch.from_numpy(pool.map_images(fn, list(noisy[:, 0].numpy()), **kwargs)).unsqueeze(1)  # (N, 1, H, W)
    ms = 1000 * (time.perf_counter() - t0) / len(noisy)
    return Scores(method, noise, 0, *psnr_ssim(images, clean), ms, images, kind="classical")


def tune_nl_means(pool: classical.Pool, noisy_val: torch.Tensor, clean_val: torch.Tensor, nl: dict,
                  sigma: float | None = None) -> float:
    """The ``h`` factor with the best mean PSNR on the validation images (the test split is never used);
    ``sigma``: the known σ (oracle) or ``None`` (estimated per image, blind)."""
    n = nl["tune_images"]
    return float(max(nl["h_factors"], key=lambda h: run_classical(
        pool, "", classical.nl_means, noisy_val[:n], clean_val[:n], "", h_factor=h, patch_size=nl["patch_size"],
        patch_distance=nl["patch_distance"], sigma=sigma).psnr.mean()))


def classical_scores(settings: dict, setup: Setup, progress: bool) -> list[Scores]:
    """The noisy input, the median filters, NL-means (h tuned on val) and BM3D per noise setting, each in its fair
    setting: a known mean offset p·λ removed from the input (BM3D also through the Anscombe VST of the raw input),
    an oracle-σ and a blind-σ row (``estimate_sigma``; BM3D's blind row on the first ``n_bm3d`` test images)."""
    from tqdm.auto import tqdm

    scores, clean, nl = [], setup.clean_test, settings["nl_means"]
    with classical.Pool() as pool:
        for noise in tqdm(setup.noises, desc="classical baselines", disable=not progress):
            label, noisy = noise.label, setup.noisy_test[noise.label]
            scores.append(Scores("noisy", label, 0, *psnr_ssim(noisy, clean), 0.0, noisy, kind="input"))
            offset, sigma = noise.additive_moments() or (0.0, None)
            tag = BIAS_CORRECTED if offset else ""
            inp, inp_val = noisy - offset, setup.noisy_val[label] - offset  # (N, 1, H, W), unclipped
            for k in settings["median_sizes"]:
                scores.append(run_classical(pool, f"median {k}×{k}{tag}", classical.median, inp, clean, label, size=k))
            if label in setup.saturated:  # the medians show it; the costly methods would only confirm the clipping
                continue
            for kind, sig in [("oracle σ", sigma)] * (sigma is not None) + [("blind σ", None)]:
                h = tune_nl_means(pool, inp_val, setup.clean_val, nl, sigma=sig)
                scores.append(run_classical(pool, f"NL-means ({kind}){tag}", classical.nl_means, inp, clean, label,
                                            h_factor=h, sigma=sig, patch_size=nl["patch_size"],
                                            patch_distance=nl["patch_distance"]))
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
            if n := setup.n_bm3d:
                blind = run_classical(pool, f"BM3D (blind σ){tag}", classical.bm3d, inp[:n], clean[:n], label)
                blind.subset = n if n < len(clean) else None
                scores.append(blind)
    if not classical.bm3d_available():
        print(classical.BM3D_MISSING)
    return scores


# --- denoising autoencoders -------------------------------------------------------------------
def dae_spec(model_spec: dict, noise_spec: dict, lr_factor: float = 1.0) -> dict:
    """An experiment config's ``model`` block with the benchmark's overrides: its ``noise``, and its
    ``optimizer`` learning rate times ``lr_factor`` (the fine-tune's)."""
    spec = scaled_lr(model_spec, lr_factor) if lr_factor != 1.0 else copy.deepcopy(model_spec)
    spec["init_args"]["noise"] = copy.deepcopy(noise_spec)
    return spec


def daes_of(settings: dict) -> list[dict]:
    """The DAEs a mode trains: every ``daes`` entry, unless it names its ``modes`` (a net too slow for the
    2-core CPU's quick mode, e.g. the 17-layer DnCNN, is ``modes: [full]``; smoke walks the full mode's)."""
    mode = "full" if settings["mode"] == "smoke" else settings["mode"]
    return [d for d in settings["daes"] if mode in d.get("modes", [mode])]


def run_dae(model, name: str, noisy: torch.Tensor, clean: torch.Tensor, noise: str, train_size: int,
            precision: str, **fields) -> Scores:
    """Batched inference on the noisy images (bf16 autocast on a GPU when the run uses it)."""
    t0 = time.perf_counter()
    images = in_eval_batches(model, lambda b: model(b).reconstruction.float().clamp(0, 1), noisy, 256, precision)
    ms = 1000 * (time.perf_counter() - t0) / len(noisy)
    return Scores(name, noise, train_size, *psnr_ssim(images, clean), ms, images, **fields)


def dae_scores(ctx: Context, dae: dict, train: torch.Tensor, settings: dict, setup: Setup,
               train_log: dict[str, list[tuple[str, int, float]]]) -> Iterator[list[Scores]]:
    """Train one ``daes`` entry on ``train`` by the mode's ``training`` schedule; yield its test scores (with the
    validation PSNR that selects the suite's DAE) after each net; log each fit's (kind, epochs, seconds)."""
    experiment = load_config(dae["config"])
    train_size, epochs, config = len(train), settings["epochs"][dae["name"]], config_file(dae["config"])
    # the experiment's own batch size (Gondara: 10) unless the mode sets one
    batch_size = settings.get("batch_size") or experiment["data"]["init_args"]["batch_size"]
    # each epoch: `crops_per_image` random `crop`² windows (none: the whole image) of every image, randomly flipped
    crop, flip = settings.get("crop"), T.RandomHorizontalFlip()
    crops = ArrayImageDataset(train.repeat(settings.get("crops_per_image", 1), 1, 1, 1),
                              transform=T.Compose([T.RandomCrop(crop), flip]) if crop else flip)

    def fit(noise: dict, label: str, kind: str, n_epochs: int, init_state: dict | None = None,
            lr_factor: float = 1.0) -> L.LightningModule:
        """A net trained with ``noise`` (from ``init_state``: a fine-tune), without a validation loop (unused)."""
        print(f"training {dae['name']} ({label}, train {train_size}, {n_epochs} epochs, batch {batch_size})",
              flush=True)
        model = build(dae_spec(experiment["model"], noise, lr_factor))
        if init_state is not None:
            model.load_state_dict(init_state)
        loader = DataLoader(crops, batch_size=batch_size, shuffle=True, drop_last=len(crops) > batch_size)
        t0 = time.perf_counter()
        ctx.trainer(n_epochs, limit_val_batches=0).fit(model, loader)
        train_log.setdefault(f"{dae['name']} (train {train_size}, batch {batch_size})", []).append(
            (kind, n_epochs, time.perf_counter() - t0))
        return model.eval()

    def score(model: L.LightningModule, label: str) -> Scores:
        scores = run_dae(model, dae["name"], setup.noisy_test[label], setup.clean_test, label, train_size,
                         ctx.precision, config=config)
        scores.val_psnr = run_dae(model, "", setup.noisy_val[label], setup.clean_val, label, train_size,
                                  ctx.precision).psnr.mean().item()
        return scores

    per_setting = list(zip(noise_specs(settings), setup.labels, strict=True))
    if settings["training"] == "per_setting":  # one net per setting, from scratch (the paper)
        for spec, label in per_setting:
            yield [score(fit(spec, label, "per-setting", epochs), label)]
        return
    model = fit(settings["noise_grid"], "noise-blind", "noise-blind", epochs)
    if settings["training"] == "blind":
        yield [score(model, label) for label in setup.labels]
        return
    state = copy.deepcopy(model.state_dict())  # blind+finetune: a short per-setting fine-tune of the blind net
    for spec, label in per_setting:
        tuned = fit(spec, f"{label}, fine-tuned", "fine-tune", settings["finetune_epochs"], state,
                    settings.get("finetune_lr_factor", 1.0))
        yield [score(tuned, label)]


def pretrained_scores(ctx: Context, entry: dict, setup: Setup) -> list[Scores]:
    """A shipped denoiser's test scores at every setting, its weights as they ship (``ae_lightning.pretrained``):
    no training in this run (``train_size`` 0, like the classical rows)."""
    from ae_lightning import pretrained

    model = pretrained.load(entry["weights"]).to("cuda" if ctx.accelerator == "gpu" else "cpu")
    return [run_dae(model, entry["name"], setup.noisy_test[label], setup.clean_test, label, 0, ctx.precision,
                    kind="pretrained", config=entry["config"]) for label in setup.labels]


def select(scores: list[Scores]) -> None:
    """Mark, per (training size, setting), the DAE with the best validation PSNR as the suite's DAE."""
    for key in {(s.train_size, s.noise) for s in scores if s.train_size}:
        daes = [s for s in scores if (s.train_size, s.noise) == key]
        best = max(daes, key=lambda s: s.val_psnr)
        for s in daes:
            s.selected = s is best


# --- reports ----------------------------------------------------------------------------------
def fmt(s: Scores) -> str:
    return f"{s.psnr.mean():.2f} / {s.ssim.mean():.3f}"


def by_method(scores: list[Scores]) -> dict[tuple[str, int], dict[str, Scores]]:
    """Each (method, training size)'s scores by noise setting, in the order they were scored."""
    out: dict[tuple[str, int], dict[str, Scores]] = {}
    for s in scores:
        out.setdefault((s.method, s.train_size), {})[s.noise] = s
    return out


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
    bm3d = [s for s in rows if s.kind == "classical" and s.subset is None and s.method.startswith("BM3D")]
    return max(bm3d, key=lambda s: (s.psnr.mean(), s.ssim.mean())) if bm3d else None


def saturation_note(share: float) -> str:
    return f"saturated ({share:.0%} of the noisy pixels clipped to 0 or 1): no verdict"


def shipped_headline(scores: list[Scores], labels: list[str], saturated: dict[str, float]) -> list[str]:
    """The headline: each shipped pretrained denoiser (no training in this run) against BM3D, per setting."""
    out = []
    for model in dict.fromkeys(s.method for s in scores if s.kind == "pretrained"):
        rows, verdicts = [], []
        for label in labels:
            ours = next(s for s in scores if s.noise == label and s.method == model)
            ref = strongest_bm3d([s for s in scores if s.noise == label])
            if label in saturated or ref is None:
                note = saturation_note(saturated[label]) if label in saturated else "no BM3D row"
                rows.append([label, fmt(ours), "–", "–", "–", note])
                continue
            verdicts.append(verdict(ours, [ref]))
            rows.append([label, fmt(ours), f"{ref.method}: {fmt(ref)}", f"{(ours.psnr.mean() - ref.psnr.mean()):+.2f}",
                         f"{(ours.ssim.mean() - ref.ssim.mean()):+.3f}", verdicts[-1].replace("wins", "**wins**")])
        n = len(next(s for s in scores if s.method == model).psnr)
        out += [f"**{model} vs BM3D**, on all {n} scored test images: it beats BM3D in PSNR and SSIM at "
                f"{verdicts.count('wins')} of {len(verdicts)} settings (the saturated setting excluded). BM3D gets the "
                "noise's known σ (oracle), on Poisson settings also the Anscombe transform with the exact unbiased "
                "inverse; the stronger row is the reference.\n",
                markdown_table(["setting", f"{model} (PSNR / SSIM)", "BM3D reference", "Δ PSNR dB", "Δ SSIM",
                                "verdict"], rows)]
    return out


def headline(scores: list[Scores], labels: list[str], saturated: dict[str, float]) -> list[str]:
    """Per training size, one row per setting: the validation-selected DAE against the best classical method
    and against BM3D (the stronger of its oracle-σ and Anscombe-VST rows), with the verdicts."""
    out = []
    for train_size in sorted({s.train_size for s in scores if s.train_size}):
        rows = []
        for label in labels:
            here = [s for s in scores if s.noise == label and s.train_size in (0, train_size)]
            dae = next((s for s in here if s.selected and s.train_size), None)
            if dae is None:
                continue
            if label in saturated:
                rows.append([label, f"{dae.method}: {fmt(dae)}", "–", saturation_note(saturated[label]), "–", "–", "–"])
                continue
            full = [s for s in here if s.kind == "classical" and s.subset is None]
            best = max(full, key=lambda s: (s.psnr.mean(), s.ssim.mean()))
            bm3d, strong = [s for s in full if s.method.startswith("BM3D")], strongest_bm3d(here)
            bar = [s for s in full if s.method.startswith(("NL-means", "median"))]  # the quality bar's rows
            rows.append([label, f"{dae.method}: {fmt(dae)}", f"{best.method}: {fmt(best)}", verdict(dae, full),
                         f"{strong.method}: {fmt(strong)}" if strong else "–", verdict(dae, bm3d) if bm3d else "–",
                         "met" if verdict(dae, bar) == "wins" else "**not met**"])
        out += [f"**Train {train_size}.** The suite's DAE is selected on validation PSNR. \"vs\" verdicts: `wins` = above "
                "in PSNR and SSIM (against every classical row, or both BM3D rows); `loses` = below in both; `splits` "
                "otherwise. Quality bar: above NL-means (oracle and blind σ) and both median filters in both metrics.\n",
                markdown_table(["setting", "suite's DAE (val-selected)", "best classical (PSNR)", "DAE vs classical",
                                "BM3D (stronger of oracle σ / VST)", "DAE vs BM3D", "quality bar"], rows)]
    return out


def winners(scores: list[Scores], labels: list[str], saturated: dict[str, float]) -> list[str]:
    """One sentence per (train size, noise setting): every DAE's verdict against the classical methods."""
    lines = []
    for train_size in sorted({s.train_size for s in scores if s.train_size}):
        for label in labels:
            if label in saturated:
                lines.append(f"- **{label}**: {saturation_note(saturated[label])}.")
                continue
            rows = [s for s in scores if s.noise == label and s.train_size in (0, train_size) and s.method != "noisy"]
            full = [s for s in rows if s.subset is None]
            daes = sorted((s for s in full if s.train_size), key=lambda s: not s.selected)
            if not daes:
                continue
            best_p = max(full, key=lambda s: s.psnr.mean())
            best_s = max(full, key=lambda s: s.ssim.mean())
            text = (f"- **{label}** (train {train_size}): best PSNR {best_p.method} ({best_p.psnr.mean():.2f} dB), "
                    f"best SSIM {best_s.method} ({best_s.ssim.mean():.3f})")
            for dae in daes:
                val = "" if dae.val_psnr is None else f"{dae.val_psnr:.2f} dB"
                tag = (f" (selected: best val PSNR{', ' if val else ''}{val})" if dae.selected
                       else f" (val PSNR {val})" if val else "")
                beaten = [s.method for s in full if s.kind == "classical"
                          and (s.psnr.mean() >= dae.psnr.mean() or s.ssim.mean() >= dae.ssim.mean())]
                text += (f"; {', '.join(beaten)} ties or beats {dae.method}{tag} in PSNR or SSIM" if beaten
                         else f"; {dae.method}{tag} beats every classical method in both")
                for b in (s for s in rows if s.subset and dae.selected):
                    text += (f"; on the first {b.subset} test images {dae.method} {verdict(dae, [b])} against  "
                             f"{b.method} ({dae.psnr[:b.subset].mean():.2f}/{dae.ssim[:b.subset].mean():.3f} vs "
                             f"{b.psnr.mean():.2f}/{b.ssim.mean():.3f})")
            lines.append(text + ".")
    return lines


def figure(clean: torch.Tensor, scores: list[Scores], labels: list[str]):
    """The first test image, a row per setting: clean, then every method's output titled with its PSNR / SSIM."""
    import matplotlib.pyplot as plt

    train_size = max(s.train_size for s in scores)
    # per setting its own rows (the Poisson settings have bias-corrected and VST rows): clean, then every method
    per_row = [[s for s in scores if s.noise == label and s.train_size in (0, train_size)] for label in labels]
    n_cols = 1 + max(len(r) for r in per_row)
    fig, axes = plt.subplots(len(labels), n_cols, figsize=(1.9 * n_cols, 2.1 * len(labels)), squeeze=False)
    for r, row in enumerate(per_row):
        panels = [(clean[0, 0], "clean")] + [
            (s.images[0, 0], s.method.replace(BIAS_CORRECTED, " −pλ").replace("Anscombe VST, σ = 1", "VST")
             + f"{' ✓' if s.selected else ''}\n{s.psnr[0]:.1f} dB / {s.ssim[0]:.2f}") for s in row]
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(panels):
                ax.imshow(panels[c][0].numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_title(panels[c][1], fontsize=7)
        axes[r, 0].text(-8, 32, labels[r], rotation=90, va="center", ha="right", fontsize=8)
    fig.tight_layout()
    return fig


def print_summary(scores: list[Scores], labels: list[str], title: str) -> None:
    """Terminal table: one row per noise setting, one column per method, cells PSNR/SSIM."""
    from rich.console import Console
    from rich.table import Table

    methods = by_method(scores)
    table = Table(title=title)
    table.add_column("noise")
    for (method, train_size), by_noise in methods.items():
        first = next(iter(by_noise.values()))
        tag = (f" [{train_size}]" if train_size else "") + (f" [{first.subset} imgs]" if first.subset else "")
        table.add_column(f"{method}{tag}\n{first.ms_per_image:.1f} ms/img", justify="right")
    for label in labels:
        table.add_row(label, *(f"{s.psnr.mean():.2f}/{s.ssim.mean():.3f}" if (s := by_noise.get(label)) else "–"
                               for by_noise in methods.values()))
    console = Console()
    console.width = max(console.width, 150)
    console.print(table)
    console.print("cells: PSNR dB / SSIM (torchmetrics), mean over the test images")


class Report:
    """The outputs, rewritten after every trained net so that a cut-off run keeps its rows."""

    def __init__(self, ctx: Context, settings: dict, setup: Setup) -> None:
        self.ctx, self.settings, self.setup = ctx, settings, setup
        self.results = ctx.results()
        self.scores: list[Scores] = []
        self.train_log: dict[str, list[tuple[str, int, float]]] = {}  # net → (kind, epochs, seconds) per fit

    def fits(self) -> str:
        """One clause per DAE: what was trained, how many epochs, how long."""
        clauses = []
        for net, runs in self.train_log.items():
            parts = []
            for kind in ("noise-blind", "fine-tune", "per-setting"):
                if rs := [r for r in runs if r[0] == kind]:
                    times = f"{len(rs)} × " if len(rs) > 1 else ""
                    parts.append(f"{kind} {times}{rs[0][1]} epochs, {sum(r[2] for r in rs):.0f} s")
            clauses.append(f"{net}: " + ", ".join(parts))
        return "; ".join(clauses) or "none trained yet"

    def our_setup(self, final: bool) -> str:
        """The Markdown's "Ours" line: data, split, training schedule, configs, the baselines' settings."""
        s, setup = self.settings, self.setup
        n_test, size, nl, crop = len(setup.clean_test), s["split"]["image_size"], s["nl_means"], s.get("crop")
        subset = (f"; every method scored on the first {n_test} of the {setup.n_test_split} test-split images (in "
                  "the seeded patient order), to keep BM3D's oracle row on every scored image within the 2-core budget"
                  if n_test < setup.n_test_split else "")
        crops = f" on random {crop}×{crop} crops" if crop else " on whole images"
        finetune = (f", fine-tune learning rate {s.get('finetune_lr_factor', 1.0):g}× the config's"
                    if s["training"] == "blind+finetune" else "")
        configs = ", ".join(f"{config_file(d['config'])} ({d['name']})" for d in daes_of(s))
        blind_bm3d = f"on the first {setup.n_bm3d} of them" if setup.n_bm3d < n_test else "on every one"
        return (f"{setup.name} = {setup.source}: {len(setup.splits['train'])} train / {len(setup.clean_val)} val / {n_test} "
                f"test images at {size}×{size} (split {split_rule(s['split'])}{subset}); training sizes "
                f"{setup.train_sizes}; DAEs from the experiment configs {configs}, noise from "
                f"configs/noise/denoising_grid.yaml, {TRAINING[s['training']]}{crops}{finetune} ({self.fits()}); "
                f"{SELECTION}; NL-means h tuned on {nl['tune_images']} val images over factors {nl['h_factors']} of σ "
                "(oracle and blind rows tuned separately); BM3D oracle σ and Anscombe VST rows on every scored test "
                f"image, the blind-σ row {blind_bm3d}; median filters with reflected borders."
                + ("" if final else " **Run incomplete: cut off before every net was trained.**"))

    def markdown(self, final: bool) -> str:
        setup, scores, labels, saturated = self.setup, self.scores, self.setup.labels, self.setup.saturated
        rows = []
        for (method, train_size), by_noise in by_method(scores).items():
            subset = next(iter(by_noise.values())).subset
            name = (method + (f" (train {train_size})" if train_size else "")
                    + (f" (first {subset} test images)" if subset else ""))
            rows.append([name] + [fmt(by_noise[n]) + (" ✓" if by_noise[n].selected else "") if n in by_noise else "–"
                                  for n in labels])
        shipped = (["## The shipped denoiser vs BM3D\n", *shipped_headline(scores, labels, saturated)]
                   if any(s.kind == "pretrained" for s in scores) else [])
        text = [
            f"# Denoising benchmark — {setup.name}\n",
            f"PSNR (dB) / SSIM, mean over {len(setup.clean_test)} test images ({SSIM_NOTE}).\n",
            f"- **Split**: {split_rule(self.settings['split'])}.",
            f"- **Selection**: {SELECTION}; ✓ marks it below.",
            "- **Classical baselines**: oracle rows get the noise's known σ (p for p·N(0,1), σ/255 for AWGN, p·√λ for "
            "p·Poisson(λ)), blind rows estimate σ per image (`estimate_sigma`). On p·Poisson(λ) the noise has a known "
            f"mean p·λ: rows marked \"{BIAS_CORRECTED.strip()}\" get the bias-corrected input; \"BM3D (Anscombe VST, "
            "σ = 1)\" runs BM3D with σ = 1 on 2·√(y/p + 3/8) of the raw input and inverts (exact unbiased inverse) "
            "before removing λ. This noise does not depend on the image, so the VST only approximately stabilises it; "
            "both rows are reported. Noisy inputs are clipped to [0, 1] before any of this (as the DAEs see them), so "
            "p·λ over-corrects bright pixels at λ = 5. Photon-limited Poisson(peak·x)/peak: BM3D on the Anscombe "
            f"transform of the counts (σ = 1) with the exact unbiased inverse (\"{PHOTON_BM3D}\"), NL-means blind.",
            f"- **Saturated settings** (more than {self.settings['saturation']:.0%} of the noisy validation pixels "
            "clipped to 0 or 1): " + (", ".join(f"{k} ({v:.0%})" for k, v in saturated.items()) or "none")
            + ": reported with the noisy input and the medians only, left out of every verdict.\n",
            *shipped,
            "## The suite's DAE vs the classical methods\n",
            *headline(scores, labels, saturated),
            "## All rows\n",
            markdown_table(["method"] + labels, rows),
            "## Setup\n",
            f"- **Ours**: {self.our_setup(final)}",
            f"- **Paper**: {PAPER}\n",
            "## Who wins\n",
            *winners(scores, labels, saturated),
            "",
            "Standard deviations, ms/image and the DAEs' validation PSNR: the CSV beside this file. Figure: the PNG "
            "beside this file.",
        ]
        return "\n".join(text) + "\n"

    def write(self, final: bool) -> Results:
        """(Re)write the CSV and the Markdown (at the end also the figure and the terminal summary)."""
        setup, results = self.setup, self.results
        select(self.scores)
        stem = f"denoising_{setup.name}"
        results.rows = []
        results.table(stem, [s.row(setup.name) for s in self.scores], COLUMNS)
        results.markdown(stem, self.markdown(final))
        if final:
            results.figure(stem, figure(setup.clean_test, self.scores, setup.labels))
            print_summary(self.scores, setup.labels, f"denoising on {setup.name} ({self.ctx.mode}, {self.ctx.device})")
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

    def models(self, settings: dict) -> dict[str, L.LightningModule]:
        """The untrained DAEs the benchmark trains first, keyed by name: noise-blind over the grid (the quick
        mode's pretraining) or with the grid's first setting (the full mode's per-setting nets)."""
        noise = settings["noise_grid"] if settings["training"] != "per_setting" else noise_specs(settings)[0]
        out = {}
        for dae in daes_of(settings):
            L.seed_everything(settings["split"]["seed"], verbose=False)
            out[dae["name"]] = build(dae_spec(load_config(dae["config"])["model"], noise))
        return out

    def run(self, ctx: Context, settings: dict) -> Results:
        if ctx.options.get("group_by"):
            settings["split"]["group_by"] = ctx.options["group_by"]
        L.seed_everything(settings["split"]["seed"], verbose=False)
        setup = prepare(settings, ctx.data_root("xray"))
        print(f"denoising benchmark [{ctx.mode}] on {setup.name}: {len(setup.splits['train'])} train / "
              f"{len(setup.clean_val)} val / {len(setup.clean_test)} test images; {ctx.device}; "
              f"{classical.available_cores()} worker processes for the classical methods", flush=True)
        report = Report(ctx, settings, setup)
        report.scores += classical_scores(settings, setup, ctx.progress)
        for entry in settings.get("pretrained") or []:
            report.scores += pretrained_scores(ctx, entry, setup)
        report.write(final=False)
        for train_size in setup.train_sizes:
            train = setup.splits["train"][:train_size]  # the split is already a seeded permutation
            for dae in daes_of(settings):
                for scores in dae_scores(ctx, dae, train, settings, setup, report.train_log):
                    report.scores += scores
                    report.write(final=False)
        return report.write(final=True)


main = Denoising.main


if __name__ == "__main__":
    sys.exit(main())
