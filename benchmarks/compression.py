"""Compression: does an autoencoder beat JPEG? Rate–distortion curves on 64×64 chest X-rays and MNIST.

The lecture claims that for image compression an autoencoder hardly beats JPEG. This benchmark puts
both on one rate–distortion plot (bits per pixel against PSNR and SSIM, torchmetrics, data range 1) on
the test split:

- **JPEG** (Pillow / libjpeg, greyscale) at the qualities of ``benchmarks/compression.yaml``. Two rates
  per quality, same pixels: ``bpp_file``, the whole ``.jpg`` file with ``optimize=True`` (per-image
  Huffman tables, every header included), and ``bpp`` (the headline), the abbreviated JPEG stream with
  the standard tables (libjpeg's ``streamtype=2``, JFIF APP0 segment dropped): the tables are shared by
  every image at one quality (like the AE's decoder), so they are not counted per image; the bytes
  counted still decode (tables stream + image stream = the same pixels; tests/test_compression.py).
- **The suite's convolutional autoencoder** (``configs/conv_ae_xray64.yaml``, ``configs/conv_ae_mnist.yaml``)
  at several code sizes (``benchmarks.common.with_code_dim``, the only override), trained on the training
  split with the configs' loss. Its code is quantised uniformly (:mod:`ae_lightning.compression`) with a
  step chosen per code size on the VALIDATION split (the coarsest step, as a multiple of the validation
  codes' standard deviation, whose validation PSNR is within a tolerance of the unquantised code's), then
  entropy-coded: ``bpp`` (the headline), every byte of each image's own stream (header with the step and
  the shape + raw DEFLATE of the integers); ``bpp_whole_set`` / ``bpp_whole_set_lzma``, the whole test
  set as one stream (DEFLATE / LZMA2); ``bpp_entropy``, the empirical entropy of the integers (an
  estimate, not a code). The decoder's weights are not counted (shared, like JPEG's tables). The test
  images are reconstructed from the DEquantised codes read back from the whole-set bytes.

The Markdown says, from the numbers, where (if anywhere) the autoencoder beats JPEG at the same rate.

    python -m benchmarks.compression --quick                  # embedded X-rays + the 10k MNIST test digits, ≤ 70 CPU-s
    python -m benchmarks.compression --full                   # more epochs and code sizes (GPU when present)
    python -m benchmarks.compression --full --data PATH/kermany_64.npz   # full mode needs a larger X-ray set
    python -m benchmarks.compression --only mnist --mnist ~/mnist

Data: X-rays from ``--data`` (any folder / .npz the X-ray DataModule reads), ``$AE_XRAY_ROOT`` or ``data/xray``,
else (quick mode only) the embedded 800; split by patient as the config's ``group_by`` says (``--group-by`` to
change it). MNIST from :func:`benchmarks.core.mnist_source`
(``--mnist``): the quick mode uses the 10k real test digits (split 7k / 1k / 2k, seeded), the full mode
the 60k training set. Writes ``benchmarks/results/compression_<dataset>.{csv,md,png}``.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image

from ae_lightning.classical_codecs import jpeg_decode, jpeg_encode, jpeg_image_only, jpeg_tables, to_uint8
from ae_lightning.compression import (
    bits_per_pixel,
    decode_codes,
    dequantise,
    empirical_entropy_bits,
    encode_codes,
    pack,
    quantise,
    unpack,
)
from ae_lightning.config import instantiate, load_config
from ae_lightning.metrics import SSIM_NOTE, psnr_ssim
from benchmarks.common import build, config_file, model_spec, with_code_dim
from benchmarks.core import Benchmark, Context, Results, markdown_table, mnist_source, relative, require_full_mnist

COLUMNS = ["dataset", "method", "quality", "code_dim", "step", "bpp", "bpp_file", "bpp_whole_set", "bpp_whole_set_lzma",
           "bpp_entropy", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "val_psnr", "val_psnr_unquantised",
           "train_images", "epochs", "config"]
HEADLINE = ("`bpp` = every byte of each image's own stream, averaged over the test images: for JPEG the abbreviated "
            "stream with the standard tables (shared per quality, not counted; `optimize=True` files with every "
            "header are `bpp_file`), for the AE its header (step, shape) + DEFLATE of its quantised code (the decoder's "
            "weights shared, not counted)")
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


def ae_spec(cfg: dict, dataset: str, code_dim: int) -> dict:
    """The dataset's experiment config's ``model`` block with its code size set to ``code_dim``."""
    return with_code_dim(model_spec(cfg["datasets"][dataset]["config"]), code_dim)


# --- data ------------------------------------------------------------------------------------------
@dataclass
class Data:
    """A set-up DataModule and the facts the tables state about it."""

    name: str
    dm: L.LightningDataModule
    what: str  # where the images came from and how they were split

    def images(self, split: str) -> torch.Tensor:
        return getattr(self.dm, f"{split}_set").images  # (N, 1, H, W) in [0, 1]


def xray_root(data: str | None, mode: str) -> str | None:
    """The X-rays by the DataModules' lookup order (``--xray-data``, ``$AE_XRAY_ROOT``, ``data/xray``); ``None``: the
    embedded 800, which only quick mode takes — full mode names what to pass."""
    from ae_lightning.data import DatasetNotFoundError
    from ae_lightning.data.locate import locate

    located = locate("xray", data)
    if located.root is None and mode == "full":
        raise DatasetNotFoundError(
            "compression --full trains on a larger X-ray set than the embedded 800 images; fix: pass --xray-data "
            "(a folder of X-ray images or an .npz with an 'images' array; e.g. the Kermany chest X-rays, CC BY 4.0, "
            "doi:10.17632/rscbjbr9sj.2 — any folder of X-rays will do) or set $AE_XRAY_ROOT")
    return None if located.root is None else str(located.root)


def load_data(cfg: dict, dataset: str, m: dict, mode: str, xray_data: str | None = None, mnist_data: str | None = None,
              group_by: str | None = None) -> Data:
    """The dataset's DataModule from its experiment config's ``data`` block (root, batch size, training cap
    overridden), set up for fitting."""
    spec = copy.deepcopy(load_config(cfg["datasets"][dataset]["config"])["data"])
    args = spec.setdefault("init_args", {})
    args["batch_size"] = m["batch_size"][dataset]
    if m["train_images"][dataset]:
        args["train_size"] = m["train_images"][dataset]
    if dataset == "mnist":
        args.update(mnist_source(mnist_data, mode))
    else:
        args["root"] = xray_root(xray_data, mode)
        if group_by:
            args["group_by"] = group_by
    dm = instantiate(spec, L.LightningDataModule)
    dm.prepare_data()
    dm.setup("fit")
    sizes = " / ".join(f"{len(getattr(dm, f'{s}_set'))} {s}" for s in ("train", "val", "test"))
    if dataset == "mnist":
        if mode == "full":
            require_full_mnist(dm, "compression")
        what = f"{relative(dm.source)}: {sizes} digits (28×28)"
        name = "mnist"
    else:
        source = relative(str(Path(args["root"]).resolve())) if args["root"] else \
            "the embedded real chest X-rays (Kermany et al. 2018)"
        rule = args.get("group_by", "image")
        split = "by image" if rule == "image" else "by parent folder" if rule == "parent" else \
            f"by patient (patient = the match of `{rule}` in the file name)"
        what = f"{source}: {sizes} images (64×64), split {split}, seeded"
        name = dataset if not args["root"] else Path(args["root"]).stem.replace(" ", "_")
    return Data(name, dm, what)


# --- JPEG ------------------------------------------------------------------------------------------
# --- one point of a rate–distortion curve ----------------------------------------------------------------
@dataclass
class RatePoint:
    """One method at one setting (a JPEG quality or an AE code size), scored on every test image."""

    method: str
    bpp: float  # the headline rate (see HEADLINE)
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
        blank = lambda v: "" if v is None else v  # noqa: E731
        return dict(dataset=dataset, method=self.method, quality=blank(self.quality), code_dim=blank(self.code_dim),
                    step=blank(self.step), bpp=self.bpp, bpp_file=blank(self.bpp_file),
                    bpp_whole_set=blank(self.bpp_whole_set), bpp_whole_set_lzma=blank(self.bpp_whole_set_lzma),
                    bpp_entropy=blank(self.bpp_entropy), psnr_mean=self.psnr.mean().item(),
                    psnr_std=self.psnr.std().item(), ssim_mean=self.ssim.mean().item(), ssim_std=self.ssim.std().item(),
                    val_psnr=blank(self.val_psnr), val_psnr_unquantised=blank(self.val_psnr_unquantised),
                    train_images=blank(self.train_images), epochs=blank(self.epochs), config=self.config)


def jpeg_point(images: torch.Tensor, quality: int, keep: int = 0) -> RatePoint:
    """JPEG at ``quality`` on ``images`` (N, 1, H, W): both rates, and the decoded images' PSNR / SSIM."""
    pixels = images[0].numel()
    files, short, decoded = [], [], []
    for image in images:
        u8 = to_uint8(image)
        data = jpeg_encode(u8, quality, optimize=True)
        files.append(len(data))
        short.append(len(jpeg_image_only(u8, quality)))
        decoded.append(jpeg_decode(data))  # optimize only changes the Huffman code: the same pixels as `short`
    out = torch.from_numpy(np.stack(decoded)).unsqueeze(1).float() / 255  # (N, 1, H, W)
    psnr, ssim = psnr_ssim(out, images)
    n = len(images)
    tables = len(jpeg_tables(quality))
    return RatePoint("JPEG", bits_per_pixel(sum(short), n * pixels), psnr, ssim, quality=quality,
                     bpp_file=bits_per_pixel(sum(files), n * pixels),
                     bpp_whole_set=bits_per_pixel(tables + sum(short), n * pixels), images=out[:keep])


# --- the autoencoder ---------------------------------------------------------------------------------
def train_ae(ctx: Context, spec: dict, dm: L.LightningDataModule, epochs: int) -> L.LightningModule:
    """The config's autoencoder trained on the DataModule's training split (no validation loop: the
    validation split is used afterwards, to choose the quantisation step)."""
    L.seed_everything(0, verbose=False)
    model = build(spec)
    ctx.trainer(epochs, limit_val_batches=0).fit(model, dm)
    return model.eval()


def choose_step(model: L.LightningModule, val: torch.Tensor, factors: Sequence[float], tolerance_db: float
                ) -> tuple[float, float, float]:
    """``(step, val PSNR at it, unquantised val PSNR)``: the coarsest ``factor × std(val codes)`` whose mean
    validation PSNR is within ``tolerance_db`` of the unquantised code's (the finest one if none is)."""
    codes = encode_codes(model, val)  # (N, D)
    reference = psnr_ssim(decode_codes(model, codes), val)[0].mean().item()
    sd = codes.std().item()
    best = None
    for f in sorted(factors):
        step = float(np.float32(f * sd))
        psnr = psnr_ssim(decode_codes(model, dequantise(quantise(codes, step), step)), val)[0].mean().item()
        if best is None or psnr >= reference - tolerance_db:
            best = (step, psnr)
    return best[0], best[1], reference


def ae_point(model: L.LightningModule, images: torch.Tensor, step: float, codec: str, keep: int = 0) -> RatePoint:
    """The AE at ``step`` on ``images``: the real bytes (per image, whole set), the entropy estimate, and the
    PSNR / SSIM of the images decoded from the whole-set bytes (dequantised codes)."""
    n, pixels = len(images), images[0].numel()
    q = quantise(encode_codes(model, images), step)  # (N, D) integers
    whole = pack(q, step, codec)
    per_image = sum(len(pack(q[i : i + 1], step, codec)) for i in range(n))
    q_read, step_read = unpack(whole)
    assert torch.equal(q_read, q) and step_read == step, "the code stream does not decode to its integers"
    out = decode_codes(model, dequantise(q_read, step_read))  # (N, 1, H, W)
    psnr, ssim = psnr_ssim(out, images)
    other = "lzma" if codec == "zlib" else "zlib"
    rates = {codec: bits_per_pixel(len(whole), n * pixels), other: bits_per_pixel(len(pack(q, step, other)), n * pixels)}
    return RatePoint("conv AE", bits_per_pixel(per_image, n * pixels), psnr, ssim, code_dim=q[0].numel(), step=step,
                     bpp_file=bits_per_pixel(per_image, n * pixels), bpp_whole_set=rates["zlib"],
                     bpp_whole_set_lzma=rates["lzma"], bpp_entropy=empirical_entropy_bits(q) / (n * pixels),
                     images=out[:keep])


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
        o = outcome(a, jpeg, attr)
        key, detail = (o, "") if " (" not in o else (o.split(" (")[0], " (" + o.split(" (", 1)[1])
        groups.setdefault(key, []).append(f"{a.bpp:.3f} bpp (code {a.code_dim}){detail}")
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
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 6.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1.4])
    jp = sorted(jpeg, key=lambda p: p.bpp)
    aes = sorted(ae, key=lambda p: p.bpp)
    for col, (metric, name) in enumerate((("psnr", "PSNR (dB)"), ("ssim", "SSIM"))):
        ax = fig.add_subplot(grid[0, col])

        def y(pts: list[RatePoint], metric: str = metric) -> list[float]:
            return [getattr(p, metric).mean().item() for p in pts]

        ax.plot([p.bpp for p in jp], y(jp), "o-", color="tab:blue", label="JPEG, shared tables (headline)")
        ax.plot([p.bpp_file for p in jp], y(jp), "o--", color="tab:blue", alpha=0.45, mfc="none",
                label="JPEG, whole file (optimize, headers)")
        ax.plot([p.bpp for p in aes], y(aes), "s-", color="tab:red", label="conv AE, per-image stream (headline)")
        ax.plot([p.bpp_whole_set for p in aes], y(aes), "s:", color="tab:red", alpha=0.6, mfc="none",
                label="conv AE, whole test set (DEFLATE)")
        ax.plot([p.bpp_entropy for p in aes], y(aes), "x", color="tab:red", alpha=0.6, label="conv AE, entropy estimate")
        for p in aes:
            ax.annotate(str(p.code_dim), (p.bpp, getattr(p, metric).mean().item()), textcoords="offset points",
                        xytext=(4, -10), fontsize=7, color="tab:red")
        for p in jp:
            ax.annotate(str(p.quality), (p.bpp, getattr(p, metric).mean().item()), textcoords="offset points",
                        xytext=(-6, 5), fontsize=7, color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (log)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, which="both")
        if col == 0:
            ax.legend(fontsize=7, loc="upper left")
    # one test image: the original, the AE at each code size, JPEG at the quality nearest each AE rate
    strip = [("original", clean[0])]
    for a in aes:
        j = min(jp, key=lambda p: abs(np.log(p.bpp) - np.log(a.bpp)))
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


def fmt_rate(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def markdown(name: str, jpeg: list[RatePoint], ae: list[RatePoint], meta: dict) -> str:
    rows = []
    for p in sorted(jpeg, key=lambda x: x.bpp) + sorted(ae, key=lambda x: x.bpp):
        at = jpeg_at(p.bpp, jpeg) if p.method != "JPEG" else None
        rows.append([
            p.label, fmt_rate(p.bpp), fmt_rate(p.bpp_file), fmt_rate(p.bpp_whole_set), fmt_rate(p.bpp_whole_set_lzma),
            fmt_rate(p.bpp_entropy), f"{p.psnr.mean():.2f}", f"{p.ssim.mean():.3f}",
            "–" if p.method == "JPEG" else ("outside JPEG's rates" if at is None else f"{at[0]:.2f} / {at[1]:.3f}"),
            "–" if p.method == "JPEG" else outcome(p, jpeg),
            "–" if p.step is None else f"{p.step:.4g} ({p.val_psnr:.2f} / {p.val_psnr_unquantised:.2f})",
        ])
    text = [
        f"# Compression on {name}: the suite's conv autoencoder against JPEG\n",
        f"**{meta['verdict']}** {meta['verdict_file']}\n",
        f"Data: {meta['data']}; scored on all {meta['n_test']} test images. Mode `{meta['mode']}` "
        f"({meta['mode_note']}); {meta['wall']:.0f} s wall / {meta['cpu']:.0f} CPU-s for this dataset.\n",
        markdown_table(["method", "bpp (headline)", "bpp file", "bpp whole set (DEFLATE)", "bpp whole set (LZMA2)",
                        "bpp entropy est.", "PSNR dB", "SSIM", "JPEG at this bpp (PSNR / SSIM)", "AE vs JPEG",
                        "step (val PSNR quantised / unquantised)"], rows),
        "## How the bits are counted\n",
        f"- {HEADLINE}. `bpp file` = the same per-image stream for the AE, and for JPEG the complete `.jpg` "
        "(`optimize=True`, JFIF header, quantisation and Huffman tables: every byte). `bpp whole set` = one stream for "
        "the whole test set (JPEG: one tables stream + every image's abbreviated stream; AE: one header + the "
        "DEFLATE / LZMA2 of every image's integers, entry-major) ÷ all its pixels. `bpp entropy est.` = the empirical "
        "entropy of each code entry's integers over the test set (an ideal coder's rate with a shared per-entry "
        "table, the table fitted to these very integers: an estimate, not a code).",
        "- Quantisation: uniform, `round(code / step)`; the step = factor × the standard deviation of the "
        f"validation codes, the factor from {meta['factors']} chosen per code size on the first {meta['n_val']} "
        f"validation images: the coarsest whose validation PSNR is within {meta['tolerance']} dB of the unquantised "
        "code's (both in the last column). No additive-noise training (Ballé et al. 2017's proxy): the AE is trained for "
        "reconstruction only, then quantised. The test images are decoded from the dequantised integers read back "
        "from the whole-set bytes. The test split chooses nothing.",
        f"- AE: {meta['training']}. Metrics: torchmetrics PSNR / SSIM, data range 1, per test image, mean. {SSIM_NOTE}.",
        "",
        "## Setup\n",
        f"- **Ours**: {meta['setup']}",
        f"- **Papers**: {PAPERS}",
        "",
        f"Figure: `{meta['figure']}` (PSNR and SSIM against bpp, log scale; labels: JPEG quality, AE "
        "code size; below: one test image at each AE rate beside JPEG at the nearest rate).",
    ]
    return "\n".join(text) + "\n"


def print_summary(name: str, jpeg: list[RatePoint], ae: list[RatePoint]) -> None:
    print(f"\ncompression on {name}:")
    for p in sorted(jpeg, key=lambda x: x.bpp) + sorted(ae, key=lambda x: x.bpp):
        print(f"  {p.label:<20} {p.bpp:7.3f} bpp (file {p.bpp_file:7.3f})  {p.psnr.mean():6.2f} dB  SSIM "
              f"{p.ssim.mean():.3f}" + (f"  vs JPEG: {outcome(p, jpeg)}" if p.method != "JPEG" else ""))


# --- the run -------------------------------------------------------------------------------------------
def run_dataset(ctx: Context, s: dict, dataset: str, results: Results) -> list[dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    mode = ctx.mode
    d = load_data(s, dataset, s, "full" if ctx.full else "quick", xray_data=ctx.data_root("xray"),
                  mnist_data=ctx.data_root("mnist"), group_by=ctx.options.get("group_by"))
    test, val = d.images("test"), d.images("val")
    if s.get("val_images"):
        val = val[: int(s["val_images"])]
    if s.get("test_images"):  # tests only: a tiny subset
        test = test[: int(s["test_images"])]
    print(f"compression [{mode}] on {d.name}: {d.what}; {ctx.device}", flush=True)
    jpeg = [jpeg_point(test, q, keep=1) for q in s["jpeg_qualities"]]
    qz = s["quantisation"]
    config = config_file(s["datasets"][dataset]["config"])
    ae, fits = [], []
    epochs = s["epochs"][dataset]
    for code_dim in s["code_dims"][dataset]:
        t1 = time.perf_counter()
        model = train_ae(ctx, ae_spec(s, dataset, code_dim), d.dm, epochs)
        fits.append(f"code {code_dim}: {time.perf_counter() - t1:.0f} s")
        step, val_psnr, reference = choose_step(model, val, qz["step_factors"], qz["tolerance_db"])
        p = ae_point(model, test, step, qz["codec"], keep=1)
        p.val_psnr, p.val_psnr_unquantised = val_psnr, reference
        p.train_images, p.epochs, p.config = len(d.dm.train_set), epochs, config + f" (code {code_dim})"
        ae.append(p)
        print(f"  code {code_dim}: step {step:.4g}, {p.bpp:.3f} bpp, {p.psnr.mean():.2f} dB, vs JPEG: {outcome(p, jpeg)}",
              flush=True)
    rows = [p.row(d.name) for p in sorted(jpeg, key=lambda x: x.bpp) + sorted(ae, key=lambda x: x.bpp)]
    stem = f"compression_{d.name}"
    results.table(stem, rows, COLUMNS)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    meta = dict(
        data=d.what, n_test=len(test), n_val=len(val), mode=mode, wall=wall, cpu=cpu,
        mode_note=(f"few epochs and {len(s['code_dims'][dataset])} code sizes to fit the make-benchmark budget; "
                   "`--full` trains longer at more sizes") if mode == "quick" else "the full schedule",
        factors=qz["step_factors"], tolerance=qz["tolerance_db"], figure=results.path(stem, "png").name,
        training=(f"{config} with the code size set per row, {epochs} epoch(s) on {len(d.dm.train_set)} training "
                  f"images, batch {s['batch_size'][dataset]}, the config's loss and optimiser ({'; '.join(fits)})"),
        setup=(f"{len(d.dm.train_set)} training images; JPEG qualities {s['jpeg_qualities']} (Pillow "
               f"{Image.__version__}, libjpeg, greyscale); AE code sizes {s['code_dims'][dataset]}."),
        verdict=verdict(ae, jpeg, "bpp", "JPEG with shared tables (the headline)"),
        verdict_file=verdict(ae, jpeg, "bpp_file", "whole JPEG files (optimize=True, every header)"),
    )
    results.markdown(stem, markdown(d.name, jpeg, ae, meta))
    results.figure(stem, figure(f"{d.name}: conv AE vs JPEG on {len(test)} test images ({mode} mode)", jpeg, ae, test))
    print_summary(d.name, jpeg, ae)
    return rows


class Compression(Benchmark):
    name = "compression"
    data = ("xray", "mnist")
    doc = "rate-distortion of JPEG against the conv AE with quantised, DEFLATE-coded codes, X-rays and MNIST"

    def models(self, s: dict) -> dict[tuple[str, int], L.LightningModule]:
        """The untrained autoencoders the benchmark trains, keyed by ``(dataset, code_dim)``."""
        out = {}
        for dataset in s["datasets"]:
            for d in s["code_dims"][dataset]:
                L.seed_everything(0, verbose=False)
                out[(dataset, d)] = build(ae_spec(s, dataset, d))
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
