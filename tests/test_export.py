"""``ae-lightning export``: the shipped TorchScript / ONNX file computes what the LightningModule computes."""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch
from conftest import CONFIGS

from ae_lightning.cli import main as cli_main
from ae_lightning.config import instantiate, load_config
from ae_lightning.export import example_input, export

# float32 graphs of the same ops: equal up to summation order
ATOL = {"torchscript": 1e-6, "onnx": 1e-5}


def build(config: str) -> L.LightningModule:
    torch.manual_seed(0)
    return instantiate(load_config(config)["model"], L.LightningModule).eval()


def expected(model, x, part):
    with torch.no_grad():
        model.prediction_kind = "reconstruction"  # a VAE writes samples unless told
        return model.encode(x).flatten(1) if part == "encoder" else model.predict_step(x, 0).values


def run_exported(path, fmt, x):
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("config, part", [("dae_xray64", "model"), ("ae_mnist", "model"), ("ae_mnist", "encoder"),
                                          ("vae_mnist", "model")])
def test_exported_model_matches_the_module(tmp_path, fmt, config, part):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    model = build(config)
    path = export(model, tmp_path / f"m.{fmt}", fmt, part)
    x = example_input(model, batch=3)  # another batch size than the traced one
    torch.testing.assert_close(run_exported(path, fmt, x), expected(model, x, part), atol=ATOL[fmt], rtol=0)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_denoiser_takes_a_larger_image(tmp_path, fmt):
    """The fully convolutional DAE's graph keeps H and W free: a whole 128×96 image, as reconstruct_full runs it."""
    if fmt == "onnx":
        pytest.importorskip("onnx")
    model = build("dae_xray64")
    path = export(model, tmp_path / f"m.{fmt}", fmt)
    x = torch.rand(1, 1, 128, 96)
    with torch.no_grad():
        want = model.reconstruct_full(x).clamp(0, 1)
    torch.testing.assert_close(run_exported(path, fmt, x), want, atol=ATOL[fmt], rtol=0)


def test_export_command_from_a_run(tmp_path):
    """``ae-lightning export --ckpt_path`` finds the run's config.yaml beside the checkpoint."""
    model = build("dae_xray64")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(CONFIGS / "dae_xray64.yaml", run / "config.yaml")
    torch.save({"state_dict": model.state_dict()}, run / "checkpoints" / "last.ckpt")
    cli_main(["export", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    x = example_input(model)
    torch.testing.assert_close(torch.jit.load(str(run / "checkpoints" / "last.model.pt"))(x), expected(model, x, "model"),
                               atol=ATOL["torchscript"], rtol=0)
