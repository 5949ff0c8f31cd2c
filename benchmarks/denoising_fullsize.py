"""The shipped X-ray denoiser on full-size X-rays of another hospital, against BM3D with the noise's known σ.

    python -m benchmarks.denoising_fullsize --data PATH/chest_xray_fullres [--weights xray64-denoiser]

The shipped noise-blind denoiser (``ae_lightning.pretrained``) learned on 64×64 Kermany X-rays (Guangzhou). Here it
denoises full-size NIH ChestX-ray14 images (a different hospital and scanner, never training data) at their own
resolution, with ``ae-lightning predict``'s tiled inference (tiles of ``--tile`` pixels with ``--margin`` pixels of
context each), at AWGN σ = 15, 25 and 50 (8-bit units), and BM3D gets the true σ (oracle). Every image of the
folder is scored (read as the X-ray DataModules read files: 8/16-bit PNG/JPEG/TIFF, DICOM); the noise is drawn from a
generator seeded per setting, clipped to [0, 1] as in the denoising benchmark.

Writes ``benchmarks/results/denoising_fullsize.{csv,md,png}`` (``--out`` to change; the PNG: before / after on
the first image at σ = 25): PSNR, SSIM and seconds per
megapixel (one process, this machine's threads) per image and setting, the mean per setting, and the verdict
"at least level with BM3D in PSNR". Not part of ``make benchmark``: the NIH images do not ship with the project.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from ae_lightning import classical_denoisers as classical
from ae_lightning.data.files import DICOM_SUFFIXES, IMAGE_SUFFIXES, LAYOUT, read_image_file
from ae_lightning.metrics import psnr_ssim
from ae_lightning.noise import Gaussian
from benchmarks.core import RESULTS, hardware, markdown_table, write_csv
from benchmarks.denoising import noisy_copy

COLUMNS = ["image", "width", "height", "noise", "method", "psnr", "ssim", "seconds", "s_per_megapixel"]
SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES
FIGURE_SIGMA = 25  # the before / after figure: the first image at this σ (or none when it is not run)


def load_images(folder: Path) -> list[tuple[str, torch.Tensor]]:
    """Every image of ``folder`` as ``(name, (1, 1, H, W) in [0, 1])``, read as the X-ray DataModules read files
    (8/16-bit, DICOM; :func:`ae_lightning.data.files.read_image_file`); one error naming every unreadable file."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({LAYOUT}); fix: pass the folder of full-size X-rays (--data)")
    images, bad = [], []
    for p in files:
        try:
            images.append((p.name, torch.from_numpy(read_image_file(p))[None, None]))
        except ValueError as err:
            bad.append(f"{p.name} ({err})")
    if bad:
        raise ValueError(f"{folder}: {len(bad)} unreadable image(s): {'; '.join(bad)}; fix: re-export or remove them")
    return images


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def run(data: Path, weights: str, sigmas: list[float], tile: int, margin: int, out: Path) -> list[dict]:
    from ae_lightning import pretrained

    model = pretrained.load(weights)
    model.whole_image_tile, model.tile_margin = tile, margin
    rows, shown = [], None
    for name, clean in load_images(data):
        h, w = clean.shape[-2:]
        mp = h * w / 1e6
        for k, sigma in enumerate(sigmas):
            noise = Gaussian(sigma, 255)
            noisy = noisy_copy(noise, clean, seed=k)
            with torch.no_grad():
                ours, t_ours = timed(model.reconstruct_full, noisy)
            bm3d, t_bm3d = timed(classical.bm3d, noisy[0, 0].numpy(), sigma=sigma / 255)
            bm3d = torch.from_numpy(bm3d)[None, None]
            if shown is None and sigma == FIGURE_SIGMA:
                shown = (name, noise.label, clean, noisy, bm3d, ours)
            for method, img, seconds in (("noisy", noisy, 0.0), ("BM3D (oracle σ)", bm3d, t_bm3d),
                                         (f"shipped denoiser ({weights})", ours, t_ours)):
                psnr, ssim = psnr_ssim(img.clamp(0, 1), clean)
                rows.append(dict(image=name, width=w, height=h, noise=noise.label, method=method, psnr=float(psnr[0]),
                                 ssim=float(ssim[0]), seconds=seconds, s_per_megapixel=seconds / mp))
                print(f"{name} {noise.label:<14} {method:<40} {float(psnr[0]):6.2f} dB  SSIM {float(ssim[0]):.3f}  "
                      f"{seconds / mp:6.2f} s/MP", flush=True)
    write(rows, out, data, weights, tile, margin)
    if shown is not None:
        figure(*shown, out / "denoising_fullsize.png")
    return rows


def figure(name: str, label: str, clean, noisy, bm3d, ours, path: Path, crop: int = 256) -> Path:
    """Before / after: the centre ``crop``² of the image, clean, noisy, BM3D (oracle σ) and the shipped denoiser,
    each titled with its PSNR / SSIM on the whole image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = clean.shape[-2:]
    c = min(crop, h, w)
    top, left = (h - c) // 2, (w - c) // 2
    panels = [("clean", clean), (f"noisy, {label}", noisy), ("BM3D (oracle σ)", bm3d), ("shipped denoiser", ours)]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    for ax, (title, img) in zip(axes, panels, strict=True):
        img = img.clamp(0, 1)
        if title != "clean":
            psnr, ssim = psnr_ssim(img, clean)
            title += f"\n{float(psnr[0]):.2f} dB / {float(ssim[0]):.3f}"
        ax.imshow(img[0, 0, top:top + c, left:left + c].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{name} ({w}×{h}, NIH ChestX-ray14), centre {c}×{c}", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write(rows: list[dict], out: Path, data: Path, weights: str, tile: int, margin: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "denoising_fullsize.csv", rows, COLUMNS)
    noises = list(dict.fromkeys(r["noise"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    n = len({r["image"] for r in rows})

    def mean(noise, method, key):
        return statistics.fmean(r[key] for r in rows if r["noise"] == noise and r["method"] == method)

    ours, ref = methods[-1], "BM3D (oracle σ)"
    table, verdicts = [], []
    for noise in noises:
        for method in methods:
            table.append([noise, method, f"{mean(noise, method, 'psnr'):.2f}", f"{mean(noise, method, 'ssim'):.3f}",
                          "–" if method == "noisy" else f"{mean(noise, method, 's_per_megapixel'):.2f}"])
        d_psnr = mean(noise, ours, "psnr") - mean(noise, ref, "psnr")
        d_ssim = mean(noise, ours, "ssim") - mean(noise, ref, "ssim")
        verdicts.append(f"- **{noise}**: the shipped denoiser {'is at least level with' if d_psnr >= 0 else 'loses to'} "
                        f"BM3D (oracle σ) in PSNR ({d_psnr:+.2f} dB; SSIM {d_ssim:+.3f}).")
    per_image = markdown_table(
        ["image", "size", "noise", "method", "PSNR dB", "SSIM", "s/MP"],
        [[r["image"], f"{r['width']}×{r['height']}", r["noise"], r["method"], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}",
          "–" if r["method"] == "noisy" else f"{r['s_per_megapixel']:.2f}"] for r in rows])
    text = (
        "# The shipped X-ray denoiser on full-size X-rays of another hospital\n\n"
        f"{n} full-size NIH ChestX-ray14 image(s) from a folder `{data.name}/` (a different hospital and scanner from "
        f"the 64×64 Kermany training X-rays; never training data), AWGN at their own resolution, clipped to [0, 1], "
        f"noise seeded per setting. The shipped noise-blind denoiser `{weights}` runs with `ae-lightning predict`'s "
        f"tiled inference ({tile} px tiles with {margin} px of context); BM3D (the `bm3d` package) gets the true σ "
        "(oracle). s/MP: seconds per megapixel on this machine, one process.\n\n"
        + markdown_table(["noise", "method", "PSNR dB (mean)", "SSIM (mean)", "s/MP"], table) + "\n"
        + "\n".join(verdicts) + "\n\nPer image:\n\n" + per_image + "\n\n" + f"Hardware: {hardware()[2]}.\n")
    (out / "denoising_fullsize.md").write_text(text)
    print(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.denoising_fullsize", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a folder of full-size X-rays (PNG/JPEG/TIFF/DICOM)")
    ap.add_argument("--weights", default="xray64-denoiser", help="a shipped name or a weights file")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[15, 25, 50], help="AWGN σ in 8-bit units")
    ap.add_argument("--tile", type=int, default=256, help="tile side of the tiled inference (pixels)")
    ap.add_argument("--margin", type=int, default=128, help="context around each tile (pixels)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if not classical.bm3d_available():
        print(classical.BM3D_MISSING, file=sys.stderr)
        return 2
    try:
        run(args.data, args.weights, args.sigmas, args.tile, args.margin, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
