"""Compress images with a trained autoencoder: quantise its code uniformly, entropy-code the integers.

An autoencoder's code is a float tensor, so "how many bits does it take?" has no answer until the
code is (1) quantised to integers at a stated step and (2) written with a lossless code whose every
byte is counted. This module does both, so a trained model compresses and decompresses real bytes::

    from ae_lightning.compression import compress, decompress
    blob = compress(model, images, step=0.05)        # bytes: a self-describing header + the coded integers
    recon = decompress(model, blob)                  # (N, C, H, W), from the DEquantised codes
    bpp = 8 * len(blob) / images[0].numel() / len(images)

The stream carries everything the decoder needs except the decoder itself: its weights are shared
(like JPEG's standard Huffman tables), not counted. Format (:func:`pack` / :func:`unpack`):

- byte 0: codec (high nibble: 0 raw DEFLATE = zlib's algorithm without its 6 bytes of framing, 1 raw
  LZMA2) | integer width (low nibble: 0 = 8, 1 = 16, 2 = 32 bit);
- bytes 1–4: the quantisation step, float32 little-endian;
- LEB128 varints: the code's number of dimensions per image, the number of images ``N``, the code shape;
- the payload: the integers zig-zag mapped to unsigned (0, −1, 1, −2, … → 0, 1, 2, 3, …, so small
  magnitudes are small bytes), written entry-major (every image's first code entry, then every image's
  second, …: entries that share a distribution sit together), compressed with the codec.

:func:`empirical_entropy_bits` is the estimate beside the real bytes: what an ideal entropy coder with a
per-entry table (shared, not counted) would need for these integers.
"""

from __future__ import annotations

import lzma
import math
import struct
import zlib
from typing import Literal

import numpy as np
import torch

from ae_lightning.inference import in_eval_batches

Codec = Literal["zlib", "lzma"]
CODECS: tuple[str, ...] = ("zlib", "lzma")
_WIDTHS = (np.uint8, np.uint16, np.uint32)
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def _check_step(step: float) -> float:
    """The step as the float32 the stream stores (encoder and decoder then use the same number)."""
    if not (isinstance(step, int | float | np.floating) and math.isfinite(step) and step > 0):
        raise ValueError(f"quantisation step must be a finite number > 0, got {step!r}; fix: pass e.g. step=0.05")
    return float(np.float32(step))


def quantise(code: torch.Tensor, step: float) -> torch.Tensor:
    """Uniform quantisation: the integer ``round(code / step)`` of each entry, int64, same shape as ``code``.

    ``dequantise(quantise(c, s), s)`` is within ``s / 2`` of ``c`` (the rounding error; tested).
    """
    step = _check_step(step)
    if not torch.isfinite(code).all():
        raise ValueError("the code has non-finite entries (NaN/inf); fix: check the encoder and its input")
    return torch.round(code.float() / step).long()  # same shape as code


def dequantise(q: torch.Tensor, step: float) -> torch.Tensor:
    """The float code the decoder sees: ``q * step`` (float32)."""
    return q.float() * _check_step(step)


# --- the byte stream ---------------------------------------------------------------------------------
def varint(n: int) -> bytes:
    """``n`` >= 0 as a LEB128 varint (7 bits a byte, the high bit set on every byte but the last)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it; one clear error for a cut-off header."""
    n = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("code stream ends inside its header; fix: pass the complete bytes the coder wrote")
        byte = data[pos]
        n |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return n, pos


def zigzag(q: np.ndarray) -> np.ndarray:
    """Signed → unsigned, small magnitudes first: 0, −1, 1, −2, 2 → 0, 1, 2, 3, 4 (int64 in, int64 out)."""
    return np.where(q >= 0, 2 * q, -2 * q - 1)


def unzigzag(u: np.ndarray) -> np.ndarray:
    return np.where(u % 2 == 0, u // 2, -(u + 1) // 2)


def pack(q: torch.Tensor, step: float, codec: Codec = "zlib") -> bytes:
    """The quantised codes ``q`` (N, *code_shape) of ``N`` images as one self-describing byte string.

    Every byte of the result is the rate: header (format, step, shape) and the compressed integers. One
    image: ``pack(q[i:i + 1], step)``.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {CODECS}")
    if q.dtype.is_floating_point or q.dtype == torch.bool or q.dim() < 2:
        raise ValueError(f"pack takes integer codes of shape (N, *code_shape), got {q.dtype} {tuple(q.shape)}; "
                         "fix: quantise(code, step) first, and keep the batch dimension (q[i:i + 1] for one image)")
    u = zigzag(q.detach().cpu().numpy().astype(np.int64))
    width = next((i for i, t in enumerate(_WIDTHS) if u.max(initial=0) <= np.iinfo(t).max), None)
    if width is None:
        raise ValueError(f"quantised codes reach {int(q.abs().max())}, beyond 32 bits; fix: use a larger step")
    payload = np.ascontiguousarray(u.reshape(len(u), -1).T, dtype=_WIDTHS[width]).astype(f"<u{2**width}").tobytes()
    if codec == "zlib":
        c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw DEFLATE: no zlib header / checksum
        body = c.compress(payload) + c.flush()
    else:
        body = lzma.compress(payload, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    header = bytes([CODECS.index(codec) << 4 | width]) + struct.pack("<f", _check_step(step))
    header += varint(q.dim() - 1) + b"".join(varint(int(s)) for s in q.shape)
    return header + body


def unpack(data: bytes) -> tuple[torch.Tensor, float]:
    """``(q, step)`` from :func:`pack`'s bytes: the int64 codes (N, *code_shape) and the step."""
    if len(data) < 6:
        raise ValueError(f"{len(data)} bytes are too short for a code stream; fix: pass what pack() returned")
    codec, width = data[0] >> 4, data[0] & 0x0F
    if codec >= len(CODECS) or width >= len(_WIDTHS):
        raise ValueError(f"not an ae_lightning code stream (format byte {data[0]:#04x}); fix: pass what pack() returned")
    (step,) = struct.unpack("<f", data[1:5])
    ndim, pos = read_varint(data, 5)
    shape = []
    for _ in range(ndim + 1):
        s, pos = read_varint(data, pos)
        shape.append(s)
    body = data[pos:]
    try:
        if CODECS[codec] == "zlib":
            payload = zlib.decompress(body, -15)
        else:
            payload = lzma.decompress(body, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    except (zlib.error, lzma.LZMAError) as err:
        raise ValueError(f"corrupt code stream ({err}); fix: pass the complete bytes pack() returned") from None
    n, per_image = shape[0], math.prod(shape[1:])
    u = np.frombuffer(payload, dtype=f"<u{2**width}").astype(np.int64)
    if u.size != n * per_image:
        raise ValueError(f"code stream holds {u.size} integers, its header says {n}×{per_image}; the bytes are corrupt")
    q = unzigzag(u.reshape(per_image, n).T).reshape(shape)  # (N, *code_shape)
    return torch.from_numpy(np.ascontiguousarray(q)), step


def empirical_entropy_bits(q: torch.Tensor) -> float:
    """Total bits of ``q`` (N, *code_shape) under each code entry's empirical distribution over the N images:
    ``N · Σ_entries H(entry)``. An estimate (the table an ideal coder would share is fitted to these very
    integers and not counted), to read beside the real bytes of :func:`pack`."""
    flat = q.reshape(len(q), -1).cpu().numpy()  # (N, D)
    total = 0.0
    for column in flat.T:
        _, counts = np.unique(column, return_counts=True)
        p = counts / counts.sum()
        total += float(-(counts * np.log2(p)).sum())
    return total


# --- with a model ------------------------------------------------------------------------------------
def encode_codes(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The float codes ``model.encode(images)`` (N, *code_shape) in eval mode, batched, on the CPU."""
    return in_eval_batches(model, lambda x: model.encode(x).float(), images, batch_size)


def decode_codes(model: torch.nn.Module, codes: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Images ``model.decode(codes)`` (N, C, H, W) in eval mode, batched, clamped to [0, 1], on the CPU."""
    return in_eval_batches(model, lambda z: model.decode(z).float().clamp(0, 1), codes, batch_size)


def compress(model: torch.nn.Module, images: torch.Tensor, step: float, codec: Codec = "zlib") -> bytes:
    """``images`` (N, C, H, W) in [0, 1] as bytes: the model's codes, quantised at ``step``, packed."""
    return pack(quantise(encode_codes(model, images), step), step, codec)


def decompress(model: torch.nn.Module, data: bytes) -> torch.Tensor:
    """The images (N, C, H, W) the model's decoder makes of :func:`compress`'s bytes (dequantised codes)."""
    q, step = unpack(data)
    return decode_codes(model, dequantise(q, step))


def bits_per_pixel(n_bytes: int, pixels: int) -> float:
    """``8 · n_bytes / pixels``: the rate of ``n_bytes`` for ``pixels`` pixels (all images' together)."""
    return 8.0 * n_bytes / pixels
