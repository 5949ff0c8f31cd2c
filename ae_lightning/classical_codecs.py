"""Classical image codecs through Pillow, scored like the learned codec: real bytes, decoded pixels.

Every function codes each image of ``images`` (N, 1, H, W) in [0, 1] (grayscale; 8-bit pixels, as the
X-rays are stored) on its own and returns an :class:`~ae_lightning.rd.RDPoint`: ``bytes`` is what each image
costs, and those bytes decode to the scored pixels (``decode_*`` below; tested).

- **JPEG** (libjpeg, baseline, greyscale), :func:`jpeg_point`. The headline rate counts the abbreviated stream
  (``streamtype=2``: the standard quantisation and Huffman tables left out, JFIF APP0 dropped): the tables are
  the same for every image at one quality, like the learned codec's model, so they are shared, not counted per
  image (:func:`jpeg_tables` + the image's stream = a complete JPEG, :func:`with_tables`). ``extra["bpp_file"]``:
  the complete ``.jpg`` with ``optimize=True`` (per-image Huffman tables, every header).
- **JPEG at reduced resolution**, :func:`jpeg_downscaled_point`: the image shrunk by an integer ``factor``
  (Pillow LANCZOS, antialiased), JPEG-coded as above, decoded and enlarged back (LANCZOS: 0.1–0.2 dB above
  BICUBIC on the X-rays); +1 byte per image for the factor. The best of a few factors at each rate is the Pareto
  front of all their points (:func:`ae_lightning.rd.front`): at low rates a smaller image coded well beats a
  full-size one coded badly.
- **JPEG 2000** (OpenJPEG via Pillow; ``PIL.features.check("jpg_2000")``), :func:`jpeg2000_point`: the raw
  codestream (``.j2k``: no JP2 file boxes), irreversible 9/7 wavelet, one quality layer, OpenJPEG's default
  "Created by OpenJPEG" comment (COM marker, 39 bytes) removed: no decoder reads it. As for JPEG, the main header
  that is the same for every image (SIZ, COD, QCD: ~80 bytes, 0.16 bpp of a 64×64 image) is shared, not counted
  per image; ``extra["bpp_file"]`` counts whole codestreams.
- **WebP** (libwebp via Pillow, lossy VP8, ``method=6``), :func:`webp_point`: the whole ``.webp`` file (RIFF
  container included); Pillow codes greyscale as RGB, which libwebp stores as 4:2:0 YUV with flat chroma.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, features

from ae_lightning.rd import RDPoint, bits_per_pixel, scored_point


# --- pixels ------------------------------------------------------------------------------------------------
def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A (1, H, W) image in [0, 1] as the (H, W) uint8 array the codecs code."""
    if image.dim() != 3 or image.shape[0] != 1:
        raise ValueError(f"the classical codecs here take greyscale images (1, H, W), got {tuple(image.shape)}")
    return (image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _as_images(decoded: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(decoded)).unsqueeze(1).float() / 255  # (N, 1, H, W)


def _save(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, fmt, **options)
    return buf.getvalue()


def _open_gray(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"))  # (H, W) uint8


# --- JPEG ----------------------------------------------------------------------------------------------------
def jpeg_encode(pixels: np.ndarray, quality: int, **options) -> bytes:
    """Greyscale JPEG bytes of an (H, W) uint8 image (Pillow ``save`` options, e.g. ``optimize=True``)."""
    return _save(pixels, "JPEG", quality=quality, **options)


def jpeg_decode(data: bytes) -> np.ndarray:
    return _open_gray(data)


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


def jpeg_point(images: torch.Tensor, quality: int, keep: int | None = 0) -> RDPoint:
    """JPEG at ``quality`` on ``images`` (N, 1, H, W): the shared-tables rate (headline), the whole-file rate
    (``extra["bpp_file"]``), PSNR / SSIM of the decoded pixels."""
    tables = jpeg_tables(quality)
    short, files, decoded = [], [], []
    for image in images:
        u8 = to_uint8(image)
        stream = jpeg_image_only(u8, quality)
        short.append(len(stream))
        files.append(len(jpeg_encode(u8, quality, optimize=True)))  # optimize changes the Huffman code only
        decoded.append(jpeg_decode(with_tables(tables, stream)))
    return scored_point("JPEG", f"q={quality}", short, _as_images(decoded), images, keep, quality=quality,
                        bpp_file=bits_per_pixel(files, images))


# --- JPEG at reduced resolution ----------------------------------------------------------------------------------
def downscaled_encode(pixels: np.ndarray, quality: int, factor: int) -> bytes:
    """One byte for ``factor``, then the abbreviated JPEG stream of the image shrunk ``factor`` times (LANCZOS)."""
    h, w = pixels.shape
    if not 1 <= factor <= 255 or h % factor or w % factor:
        raise ValueError(f"factor must be an integer in [1, 255] that divides the image's {h}x{w}, got {factor}")
    small = np.asarray(Image.fromarray(pixels, mode="L").resize((w // factor, h // factor), Image.Resampling.LANCZOS))
    return bytes([factor]) + jpeg_image_only(small, quality)


def downscaled_decode(data: bytes, tables: bytes) -> np.ndarray:
    """The (H, W) uint8 image of :func:`downscaled_encode`'s bytes: decoded, enlarged ``factor`` times (LANCZOS)."""
    factor, small = data[0], jpeg_decode(with_tables(tables, data[1:]))
    h, w = small.shape
    return np.asarray(Image.fromarray(small, mode="L").resize((w * factor, h * factor), Image.Resampling.LANCZOS))


def jpeg_downscaled_point(images: torch.Tensor, quality: int, factor: int, keep: int | None = 0) -> RDPoint:
    """JPEG at ``quality`` of the images shrunk ``factor`` times, enlarged back after decoding (module docstring)."""
    tables = jpeg_tables(quality)
    data = [downscaled_encode(to_uint8(x), quality, factor) for x in images]
    decoded = [downscaled_decode(d, tables) for d in data]
    return scored_point("JPEG downscaled", f"1/{factor}, q={quality}", [len(d) for d in data], _as_images(decoded),
                        images, keep, quality=quality, factor=factor)


# --- JPEG 2000 ------------------------------------------------------------------------------------------------
def require_jpeg2000() -> None:
    if not features.check("jpg_2000"):
        raise RuntimeError("this Pillow has no JPEG 2000 (OpenJPEG) support; fix: install a Pillow wheel from PyPI "
                           "(they include OpenJPEG), or build Pillow against libopenjp2")


def split_j2k(data: bytes) -> tuple[bytes, bytes]:
    """``(main header, tile-parts)`` of a raw JPEG 2000 codestream, the main header's COM segments dropped (text no
    decoder reads); ``header + tile_parts`` is the codestream a decoder reads."""
    if data[:4] != b"\xff\x4f\xff\x51":
        raise ValueError("not a raw JPEG 2000 codestream (SOC, SIZ); fix: save with no_jp2=True")
    header, pos = bytearray(data[:2]), 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0x90:  # until the first tile-part (SOT)
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] != 0x64:  # COM
            header += data[pos : pos + 2 + length]
        pos += 2 + length
    return bytes(header), data[pos:]


def jpeg2000_encode(pixels: np.ndarray, psnr_db: float, num_resolutions: int = 4) -> bytes:
    """The raw JPEG 2000 codestream (COM dropped) of an (H, W) uint8 image, one quality layer that OpenJPEG's rate
    allocation ends at ``psnr_db`` (``quality_mode="dB"``: it spans the whole range of rates, where a target
    compression ratio cannot go below the ~100-byte main header of a 64×64 image); ``num_resolutions`` = wavelet
    levels + 1 (4 codes 64×64 X-rays in slightly fewer bytes at low rates than OpenJPEG's default 6; measured)."""
    require_jpeg2000()
    data = _save(pixels, "JPEG2000", no_jp2=True, irreversible=True, quality_mode="dB", quality_layers=[psnr_db],
                 num_resolutions=num_resolutions)
    return b"".join(split_j2k(data))


def jpeg2000_point(images: torch.Tensor, psnr_db: float, num_resolutions: int = 4, keep: int | None = 0) -> RDPoint:
    """JPEG 2000 with OpenJPEG's target ``psnr_db``. Rate (headline): each image's tile-parts; the main header (SIZ,
    COD, QCD: the same bytes for every image of one size at one setting) is shared like JPEG's tables, and counted
    per image where the images' headers differ. ``extra["bpp_file"]``: whole codestreams."""
    data = [jpeg2000_encode(to_uint8(x), psnr_db, num_resolutions) for x in images]
    parts = [split_j2k(d) for d in data]
    shared = len({h for h, _ in parts}) == 1
    sizes = [len(t) if shared else len(h) + len(t) for h, t in parts]
    decoded = [_open_gray(d) for d in data]
    return scored_point("JPEG 2000", f"{psnr_db:g} dB target", sizes, _as_images(decoded), images, keep,
                        target_psnr=psnr_db, num_resolutions=num_resolutions, shared_header=shared,
                        bpp_file=bits_per_pixel([len(d) for d in data], images))


# --- WebP --------------------------------------------------------------------------------------------------------
def has_webp() -> bool:
    return bool(features.check("webp"))


def webp_encode(pixels: np.ndarray, quality: int) -> bytes:
    return _save(pixels, "WEBP", quality=quality, method=6)


def webp_point(images: torch.Tensor, quality: int, keep: int | None = 0) -> RDPoint:
    """Lossy WebP at ``quality`` (whole files)."""
    if not has_webp():
        raise RuntimeError("this Pillow has no WebP support; fix: install a Pillow wheel from PyPI")
    data = [webp_encode(to_uint8(x), quality) for x in images]
    decoded = [_open_gray(d) for d in data]
    return scored_point("WebP", f"q={quality}", [len(d) for d in data], _as_images(decoded), images, keep,
                        quality=quality)
