"""Compression: does an autoencoder beat JPEG? Rate–distortion curves on 64×64 chest X-rays and MNIST.

The lecture claims that for image compression an autoencoder hardly beats JPEG. JPEG at the YAML's qualities and
the suite's conv autoencoder (its config; the code size is the only override) go on one plot, bits per pixel
against PSNR and SSIM on the test split. The AE's code is quantised uniformly with a step chosen on the VALIDATION
split, then entropy-coded (:mod:`ae_lightning.compression`); what each rate counts is said in the Markdown, which
also says, from the numbers, where (if anywhere) the autoencoder beats JPEG at the same rate.

    python -m benchmarks.compression --quick                  # embedded X-rays + the 10k MNIST test digits, ≤ 70 CPU-s
    python -m benchmarks.compression --full --data PATH/kermany_64.npz   # full mode needs a larger X-ray set
    python -m benchmarks.compression --only mnist --mnist ~/mnist
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from PIL import Image

from ae_lightning import classical_codecs
from ae_lightning import compression as cz
from ae_lightning.config import instantiate, load_config
from ae_lightning.data import DatasetNotFoundError
from ae_lightning.metrics import SSIM_NOTE, psnr_ssim
from ae_lightning.rd import bits_per_pixel
from benchmarks.common import build, config_file, model_spec, with_code_dim
from benchmarks.core import (
    Benchmark,
    Context,
    Results,
    Stopwatch,
    markdown_table,
    mnist_source,
    relative,
    require_full_mnist,
    split_by,
    xray_source,
)

COLUMNS = ["dataset", "method", "quality", "code_dim", "step", "bpp", "bpp_file", "bpp_whole_set", "bpp_whole_set_lzma",
           "bpp_entropy", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "val_psnr", "val_psnr_unquantised",
           "train_images", "epochs", "config"]
PAPERS = (
    "Ballé, Laparra & Simoncelli (ICLR 2017), *End-to-end optimized image compression*: conv analysis/synthesis "
    "transforms with GDN, trained on rate + λ·distortion with additive uniform noise standing in for quantisation, "
    "a learned entropy model and arithmetic coding; trained on 6,507 ImageNet images, tested on the 24 Kodak images "
    "(768×512); better than JPEG and JPEG 2000 at all rates tested. Theis et al. (ICLR 2017), *Lossy image "
    "compression with compressive autoencoders*: a residual conv AE, rounding with a smooth gradient, Gaussian "
    "scale-mixture entropy model; better than JPEG, comparable to JPEG 2000 on Kodak. Both are trained for the "
    "rate and use learned entropy models; the suite's AE is a plain reconstruction AE whose code is quantised "
    "afterwards and coded with a generic DEFLATE, on 64×64 / 28×28 images — the lecture's claim is about this "
    "kind of AE."
)


def ae_spec(s: dict, dataset: str, code_dim: int) -> dict:
    """The dataset's experiment config's ``model`` block with its code size set to ``code_dim``."""
    return with_code_dim(model_spec(s["datasets"][dataset]["config"]), code_dim)


# --- data ------------------------------------------------------------------------------------------
def datamodule(ctx: Context, s: dict, dataset: str) -> tuple[L.LightningDataModule, str, str]:
    """``(DataModule, name, where the images came from and how they were split)``: the DataModule of the dataset's
    experiment config's ``data`` block (root, batch size, training cap overridden), set up for fitting."""
    spec = copy.deepcopy(load_config(s["datasets"][dataset]["config"])["data"])
    args = spec.setdefault("init_args", {})
    args["batch_size"] = s["batch_size"][dataset]
    if s["train_images"][dataset]:
        args["train_size"] = s["train_images"][dataset]
    if dataset == "mnist":
        args.update(mnist_source(ctx.data_root("mnist"), "full" if ctx.full else "quick"))
        name, source = "mnist", None
    else:  # the DataModules' lookup order; the embedded 800 X-rays only in quick mode
        roots, name, source = xray_source(ctx.data_root("xray"))
        if roots is None and ctx.full:
            raise DatasetNotFoundError(
                "compression --full trains on a larger X-ray set than the embedded 800 images; fix: pass --data (a "
                "folder of X-ray images or an .npz with an 'images' array; e.g. the Kermany chest X-rays, CC BY 4.0, "
                "doi:10.17632/rscbjbr9sj.2 — any folder of X-rays will do) or set $AE_XRAY_ROOT")
        name = dataset if roots is None else name
        args["root"] = None if roots is None else [str(r) for r in roots]
        args["group_by"] = ctx.options.get("group_by") or args.get("group_by", "image")
    dm = instantiate(spec, L.LightningDataModule)
    dm.prepare_data()
    dm.setup("fit")
    sizes = " / ".join(f"{len(getattr(dm, f'{split}_set'))} {split}" for split in ("train", "val", "test"))
    if dataset == "mnist":
        if ctx.full:
            require_full_mnist(dm, "compression")
        return dm, name, f"{relative(dm.source)}: {sizes} digits (28×28)"
    return dm, name, f"{source}: {sizes} images (64×64), split {split_by(args['group_by'])}, seeded"


# --- one point of a rate–distortion curve ----------------------------------------------------------------
@dataclass
class RatePoint:
    """One method at one setting (a JPEG quality or an AE code size), scored on every test image."""

    method: str
    bpp: float  # the headline rate: every byte of each image's own stream
    psnr: torch.Tensor  # (N,)
    ssim: torch.Tensor  # (N,)
    quality: int | None = None
    code_dim: int | None = None
    step: float | None = None
    bpp_file: float | None = None
    bpp_whole_set: float | None = None
    bpp_whole_set_lzma: float | None = None
    bpp_entropy: float | None = None
    val_psnr: float | None = None
    val_psnr_unquantised: float | None = None
    train_images: int | None = None
    epochs: int | None = None
    config: str = ""
    images: torch.Tensor | None = field(default=None, repr=False)  # (n, 1, H, W) a few reconstructions

    @property
    def label(self) -> str:
        return f"JPEG q={self.quality}" if self.quality is not None else f"conv AE, code {self.code_dim}"

    def row(self, dataset: str) -> dict:
        """The CSV row: every column, blank where the method has no such number."""
        values = {**vars(self), "dataset": dataset, "psnr_mean": self.psnr.mean().item(), "psnr_std": self.psnr.std().item(),
                  "ssim_mean": self.ssim.mean().item(), "ssim_std": self.ssim.std().item()}
        return {column: "" if values[column] is None else values[column] for column in COLUMNS}


def jpeg_point(images: torch.Tensor, quality: int, keep: int = 0) -> RatePoint:
    """JPEG at ``quality`` on ``images`` (N, 1, H, W): the library's rates and scores, and the whole-set rate (one
    tables stream + every image's abbreviated stream)."""
    point = classical_codecs.jpeg_point(images, quality, keep)
    tables = len(classical_codecs.jpeg_tables(quality))
    return RatePoint("JPEG", point.bpp, point.psnr, point.ssim, quality=quality, bpp_file=point.extra["bpp_file"],
                     bpp_whole_set=bits_per_pixel([tables, *point.bytes], images), images=point.decoded)


# --- the autoencoder ---------------------------------------------------------------------------------
def choose_step(model: L.LightningModule, val: torch.Tensor, factors: Sequence[float], tolerance_db: float
                ) -> tuple[float, float, float]:
    """``(step, val PSNR at it, unquantised val PSNR)``: the coarsest ``factor × std(val codes)`` whose mean
    validation PSNR is within ``tolerance_db`` of the unquantised code's (the finest one if none is)."""
    codes = cz.encode_codes(model, val)  # (N, D)
    reference = psnr_ssim(cz.decode_codes(model, codes), val)[0].mean().item()
    sd = codes.std().item()
    best = None
    for f in sorted(factors):
        step = float(np.float32(f * sd))
        psnr = psnr_ssim(cz.decode_codes(model, cz.dequantise(cz.quantise(codes, step), step)), val)[0].mean().item()
        if best is None or psnr >= reference - tolerance_db:
            best = (step, psnr)
    return best[0], best[1], reference


def ae_point(model: L.LightningModule, images: torch.Tensor, step: float, codec: str, keep: int = 0,
             **facts) -> RatePoint:
    """The AE at ``step`` on ``images``: the real bytes (per image, whole set), the entropy estimate, and the
    PSNR / SSIM of the images decoded from the whole-set bytes (dequantised codes); ``facts``: more fields."""
    pixels = images.numel()
    q = cz.quantise(cz.encode_codes(model, images), step)  # (N, D) integers
    whole = cz.pack(q, step, codec)
    per_image = cz.bits_per_pixel(sum(len(cz.pack(q[i : i + 1], step, codec)) for i in range(len(images))), pixels)
    q_read, step_read = cz.unpack(whole)
    assert torch.equal(q_read, q) and step_read == step, "the code stream does not decode to its integers"
    out = cz.decode_codes(model, cz.dequantise(q_read, step_read))  # (N, 1, H, W)
    psnr, ssim = psnr_ssim(out, images)
    other = "lzma" if codec == "zlib" else "zlib"
    rates = {codec: cz.bits_per_pixel(len(whole), pixels), other: cz.bits_per_pixel(len(cz.pack(q, step, other)), pixels)}
    return RatePoint("conv AE", per_image, psnr, ssim, code_dim=q[0].numel(), step=step, bpp_file=per_image,
                     bpp_whole_set=rates["zlib"], bpp_whole_set_lzma=rates["lzma"],
                     bpp_entropy=cz.empirical_entropy_bits(q) / pixels, images=out[:keep], **facts)


# --- AE against JPEG at the same rate ----------------------------------------------------------------
def jpeg_at(rate: float, jpeg: list[RatePoint], attr: str = "bpp") -> tuple[float, float] | None:
    """JPEG's (PSNR, SSIM) at ``rate`` bpp, linearly interpolated along its curve (``attr``: which JPEG rate);
    ``None`` outside the range of rates JPEG produced."""
    pts = sorted(jpeg, key=lambda p: getattr(p, attr))
    rates = [getattr(p, attr) for p in pts]
    if not rates[0] <= rate <= rates[-1]:
        return None
    return (float(np.interp(rate, rates, [p.psnr.mean().item() for p in pts])),
            float(np.interp(rate, rates, [p.ssim.mean().item() for p in pts])))


def outcome(ae: RatePoint, jpeg: list[RatePoint], attr: str = "bpp") -> str:
    """``beats`` (higher PSNR and SSIM than JPEG at the AE's rate), ``loses`` (lower in both), ``splits``; outside
    JPEG's range of rates: ``beats (below JPEG's lowest rate; …)`` when the AE has better quality than JPEG's
    lowest-rate point, ``loses (above JPEG's highest rate; …)`` when worse than its highest, else ``below JPEG's
    lowest rate (…)`` / ``above JPEG's highest rate (…)``; the brackets give the differences to that JPEG point."""
    p, s = ae.psnr.mean().item(), ae.ssim.mean().item()
    at = jpeg_at(ae.bpp, jpeg, attr)
    if at is None:
        pts = sorted(jpeg, key=lambda x: getattr(x, attr))
        edge = pts[0] if ae.bpp < getattr(pts[0], attr) else pts[-1]
        ep, es = edge.psnr.mean().item(), edge.ssim.mean().item()
        where = "below JPEG's lowest rate" if edge is pts[0] else "above JPEG's highest rate"
        detail = f"vs JPEG q={edge.quality}: {p - ep:+.2f} dB, SSIM {s - es:+.3f}"
        if edge is pts[0] and p > ep and s > es:
            return f"beats ({where}; {detail})"
        if edge is pts[-1] and p < ep and s < es:
            return f"loses ({where}; {detail})"
        return f"{where} ({detail})"
    if p > at[0] and s > at[1]:
        return "beats"
    if p < at[0] and s < at[1]:
        return "loses"
    return "splits"


def verdict(ae: list[RatePoint], jpeg: list[RatePoint], attr: str, what: str) -> str:
    """One sentence, read from the numbers: at which of the AE's rates it beats / loses to / splits with JPEG."""
    groups: dict[str, list[str]] = {}
    for a in sorted(ae, key=lambda x: x.bpp):
        key, bracket, detail = outcome(a, jpeg, attr).partition(" (")
        groups.setdefault(key, []).append(f"{a.bpp:.3f} bpp (code {a.code_dim}){bracket}{detail}")
    lowest = min(jpeg, key=lambda x: getattr(x, attr))
    parts = [f"{key} JPEG at {', '.join(v)}" if key in ("beats", "loses", "splits") else
             f"is {key} at {', '.join(v)}" for key, v in groups.items()]
    best = max(ae, key=lambda x: x.psnr.mean().item())
    pts = sorted(jpeg, key=lambda x: x.psnr.mean().item())
    target = best.psnr.mean().item()
    psnrs = [p.psnr.mean().item() for p in pts]
    match = (f"JPEG reaches the AE's best PSNR ({target:.2f} dB, code {best.code_dim}) at "
             f"{float(np.interp(target, psnrs, [getattr(p, attr) for p in pts])):.3f} bpp" if psnrs[0] <= target <= psnrs[-1]
             else f"the AE's best PSNR ({target:.2f} dB) is outside JPEG's range")
    return (f"Against {what}, the AE " + "; ".join(parts) + f". JPEG's lowest rate is {getattr(lowest, attr):.3f} bpp "
            f"(quality {lowest.quality}: {lowest.psnr.mean():.2f} dB / SSIM {lowest.ssim.mean():.3f}); {match}; JPEG goes "
            f"on to {psnrs[-1]:.2f} dB at quality {pts[-1].quality}.")


# --- outputs -----------------------------------------------------------------------------------------
def figure(title: str, jpeg: list[RatePoint], ae: list[RatePoint], clean: torch.Tensor):
    """PSNR and SSIM against bpp (``jpeg`` and ``ae`` by rate); below, one test image at each AE rate beside JPEG at
    the nearest rate."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 6.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1.4])
    for col, (metric, name) in enumerate((("psnr", "PSNR (dB)"), ("ssim", "SSIM"))):
        ax = fig.add_subplot(grid[0, col])
        jpeg_y, ae_y = ([getattr(p, metric).mean().item() for p in pts] for pts in (jpeg, ae))
        ax.plot([p.bpp for p in jpeg], jpeg_y, "o-", color="tab:blue", label="JPEG, shared tables (headline)")
        ax.plot([p.bpp_file for p in jpeg], jpeg_y, "o--", color="tab:blue", alpha=0.45, mfc="none",
                label="JPEG, whole file (optimize, headers)")
        ax.plot([p.bpp for p in ae], ae_y, "s-", color="tab:red", label="conv AE, per-image stream (headline)")
        ax.plot([p.bpp_whole_set for p in ae], ae_y, "s:", color="tab:red", alpha=0.6, mfc="none",
                label="conv AE, whole test set (DEFLATE)")
        ax.plot([p.bpp_entropy for p in ae], ae_y, "x", color="tab:red", alpha=0.6, label="conv AE, entropy estimate")
        for p, y in zip(ae, ae_y, strict=True):
            ax.annotate(str(p.code_dim), (p.bpp, y), textcoords="offset points", xytext=(4, -10), fontsize=7,
                        color="tab:red")
        for p, y in zip(jpeg, jpeg_y, strict=True):
            ax.annotate(str(p.quality), (p.bpp, y), textcoords="offset points", xytext=(-6, 5), fontsize=7,
                        color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (log)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, which="both")
        if col == 0:
            ax.legend(fontsize=7, loc="upper left")
    strip = [("original", clean[0])]
    for a in ae:
        j = min(jpeg, key=lambda p: abs(np.log(p.bpp) - np.log(a.bpp)))
        strip += [(f"AE {a.code_dim}\n{a.bpp:.2f} bpp", a.images[0]), (f"JPEG q{j.quality}\n{j.bpp:.2f} bpp", j.images[0])]
    sub = grid[1, :].subgridspec(1, len(strip))
    for k, (name, img) in enumerate(strip):
        ax = fig.add_subplot(sub[0, k])
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def rate_text(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def table_row(p: RatePoint, jpeg: list[RatePoint]) -> list[str]:
    """The Markdown row of a point: its rates and scores; for the AE, JPEG at its rate, the outcome, the step."""
    at = None if p.method == "JPEG" else jpeg_at(p.bpp, jpeg)
    versus = ["–", "–", "–"] if p.method == "JPEG" else [
        "outside JPEG's rates" if at is None else f"{at[0]:.2f} / {at[1]:.3f}", outcome(p, jpeg),
        f"{p.step:.4g} ({p.val_psnr:.2f} / {p.val_psnr_unquantised:.2f})"]
    rates = (p.bpp, p.bpp_file, p.bpp_whole_set, p.bpp_whole_set_lzma, p.bpp_entropy)
    return [p.label, *map(rate_text, rates), f"{p.psnr.mean():.2f}", f"{p.ssim.mean():.3f}", *versus]


# --- the run -------------------------------------------------------------------------------------------
def run_dataset(ctx: Context, s: dict, dataset: str, results: Results) -> None:
    """JPEG and the AE at every code size on one dataset: its table, Markdown and figure."""
    watch = Stopwatch()
    dm, name, what = datamodule(ctx, s, dataset)
    val = dm.val_set.images[: s.get("val_images") or None]  # (N, 1, H, W)
    test = dm.test_set.images[: s.get("test_images") or None]  # test_images: tests only, a tiny subset
    print(f"compression [{ctx.mode}] on {name}: {what}; {ctx.device}", flush=True)
    jpeg = sorted((jpeg_point(test, q, keep=1) for q in s["jpeg_qualities"]), key=lambda p: p.bpp)
    qz, epochs, n_train = s["quantisation"], s["epochs"][dataset], len(dm.train_set)
    config = config_file(s["datasets"][dataset]["config"])
    ae, fits = [], []
    for code_dim in s["code_dims"][dataset]:
        fit_watch = Stopwatch()
        L.seed_everything(0, verbose=False)
        model = build(ae_spec(s, dataset, code_dim))
        ctx.trainer(epochs, limit_val_batches=0).fit(model, dm)  # no validation loop: val chooses the step after
        fits.append(f"code {code_dim}: {fit_watch.elapsed()[0]:.0f} s")
        step, val_psnr, reference = choose_step(model, val, qz["step_factors"], qz["tolerance_db"])
        p = ae_point(model, test, step, qz["codec"], keep=1, val_psnr=val_psnr, val_psnr_unquantised=reference,
                     train_images=n_train, epochs=epochs, config=f"{config} (code {code_dim})")
        ae.append(p)
        print(f"  code {code_dim}: step {step:.4g}, {p.bpp:.3f} bpp, {p.psnr.mean():.2f} dB, vs JPEG: {outcome(p, jpeg)}",
              flush=True)
    ae.sort(key=lambda p: p.bpp)
    stem = f"compression_{name}"
    results.table(stem, [p.row(name) for p in jpeg + ae], COLUMNS)
    wall, cpu = watch.elapsed()
    mode_note = (f"few epochs and {len(s['code_dims'][dataset])} code sizes to fit the make-benchmark budget; "
                 "`--full` trains longer at more sizes") if ctx.mode == "quick" else "the full schedule"
    header = ["method", "bpp (headline)", "bpp file", "bpp whole set (DEFLATE)", "bpp whole set (LZMA2)",
              "bpp entropy est.", "PSNR dB", "SSIM", "JPEG at this bpp (PSNR / SSIM)", "AE vs JPEG",
              "step (val PSNR quantised / unquantised)"]
    results.markdown(stem, "\n".join([
        f"# Compression on {name}: the suite's conv autoencoder against JPEG\n",
        f"**{verdict(ae, jpeg, 'bpp', 'JPEG with shared tables (the headline)')}** "
        f"{verdict(ae, jpeg, 'bpp_file', 'whole JPEG files (optimize=True, every header)')}\n",
        f"Data: {what}; scored on all {len(test)} test images. Mode `{ctx.mode}` ({mode_note}); {wall:.0f} s wall / "
        f"{cpu:.0f} CPU-s for this dataset.\n",
        markdown_table(header, [table_row(p, jpeg) for p in jpeg + ae]),
        "## How the bits are counted\n",
        "- `bpp` = every byte of each image's own stream, averaged over the test images: for JPEG the abbreviated "
        "stream with the standard tables (shared per quality, not counted; `optimize=True` files with every header "
        "are `bpp_file`), for the AE its header (step, shape) + DEFLATE of its quantised code (the decoder's weights "
        "shared, not counted). `bpp file` = the same per-image stream for the AE, and for JPEG the complete `.jpg` "
        "(`optimize=True`, JFIF header, quantisation and Huffman tables: every byte). `bpp whole set` = one stream for "
        "the whole test set (JPEG: one tables stream + every image's abbreviated stream; AE: one header + the "
        "DEFLATE / LZMA2 of every image's integers, entry-major) ÷ all its pixels. `bpp entropy est.` = the empirical "
        "entropy of each code entry's integers over the test set (an ideal coder's rate with a shared per-entry "
        "table, the table fitted to these very integers: an estimate, not a code).",
        "- Quantisation: uniform, `round(code / step)`; the step = factor × the standard deviation of the "
        f"validation codes, the factor from {qz['step_factors']} chosen per code size on the first {len(val)} "
        f"validation images: the coarsest whose validation PSNR is within {qz['tolerance_db']} dB of the unquantised "
        "code's (both in the last column). No additive-noise training (Ballé et al. 2017's proxy): the AE is trained for "
        "reconstruction only, then quantised. The test images are decoded from the dequantised integers read back "
        "from the whole-set bytes. The test split chooses nothing.",
        f"- AE: {config} with the code size set per row, {epochs} epoch(s) on {n_train} training images, batch "
        f"{s['batch_size'][dataset]}, the config's loss and optimiser ({'; '.join(fits)}). Metrics: torchmetrics "
        f"PSNR / SSIM, data range 1, per test image, mean. {SSIM_NOTE}.",
        "",
        "## Setup\n",
        f"- **Ours**: {n_train} training images; JPEG qualities {s['jpeg_qualities']} (Pillow {Image.__version__}, "
        f"libjpeg, greyscale); AE code sizes {s['code_dims'][dataset]}.",
        f"- **Papers**: {PAPERS}",
        "",
        f"Figure: `{results.path(stem, 'png').name}` (PSNR and SSIM against bpp, log scale; labels: JPEG quality, AE "
        "code size; below: one test image at each AE rate beside JPEG at the nearest rate).",
    ]) + "\n")
    results.figure(stem, figure(f"{name}: conv AE vs JPEG on {len(test)} test images ({ctx.mode} mode)", jpeg, ae, test))
    print(f"\ncompression on {name}:")
    for p in jpeg + ae:
        print(f"  {p.label:<20} {p.bpp:7.3f} bpp (file {p.bpp_file:7.3f})  {p.psnr.mean():6.2f} dB  SSIM "
              f"{p.ssim.mean():.3f}" + (f"  vs JPEG: {outcome(p, jpeg)}" if p.method != "JPEG" else ""))


class Compression(Benchmark):
    name = "compression"
    data = ("xray", "mnist")
    doc = "rate-distortion of JPEG against the conv AE with quantised, DEFLATE-coded codes, X-rays and MNIST"

    def models(self, s: dict) -> dict[tuple[str, int], L.LightningModule]:
        """The untrained autoencoders the benchmark trains, keyed by ``(dataset, code_dim)``."""
        out = {}
        for dataset in s["datasets"]:
            for code_dim in s["code_dims"][dataset]:
                L.seed_everything(0, verbose=False)
                out[(dataset, code_dim)] = build(ae_spec(s, dataset, code_dim))
        return out

    def add_arguments(self, parser) -> None:
        parser.add_argument("--group-by", help="X-ray split rule: 'image', 'parent' or a regex over the file names")
        parser.add_argument("--only", action="append", help="one dataset of the settings (repeatable)")

    def run(self, ctx: Context, s: dict) -> Results:
        """The comparison on every dataset of the settings (or ``--only`` these)."""
        results = ctx.results()
        for dataset in ctx.options.get("only") or list(s["datasets"]):
            if dataset not in s["datasets"]:
                raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(s['datasets'])} (compression.yaml)")
            run_dataset(ctx, s, dataset, results)
        return results


main = Compression.main

if __name__ == "__main__":
    sys.exit(main())
