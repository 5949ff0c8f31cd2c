"""Shipped pretrained weights: the file format (weights_only), the loader and its errors, the predict config,
the export of a trained run, and the training set's patient exclusion.

No test needs the real weights: each writes small ones to ``tmp_path`` (the shipped file is checked when present).
"""

from __future__ import annotations

import copy
import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import CONFIGS
from PIL import Image

from ae_lightning import pretrained
from ae_lightning.config import instantiate, load_config
from ae_lightning.data import XRayDataModule, XRayDataset
from ae_lightning.data.common import KERMANY_PATIENT, group_keys
from ae_lightning.data.predict import ImageFiles

QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TINY = {"channels": [4, 8, 16], "blocks": 1}


@pytest.fixture(autouse=True)
def _quiet_lightning():
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def model_spec(nets: dict | None = None) -> dict:
    """The shipped model's spec (configs/denoise_pretrained_xray.yaml) without its weights, with other nets if given."""
    spec = copy.deepcopy(load_config("denoise_pretrained_xray")["model"])
    spec["init_args"].pop("weights")
    for part in ("encoder", "decoder"):
        spec["init_args"][part]["init_args"] |= nets or {}
    return spec


def write_weights(path: Path, nets: dict | None = None, seed: int = 0):
    """Random weights for the shipped architecture (or ``nets``) written as a weights file; returns the model."""
    import lightning as L

    torch.manual_seed(seed)
    spec = model_spec(nets)
    model = instantiate(copy.deepcopy(spec), L.LightningModule)
    pretrained.save(model, path, spec, {"note": "test weights"})
    return model.eval()


def test_weights_file_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "w.pt"
    model = write_weights(path, TINY)
    blob = torch.load(path, weights_only=True)  # plain values and tensors only
    assert blob["format"] == pretrained.FORMAT and blob["meta"] == {"note": "test weights"}
    assert set(blob["state_dict"]) == {k for k in model.state_dict() if k.startswith(("encoder.", "decoder."))}
    assert all(v.dtype == torch.float16 for v in blob["state_dict"].values())
    assert "optimizer" not in blob["model"]["init_args"] and "weights" not in blob["model"]["init_args"]
    loaded = pretrained.load(path)
    assert not loaded.training and loaded.hparams.weights == str(path)
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, model.state_dict()[k].half().float())  # the float16 copy, nothing else
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.reconstruct_full(x), model.reconstruct_full(x), atol=2e-3, rtol=0)
        assert loaded.reconstruct_full(torch.rand(1, 1, 50, 77)).shape == (1, 1, 50, 77)  # any size


def test_missing_shipped_weights_name_the_file_and_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "HERE", tmp_path)  # a copy of the package without the file
    with pytest.raises(pretrained.WeightsNotFoundError) as err:
        pretrained.load("xray64-denoiser")
    message = str(err.value)
    assert str(tmp_path / "xray64_denoiser.pt") in message and "scripts/train_denoiser.sh" in message
    with pytest.raises(pretrained.WeightsNotFoundError, match="nowhere.pt does not exist"):
        pretrained.load(tmp_path / "nowhere.pt")


def test_weights_of_other_nets_are_refused_with_the_nets_they_need(tmp_path):
    import lightning as L

    path = tmp_path / "w.pt"
    write_weights(path, TINY)
    other = instantiate(model_spec({"channels": [4, 8, 32]}), L.LightningModule)
    with pytest.raises(ValueError, match=r"does not fit this model's nets \(\d+ entries: .*stages\.2.*in the file.*"
                                         r"trained with .*'channels': \[4, 8, 16\]"):
        pretrained.load_weights(other, path)
    deeper = instantiate(model_spec({"channels": [4, 8, 16, 32]}), L.LightningModule)
    with pytest.raises(ValueError, match="missing in the file"):
        pretrained.load_weights(deeper, path)


def test_a_file_that_is_not_a_weights_file(tmp_path):
    torch.save({"state_dict": {}, "epoch": 3}, tmp_path / "x.ckpt")  # a Lightning checkpoint, say
    with pytest.raises(ValueError, match="not an ae_lightning weights file"):
        pretrained.read(tmp_path / "x.ckpt")


def test_predict_config_builds_the_training_configs_model():
    """configs/denoise_pretrained_xray.yaml must build the nets configs/denoiser_xray64.yaml trains (the weights
    file holds only their tensors)."""
    use = yaml.safe_load((CONFIGS / "denoise_pretrained_xray.yaml").read_text())["model"]
    train = yaml.safe_load((CONFIGS / "denoiser_xray64.yaml").read_text())["model"]
    assert use["class_path"] == train["class_path"]
    for key in ("encoder", "decoder", "residual", "loss", "noise"):
        assert use["init_args"][key] == train["init_args"][key], key
    assert use["init_args"]["weights"] in pretrained.REGISTRY


def test_shipped_weights_when_present():
    path = pretrained.HERE / pretrained.REGISTRY["xray64-denoiser"]
    if not path.is_file():
        pytest.skip(f"{path} not shipped in this copy (see ae_lightning/pretrained/MODEL_CARD.md)")
    model = pretrained.load("xray64-denoiser")
    assert path.stat().st_size < 10e6
    noisy = XRayDataset(None, "val").images[:4].clamp(0, 1)
    with torch.no_grad():
        assert model.reconstruct_full(noisy).shape == noisy.shape


def write_xrays(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Two X-ray-like PNGs of different sizes and bit depths: ``{name: (height, width, bits)}``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    made = {}
    for name, (h, w), bits in [("small.png", (70, 93), 8), ("tall16.png", (150, 61), 16)]:
        arr = np.clip(np.linspace(0.2, 0.8, h)[:, None] + 0.1 * rng.standard_normal((h, w)), 0, 1)
        Image.fromarray((arr * 65535).astype(np.uint16) if bits == 16 else (arr * 255).astype(np.uint8)).save(folder / name)
        made[name] = (h, w, bits)
    return made


def test_predict_with_the_pretrained_config_writes_full_size_denoised_images(run_cli, tmp_path):
    """`ae-lightning predict --config configs/denoise_pretrained_xray.yaml --data.init_args.predict_root FOLDER` with
    weights in tmp_path (the shipped architecture): one output per input, its size and bit depth, the model's output."""
    made = write_xrays(tmp_path / "in")
    path = tmp_path / "weights.pt"
    write_weights(path)
    run_cli(["predict", "--config", str(CONFIGS / "denoise_pretrained_xray.yaml"), *QUIET,
             "--model.init_args.weights", str(path), "--data.init_args.predict_root", str(tmp_path / "in")])
    out = tmp_path / "runs" / "denoise_pretrained_xray" / "version_0" / "predict"
    model = pretrained.load(path)
    for x, meta in (ImageFiles(tmp_path / "in")[i] for i in range(2)):
        h, w, bits = made[meta["name"]]
        with Image.open(out / meta["name"]) as im:
            assert im.size == (w, h) and (im.mode.startswith("I")) == (bits == 16)
            got = np.asarray(im, dtype=np.float64) / (65535 if bits == 16 else 255)
        with torch.no_grad():
            want = model.reconstruct_full(x.unsqueeze(0)).clamp(0, 1)[0, 0].numpy()
        assert np.abs(got - want).max() <= 0.5 / (65535 if bits == 16 else 255) + 1e-6


def test_predict_config_without_the_weights_says_how_to_get_them(run_cli, tmp_path):
    with pytest.raises(Exception) as err:
        run_cli(["predict", "--config", str(CONFIGS / "denoise_pretrained_xray.yaml"), *QUIET,
                 "--model.init_args.weights", str(tmp_path / "absent.pt")])
    text = "".join(str(e) for e in (err.value, err.value.__cause__, err.value.__context__) if e is not None)
    assert "absent.pt does not exist" in text


# --- export of a trained run and the training names ------------------------------------------------
def held_out_patients() -> set[str]:
    """The patients of the embedded val and test splits as the denoising benchmark splits them (70/10/20, seed 0)."""
    return {k for s in ("val", "test") for k in
            group_keys(XRayDataset(None, s, group_by=KERMANY_PATIENT).names, KERMANY_PATIENT, "embedded")}


def read_names(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_export_of_a_run_writes_weights_training_names_and_val_scores(run_cli, tmp_path):
    """A short fit of configs/denoiser_xray64.yaml (tiny nets) with an extra set holding new patients and patients
    of the val/test splits; the export's training names leave the latter out and its weights load."""
    from ae_lightning.pretrained.export import main as export

    val_name = XRayDataset(None, "val", group_by=KERMANY_PATIENT).names[0]  # an image of a val patient ...
    extra_names = [f"PNEUMONIA/person{9000 + i}_bacteria_{i}.jpeg" for i in range(6)] + [val_name.replace(".", "_b.")]
    images = np.random.default_rng(0).integers(0, 256, (len(extra_names), 64, 64)).astype(np.uint8)
    np.savez(tmp_path / "extra.npz", images=images, names=np.array(extra_names))  # ... and another image of them
    nets = [f"--model.init_args.{p}.init_args.channels=[4,8,16]" for p in ("encoder", "decoder")]
    run_cli(["fit", "--config", str(CONFIGS / "denoiser_xray64.yaml"), *QUIET, *nets, "--data.init_args.batch_size=16",
             f"--data.init_args.extra_train=[{tmp_path / 'extra.npz'}]", "--trainer.max_steps=2",
             "--trainer.limit_val_batches=1", "--trainer.check_val_every_n_epoch=1"])
    ckpt = tmp_path / "runs" / "denoiser_xray64" / "version_0" / "checkpoints" / "last.ckpt"
    path = export(["--ckpt_path", str(ckpt), "--out_dir", str(tmp_path / "out"), "--note", "hardware=test cpu"])
    blob = torch.load(path, weights_only=True)
    assert blob["meta"]["hardware"] == "test cpu" and blob["meta"]["global_step"] == 2
    assert blob["model"]["init_args"]["encoder"]["init_args"]["channels"] == [4, 8, 16]
    assert pretrained.load(path).reconstruct_full(torch.rand(1, 1, 40, 40)).shape == (1, 1, 40, 40)
    names = read_names(tmp_path / "out" / "training_names.txt")
    embedded_train = XRayDataset(None, "train", group_by=KERMANY_PATIENT).names
    assert names == embedded_train + extra_names[:6]  # the val patient's extra image is left out
    assert not set(group_keys(names, KERMANY_PATIENT, "names")) & held_out_patients()
    with (tmp_path / "out" / "val_scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {"p=0.1·N(0,1)", "Poisson(peak 10)", "Poisson(peak 30)"} <= {r["noise"] for r in rows}
    assert all(int(r["images"]) == 80 and 0 < float(r["float16_psnr"]) < 60 for r in rows)
    assert all(abs(float(r["float16_psnr"]) - float(r["float32_psnr"])) < 0.05 for r in rows)


def test_training_set_shares_no_patient_with_the_embedded_val_or_test_split(shared_data):
    """The shipped denoiser's training set (the embedded training split + kermany_64.npz, as
    scripts/train_denoiser.sh trains it) and, when shipped, its training_names.txt: no image of a patient of the
    embedded val or test split, which the denoising benchmark scores."""
    path = shared_data / "xray64" / "kermany_64.npz"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    dm = XRayDataModule(None, group_by=KERMANY_PATIENT, extra_train=[str(path)])
    dm.setup("fit")
    held_out = held_out_patients()
    names = dm.train_set.names
    assert (len(dm.val_set), len(dm.test_set)) == (80, 160)
    assert len(names) == len(set(names)) > 1200  # every image once (the embedded ones are in kermany_64 too)
    assert not set(group_keys(names, KERMANY_PATIENT, "training names")) & held_out
    raw = [str(n) for n in np.load(path)["names"]]  # all of kermany_64 that is not a val/test patient's is in
    assert set(names) == {n for n in raw if group_keys([n], KERMANY_PATIENT, "kermany")[0] not in held_out}
    shipped = pretrained.HERE / "training_names.txt"
    if shipped.is_file():
        listed = read_names(shipped)
        assert not set(group_keys(listed, KERMANY_PATIENT, str(shipped))) & held_out
        assert listed == names


# --- the training script's timing fit ------------------------------------------------------------------
def test_epoch_times_measure_steady_epochs_and_end_a_probe_fit(tmp_path, tiny_mnist):
    """EpochTimes (scripts/train_denoiser.sh's timing fit): the median steady epoch and the warm-up apart, and
    ``stop_after`` seconds of steady epochs end the fit whatever max_epochs says."""
    import json
    import statistics

    import lightning as L

    from ae_lightning.callbacks import EpochTimes
    from ae_lightning.models import Autoencoder
    from ae_lightning.nets import MLPDecoder, MLPEncoder

    model = Autoencoder(MLPEncoder((1, 28, 28), [16]), MLPDecoder((1, 28, 28), [16]))
    timer = EpochTimes(str(tmp_path / "timing.json"), warmup=1, stop_after=0.5)
    trainer = L.Trainer(max_epochs=10_000, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], accelerator="cpu")
    trainer.fit(model, tiny_mnist)
    t = json.loads((tmp_path / "timing.json").read_text())
    assert 2 <= trainer.current_epoch < 10_000 and t["estimated_from"] == "epochs" and t["steps_per_epoch"] == 4
    steady = t["epoch_seconds"][1:-1]  # the last entry is the epoch that stopped before its first batch
    assert t["seconds_per_epoch"] == pytest.approx(statistics.median(steady), abs=1e-3)
    assert t["warmup_seconds"] == pytest.approx(t["epoch_seconds"][0], abs=1e-3)
    assert t["fit_seconds"] >= 0.5 and sum(steady) >= 0.5 - 1e-3
    assert 0 < t["seconds_per_step"] <= max(t["epoch_seconds"])


def test_epoch_times_write_their_rate_when_the_fit_stops_on_an_error(tmp_path, tiny_mnist):
    """A timing fit that diverges (the H200 run's non-finite gradient at epoch 234) still leaves the rate it timed,
    which scripts/train_denoiser.sh then uses; the error itself still ends the fit."""
    import json

    import lightning as L

    from ae_lightning.callbacks import EpochTimes
    from ae_lightning.models import Autoencoder
    from ae_lightning.nets import MLPDecoder, MLPEncoder

    class Diverges(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 3:
                raise FloatingPointError("non-finite gradient")

    model = Autoencoder(MLPEncoder((1, 28, 28), [16]), MLPDecoder((1, 28, 28), [16]))
    timer = EpochTimes(str(tmp_path / "timing.json"), warmup=1)
    trainer = L.Trainer(max_epochs=100, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer, Diverges()],
                        accelerator="cpu")
    with pytest.raises(FloatingPointError):
        trainer.fit(model, tiny_mnist)
    t = json.loads((tmp_path / "timing.json").read_text())
    assert t["estimated_from"] == "epochs" and t["steps_per_epoch"] == 4 and len(t["epoch_seconds"]) == 4
    assert t["seconds_per_epoch"] > 0


def test_resume_checkpoint_every_few_minutes_instead_of_steps():
    """configs/denoiser_xray64.yaml writes last.ckpt every 3 minutes (a GPU step takes milliseconds: every 50 steps
    would write one each second)."""
    import datetime

    from ae_lightning.callbacks import ResumeCheckpoint

    timed = ResumeCheckpoint(every_n_minutes=3)
    assert timed._train_time_interval == datetime.timedelta(minutes=3) and timed._every_n_train_steps == 0
    assert ResumeCheckpoint()._every_n_train_steps == 50 and ResumeCheckpoint()._train_time_interval is None
    assert yaml.safe_load((CONFIGS / "denoiser_xray64.yaml").read_text())["resume"] == {"every_n_minutes": 3}
    with pytest.raises(ValueError, match="every_n_minutes must be > 0"):
        ResumeCheckpoint(every_n_minutes=0)


# --- the full-size check (benchmarks/denoising_fullsize.py) -------------------------------------------------
def test_fullsize_check_scores_every_image_tiled_against_oracle_bm3d(tmp_path):
    """Full-size X-rays of any size through the tiled path: one row per image, setting and method, the tiled output
    equal to the whole-image one (the margin covers the tiny net's reach), and a verdict per setting."""
    import csv

    pytest.importorskip("bm3d")
    from benchmarks import denoising_fullsize as F

    folder = tmp_path / "fullres"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (80, 96), "b.png": (72, 72)}.items():
        smooth = np.cumsum(np.cumsum(rng.random((h, w)), 0), 1)
        Image.fromarray((255 * smooth / smooth.max()).astype(np.uint8)).save(folder / name)
    weights = tmp_path / "w.pt"
    model = write_weights(weights, TINY)
    from benchmarks.core import Context

    overrides = {"weights": str(weights), "sigmas": [25], "tile": 32, "margin": 32}
    rows = F.DenoisingFullsize()(Context("quick", tmp_path / "out", {"fullres": str(folder)}), overrides).rows
    assert (tmp_path / "out" / "denoising_fullsize.png").stat().st_size > 1000  # the before / after figure
    assert [(r["image"], r["method"]) for r in rows] == [
        (img, m) for img in ("a.png", "b.png") for m in ("noisy", "BM3D (oracle σ)", f"shipped denoiser ({weights})")]
    assert {(r["width"], r["height"]) for r in rows} == {(96, 80), (72, 72)}
    noisy, bm3d = rows[0], rows[1]
    assert bm3d["psnr"] > noisy["psnr"] + 3 and bm3d["s_per_megapixel"] > 0
    # the tiled output is the whole-image output
    clean = torch.from_numpy(np.asarray(Image.open(folder / "a.png"), dtype=np.float32) / 255)[None, None]
    x = F.noisy_copy(F.Gaussian(25, 255), clean, seed=0)
    with torch.no_grad():
        whole = model._reconstruct(x)
    from ae_lightning.metrics import psnr_ssim

    assert float(psnr_ssim(whole.clamp(0, 1), clean)[0][0]) == pytest.approx(rows[2]["psnr"], abs=1e-3)
    with open(tmp_path / "out" / "denoising_fullsize.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    text = (tmp_path / "out" / "denoising_fullsize.md").read_text()
    assert "2 full-size NIH" in text and "AWGN σ=25/255" in text and "BM3D (oracle σ) in PSNR" in text


def test_fullsize_check_without_a_folder_is_one_clear_error(capsys):
    from benchmarks import denoising_fullsize as F

    pytest.importorskip("bm3d")
    assert F.main(["--quick"]) == 2
    assert "pass the folder of full-size X-rays (--data)" in capsys.readouterr().err


def test_fullsize_check_names_every_unreadable_file(tmp_path):
    from benchmarks import denoising_fullsize as F

    (tmp_path / "a.png").write_bytes(b"not a png")
    (tmp_path / "b.jpg").write_bytes(b"nor a jpeg")
    with pytest.raises(ValueError, match=r"2 unreadable image\(s\): a\.png .*; b\.jpg .*fix"):
        F.load_images(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        F.load_images(tmp_path / "empty")
    assert F.main(["--data", str(tmp_path / "empty")]) == 2  # one line on stderr, not a traceback
