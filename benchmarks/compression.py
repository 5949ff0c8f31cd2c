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
    python -m benchmarks.compression --data ../shared/data/xray64/kermany_64.npz   # other X-rays
    python -m benchmarks.compression --only mnist --mnist ~/mnist

Data: X-rays from ``--data`` (any folder / .npz the X-ray DataModule reads; the full mode's default is
``../shared/data/xray64/kermany_64.npz`` when present), else the embedded 800; split by patient as the
config's ``group_by`` says (``--group-by`` to change it). MNIST from :func:`benchmarks.common.find_mnist`
(``--mnist``): the quick mode uses the 10k real test digits (split 7k / 1k / 2k, seeded), the full mode
the 60k training set. Writes ``benchmarks/results/compression_<dataset>.{csv,md,png}``.
"""

from __future__ import annotations

import copy
import io
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image

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
from benchmarks.common import (
    MNIST_DATA_HELP,
    RESULTS,
    SHARED_DATA,
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
    with_code_dim,
    write_csv,
)

CONFIG = Path(__file__).with_name("compression.yaml")
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


# --- the benchmark's config ------------------------------------------------------------------------
def read_config(config: Path | dict = CONFIG) -> dict:
    return copy.deepcopy(config) if isinstance(config, dict) else load_config(config)


def mode_settings(cfg: dict, mode: str, overrides: dict | None = None) -> dict:
    if mode not in cfg["modes"]:
        raise ValueError(f"unknown mode {mode!r}; choose one of {sorted(cfg['modes'])} ({CONFIG.name})")
    return {**cfg["modes"][mode], **(overrides or {})}


def ae_spec(cfg: dict, dataset: str, code_dim: int) -> dict:
    """The dataset's experiment config's ``model`` block with its code size set to ``code_dim``."""
    return with_code_dim(model_spec(cfg["datasets"][dataset]["config"]), code_dim)


def models(mode: str = "quick", config: Path | dict = CONFIG) -> dict[tuple[str, int], L.LightningModule]:
    """The untrained autoencoders the benchmark trains, keyed by ``(dataset, code_dim)``."""
    cfg = read_config(config)
    m = cfg["modes"][mode]
    out = {}
    for dataset in cfg["datasets"]:
        for d in m["code_dims"][dataset]:
            L.seed_everything(0, verbose=False)
            out[(dataset, d)] = build(ae_spec(cfg, dataset, d))
    return out


# --- data ------------------------------------------------------------------------------------------
SHARED_XRAYS = SHARED_DATA / "xray64" / "kermany_64.npz"


@dataclass
class Data:
    """A set-up DataModule and the facts the tables state about it."""

    name: str
    dm: L.LightningDataModule
    what: str  # where the images came from and how they were split

    def images(self, split: str) -> torch.Tensor:
        return getattr(self.dm, f"{split}_set").images  # (N, 1, H, W) in [0, 1]


def xray_root(data: str | None, mode: str) -> str | None:
    """``--data``, else (full mode) the shared 1,564 Kermany X-rays when present, else ``None`` (the embedded 800)."""
    if data:
        return data
    return str(SHARED_XRAYS) if mode == "full" and SHARED_XRAYS.is_file() else None


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
        root = find_mnist(mnist_data, mode)
        args["root"] = str(root) if root else None
    else:
        args["root"] = xray_root(xray_data, mode)
        if group_by:
            args["group_by"] = group_by
    dm = instantiate(spec, L.LightningDataModule)
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
def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A (1, H, W) image in [0, 1] as the (H, W) uint8 array JPEG encodes."""
    return (image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def jpeg_encode(pixels: np.ndarray, quality: int, **options) -> bytes:
    """Greyscale JPEG bytes of an (H, W) uint8 image (Pillow ``save`` options, e.g. ``optimize=True``)."""
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, "JPEG", quality=quality, **options)
    return buf.getvalue()


def jpeg_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"))  # (H, W) uint8


def drop_app_segments(data: bytes) -> bytes:
    """A JPEG stream without its APPn segments (JFIF / EXIF metadata, which no decoder needs for the pixels)."""
    out, pos = bytearray(data[:2]), 2  # SOI
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: the entropy-coded data follow, to the end
            break
        if not 0xE0 <= marker <= 0xEF:
            out += data[pos : pos + 2 + length]
        pos += 2 + length
    return bytes(out + data[pos:])


def jpeg_image_only(pixels: np.ndarray, quality: int) -> bytes:
    """The abbreviated JPEG stream (standard tables left out, ``streamtype=2``; APPn dropped): what an image
    costs when every image at this quality shares one tables stream (:func:`jpeg_tables`)."""
    return drop_app_segments(jpeg_encode(pixels, quality, streamtype=2))


def jpeg_tables(quality: int, shape: tuple[int, int] = (8, 8)) -> bytes:
    """The tables-only stream (quantisation + standard Huffman tables) every abbreviated image of this quality uses."""
    return jpeg_encode(np.zeros(shape, np.uint8), quality, streamtype=1)


def with_tables(tables: bytes, image_only: bytes) -> bytes:
    """The complete JPEG a decoder reads: the tables stream's segments, then the image's (one SOI, one EOI)."""
    return tables[:-2] + image_only[2:]


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
def train_ae(spec: dict, dm: L.LightningDataModule, epochs: int, accelerator: str, precision: str,
             progress: bool) -> L.LightningModule:
    """The config's autoencoder trained on the DataModule's training split (no validation loop: the
    validation split is used afterwards, to choose the quantisation step)."""
    L.seed_everything(0, verbose=False)
    model = build(spec)
    trainer(epochs, accelerator, precision, enable_progress_bar=progress, limit_val_batches=0).fit(model, dm)
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
def write_figure(path: Path, title: str, jpeg: list[RatePoint], ae: list[RatePoint], clean: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt_rate(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def write_markdown(path: Path, name: str, jpeg: list[RatePoint], ae: list[RatePoint], meta: dict) -> None:
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
        f"({meta['mode_note']}), {meta['hardware']}, {meta['wall']:.0f} s wall / {meta['cpu']:.0f} CPU-s for this "
        "dataset.\n",
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
        f"Figure: `{path.with_suffix('.png').name}` (PSNR and SSIM against bpp, log scale; labels: JPEG quality, AE "
        "code size; below: one test image at each AE rate beside JPEG at the nearest rate).",
    ]
    path.write_text("\n".join(text) + "\n")


def print_summary(name: str, jpeg: list[RatePoint], ae: list[RatePoint]) -> None:
    print(f"\ncompression on {name}:")
    for p in sorted(jpeg, key=lambda x: x.bpp) + sorted(ae, key=lambda x: x.bpp):
        print(f"  {p.label:<20} {p.bpp:7.3f} bpp (file {p.bpp_file:7.3f})  {p.psnr.mean():6.2f} dB  SSIM "
              f"{p.ssim.mean():.3f}" + (f"  vs JPEG: {outcome(p, jpeg)}" if p.method != "JPEG" else ""))


# --- the run -------------------------------------------------------------------------------------------
def run_dataset(cfg: dict, m: dict, mode: str, dataset: str, out_dir: Path, accelerator: str, precision: str, hw: str,
                progress: bool, **data_kw) -> list[dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    d = load_data(cfg, dataset, m, mode, **data_kw)
    test, val = d.images("test"), d.images("val")
    if m.get("val_images"):
        val = val[: int(m["val_images"])]
    if m.get("test_images"):  # tests only: a tiny subset
        test = test[: int(m["test_images"])]
    print(f"compression [{mode}] on {d.name}: {d.what}; {hw}", flush=True)
    jpeg = [jpeg_point(test, q, keep=1) for q in m["jpeg_qualities"]]
    qz = cfg["quantisation"]
    config = config_file(cfg["datasets"][dataset]["config"])
    ae, fits = [], []
    epochs = m["epochs"][dataset]
    for code_dim in m["code_dims"][dataset]:
        t1 = time.perf_counter()
        model = train_ae(ae_spec(cfg, dataset, code_dim), d.dm, epochs, accelerator, precision, progress)
        fits.append(f"code {code_dim}: {time.perf_counter() - t1:.0f} s")
        step, val_psnr, reference = choose_step(model, val, qz["step_factors"], qz["tolerance_db"])
        p = ae_point(model, test, step, qz["codec"], keep=1)
        p.val_psnr, p.val_psnr_unquantised = val_psnr, reference
        p.train_images, p.epochs, p.config = len(d.dm.train_set), epochs, config + f" (code {code_dim})"
        ae.append(p)
        print(f"  code {code_dim}: step {step:.4g}, {p.bpp:.3f} bpp, {p.psnr.mean():.2f} dB, vs JPEG: {outcome(p, jpeg)}",
              flush=True)
    rows = [p.row(d.name) for p in sorted(jpeg, key=lambda x: x.bpp) + sorted(ae, key=lambda x: x.bpp)]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / f"compression_{d.name}.csv", rows, COLUMNS)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    quick = mode == "quick"
    meta = dict(
        data=d.what, n_test=len(test), n_val=len(val), mode=mode, hardware=hw, wall=wall, cpu=cpu,
        mode_note=(f"few epochs and {len(m['code_dims'][dataset])} code sizes to fit the make-benchmark budget; "
                   "`--full` trains longer at more sizes") if quick else "the full schedule",
        factors=qz["step_factors"], tolerance=qz["tolerance_db"],
        training=(f"{config} with the code size set per row, {epochs} epoch(s) on {len(d.dm.train_set)} training "
                  f"images, batch {m['batch_size'][dataset]}, the config's loss and optimiser ({'; '.join(fits)})"),
        setup=(f"{len(d.dm.train_set)} training images; JPEG qualities {m['jpeg_qualities']} (Pillow "
               f"{Image.__version__}, libjpeg, greyscale); AE code sizes {m['code_dims'][dataset]}."),
        verdict=verdict(ae, jpeg, "bpp", "JPEG with shared tables (the headline)"),
        verdict_file=verdict(ae, jpeg, "bpp_file", "whole JPEG files (optimize=True, every header)"),
    )
    write_markdown(out_dir / f"compression_{d.name}.md", d.name, jpeg, ae, meta)
    write_figure(out_dir / f"compression_{d.name}.png", f"{d.name}: conv AE vs JPEG on {len(test)} test images "
                 f"({mode} mode)", jpeg, ae, test)
    print_summary(d.name, jpeg, ae)
    print(f"  [{d.name}: {wall:.0f} s wall, {cpu:.0f} CPU-s] wrote {relative(str(out_dir))}/compression_{d.name}.*",
          flush=True)
    return rows


def run(mode: str = "quick", data: str | None = None, mnist: str | None = None, out_dir: Path = RESULTS,
        config: Path | dict = CONFIG, only: Sequence[str] | None = None, overrides: dict | None = None,
        progress: bool = False, group_by: str | None = None) -> list[dict]:
    """Run the comparison on every dataset of the config (or ``only`` these); returns the CSV rows."""
    quiet()
    c0, t0 = time.process_time(), time.perf_counter()
    cfg = read_config(config)
    m = mode_settings(cfg, mode, overrides)
    accelerator, precision, hw = hardware()
    rows = []
    for dataset in only or list(cfg["datasets"]):
        if dataset not in cfg["datasets"]:
            raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(cfg['datasets'])} ({CONFIG.name})")
        rows += run_dataset(cfg, m, mode, dataset, out_dir, accelerator, precision, hw, progress,
                            xray_data=data, mnist_data=mnist, group_by=group_by)
    print(f"compression benchmark: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} CPU-s")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = benchmark_parser(__doc__, "longer, more code sizes")
    ap.add_argument("--data", help="X-ray folder or .npz (default: the embedded 800; full mode: the shared 1,564)")
    ap.add_argument("--mnist", help=MNIST_DATA_HELP)
    ap.add_argument("--group-by", help="X-ray split rule: 'image', 'parent' or a regex over the file names")
    ap.add_argument("--only", action="append", help="one dataset of the config (repeatable)")
    ap.add_argument("--progress", action="store_true", help="show the training progress bars")
    ap.add_argument("--config", type=Path, default=CONFIG)
    args = ap.parse_args(argv)
    return run_main(lambda: run(args.mode, args.data, args.mnist, args.out, args.config, args.only,
                                progress=args.progress, group_by=args.group_by))

if __name__ == "__main__":
    sys.exit(main())
