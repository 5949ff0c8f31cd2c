"""Compression: the rate counts every byte the coders produce, the bytes decode back, and the benchmark's quick
path runs end to end on a tiny subset."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import run_benchmark

from ae_lightning import classical_codecs as cc
from ae_lightning import compression as cz
from ae_lightning.data.common import EMBEDDED
from benchmarks import compression as bench
from benchmarks import core
from benchmarks.common import build, model_spec, with_code_dim


@pytest.fixture(scope="module")
def xrays() -> torch.Tensor:
    """Six real embedded chest X-rays, (6, 1, 64, 64) in [0, 1]."""
    images = np.load(EMBEDDED / "chest_xray64.npz")["images"][:6]
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


# --- quantisation and the byte stream --------------------------------------------------------------------
@pytest.mark.parametrize("step", [0.013, 0.5, 3.0])
def test_dequantised_code_is_within_half_a_step(step):
    code = torch.randn(50, 16) * 4  # (N, D)
    q = cz.quantise(code, step)
    assert q.dtype == torch.long and q.shape == code.shape
    err = (cz.dequantise(q, step) - code).abs()
    assert err.max() <= step / 2 + 1e-5
    assert err.max() > step / 10  # it does quantise


@pytest.mark.parametrize("codec", cz.CODECS)
@pytest.mark.parametrize("scale", [3, 300, 70000], ids=["8bit", "16bit", "32bit"])
def test_pack_round_trips_and_every_byte_is_the_rate(codec, scale):
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-scale, scale + 1, (40, 2, 3), generator=g)  # (N, *code_shape), a conv code's shape
    data = cz.pack(q, 0.1, codec)
    back, step = cz.unpack(data)
    assert torch.equal(back, q) and step == pytest.approx(0.1, rel=1e-7)
    assert step == float(np.float32(0.1))  # the float32 the stream stores, which the decoder uses
    # the rate is the bytes produced: header + payload, nothing else (and no zlib framing to waste)
    assert cz.bits_per_pixel(len(data), 40 * 784) == 8 * len(data) / (40 * 784)
    one = cz.pack(q[:1], 0.1, codec)
    assert torch.equal(cz.unpack(one)[0], q[:1])


def test_small_codes_take_few_bytes_and_headers_are_small():
    q = torch.zeros(1000, 32, dtype=torch.long)
    q[::7, 3] = 1
    data = cz.pack(q, 0.2)
    assert len(data) < 200  # 32,000 integers of almost one value compress to little
    single = cz.pack(torch.zeros(1, 8, dtype=torch.long), 0.2)
    assert len(single) <= 1 + 4 + 3 + 8  # format, step, 3 varints, the 8 bytes at most (raw DEFLATE)


def test_bad_input_gets_one_clear_error():
    with pytest.raises(ValueError, match="step must be a finite number > 0"):
        cz.quantise(torch.ones(2, 3), 0)
    with pytest.raises(ValueError, match="non-finite"):
        cz.quantise(torch.tensor([[float("nan")]]), 0.1)
    with pytest.raises(ValueError, match="quantise\\(code, step\\) first"):
        cz.pack(torch.ones(2, 3), 0.1)
    with pytest.raises(ValueError, match="unknown codec"):
        cz.pack(torch.ones(2, 3, dtype=torch.long), 0.1, "gzip")
    data = cz.pack(torch.ones(4, 3, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="corrupt|not an ae_lightning"):
        cz.unpack(data[:6] + b"\x00garbage")
    with pytest.raises(ValueError, match="not an ae_lightning code stream"):
        cz.unpack(b"\xff" * 10)


def test_empirical_entropy_counts_bits_per_code_entry():
    q = torch.zeros(8, 3, dtype=torch.long)
    q[:4, 0] = 1  # entry 0: two values, equally often → 1 bit per image
    q[:, 1] = torch.arange(8)  # entry 1: eight values → 3 bits per image; entry 2 constant → 0
    assert cz.empirical_entropy_bits(q) == pytest.approx(8 * (1 + 3 + 0))


def test_compress_with_a_model_decodes_the_dequantised_code(xrays):
    torch.manual_seed(0)
    model = build(with_code_dim(model_spec("conv_ae_xray64"), 8)).eval()
    data = cz.compress(model, xrays, step=0.05)
    out = cz.decompress(model, data)
    q = cz.quantise(cz.encode_codes(model, xrays), 0.05)
    assert torch.equal(cz.unpack(data)[0], q)
    torch.testing.assert_close(out, cz.decode_codes(model, cz.dequantise(q, 0.05)))
    assert out.shape == xrays.shape and out.min() >= 0 and out.max() <= 1


# --- JPEG --------------------------------------------------------------------------------------------
def test_jpeg_bits_are_the_file_size_and_the_shared_table_stream_decodes(xrays):
    point = bench.jpeg_point(xrays, 30)
    pixels = xrays[0].numel()
    files = [cc.jpeg_encode(cc.to_uint8(x), 30, optimize=True) for x in xrays]
    short = [cc.jpeg_image_only(cc.to_uint8(x), 30) for x in xrays]
    assert point.bpp_file == pytest.approx(8 * sum(map(len, files)) / (len(xrays) * pixels))
    assert point.bpp == pytest.approx(8 * sum(map(len, short)) / (len(xrays) * pixels))
    tables = cc.jpeg_tables(30)
    assert point.bpp_whole_set == pytest.approx(8 * (len(tables) + sum(map(len, short))) / (len(xrays) * pixels))
    for f, s in zip(files, short, strict=True):
        assert len(s) < len(f)  # the tables left out are what is saved
        assert b"JFIF" in f and b"JFIF" not in s  # APP0 dropped
        # the counted bytes + the shared tables are a complete JPEG with the same pixels as the whole file
        assert np.array_equal(cc.jpeg_decode(cc.with_tables(tables, s)), cc.jpeg_decode(f))
    # and PSNR is that of the decoded file
    decoded = torch.from_numpy(np.stack([cc.jpeg_decode(f) for f in files])).unsqueeze(1).float() / 255
    from ae_lightning.metrics import psnr_ssim

    torch.testing.assert_close(point.psnr, psnr_ssim(decoded, xrays)[0])


def _point(bpp: float, psnr: float, ssim: float, **kw) -> bench.RatePoint:
    method = "JPEG" if "quality" in kw else "conv AE"
    return bench.RatePoint(method, bpp, torch.tensor([float(psnr)]), torch.tensor([float(ssim)]), **kw)


def test_outcome_compares_at_the_same_rate_and_says_when_jpeg_cannot_reach_it():
    jpeg = [_point(0.2, 20, 0.5, quality=1), _point(0.6, 30, 0.9, quality=50)]
    assert bench.jpeg_at(0.4, jpeg) == pytest.approx((25, 0.7))
    assert bench.outcome(_point(0.4, 26, 0.75, code_dim=8), jpeg) == "beats"
    assert bench.outcome(_point(0.4, 24, 0.65, code_dim=8), jpeg) == "loses"
    assert bench.outcome(_point(0.4, 26, 0.65, code_dim=8), jpeg) == "splits"
    low_win = bench.outcome(_point(0.1, 21, 0.6, code_dim=8), jpeg)  # lower rate, better than JPEG's lowest point
    assert low_win == "beats (below JPEG's lowest rate; vs JPEG q=1: +1.00 dB, SSIM +0.100)"
    low = bench.outcome(_point(0.1, 19, 0.6, code_dim=8), jpeg)
    assert low.startswith("below JPEG's lowest rate") and "-1.00 dB" in low and "+0.100" in low
    sentence = bench.verdict([_point(0.1, 21, 0.6, code_dim=4), _point(0.4, 24, 0.65, code_dim=16)], jpeg, "bpp", "JPEG")
    assert "beats JPEG at 0.100 bpp (code 4) (below JPEG's lowest rate" in sentence
    assert "loses JPEG at 0.400 bpp (code 16)" in sentence


# --- the benchmark -----------------------------------------------------------------------------------
def test_models_are_the_configs_at_each_code_size():
    cfg = core.load_settings("compression", "quick")
    built = core.benchmark("compression").models(cfg)
    assert set(built) == {(d, c) for d, sizes in cfg["code_dims"].items() for c in sizes}
    for (dataset, code_dim), model in built.items():
        assert model.encoder.code_dim == model.decoder.code_dim == code_dim
        assert model.encoder.image_shape == ((1, 64, 64) if dataset == "xray64" else (1, 28, 28))


def test_quick_pipeline_on_a_tiny_subset(tmp_path):
    tiny = dict(code_dims={"xray64": [4], "mnist": [4]}, epochs={"xray64": 1, "mnist": 1},
                train_images={"xray64": 16, "mnist": 32}, val_images=8, test_images=10, jpeg_qualities=[5, 25, 75])
    rows = run_benchmark("compression", tmp_path, tiny).rows
    for name in ("xray64", "mnist"):
        for ext in ("csv", "md", "png"):
            assert (tmp_path / f"compression_{name}.{ext}").is_file()
        table = list(csv.DictReader((tmp_path / f"compression_{name}.csv").open()))
        assert list(table[0]) == bench.COLUMNS
        jpeg = sorted((r for r in table if r["method"] == "JPEG"), key=lambda r: int(r["quality"]))
        rates = [float(r["bpp"]) for r in jpeg]
        assert rates == sorted(rates) and rates[0] < rates[-1]  # rate grows with quality
        assert all(float(r["bpp_file"]) > float(r["bpp"]) for r in jpeg)  # the headers cost something
        (ae,) = [r for r in table if r["method"] == "conv AE"]
        assert ae["config"].startswith("configs/conv_ae_") and int(ae["code_dim"]) == 4
        assert float(ae["bpp"]) > 0 and float(ae["step"]) > 0 and float(ae["bpp_entropy"]) <= float(ae["bpp"])
        assert "AE" in (tmp_path / f"compression_{name}.md").read_text().split("\n")[2]  # the verdict sentence
    assert {r["dataset"] for r in rows} == {"xray64", "mnist"}


def test_several_xray_sources_are_one_combined_set(tmp_path):
    """``--data a.npz --data b.npz``: both sources pooled into one DataModule, the results named ``combined``, every
    source named in the table (one source is named by its stem)."""
    embedded = np.load(EMBEDDED / "chest_xray64.npz")
    halves = [tmp_path / "ward_a.npz", tmp_path / "ward_b.npz"]
    for k, path in enumerate(halves):
        part = slice(0, 400) if k == 0 else slice(400, 800)
        np.savez(path, images=embedded["images"][part], names=embedded["names"][part])
    assert core.xray_source([str(halves[0])])[1] == "ward_a"
    roots, name, words = core.xray_source([str(p) for p in halves])
    assert name == "combined" and roots == halves and "ward_a.npz" in words and "ward_b.npz" in words
    settings = core.load_settings("compression", "quick", {"train_images": {"xray64": 16, "mnist": 16}})
    ctx = core.Context("quick", tmp_path, {"xray": [str(p) for p in halves]})
    dm, name, what = bench.datamodule(ctx, settings, "xray64")
    one, _, _ = bench.datamodule(core.Context("quick", tmp_path, {"xray": str(halves[0])}), settings, "xray64")
    total = sum(len(getattr(dm, f"{s}_set")) for s in ("val", "test"))
    assert name == "combined" and total > sum(len(getattr(one, f"{s}_set")) for s in ("val", "test"))
    assert "ward_b.npz" in what and "by patient" in what
