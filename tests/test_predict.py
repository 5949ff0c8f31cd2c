"""Using a trained model: full-resolution inference, the predict-only folder data, ``ae-lightning predict``
writing outputs (images with their inputs' names and bit depth, codes, samples), also under 2-process DDP."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS
from PIL import Image

from ae_lightning.data.predict import ImageFiles
from ae_lightning.inference import in_eval_batches, sliding_window, whole_image

QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def tile_context_net(t: torch.Tensor) -> torch.Tensor:
    """A stand-in for a fixed-size net that uses its whole tile (an MLP): half the pixel plus the tile's mean.
    Without blending, neighbouring tiles with different means meet in a visible step."""
    return 0.5 * t + 0.5 * t.mean(dim=(2, 3), keepdim=True)  # (N, C, h, w)


# --- full-resolution inference ----------------------------------------------------------------------
@pytest.mark.parametrize("blend", ["gaussian", "hann"])
def test_tiled_identity_net_returns_its_input(blend):
    x = torch.rand(2, 1, 150, 97)  # not a multiple of the tile or the stride
    out = sliding_window(lambda t: t, x, (64, 64), overlap=0.5, blend=blend)
    assert out.shape == x.shape
    # away from the border (and, with reflect padding, at it too) the blended tiles give back the input
    torch.testing.assert_close(out[..., 32:-32, 32:-32], x[..., 32:-32, 32:-32], atol=1e-5, rtol=0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_sliding_window_agrees_with_monai_when_installed():
    monai = pytest.importorskip("monai.inferers")
    x = torch.rand(1, 1, 128, 128)
    ours = sliding_window(tile_context_net, x, (64, 64), overlap=0.5)
    theirs = monai.sliding_window_inference(x, (64, 64), 4, tile_context_net, overlap=0.5, mode="gaussian",
                                            padding_mode="reflect")
    # not equal (our tiles start half a tile outside the image, MONAI's at its edge): same image, small differences
    assert (ours - theirs)[..., 32:-32, 32:-32].abs().mean() < 0.02


def test_fully_convolutional_net_runs_on_the_whole_image():
    from ae_lightning.models import Autoencoder
    from ae_lightning.nets import ConvDecoder, ConvEncoder

    model = Autoencoder(ConvEncoder((1, 64, 64), [4, 4]), ConvDecoder((1, 64, 64), [4, 4])).eval()
    assert model.size_multiple() == 4
    x = torch.rand(1, 1, 130, 97)
    with torch.no_grad():
        out = model.reconstruct_full(x)
        direct = whole_image(lambda t: model(t).reconstruction, x, 4)
    assert out.shape == x.shape
    torch.testing.assert_close(out, direct)  # one pass over the padded image, no tiles
    with torch.no_grad():  # a 128×96 crop needs no padding: the same as the net on it
        torch.testing.assert_close(model.reconstruct_full(x[..., :128, :96]), model(x[..., :128, :96]).reconstruction)


def test_large_images_run_in_pieces_with_the_whole_images_result():
    """Past ``whole_image_tile`` a fully convolutional net runs on 1024² pieces with context (bounded memory); with a
    margin of at least its receptive-field radius the pieces give exactly the whole image's result."""
    from ae_lightning.inference import tiled_whole_image
    from ae_lightning.models import DenoisingAutoencoder
    from ae_lightning.nets import UNetDecoder, UNetEncoder
    from ae_lightning.noise import Gaussian

    torch.manual_seed(0)
    model = DenoisingAutoencoder(UNetEncoder((1, 64, 64), [4, 8, 16]), UNetDecoder((1, 64, 64), [4, 8, 16]),
                                 noise=Gaussian(0.1), residual=True).eval()
    x = torch.rand(1, 1, 203, 150)
    with torch.no_grad():
        whole = whole_image(model._reconstruct, x, 4)
        pieces = tiled_whole_image(model._reconstruct, x, 4, tile=64, margin=48)  # 4 × 3 pieces
        torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=0)
        short = tiled_whole_image(model._reconstruct, x, 4, tile=64, margin=4)  # too little context: differs
        assert (short - whole).abs().max() > 1e-4
        model.whole_image_tile, model.tile_margin = 64, 48  # what reconstruct_full uses for large images
        torch.testing.assert_close(model.reconstruct_full(x), whole, atol=1e-5, rtol=0)


def seam_ratio(out: np.ndarray, tile: int, stride: int, offset: int) -> float:
    """Mean |horizontal step| on the columns where tiles start / mean |step| on the other columns."""
    steps = np.abs(np.diff(out, axis=1))  # (H, W-1): steps[:, j] is between columns j and j+1
    borders = [j - 1 for j in range(stride - offset, out.shape[1], stride) if 0 < j < out.shape[1]]
    others = np.setdiff1d(np.arange(steps.shape[1]), borders)
    return float(steps[:, borders].mean() / steps[:, others].mean())


def test_no_seam_on_the_full_size_nih_xrays(shared_data):
    files = sorted((shared_data / "chest_xray_fullres").glob("*.png"))
    if not files:
        pytest.skip("no NIH full-size X-rays in the shared data")
    for f in files:
        x = ImageFiles(f)[0][0].unsqueeze(0)  # (1, 1, 512, 512)
        blended = sliding_window(tile_context_net, x, (64, 64), overlap=0.5)[0, 0].numpy()
        # the control: abutting tiles (no overlap, flat window) start at column 32 (half a tile of padding)
        hard = sliding_window(tile_context_net, x, (64, 64), overlap=0.0, blend="constant")[0, 0].numpy()
        assert seam_ratio(hard, 64, 64, 32) > 5, "the seam measure does not see abutting tiles"
        # blended: a step across a tile border is no larger than a step anywhere else (at most 10 % more)
        for start in (0, 32):  # tile borders of the 50 %-overlap grid, every 32 columns
            assert seam_ratio(blended, 64, 64, start) < 1.1
        assert np.abs(np.diff(blended, axis=1)).max() <= np.abs(np.diff(x[0, 0].numpy(), axis=1)).max()


# --- predict-only data ---------------------------------------------------------------------------
def write_images(root: Path) -> dict[str, tuple[int, int, int]]:
    """Small X-ray-like files in the formats the X-ray data read: ``{relative name: (height, width, bits)}``."""
    rng = np.random.default_rng(0)
    made = {}
    (root / "sub").mkdir(parents=True)
    for name, (h, w), bits in [("a.png", (72, 90), 8), ("sub/b16.png", (100, 68), 16), ("c16.tif", (64, 64), 16),
                               ("d.pgm", (66, 70), 8), ("e.bmp", (40, 80), 8)]:
        ramp = np.linspace(0.2, 0.8, w)[None, :] * np.ones((h, 1)) + 0.05 * rng.standard_normal((h, w))
        arr = np.clip(ramp, 0, 1)
        img = (arr * 65535).astype(np.uint16) if bits == 16 else (arr * 255).astype(np.uint8)
        Image.fromarray(img).save(root / name)
        made[name] = (h, w, bits)
    return made


def test_image_files_keep_name_size_and_bit_depth(tmp_path):
    made = write_images(tmp_path / "in")
    ds = ImageFiles(tmp_path / "in")
    assert len(ds) == len(made)
    for x, meta in (ds[i] for i in range(len(ds))):
        h, w, bits = made[meta["name"]]
        assert x.shape == (1, h, w) and (meta["height"], meta["width"], meta["bits"]) == (h, w, bits)
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05
    assert ImageFiles(tmp_path / "in" / "sub" / "b16.png")[0][1]["name"] == "b16.png"  # one file


# --- ae-lightning predict -----------------------------------------------------------------------
DAE = ["--config", str(CONFIGS / "dae_xray64.yaml"), *QUIET]


def read_index(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def check_outputs(out: Path, inputs: Path, made: dict) -> list[dict]:
    """One output per input at the input's relative name (``.png`` unless .png/.tif), size and bit depth."""
    rows = read_index(out / "index.csv")
    assert sorted(r["input"] for r in rows) == sorted(made)  # nothing lost, nothing twice
    for r in rows:
        h, w, bits = made[r["input"]]
        assert Path(r["output"]).with_suffix("") == Path(r["input"]).with_suffix("")
        with Image.open(out / r["output"]) as im:
            assert im.size == (w, h)
            assert (im.mode in ("I;16", "I;16B", "I;16L", "I")) == (bits == 16), (r, im.mode)
            arr = np.asarray(im, dtype=np.float64) / (65535 if bits == 16 else 255)
        assert 0.05 < arr.mean() < 0.95  # an image, not a blank
    assert [int(r["index"]) for r in rows] == list(range(len(made)))
    return rows


def test_fit_then_predict_denoises_a_folder_at_full_size(run_cli, tmp_path):
    """The issue's command on small files: a fitted 64×64 DAE writes each input's denoised copy, full size."""
    made = write_images(tmp_path / "in")
    run_cli(["fit", *DAE, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"])
    ckpt = tmp_path / "runs" / "dae_xray64" / "version_0" / "checkpoints" / "last.ckpt"
    run = run_cli(["predict", *DAE, "--ckpt_path", str(ckpt), "--data.init_args.predict_root", str(tmp_path / "in")])
    out = tmp_path / "runs" / "dae_xray64" / "version_1" / "predict"  # the predict run's own folder
    assert (out.parent / "config.yaml").is_file()
    check_outputs(out, tmp_path / "in", made)
    # the written image is the model's full-resolution reconstruction of the input, quantised to its bit depth
    x, meta = ImageFiles(tmp_path / "in")[1]
    assert meta["name"] == "c16.tif"
    with torch.no_grad():
        want = run.model.reconstruct_full(x.unsqueeze(0)).clamp(0, 1)[0, 0].numpy()
    got = np.asarray(Image.open(out / "c16.tif"), dtype=np.float64) / 65535
    assert np.abs(got - want).max() < 1 / 65535


def test_predict_ddp_two_processes_each_input_written_once(run_cli, tmp_path, forked_ranks):
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised in this process: forked ranks cannot use it")
    made = write_images(tmp_path / "in")
    run = run_cli(["predict", *DAE, "--trainer.devices=2", "--trainer.strategy=ddp_fork",
                   "--data.init_args.predict_root", str(tmp_path / "in"), "--prediction.output_dir", str(tmp_path / "out")])
    assert run.trainer.world_size == 2
    check_outputs(tmp_path / "out", tmp_path / "in", made)
    assert not list((tmp_path / "out").glob("index.rank*"))  # the parts were merged


def test_predict_codes_of_an_autoencoder(run_cli, tmp_path):
    run = run_cli(["predict", "--config", str(CONFIGS / "ae_mnist.yaml"), *QUIET, "--prediction.output=codes",
                   "--trainer.limit_predict_batches=2", "--data.init_args.batch_size=16"])
    out = tmp_path / "runs" / "ae_mnist" / "version_0" / "predict"
    codes = np.load(out / "codes.npy")
    rows = read_index(out / "codes.csv")
    assert codes.shape == (32, run.model.encoder.code_dim) and len(rows) == 32
    x = torch.stack([run.datamodule.test_set[i][0] for i in range(32)])
    with torch.no_grad():
        np.testing.assert_allclose(codes, run.model.encode(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("config, sets", [("vae_mnist", ["samples"]), ("aae_mnist", ["samples"]),
                                          ("cvae_mnist", [f"label_{k}" for k in range(10)])])
def test_predict_writes_samples_of_generative_models(run_cli, tmp_path, config, sets):
    run_cli(["predict", "--config", str(CONFIGS / f"{config}.yaml"), *QUIET, "--prediction.num_samples=9",
             "--trainer.limit_predict_batches=1"])
    out = tmp_path / "runs" / config / "version_0" / "predict" / "samples"
    assert sorted(p.name for p in out.glob("*_grid.png")) == sorted(f"{s}_grid.png" for s in sets)
    files = sorted((out / sets[0]).glob("*.png"))
    assert len(files) == 9
    first = [np.asarray(Image.open(f), dtype=np.float64) for f in files[:2]]
    assert first[0].std() > 0 and not np.array_equal(*first)  # images, and different ones


def test_predict_codes_ddp_two_processes_merged_in_input_order(run_cli, tmp_path, forked_ranks):
    """Each rank encodes every other input (the predict sampler interleaves them); rank 0 merges by index."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised in this process: forked ranks cannot use it")
    run = run_cli(["predict", "--config", str(CONFIGS / "ae_mnist.yaml"), *QUIET, "--prediction.output=codes",
                   "--trainer.devices=2", "--trainer.strategy=ddp_fork", "--trainer.limit_predict_batches=2",
                   "--data.init_args.batch_size=8"])
    out = tmp_path / "runs" / "ae_mnist" / "version_0" / "predict"
    codes, rows = np.load(out / "codes.npy"), read_index(out / "codes.csv")
    assert codes.shape[0] == len(rows) == 32 and not list(out.glob("codes.rank*"))
    run.datamodule.setup("test")  # the ranks set up their own copies
    x = torch.stack([run.datamodule.test_set[i][0] for i in range(32)])  # 2 ranks × 2 batches × 8, interleaved
    with torch.no_grad():
        np.testing.assert_allclose(codes, run.model.encode(x).numpy(), atol=1e-6)


def test_in_eval_batches_chunks_in_eval_mode_and_restores_the_mode():
    """The batched evaluation helper the compression and feature benchmarks share: every chunk in eval mode and
    without gradients, outputs in input order on the CPU, the model's own mode back after, even on an error."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5)).train()
    x = torch.randn(7, 3)
    modes = []

    def fn(chunk):
        modes.append((net.training, torch.is_grad_enabled(), len(chunk)))
        return net(chunk)

    out = in_eval_batches(net, fn, x, batch_size=3)
    assert modes == [(False, False, 3), (False, False, 3), (False, False, 1)] and net.training
    torch.testing.assert_close(out, net.eval()(x).detach())
    net.train()
    with pytest.raises(ZeroDivisionError):
        in_eval_batches(net, lambda chunk: 1 / 0, x)
    assert net.training
