"""Stacked autoencoder: greedy layer-wise stages in one fit, frozen layers, optimisers, resume, fine-tuning."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from ae_lightning.data import MNISTDataModule
from ae_lightning.models import KLSparsity, StackedAutoencoder
from ae_lightning.nets import ConvEncoder, MLPDecoder, MLPEncoder
from ae_lightning.noise import Masking

SHAPE = (1, 28, 28)
WIDTHS = [48, 24, 12]


def stacked(widths=WIDTHS, tied=False, **kwargs) -> StackedAutoencoder:
    kwargs = {"pretrain_epochs": 1, "finetune_epochs": 1, "optimizer": partial(torch.optim.Adam, lr=3e-3),
              "hidden_loss": "bce", **kwargs}
    return StackedAutoencoder(MLPEncoder(SHAPE, widths), MLPDecoder(SHAPE, widths, tied=tied), **kwargs)


def data(train_size: int = 256) -> MNISTDataModule:
    return MNISTDataModule(root=None, batch_size=64, train_size=train_size)  # embedded real digits


def trainer(max_epochs: int, tmp_path=None, callbacks=(), **kwargs) -> L.Trainer:
    defaults = dict(logger=False, enable_checkpointing=bool(tmp_path), enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=2)
    defaults.update(kwargs)
    return L.Trainer(max_epochs=max_epochs, accelerator="cpu", default_root_dir=tmp_path, callbacks=list(callbacks),
                     **defaults)


def layer_params(model: StackedAutoencoder, i: int) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": p.detach().clone() for k, p in enumerate(model.stage_parameters(i))}


class Recorder(L.Callback):
    """Per epoch: the stage, parameter snapshots at its start and end, and what was frozen during a step."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, model) -> None:
        self.epochs.append({"stage": model.stage, "start": {i: layer_params(model, i) for i in range(model.depth)},
                            "opt_steps_at_start": [_opt_steps(o) for o in trainer.optimizers]})

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx) -> None:
        rec = self.epochs[-1]
        if "trainable" not in rec:
            rec["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
            rec["training"] = {n for n, m in model.named_modules() if m.training and n}

    def on_train_epoch_end(self, trainer, model) -> None:
        self.epochs[-1]["end"] = {i: layer_params(model, i) for i in range(model.depth)}
        self.epochs[-1]["logged_stage"] = float(model.train_terms["train/stage"])  # the epoch's last step


def _opt_steps(opt: torch.optim.Optimizer) -> int:
    steps = [int(s["step"]) for s in opt.state.values() if "step" in s]
    return max(steps, default=0)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_full_depth_is_the_injected_deep_autoencoder():
    for tied in (False, True):
        model = stacked(tied=tied)
        x = torch.rand(4, *SHAPE)
        code = model.encode(x)
        assert torch.equal(code, model.encoder(x))
        assert torch.allclose(model.decode(code), model.decoder(code))
        assert model.encode(x, depth=1).shape == (4, WIDTHS[0])
        assert model(x, depth=1).reconstruction.shape == (4, *SHAPE)


@pytest.mark.parametrize("tied", [False, True])
def test_stages_train_only_their_layer_and_freeze_the_rest(tied):
    model = stacked(tied=tied, pretrain_epochs=[1, 1, 1], finetune_epochs=1, noise=Masking(0.25))
    rec = Recorder()
    trainer(4, callbacks=[rec]).fit(model, data())
    assert [e["stage"] for e in rec.epochs] == [0, 1, 2, 3]
    assert [e["logged_stage"] for e in rec.epochs] == [0.0, 1.0, 2.0, 3.0]
    for e in rec.epochs[:3]:
        s = e["stage"]
        for i in range(model.depth):
            changed = not same(e["start"][i], e["end"][i])
            # only the stage's own layer moves; earlier (frozen) and later layers are bit-identical
            assert changed == (i == s), (s, i)
        enc_layer = {f"encoder.linears.{s}.weight", f"encoder.linears.{s}.bias"}
        assert enc_layer <= e["trainable"]
        assert not any(n.startswith(f"encoder.linears.{i}.") for n in e["trainable"] for i in range(s))
        # frozen layers are in eval mode, the stage's layer in train mode
        assert f"encoder.linears.{s}" in e["training"]
        assert not any(f"encoder.linears.{i}" in e["training"] for i in range(s))
    finetune = rec.epochs[3]
    assert all(not same(finetune["start"][i], finetune["end"][i]) for i in range(model.depth))
    assert {n for n, _ in model.named_parameters()} == finetune["trainable"]


def test_each_stage_starts_with_fresh_optimiser_state():
    model = stacked(pretrain_epochs=[1, 1, 1], finetune_epochs=1)
    rec = Recorder()
    t = trainer(4, callbacks=[rec])
    t.fit(model, data())
    steps_per_epoch = 4  # 256 images in batches of 64
    assert len(t.optimizers) == 4
    for e in rec.epochs:
        # the optimiser of the stage that starts has never stepped; the earlier ones have, and keep their state
        assert e["opt_steps_at_start"][e["stage"]] == 0
        assert all(n == steps_per_epoch for n in e["opt_steps_at_start"][: e["stage"]])
    # every optimiser holds exactly its stage's parameters
    for s, opt in enumerate(t.optimizers):
        held = {id(p) for g in opt.param_groups for p in g["params"]}
        assert held == {id(p) for p in model.stage_parameters(s)}


def test_resume_mid_run_continues_in_the_right_stage(tmp_path):
    """Stop after 2 epochs of the schedule [layer1: 1, layer2: 2, finetune: 1]; resuming continues
    layer 2's stage with layer 1 frozen and layer 2's optimiser state restored."""
    kwargs = dict(widths=[32, 16], pretrain_epochs=[1, 2], finetune_epochs=1)
    first = stacked(**kwargs)
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(2, tmp_path, callbacks=[ckpt_cb]).fit(first, data())
    ckpt_path = tmp_path / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)  # loads without unpickling code
    assert ckpt["epoch"] == 1 and len(ckpt["optimizer_states"]) == 3
    layer1_at_stop = layer_params(first, 0)

    resumed = stacked(**kwargs)
    rec = Recorder()
    trainer(4, tmp_path, callbacks=[rec]).fit(resumed, data(), ckpt_path=ckpt_path)
    assert [e["stage"] for e in rec.epochs] == [1, 2]
    first_epoch = rec.epochs[0]
    assert same(first_epoch["start"][0], layer1_at_stop)  # restored, and then...
    assert same(first_epoch["end"][0], layer1_at_stop)  # ...frozen through the rest of its later stage
    assert not any(n.startswith("encoder.linears.0.") for n in first_epoch["trainable"])
    assert "encoder.linears.0" not in first_epoch["training"]
    assert first_epoch["opt_steps_at_start"] == [4, 4, 0]  # layer 2's Adam state came back from the checkpoint


def test_testing_a_checkpoint_or_a_trained_model_tests_its_last_stage(tmp_path):
    """``ae-lightning test --ckpt_path`` (and a trained model handed to a new Trainer) starts the Trainer at epoch 0:
    the fine-tuned stack must still be tested as fine-tuned, not as layer 1's autoencoder."""
    kwargs = dict(widths=[32, 16], pretrain_epochs=[1, 1], finetune_epochs=1, finetune="supervised")
    model = stacked(**kwargs)
    trainer(3, tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)]).fit(model, data())
    fresh = trainer(1, limit_test_batches=2)
    fresh.test(model, data())
    assert "test/accuracy" in fresh.callback_metrics and "test/layer1_loss" not in fresh.callback_metrics
    loaded = trainer(1, limit_test_batches=2)
    loaded.test(stacked(**kwargs), data(), ckpt_path=tmp_path / "last.ckpt")
    assert "test/accuracy" in loaded.callback_metrics
    mid = stacked(**kwargs)  # a checkpoint from layer 2's stage tests layer 2
    trainer(2, tmp_path / "mid", callbacks=[ModelCheckpoint(dirpath=tmp_path / "mid", save_last=True)]).fit(mid, data())
    again = trainer(1, limit_test_batches=2)
    again.test(stacked(**kwargs), data(), ckpt_path=tmp_path / "mid" / "last.ckpt")
    assert "test/layer2_loss" in again.callback_metrics


def test_supervised_finetuning_learns_digits():
    model = stacked(widths=[64, 32], pretrain_epochs=[1, 1], finetune_epochs=4, finetune="supervised",
                    noise=Masking(0.25), finetune_optimizer=partial(torch.optim.Adam, lr=1e-2))
    t = trainer(6, limit_val_batches=None)
    t.fit(model, data(train_size=1024))
    acc = float(t.callback_metrics["val/accuracy"])
    assert acc > 0.6, acc  # chance is 0.1
    assert "train/finetune_loss" in t.callback_metrics and "train/layer1_loss" in t.callback_metrics


def test_sparse_stacks_log_activity():
    model = stacked(widths=[32, 16], pretrain_epochs=[1, 1], finetune_epochs=0, sparsity=KLSparsity(0.05, 0.1))
    t = trainer(2)
    t.fit(model, data())
    assert {"train/layer2_sparsity", "train/layer2_recon", "train/layer2_mean_activation"} <= set(t.callback_metrics)


def test_supervised_needs_labels():
    model = stacked(widths=[16], pretrain_epochs=0, finetune_epochs=1, finetune="supervised")
    x = torch.rand(4, *SHAPE)
    with pytest.raises(ValueError, match="labelled data"):
        model.stage_forward(x, torch.full((4,), -1), stage=1, generator=None)


def test_bad_nets_and_schedules_fail_at_construction():
    with pytest.raises(TypeError, match="MLPEncoder"):
        StackedAutoencoder(ConvEncoder(SHAPE, [8, 8], code_dim=16), MLPDecoder(SHAPE, [16]))
    with pytest.raises(ValueError, match="widths"):
        StackedAutoencoder(MLPEncoder(SHAPE, [32, 16]), MLPDecoder(SHAPE, [32, 8]))
    with pytest.raises(ValueError, match="one epoch count >= 0 per layer"):
        stacked(pretrain_epochs=[1, 1])


def test_features_benchmark_probes_and_finetunes_the_sdae(tmp_path):
    """benchmarks/features.py end to end on a tiny budget: the SDAE config at the common code size."""
    import csv

    from conftest import run_benchmark

    from benchmarks import core, features

    cfg = core.load_settings("features", "quick")
    sdae_only = [m for m in cfg["models"] if m["config"] == "stacked_dae_mnist"]
    # the config's own schedule on 512 digits (a few seconds): enough for the head to learn
    rows = run_benchmark("features", tmp_path, {"models": sdae_only, "probe.max_iter": 20, "train_size": 512,
                                                "epoch_scale": 1.0}).rows
    assert [r["model"] for r in rows] == ["raw pixels", "PCA", "stacked DAE", "same net from random init"]
    sdae, scratch = rows[2], rows[3]
    assert scratch["config"] == "configs/stacked_dae_mnist.yaml (pretrain_epochs [0, 0, 0])"
    assert 0.0 <= scratch["finetune_error"] < 0.9  # fine-tuned from random init: a row of its own
    assert sdae["code_dim"] == cfg["code_dim"] and sdae["train_size"] == 512
    # smoke bounds only (chance: 0.9 error, 0.1 accuracy): 512 digits and this schedule are too little for the
    # fine-tuned SDAE to beat raw pixels (≈ 50 % error against an ≈ 83 % pixel probe); that claim is the slow
    # test_finetuned_sdae_beats_a_linear_probe_on_raw_pixels
    assert 0.0 <= sdae["finetune_error"] < 0.75 and sdae["probe_accuracy"] > 0.2
    with open(tmp_path / "features_mnist.csv") as f:
        assert next(csv.reader(f)) == features.COLUMNS
    md = (tmp_path / "features_mnist.md").read_text()
    assert "| 1.28 |" in md  # the paper anchor beside ours
    said = "beats" if sdae["finetune_error"] < scratch["finetune_error"] else "does not beat"
    assert f"the stacked DAE fine-tuned ({100 * sdae['finetune_error']:.2f} % test error) {said} the same net" in md
    assert (tmp_path / "features_mnist_embedding.png").stat().st_size > 10_000


@pytest.mark.slow
def test_finetuned_sdae_beats_a_linear_probe_on_raw_pixels(tmp_path):
    """What supervised fine-tuning is for: the SDAE config with its own schedule (5 + 5 + 5 pretraining epochs,
    15 fine-tuning epochs), on 3,000 of the embedded set's training digits, classifies the test digits better than
    the benchmark's linear probe (``benchmarks.features.linear_probe``: logistic regression on standardised raw
    pixels, L2 chosen on val) trained on the same digits. Slow tier: the fast tier's budget (512 digits, or a
    quarter of the schedule on 3,000) leaves the fine-tuned net below raw pixels."""
    from conftest import run_benchmark

    from benchmarks import core

    sdae_only = [m for m in core.load_settings("features", "quick")["models"] if m["name"] == "stacked DAE"]
    rows = run_benchmark("features", tmp_path, {"models": sdae_only, "train_size": 3000, "epoch_scale": 1.0}).rows
    raw, sdae = rows[0], rows[-1]
    assert raw["model"] == "raw pixels" and raw["train_size"] == sdae["train_size"] == 3000
    assert 1 - sdae["finetune_error"] > raw["probe_accuracy"], (sdae["finetune_error"], raw["probe_accuracy"])


@pytest.mark.slow
def test_quick_features_sdae_beats_the_raw_pixel_probe():
    """On the committed (regenerated) quick CSV the fine-tuned stacked DAE's test error is below the raw-pixel
    linear probe's: the supervised fine-tune must add something to what a linear model reads off the pixels."""
    import csv

    from benchmarks import core

    with (core.RESULTS / "features_mnist.csv").open() as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    raw_error = 1 - float(rows["raw pixels"]["probe_accuracy"])
    assert float(rows["stacked DAE"]["finetune_error"]) < raw_error
