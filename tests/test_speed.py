"""Speed options (``speed.*``): channels-last weights, compiled nets, device-resident in-memory batches. On the
CPU: the same numbers and the same checkpoints as without them; the GPU tier (tests/test_gpu.py) runs them on CUDA."""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS

from ae_lightning.data.common import ArrayImageDataset, BatchGather, random_hflip

CONV = str(CONFIGS / "conv_ae_mnist.yaml")
SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
         "--data.init_args.batch_size=16", "--trainer.enable_progress_bar=false", "--image_grid.num_images=0"]


def fit(run_cli, *speed: str):
    run = run_cli(["fit", "--config", CONV, *SHORT, *speed])
    return run, {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_channels_last_keeps_the_numbers_and_the_checkpoint(run_cli):
    _, plain = fit(run_cli)
    run, fast = fit(run_cli, "--speed.channels_last=true")
    conv = next(m for m in run.model.encoder.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert plain.keys() == fast.keys()
    for k in plain:  # three Adam steps from the same seed: float rounding only
        assert torch.allclose(plain[k], fast[k], atol=1e-5), k


def test_device_resident_gather_is_the_same_batch_and_leaves_the_split_alone():
    images, labels = torch.rand(10, 1, 4, 4), torch.arange(10)
    split = ArrayImageDataset(images, labels)
    gather = BatchGather(split, torch.device("cpu"))
    x, y = gather.__getitems__([3, 1, 7])
    assert torch.equal(x, images[[3, 1, 7]]) and torch.equal(y, labels[[3, 1, 7]])
    assert torch.equal(gather[[3, 1, 7]][0], x)  # a whole batch from a batch-yielding sampler
    assert split.images is images  # the DataModule's split is not moved
    flipped = random_hflip(x)  # drawn where the batch is
    assert flipped.device == x.device
    assert all(torch.equal(f, a) or torch.equal(f, a.flip(-1)) for f, a in zip(flipped, x, strict=True))


@pytest.mark.slow
def test_compiled_nets_keep_the_numbers_and_the_checkpoint(run_cli):
    _, plain = fit(run_cli)
    run, fast = fit(run_cli, "--speed.compile=true")
    assert any(getattr(m, "_compiled_call_impl", None) is not None for m in run.model.children())
    assert plain.keys() == fast.keys()  # checkpoints load in an uncompiled model
    for k in plain:
        assert torch.allclose(plain[k], fast[k], atol=1e-4), k
