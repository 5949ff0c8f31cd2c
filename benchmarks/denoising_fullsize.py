"""The shipped X-ray denoiser on full-size X-rays of another hospital, against BM3D with the noise's known σ.

    python -m benchmarks.denoising_fullsize --data PATH/chest_xray_fullres [--set weights=xray64-denoiser]

The shipped noise-blind denoiser (``ae_lightning.pretrained``; trained on 64×64 Kermany X-rays from Guangzhou)
denoises each full-size NIH ChestX-ray14 image of the folder (another hospital and scanner) at its own resolution,
with ``ae-lightning predict``'s tiled inference, at AWGN σ = 15, 25 and 50 (8-bit units, seeded per setting, clipped
to [0, 1]); BM3D gets the true σ (oracle). Settings: ``benchmarks/denoising_fullsize.yaml``. Writes
``benchmarks/results/denoising_fullsize.{csv,md,png}``. Not in the registry (``make benchmark``): the NIH images do
not ship with the project.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from ae_lightning import classical_denoisers as classical
from ae_lightning.data import DatasetNotFoundError
from ae_lightning.data.files import DICOM_SUFFIXES, IMAGE_SUFFIXES, LAYOUT, read_image_file
from ae_lightning.metrics import psnr_ssim
from ae_lightning.noise import Gaussian
from benchmarks.core import Benchmark, Context, Results, markdown_table
from benchmarks.denoising import noisy_copy

COLUMNS = ["image", "width", "height", "noise", "method", "psnr", "ssim", "seconds", "s_per_megapixel"]


def load_images(folder: Path, limit: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """The first ``limit`` (``None``: every) image of ``folder`` by name as ``(name, (1, 1, H, W) in [0, 1])``
    (8/16-bit, DICOM), only those decoded; one error naming every unreadable file."""
    suffixes = IMAGE_SUFFIXES | DICOM_SUFFIXES
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes) if folder.is_dir() else []
    if not files:
        raise DatasetNotFoundError(f"{folder}: no images ({LAYOUT}); fix: pass the folder of full-size X-rays (--data)")
    images, bad = [], []
    for p in files[:limit]:
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


def figure(name: str, label: str, clean, noisy, bm3d, ours):
    """Before / after: the centre 256² of the image, clean, noisy, BM3D (oracle σ) and the shipped denoiser, each
    titled with its PSNR / SSIM on the whole image."""
    import matplotlib.pyplot as plt

    h, w = clean.shape[-2:]
    c = min(256, h, w)
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
    return fig


def cells(method: str, psnr: float, ssim: float, s_per_megapixel: float) -> list[str]:
    return [method, f"{psnr:.2f}", f"{ssim:.3f}", "–" if method == "noisy" else f"{s_per_megapixel:.2f}"]


def markdown(rows: list[dict], data: Path, s: dict) -> str:
    """The means per setting and method, the verdicts, every row."""
    groups: dict[tuple[str, str], list[dict]] = {}  # (noise, method) → its rows, in the order of the settings
    for r in rows:
        groups.setdefault((r["noise"], r["method"]), []).append(r)
    mean = {g: [statistics.fmean(r[k] for r in rs) for k in ("psnr", "ssim", "s_per_megapixel")]
            for g, rs in groups.items()}
    ours, ref, verdicts = rows[-1]["method"], "BM3D (oracle σ)", []
    for noise in dict.fromkeys(r["noise"] for r in rows):
        d_psnr, d_ssim = (mean[noise, ours][i] - mean[noise, ref][i] for i in (0, 1))
        verdicts.append(f"- **{noise}**: the shipped denoiser {'is at least level with' if d_psnr >= 0 else 'loses to'} "
                        f"BM3D (oracle σ) in PSNR ({d_psnr:+.2f} dB; SSIM {d_ssim:+.3f}).")
    n = len({r["image"] for r in rows})
    return (
        "# The shipped X-ray denoiser on full-size X-rays of another hospital\n\n"
        f"{n} full-size NIH ChestX-ray14 image(s) from a folder `{data.name}/` (a different hospital and scanner from "
        f"the 64×64 Kermany training X-rays; never training data), AWGN at their own resolution, clipped to [0, 1], "
        f"noise seeded per setting. The shipped noise-blind denoiser `{s['weights']}` runs with `ae-lightning "
        f"predict`'s tiled inference ({s['tile']} px tiles with {s['margin']} px of context); BM3D (the `bm3d` "
        "package) gets the true σ (oracle). s/MP: seconds per megapixel on this machine, one process.\n\n"
        + markdown_table(["noise", "method", "PSNR dB (mean)", "SSIM (mean)", "s/MP"],
                         [[noise, *cells(method, *m)] for (noise, method), m in mean.items()]) + "\n"
        + "\n".join(verdicts) + "\n\nPer image:\n\n"
        + markdown_table(["image", "size", "noise", "method", "PSNR dB", "SSIM", "s/MP"],
                         [[r["image"], f"{r['width']}×{r['height']}", r["noise"],
                           *cells(r["method"], r["psnr"], r["ssim"], r["s_per_megapixel"])] for r in rows]))


class DenoisingFullsize(Benchmark):
    """Not in the registry (``make benchmark``): the NIH images do not ship with the project."""

    name = "denoising_fullsize"
    data = ("fullres",)
    doc = "the shipped X-ray denoiser on full-size X-rays of another hospital, against BM3D with the noise's known σ"

    def run(self, ctx: Context, s: dict) -> Results:
        """Every image at every σ: the noisy input, BM3D (oracle σ) and the shipped denoiser, scored and written."""
        from ae_lightning import pretrained

        if not classical.bm3d_available():
            raise ValueError(classical.BM3D_MISSING)
        if ctx.data_root("fullres") is None:
            raise DatasetNotFoundError(f"{self.name}: no images; fix: pass the folder of full-size X-rays (--data)")
        data = Path(ctx.data_root("fullres"))
        images = load_images(data, s["images"])
        model = pretrained.load(s["weights"])
        model.whole_image_tile, model.tile_margin = s["tile"], s["margin"]
        rows, shown, results = [], None, ctx.results()
        for name, clean in images:
            h, w = clean.shape[-2:]
            for k, sigma in enumerate(s["sigmas"]):
                noise = Gaussian(sigma, 255)
                noisy = noisy_copy(noise, clean, seed=k)
                with torch.no_grad():
                    ours, t_ours = timed(model.reconstruct_full, noisy)
                bm3d, t_bm3d = timed(classical.bm3d, noisy[0, 0].numpy(), sigma=sigma / 255)
                bm3d = torch.from_numpy(bm3d)[None, None]
                if shown is None and sigma == s["figure_sigma"]:
                    shown = (name, noise.label, clean, noisy, bm3d, ours)
                for method, img, seconds in (("noisy", noisy, 0.0), ("BM3D (oracle σ)", bm3d, t_bm3d),
                                             (f"shipped denoiser ({s['weights']})", ours, t_ours)):
                    psnr, ssim = (float(v[0]) for v in psnr_ssim(img.clamp(0, 1), clean))
                    rows.append(dict(image=name, width=w, height=h, noise=noise.label, method=method, psnr=psnr,
                                     ssim=ssim, seconds=seconds, s_per_megapixel=seconds / (h * w / 1e6)))
                    print(f"{name} {noise.label:<14} {method:<40} {psnr:6.2f} dB  SSIM {ssim:.3f}  "
                          f"{rows[-1]['s_per_megapixel']:6.2f} s/MP", flush=True)
        results.table(self.name, rows, COLUMNS)
        results.markdown(self.name, markdown(rows, data, s))
        if shown is not None:
            results.figure(self.name, figure(*shown))
        return results


main = DenoisingFullsize.main


if __name__ == "__main__":
    sys.exit(main())
