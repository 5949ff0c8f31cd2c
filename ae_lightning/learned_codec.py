"""Real bytes from a rate–distortion-trained codec: image → bytes → image, every byte counted.

A trained :class:`~ae_lightning.models.RateDistortionAutoencoder`'s codec (CompressAI: ``update()`` builds the
coding tables, ``compress()`` writes rANS strings, ``decompress()`` reads them) codes each image on its own into
one byte string, whose format is this (all of it is the rate)::

    varint H, varint W            the image's size (LEB128: one byte each up to 127, two up to 16383)
    varint len(s_1) … len(s_k-1)  the lengths of every entropy-coded string but the last
    s_1 … s_k                     CompressAI's strings: k = 1 for the factorised prior (y), 2 for the
                                  scale hyperprior (y, then z)

What the decoder knows without reading it, like JPEG's standard tables: the model (its weights and coding
tables, one file for every image: :func:`save_codec`), hence the channels, ``k`` and the padding rule (the image
is reflect-padded to a multiple of the model's down-sampling factor, centred, and cropped back after decoding).
A 64×64 image costs 2 bytes of header (+1 for a hyperprior) besides its strings.

Decoded images are rounded to 8 bits (what a PNG of them holds, and what JPEG decodes to) before scoring::

    codec = prepare(model.codec)                            # eval mode, coding tables built
    data = encode_image(codec, x)                           # x (C, H, W) in [0, 1] → bytes
    y = decode_image(codec, data)                           # (C, H, W), multiples of 1/255
    point = score(codec, images, name="λ=0.01")             # bpp from the bytes, PSNR/SSIM of the decoded images

Each image is coded alone (a batch of one), so its bytes never depend on which other images were coded with it.
Decoding must run the same arithmetic as encoding: on one machine and PyTorch build this holds (the CLI's files
decode to what :func:`score` scored; tested). Across machines, the factorised prior's symbols decode exactly (its
tables are fixed in the model file) and pixels may differ by rounding; the hyperprior's tables are chosen by a net's
float output, so a decoder on other hardware can mis-decode (CompressAI's known cross-platform limitation).

Files on disk (``ae-lightning compress`` / ``decompress``)::

    ae-lightning compress --ckpt runs/rd_xray64_0.013/version_0/checkpoints/last.ckpt my_xrays/ coded/   # coded/*.rdc
    ae-lightning decompress --ckpt runs/rd_xray64_0.013/version_0/checkpoints/last.ckpt coded/ decoded/  # decoded/*.png
    python -m ae_lightning.learned_codec weights --ckpt CKPT codec.pt     # the model file alone (weights + tables)
    ae-lightning compress --weights codec.pt my_xrays/ coded/

The ``.rdc`` files hold exactly the bytes :func:`score` counts.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ae_lightning.compression import read_varint, varint
from ae_lightning.inference import _pad
from ae_lightning.models.rate_distortion import flush_denormals
from ae_lightning.rd import RDPoint, scored_point

SUFFIX = ".rdc"
WEIGHTS_FORMAT = "ae_lightning.learned_codec/1"


# --- the byte string -----------------------------------------------------------------------------------------
def pack(height: int, width: int, strings: Sequence[bytes]) -> bytes:
    """The per-image byte string: size, the lengths of all strings but the last, the strings (module docstring)."""
    return varint(height) + varint(width) + b"".join(varint(len(s)) for s in strings[:-1]) + b"".join(strings)


def unpack(data: bytes, n_strings: int) -> tuple[int, int, list[bytes]]:
    """``(H, W, strings)`` of :func:`pack`'s bytes, for a model that writes ``n_strings`` strings per image."""
    height, pos = read_varint(data, 0)
    width, pos = read_varint(data, pos)
    lengths = []
    for _ in range(n_strings - 1):
        n, pos = read_varint(data, pos)
        lengths.append(n)
    strings = []
    for n in lengths:
        if pos + n > len(data):
            raise ValueError(f"code stream of {len(data)} bytes is shorter than its header says; the bytes are truncated")
        strings.append(data[pos : pos + n])
        pos += n
    return height, width, [*strings, data[pos:]]


# --- the model -------------------------------------------------------------------------------------------------
def n_strings(codec: nn.Module) -> int:
    """How many strings the codec writes per image: one per entropy model (factorised prior 1, hyperprior 2)."""
    from compressai.entropy_models import EntropyModel

    return sum(isinstance(m, EntropyModel) for m in codec.modules())


@torch.no_grad()
def prepare(codec: nn.Module, update_quantiles: bool = True) -> nn.Module:
    """A copy of ``codec`` ready to code: eval mode, on the CPU, fp32, its coding tables built (``update()``).

    ``update_quantiles``: first set each entropy bottleneck's quantiles (the range its tables cover and the
    medians the latents are rounded around) from its learned density by bisection (CompressAI's
    ``update_quantiles``), rather than trusting the aux loss to have converged (short fits)."""
    codec = copy.deepcopy(codec).float().cpu().eval()
    with flush_denormals():
        codec.update(force=True, update_quantiles=update_quantiles)
    return codec


def _multiple(codec: nn.Module) -> int:
    return int(getattr(codec, "downsampling_factor", 64))


@torch.no_grad()
def encode_image(codec: nn.Module, image: torch.Tensor) -> bytes:
    """``image`` (C, H, W) in [0, 1] as its byte string (module docstring); ``codec`` from :func:`prepare`."""
    c, h, w = image.shape
    multiple = _multiple(codec)
    ph, pw = -h % multiple, -w % multiple
    x = _pad(image[None].float(), (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))  # (1, C, H + ph, W + pw)
    with flush_denormals():  # the same arithmetic in encoder and decoder, and 10× faster on a CPU
        out = codec.compress(x)
    strings = [s[0] for s in out["strings"]]
    expected = tuple(s // multiple for s in x.shape[-2:])
    if tuple(out["shape"]) != expected or len(strings) != n_strings(codec):
        raise ValueError(f"{type(codec).__name__}.compress returned {len(strings)} strings of latent shape "
                         f"{tuple(out['shape'])}; this format expects {n_strings(codec)} and {expected} (padded size ÷ "
                         f"{multiple}); a model of another layout needs its own header")
    return pack(h, w, strings)


@torch.no_grad()
def decode_image(codec: nn.Module, data: bytes) -> torch.Tensor:
    """The image (C, H, W) a byte string of :func:`encode_image` decodes to, rounded to 8 bits (k/255)."""
    h, w, strings = unpack(data, n_strings(codec))
    multiple = _multiple(codec)
    ph, pw = -h % multiple, -w % multiple
    shape = ((h + ph) // multiple, (w + pw) // multiple)
    with flush_denormals():
        x = codec.decompress([[s] for s in strings], shape)["x_hat"][0]  # (C, H + ph, W + pw)
    x = x[:, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
    return to_8bit(x)


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """``x`` in [0, 1] rounded to the nearest of the 256 levels an 8-bit image holds (float, k/255)."""
    return (x.float().clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def likelihood_bits(codec: nn.Module, image: torch.Tensor) -> float:
    """The rate the entropy models estimate for ``image`` (C, H, W): Σ −log₂ p of its rounded latents (no header)."""
    c, h, w = image.shape
    multiple = _multiple(codec)
    ph, pw = -h % multiple, -w % multiple
    x = _pad(image[None].float(), (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    with flush_denormals():
        return float(sum(-torch.log2(p).sum() for p in codec(x)["likelihoods"].values()))


def score(codec: nn.Module, images: torch.Tensor, name: str = "learned codec", setting: str = "",
          prepared: bool = False) -> RDPoint:
    """The codec on ``images`` (N, C, H, W) in [0, 1]: each image coded to bytes and decoded back; ``bpp`` = every
    byte of every image's string ÷ pixels, PSNR / SSIM of the decoded 8-bit images, ``bpp_estimate`` the entropy
    models' estimate (no header). ``codec``: a trained CompressAI model (``prepare``d here unless ``prepared``)."""
    codec = codec if prepared else prepare(codec)
    data = [encode_image(codec, x) for x in images]
    decoded = torch.stack([decode_image(codec, d) for d in data])  # (N, C, H, W)
    estimate = sum(likelihood_bits(codec, x) for x in images)
    point = scored_point(name, setting, [len(d) for d in data], decoded, images)
    point.bpp_estimate = estimate / (len(images) * images.shape[-2] * images.shape[-1])
    return point


# --- the model file ------------------------------------------------------------------------------------------
def save_codec(codec: nn.Module, spec: dict, path: str | Path) -> Path:
    """Write the decoder's half of the deal: ``spec`` (the codec's ``class_path`` / ``init_args``) and its state,
    coding tables included (``codec`` from :func:`prepare`). Loads with ``torch.load(weights_only=True)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": WEIGHTS_FORMAT, "codec": spec, "state_dict": codec.state_dict()}, path)
    return path


def load_codec(path: str | Path) -> nn.Module:
    """The prepared codec (eval, tables as saved) of a :func:`save_codec` file."""
    from ae_lightning.config import instantiate

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path} is not a codec file of ae_lightning.learned_codec; fix: write one with "
                         "`python -m ae_lightning.learned_codec weights --ckpt CKPT OUT.pt`, or pass --ckpt")
    codec = instantiate(state["codec"], nn.Module)
    codec.load_state_dict(state["state_dict"])  # CompressAI's load resizes the coding tables to the saved ones
    return codec.eval()


def codec_of_run(ckpt: str | Path, config: str | Path | None = None) -> tuple[nn.Module, dict]:
    """``(prepared codec, its spec)`` of a finished ``ae-lightning fit`` run (its checkpoint + ``config.yaml``)."""
    from ae_lightning.config import find_run_config, load_config, load_run

    config = config or find_run_config(Path(ckpt))
    model, _ = load_run(ckpt, config)
    spec = load_config(config)["model"]["init_args"]["codec"]
    return prepare(model.codec), spec


# --- command line --------------------------------------------------------------------------------------------
def _codec_from_args(args) -> nn.Module:
    if args.weights:
        return load_codec(args.weights)
    return codec_of_run(args.ckpt, args.config)[0]


def compress_files(codec: nn.Module, inputs: Sequence[str], out_dir: str | Path) -> list[Path]:
    """Every image under ``inputs`` (folders, files, an ``.npz``: :class:`~ae_lightning.data.predict.ImageFiles`)
    coded to ``out_dir/<its relative name>.rdc``; returns the files written."""
    from ae_lightning.data.predict import ImageFiles

    files = ImageFiles(list(inputs))
    written = []
    for i in range(len(files)):
        image, meta = files[i]
        target = Path(out_dir) / Path(meta["name"]).with_suffix(SUFFIX)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode_image(codec, image))
        written.append(target)
    return written


def decompress_files(codec: nn.Module, in_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Every ``.rdc`` file under ``in_dir`` decoded to ``out_dir/<its relative name>.png`` (8-bit); returns them."""
    from ae_lightning.callbacks.prediction import save_image_file

    in_dir = Path(in_dir)
    sources = [in_dir] if in_dir.is_file() else sorted(in_dir.rglob(f"*{SUFFIX}"))
    if not sources:
        raise FileNotFoundError(f"no {SUFFIX} files in {in_dir}; fix: pass the folder `ae-lightning compress` wrote")
    written = []
    for src in sources:
        rel = src.name if src == in_dir else src.relative_to(in_dir)
        target = Path(out_dir) / Path(rel).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(save_image_file(decode_image(codec, src.read_bytes()), target, bits=8))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``compress IN... OUT_DIR``, ``decompress IN_DIR OUT_DIR``, ``weights OUT.pt`` (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="ae-lightning", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, what in (("compress", "images → .rdc files"), ("decompress", ".rdc files → 8-bit PNGs"),
                       ("weights", "write the codec file (weights + coding tables) of a run")):
        p = sub.add_parser(name, help=what)
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--ckpt", help="checkpoint of an `ae-lightning fit` run of a RateDistortionAutoencoder")
        if name != "weights":
            source.add_argument("--weights", help="a codec file of `weights`")
        p.add_argument("--config", help="the run's config.yaml (default: found beside the checkpoint)")
        if name == "compress":
            p.add_argument("inputs", nargs="+", help="image files, folders or .npz files")
            p.add_argument("out_dir")
        elif name == "decompress":
            p.add_argument("in_dir", help="a folder of .rdc files (or one file)")
            p.add_argument("out_dir")
        else:
            p.add_argument("out", help="the codec file to write (.pt)")
    args = ap.parse_args(argv)
    if args.command == "weights":
        codec, spec = codec_of_run(args.ckpt, args.config)
        print(save_codec(codec, spec, args.out))
        return 0
    codec = _codec_from_args(args)
    if args.command == "compress":
        written = compress_files(codec, args.inputs, args.out_dir)
        total = sum(p.stat().st_size for p in written)
        print(f"{len(written)} images → {args.out_dir} ({total} bytes, {total / max(1, len(written)):.1f} per image)")
    else:
        written = decompress_files(codec, args.in_dir, args.out_dir)
        print(f"{len(written)} images → {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
