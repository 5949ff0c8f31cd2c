"""The rate–distortion-trained codec: its loss, its optimisation, real bytes that decode to the scored images
(in memory and through files on disk), and the comparison's pieces (classical codecs' bytes, BD-rate)."""

from __future__ import annotations

import functools
import io
import math

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("compressai", reason="the codec extra (compressai) is not installed: make install adds it")

from ae_lightning import classical_codecs as cc  # noqa: E402
from ae_lightning import learned_codec as lc  # noqa: E402
from ae_lightning.data.common import EMBEDDED  # noqa: E402
from ae_lightning.models import RateDistortionAutoencoder  # noqa: E402
from ae_lightning.nets.learned_codec import FactorizedPrior, ScaleHyperprior  # noqa: E402
from ae_lightning.rd import RDPoint, bd_rate, bd_rate_values, front  # noqa: E402


@pytest.fixture(scope="module")
def xrays() -> torch.Tensor:
    """Six real embedded chest X-rays, (6, 1, 64, 64), multiples of 1/255 as stored."""
    images = np.load(EMBEDDED / "chest_xray64.npz")["images"][:6]
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


def tiny_model(lmbda: float = 0.01, codec=FactorizedPrior, **kw) -> RateDistortionAutoencoder:
    torch.manual_seed(0)
    return RateDistortionAutoencoder(codec((1, 64, 64), N=8, M=12), lmbda=lmbda, **kw)


@pytest.fixture(scope="module")
def codec():
    """A prepared (coding tables built) small factorised-prior codec, briefly trained so its densities are not flat."""
    model = tiny_model(optimizer=functools.partial(torch.optim.Adam, lr=1e-2))
    opt = model.configure_optimizers()
    x = torch.from_numpy(np.load(EMBEDDED / "chest_xray64.npz")["images"][:16].astype(np.float32) / 255).unsqueeze(1)
    for _ in range(5):
        opt.zero_grad()
        out = model(x)
        losses = model.compute_losses(out, x)
        (losses["loss"] + losses["aux"]).backward()
        opt.step()
    return lc.prepare(model.codec)


# --- the loss and its optimisation ---------------------------------------------------------------------------
def test_loss_is_lambda_255sq_mse_plus_bpp_of_the_likelihoods(xrays):
    model = tiny_model(lmbda=0.02)
    out = model(xrays)
    losses = model.compute_losses(out, xrays)
    pixels = xrays.shape[0] * 64 * 64
    bits = sum(-torch.log2(p).sum() for p in out.likelihoods.values())
    mse = ((out.reconstruction - xrays) ** 2).mean()
    torch.testing.assert_close(losses["bpp"], bits / pixels)
    torch.testing.assert_close(losses["mse"], mse)
    torch.testing.assert_close(losses["loss"], 0.02 * 255**2 * mse + bits / pixels)
    assert losses["aux"] > 0 and set(losses) == {"loss", "bpp", "mse", "aux"}


@pytest.mark.parametrize("codec_class", [FactorizedPrior, ScaleHyperprior])
def test_the_two_losses_reach_disjoint_parameter_groups(codec_class, xrays):
    """Why one optimiser with two parameter groups is CompressAI's two optimisers: the rate–distortion loss never
    reaches the quantiles, the aux loss reaches nothing else."""
    model = tiny_model(codec=codec_class)
    main, quantiles = model.parameter_groups()
    assert quantiles and len(main) + len(quantiles) == len(list(model.parameters()))
    model.compute_losses(model(xrays), xrays)["loss"].backward()
    assert all(q.grad is None for q in quantiles) and any(p.grad is not None for p in main)
    model.zero_grad(set_to_none=True)
    model.codec.aux_loss().backward()
    assert all(q.grad is not None for q in quantiles) and all(p.grad is None for p in main)
    opt = model.configure_optimizers()
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3] and opt.param_groups[1]["weight_decay"] == 0.0
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(q) for q in quantiles}


def test_a_training_step_lowers_the_loss_and_clips_the_rate_distortion_group_only(xrays, tmp_path):
    model = tiny_model()  # Adam, lr 1e-3

    @torch.no_grad()
    def loss() -> float:  # the same batch and the same noise draw before and after
        torch.manual_seed(1)
        model.train()
        return float(model.compute_losses(model(xrays), xrays)["loss"])

    before = loss()
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1e-3, default_root_dir=tmp_path)
    trainer.fit(model, torch.utils.data.DataLoader(xrays, batch_size=6))
    assert trainer.global_step == 3  # one optimiser step per batch, not two
    assert loss() < before
    assert {"train/loss", "train/bpp", "train/mse", "train/aux"} <= set(trainer.callback_metrics)
    main, quantiles = model.parameter_groups()
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in main if p.grad is not None]))
    assert norm <= 1e-3 * 1.01  # clipped
    assert max(float(q.grad.abs().max()) for q in quantiles) > 1e-3  # the quantiles' aux gradient is not


def test_checkpoints_hold_each_tensor_once_and_reload_after_update(tmp_path):
    model = tiny_model()
    keys = list(model.state_dict())
    assert keys and all(k.startswith("codec.") for k in keys)  # no encoder./decoder. copies of the transforms
    assert model.encoder is model.codec.g_a and model.decoder is model.codec.g_s
    model.codec.update(force=True)  # the coding tables take their real sizes
    again = tiny_model()
    again.load_state_dict(model.state_dict())
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_codec_nets_check_the_image_shape():
    with pytest.raises(ValueError, match="multiples of its down-sampling factor 16"):
        FactorizedPrior((1, 40, 40))
    with pytest.raises(ValueError, match="64"):
        ScaleHyperprior((1, 32, 32))
    net = FactorizedPrior((3, 32, 48), N=8, M=8)
    assert net(torch.rand(2, 3, 32, 48))["x_hat"].shape == (2, 3, 32, 48)


# --- real bytes ----------------------------------------------------------------------------------------------
def test_score_counts_every_byte_and_scores_what_the_bytes_decode_to(codec, xrays):
    point = lc.score(codec, xrays, prepared=True)
    data = [lc.encode_image(codec, x) for x in xrays]
    assert point.bytes == [len(d) for d in data]
    assert point.bpp == pytest.approx(8 * sum(len(d) for d in data) / (6 * 64 * 64))
    decoded = torch.stack([lc.decode_image(codec, d) for d in data])
    assert torch.equal(decoded, point.decoded)
    assert torch.equal(decoded, (decoded * 255).round() / 255)  # 8-bit levels
    psnr = -10 * torch.log10(((decoded - xrays) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(point.psnr, psnr)
    h, w, strings = lc.unpack(data[0], 1)
    assert (h, w) == (64, 64) and len(data[0]) == 2 + len(strings[0])  # a 2-byte header, then the rANS string
    assert point.bpp_estimate is not None and 0 < point.bpp_estimate < 8
    # an image's bytes do not depend on the images coded with it
    assert lc.encode_image(codec, xrays[3]) == data[3]


def test_hyperprior_and_any_image_size_round_trip():
    torch.manual_seed(0)
    codec = lc.prepare(ScaleHyperprior((1, 64, 64), N=8, M=8))
    x = torch.rand(1, 50, 70)  # not a multiple of 64: padded, cropped back
    data = lc.encode_image(codec, x)
    h, w, strings = lc.unpack(data, lc.n_strings(codec))
    assert (h, w) == (50, 70) and len(strings) == 2
    assert lc.decode_image(codec, data).shape == (1, 50, 70)


def test_files_on_disk_decode_to_exactly_what_score_scored(codec, xrays, tmp_path):
    """The user's round trip: PNGs → `ae-lightning compress` → .rdc files (the bytes score counted) →
    `ae-lightning decompress` → PNGs equal, pixel for pixel, to the images score decoded."""
    from ae_lightning.cli import main

    src = tmp_path / "in"
    src.mkdir()
    for i, x in enumerate(xrays):
        Image.fromarray(cc.to_uint8(x)).save(src / f"xray_{i}.png")
    weights = lc.save_codec(codec, {"class_path": "ae_lightning.nets.learned_codec.FactorizedPrior",
                                    "init_args": {"image_shape": [1, 64, 64], "N": 8, "M": 12}}, tmp_path / "codec.pt")
    for argv in (["compress", "--weights", str(weights), str(src), str(tmp_path / "coded")],
                 ["decompress", "--weights", str(weights), str(tmp_path / "coded"), str(tmp_path / "out")]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
    point = lc.score(lc.load_codec(weights), xrays, prepared=True)
    sizes = [(tmp_path / "coded" / f"xray_{i}.rdc").stat().st_size for i in range(6)]
    assert sizes == point.bytes
    for i in range(6):
        png = np.asarray(Image.open(tmp_path / "out" / f"xray_{i}.png"))
        assert png.dtype == np.uint8 and np.array_equal(png, cc.to_uint8(point.decoded[i]))


def test_codec_file_reloads_the_coding_tables(codec, tmp_path):
    path = lc.save_codec(codec, {"class_path": "ae_lightning.nets.learned_codec.FactorizedPrior",
                                 "init_args": {"image_shape": [1, 64, 64], "N": 8, "M": 12}}, tmp_path / "c.pt")
    again = lc.load_codec(path)
    for (k, a), b in zip(codec.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(1, 64, 64)
    assert lc.encode_image(again, x) == lc.encode_image(codec, x)
    with pytest.raises(ValueError, match="not a codec file"):
        torch.save({"state_dict": {}}, tmp_path / "other.pt")
        lc.load_codec(tmp_path / "other.pt")


# --- classical codecs ----------------------------------------------------------------------------------------
# each classical codec: (its point at one setting, the bytes of one image, those bytes decoded from a file)
CLASSICAL = {
    "JPEG": (lambda xs: cc.jpeg_point(xs, 30, keep=None), lambda u8: cc.jpeg_image_only(u8, 30),
             lambda path: cc.jpeg_decode(cc.with_tables(cc.jpeg_tables(30), path.read_bytes()))),
    "JPEG downscaled": (lambda xs: cc.jpeg_downscaled_point(xs, 50, 4, keep=None),
                        lambda u8: cc.downscaled_encode(u8, 50, 4),
                        lambda path: cc.downscaled_decode(path.read_bytes(), cc.jpeg_tables(50))),
    "WebP": (lambda xs: cc.webp_point(xs, 50, keep=None), lambda u8: cc.webp_encode(u8, 50),
             lambda path: np.asarray(Image.open(path).convert("L"))),
}


@pytest.mark.parametrize("method", sorted(CLASSICAL))
def test_classical_codecs_bytes_are_files_that_decode_to_the_scored_pixels(method, xrays, tmp_path):
    point_of, encode, decode_file = CLASSICAL[method]
    point = point_of(xrays)
    assert point.method == method and point.bpp == pytest.approx(8 * sum(point.bytes) / (6 * 64 * 64))
    for i, x in enumerate(xrays):  # the counted bytes, as files: their sizes, and the scored pixels when decoded
        path = tmp_path / f"{i}.bin"
        path.write_bytes(encode(cc.to_uint8(x)))
        assert path.stat().st_size == point.bytes[i]
        assert np.array_equal(decode_file(path), cc.to_uint8(point.decoded[i]))


def test_whole_jpeg_files_cost_more_than_the_shared_tables_rate(xrays):
    point = cc.jpeg_point(xrays, 30)
    assert point.extra["bpp_file"] > point.bpp and point.decoded.shape[0] == 0  # keep=0: no images kept


def test_jpeg2000_counts_tile_parts_and_shares_the_one_main_header(xrays):
    cc.require_jpeg2000()
    point = cc.jpeg2000_point(xrays, 30, keep=None)
    data = [cc.jpeg2000_encode(cc.to_uint8(x), 30) for x in xrays]
    headers = {cc.split_j2k(d)[0] for d in data}
    assert len(headers) == 1 and point.extra["shared_header"]
    assert point.bytes == [len(cc.split_j2k(d)[1]) for d in data]
    assert point.extra["bpp_file"] == pytest.approx(8 * sum(map(len, data)) / (6 * 64 * 64))
    assert b"OpenJPEG" not in data[0]  # the comment is dropped; what is left decodes
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data[0])).convert("L")), cc.to_uint8(point.decoded[0]))
    assert 25 < point.mean("psnr") < 40


# --- curves and BD-rate ----------------------------------------------------------------------------------------
def _curve(rates, psnrs, name="x") -> list[RDPoint]:
    return [RDPoint(name, str(r), [1], r, torch.tensor([q]), torch.tensor([q / 50])) for r, q in zip(rates, psnrs,
                                                                                                     strict=True)]


def test_bd_rate_of_a_curve_needing_30_percent_fewer_bits_is_minus_30():
    rates, psnrs = [0.1, 0.25, 0.5, 1.0, 2.0], [24.0, 27.5, 31.0, 35.0, 39.0]
    assert bd_rate(_curve(rates, psnrs), _curve([0.7 * r for r in rates], psnrs)) == pytest.approx(-30.0, abs=1e-6)
    assert bd_rate_values(rates, psnrs, [2 * r for r in rates], psnrs) == pytest.approx(100.0, abs=1e-6)
    # a curve 1 dB better everywhere needs fewer bits; a disjoint one has no BD-rate
    assert bd_rate(_curve(rates, psnrs), _curve(rates, [q + 1 for q in psnrs])) < 0
    assert math.isnan(bd_rate(_curve(rates, psnrs), _curve(rates, [q + 30 for q in psnrs])))


def test_front_keeps_the_best_quality_at_each_rate():
    pts = _curve([0.1, 0.2, 0.3, 0.25, 0.5], [20.0, 25.0, 24.0, 26.0, 30.0])
    assert [p.bpp for p in front(pts)] == [0.1, 0.2, 0.25, 0.5]


def test_training_pool_leaves_out_every_validation_and_test_patient(tmp_path):
    from ae_lightning.data.common import KERMANY_PATIENT, group_keys
    from ae_lightning.rd_comparison import split_images, training_pool

    counts = training_pool(EMBEDDED / "chest_xray64.npz", tmp_path / "pool.npz")
    pool = np.load(tmp_path / "pool.npz")
    assert counts["kept"] == len(pool["images"]) < counts["data"] == 800
    test = split_images()  # the embedded test split, as the configs split it
    held = {x.numpy().tobytes() for x in (test * 255).round().to(torch.uint8)}
    assert not held & {im.tobytes() for im in pool["images"]}
    # and by patient: no pool patient is in the embedded test or validation split
    src = np.load(EMBEDDED / "chest_xray64.npz")
    pool_patients = set(group_keys([str(n) for n in pool["names"]], KERMANY_PATIENT, "pool"))
    assert len(pool_patients) > 100 and counts["held_out_patients"] > 50
    all_patients = set(group_keys([str(n) for n in src["names"]], KERMANY_PATIENT, "embedded"))
    assert len(all_patients - pool_patients) == counts["held_out_patients"]


def test_compare_scores_every_curve_and_reports_bd_rates(codec, xrays):
    from ae_lightning.rd_comparison import ClassicalSettings, compare

    settings = ClassicalSettings(jpeg_qualities=(5, 50, 90), downscale_factors=(2,), downscale_qualities=(50, 90),
                                 jpeg2000_psnr=(25, 35), webp_qualities=(10, 80))
    result = compare({"a": codec}, xrays[:2], settings)
    assert set(result.curves) == {"learned codec", "JPEG", "JPEG downscaled", "JPEG 2000", "WebP"}
    rows = result.rows()
    assert len(rows) == 1 + 3 + 2 + 2 + 2 and all({"bpp", "psnr_mean", "ssim_mean", "on_front_psnr"} <= set(r) for r in rows)
    assert {(r["anchor"], r["metric"]) for r in result.bd_rates} == {
        (a, m) for a in ("JPEG", "JPEG downscaled", "JPEG 2000", "WebP") for m in ("psnr", "ssim")}
    assert math.isnan(result.bd_rate("JPEG"))  # one learned point: no curve to compare


def test_the_sweep_configs_differ_in_lambda_only_and_are_named_after_it():
    import yaml
    from conftest import CONFIGS

    paths = sorted(CONFIGS.glob("rd_xray64_*.yaml"))
    specs = [yaml.safe_load(p.read_text()) for p in paths]
    lambdas = [s["model"]["init_args"].pop("lmbda") for s in specs]
    assert len(paths) >= 4 and all(s == specs[0] for s in specs)
    assert [p.stem for p in paths] == [f"rd_xray64_{lmbda}" for lmbda in lambdas]
