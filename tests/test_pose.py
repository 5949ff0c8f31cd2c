"""SYNTHETIC pose data, the multimodal pose autoencoder's stages, the direct regressor, the config and the benchmark."""

from __future__ import annotations

import csv
import math
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from conftest import CONFIGS

from ae_lightning.data import MNISTDataModule, PoseDataModule, SyntheticPoseDataset
from ae_lightning.data.pose import (
    BONE_LENGTHS,
    NUM_JOINTS,
    PARENTS,
    draw_parameters,
    forward_kinematics,
    generate,
    project,
    render,
    to_camera,
)
from ae_lightning.models import MultimodalAutoencoder, PoseRegressor
from ae_lightning.models.multimodal import STAGE_NETS, mpjpe
from ae_lightning.nets import MLP, ConvDecoder, ConvEncoder

SHAPE = (1, 64, 64)
NETS = ("encoder", "decoder", "pose_encoder", "pose_decoder", "mapping")


def bones(poses: torch.Tensor) -> torch.Tensor:
    """Bone lengths (N, J-1) of poses (N, J, 3)."""
    child = [j for j, p in enumerate(PARENTS) if p >= 0]
    return (poses[:, child] - poses[:, [PARENTS[j] for j in child]]).norm(dim=-1)


# --- the data --------------------------------------------------------------------------------------
def test_bone_lengths_are_constant_across_samples_and_azimuths():
    sample = generate(0, "train", range(200))
    expected = torch.tensor([b for b, p in zip(BONE_LENGTHS, PARENTS, strict=True) if p >= 0]).expand(200, -1)
    torch.testing.assert_close(bones(sample["pose"]), expected, atol=1e-5, rtol=0)  # camera frame, any azimuth
    torch.testing.assert_close(bones(sample["body"]), expected, atol=1e-5, rtol=0)
    assert float(sample["azimuth"].std()) > 1.0  # the azimuths do vary (uniform on [0, 2π): std ≈ 1.8)
    assert float(sample["pose"].std(0).mean()) > 0.1  # and so do the poses


def test_poses_are_root_relative():
    pose = SyntheticPoseDataset("val", size=50).poses
    assert pose.shape == (50, NUM_JOINTS, 3)
    assert torch.equal(pose[:, 0], torch.zeros(50, 3))
    assert float(pose[:, 1:].norm(dim=-1).min()) > 0.05  # the other joints are not at the root


def test_the_same_index_gives_the_same_sample():
    small, large = SyntheticPoseDataset("train", size=10), SyntheticPoseDataset("train", size=40)
    alone = generate(0, "train", [7])
    for ds in (small, large):
        image, pose = ds[7]
        torch.testing.assert_close(image, alone["image"][0], atol=1e-6, rtol=0)
        torch.testing.assert_close(pose, alone["pose"][0], atol=1e-6, rtol=0)
    assert not torch.equal(large[7][1], large[8][1])
    assert not torch.equal(SyntheticPoseDataset("train", size=10, seed=1)[7][1], small[7][1])  # the seed matters


def test_splits_draw_from_disjoint_seeds():
    angles = {s: draw_parameters(0, s, np.arange(300))[0] for s in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        # no sample of one split is a sample of another (any index against any index)
        distance = torch.cdist(angles[a], angles[b]).min()
        assert float(distance) > 1e-3, (a, b)
    with pytest.raises(ValueError, match="split must be one of"):
        draw_parameters(0, "training", np.arange(3))


def test_images_are_nonempty_and_draw_the_pose():
    ds = SyntheticPoseDataset("test", size=64)
    assert ds.images.shape == (64, *SHAPE) and float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
    lit = (ds.images > 0.25).flatten(1).sum(1)  # (64,) lit pixels per image
    assert int(lit.min()) > 60, lit.min()  # 15 bones a few pixels wide
    assert int(lit.max()) < 0.5 * 64 * 64
    # every joint's projection lies on the stick figure
    px = project(ds.poses).round().long().clamp(0, 63)  # (N, J, 2) (col, row)
    at_joints = ds.images[torch.arange(64)[:, None], 0, px[..., 1], px[..., 0]]  # (N, J)
    assert float(at_joints.min()) > 0.2


def test_the_projection_turns_with_the_azimuth():
    angles, _ = draw_parameters(0, "train", np.arange(8))
    body = forward_kinematics(angles)  # (8, J, 3)
    az = torch.linspace(0.1, 2.0, 8)

    def image(a):
        return render(project(to_camera(body, a)))

    # half a turn shows the figure from behind: the orthographic image mirrors left-right
    torch.testing.assert_close(image(az + math.pi), image(az).flip(-1), atol=1e-4, rtol=0)
    # a quarter turn shows another image, and the camera-frame pose is the body pose turned about the vertical
    assert float((image(az + math.pi / 2) - image(az)).abs().mean()) > 0.01
    cam = to_camera(body, az)
    torch.testing.assert_close(cam[..., 1], body[..., 1])  # heights do not change
    torch.testing.assert_close(cam.norm(dim=-1), body.norm(dim=-1))  # a rotation
    x, z = body[..., 0], body[..., 2]
    c, s = torch.cos(az)[:, None], torch.sin(az)[:, None]
    torch.testing.assert_close(cam[..., 0], c * x + s * z, atol=1e-5, rtol=0)


def test_datamodule_batches_are_images_and_poses():
    dm = PoseDataModule(train_size=40, val_size=10, test_size=10, batch_size=16)
    dm.setup("fit")
    x, pose = next(iter(dm.train_dataloader()))
    assert x.shape == (16, *SHAPE) and pose.shape == (16, NUM_JOINTS, 3) and pose.dtype == torch.float32
    assert dm.image_shape == SHAPE and dm.pose_dim == 48
    assert len(dm.test_set) == 10
    with pytest.raises(ValueError, match="at least one sample per split"):
        PoseDataModule(val_size=0)


def test_mpjpe_aligns_roots_and_averages_joint_distances():
    target = generate(0, "val", range(4))["pose"]
    shifted = mpjpe(target + torch.tensor([0.3, -0.2, 0.1]), target)
    torch.testing.assert_close(shifted, torch.zeros(4), atol=1e-6, rtol=0)  # a shift costs nothing
    moved = target.clone()
    moved[:, 5, 2] += 0.32  # one joint of 16, 0.32 away
    torch.testing.assert_close(mpjpe(moved, target), torch.full((4,), 0.02))


# --- the model ---------------------------------------------------------------------------------------
def tiny_mmae(**kwargs) -> MultimodalAutoencoder:
    kwargs = {"pretrain_epochs": [1, 1, 1], "finetune_epochs": 1, "optimizer": partial(torch.optim.Adam, lr=3e-3),
              **kwargs}
    return MultimodalAutoencoder(
        ConvEncoder(SHAPE, [4, 8], downsample="stride", code_dim=16), ConvDecoder(SHAPE, [4, 8], code_dim=16),
        pose_encoder=MLP(48, [32, 12]), pose_decoder=MLP(12, [32, 48]), mapping=MLP(16, [32, 12]), **kwargs)


def tiny_data(train_size: int = 128) -> PoseDataModule:
    return PoseDataModule(train_size=train_size, val_size=64, test_size=32, batch_size=32)


def fit(model, data, callbacks=(), max_epochs=None, **kwargs) -> L.Trainer:
    t = L.Trainer(max_epochs=max_epochs or getattr(model, "total_epochs", 1), accelerator="cpu", logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  num_sanity_val_steps=0, callbacks=list(callbacks), **kwargs)
    t.fit(model, data)
    return t


def snapshot(model) -> dict[str, dict[str, torch.Tensor]]:
    return {n: {k: p.detach().clone() for k, p in getattr(model, n).named_parameters()} for n in NETS}


class StageRecorder(L.Callback):
    """Per epoch: the stage, every net's weights at its start and end, and the trainable / train-mode nets in a step."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, model) -> None:
        self.epochs.append({"stage": model.stage, "start": snapshot(model)})

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx) -> None:
        rec = self.epochs[-1]
        rec.setdefault("trainable", {n for n in NETS if any(p.requires_grad for p in getattr(model, n).parameters())})
        rec.setdefault("training", {n for n in NETS if getattr(model, n).training})

    def on_train_epoch_end(self, trainer, model) -> None:
        self.epochs[-1]["end"] = snapshot(model)


def test_each_stage_trains_its_nets_and_leaves_the_others_bit_identical():
    model = tiny_mmae()
    rec = StageRecorder()
    t = fit(model, tiny_data(64), [rec], limit_val_batches=1)
    assert [e["stage"] for e in rec.epochs] == [0, 1, 2, 3]
    assert t.current_epoch == model.total_epochs == 4  # the model ended the fit after its last stage
    for e in rec.epochs:
        moved = {n for n in NETS if any(not torch.equal(e["start"][n][k], e["end"][n][k]) for k in e["start"][n])}
        assert moved == set(STAGE_NETS[e["stage"]]), (e["stage"], moved)
        assert e["trainable"] == e["training"] == set(STAGE_NETS[e["stage"]])
    assert len(t.optimizers) == 4
    for s, opt in enumerate(t.optimizers):
        held = {id(p) for g in opt.param_groups for p in g["params"]}
        assert held == {id(p) for p in model.stage_parameters(s)}


def test_a_stage_with_no_epochs_is_skipped():
    model = tiny_mmae(pretrain_epochs=[1, 0, 1], finetune_epochs=1)
    rec = StageRecorder()
    fit(model, tiny_data(64), [rec], limit_val_batches=0)
    assert [e["stage"] for e in rec.epochs] == [0, 2, 3]
    assert model.schedule_text() == "image: 1, pose: 0, map: 1, finetune: 1"


class ValMPJPE(L.Callback):
    def __init__(self) -> None:
        self.by_epoch: list[tuple[int, float]] = []

    def on_validation_epoch_end(self, trainer, model) -> None:
        self.by_epoch.append((model.stage, float(trainer.callback_metrics["val/mpjpe"])))


def test_finetuning_lowers_the_validation_error():
    torch.manual_seed(0)
    model = tiny_mmae(pretrain_epochs=[2, 4, 2], finetune_epochs=4)
    seen = ValMPJPE()
    fit(model, tiny_data(256), [seen])
    before = [e for s, e in seen.by_epoch if s == 2][-1]  # the chain as pretrained (end of the map stage)
    after = seen.by_epoch[-1][1]
    assert seen.by_epoch[-1][0] == 3
    assert after < 0.9 * before, (before, after)


def test_evaluation_logs_every_stage_and_the_pose_error():
    model = tiny_mmae(pretrain_epochs=[1, 0, 0], finetune_epochs=0)
    t = fit(model, tiny_data(32), limit_val_batches=1)
    metrics = t.callback_metrics
    assert {"val/mpjpe", "val/pose_ae_mpjpe", "val/image_loss", "val/pose_loss", "val/map_loss", "val/finetune_loss",
            "val/psnr", "train/image_loss", "train/stage"} <= set(metrics)
    assert torch.equal(metrics["val/loss"], metrics["val/image_loss"])  # the current stage's loss
    assert all(math.isfinite(float(v)) for v in metrics.values())
    x = torch.rand(3, *SHAPE)
    out = model(x)
    assert out.pose.shape == (3, NUM_JOINTS, 3) and out.reconstruction.shape == (3, *SHAPE)
    torch.testing.assert_close(model.recover_pose(x), out.pose)


def test_mismatched_nets_and_data_fail_clearly():
    with pytest.raises(ValueError, match="mapping output vs the pose code"):
        MultimodalAutoencoder(ConvEncoder(SHAPE, [4], code_dim=16), ConvDecoder(SHAPE, [4], code_dim=16),
                              MLP(48, [32, 12]), MLP(12, [32, 48]), MLP(16, [32, 10]))
    with pytest.raises(ValueError, match="set in_features to 45"):
        MLP(48, [4])(torch.zeros(2, 15, 3))  # a pose net fed 15 joints
    with pytest.raises(ValueError, match=r"\[image, pose, map\]"):
        tiny_mmae(pretrain_epochs=[1, 1])
    with pytest.raises(ValueError, match="3 × joints"):
        MultimodalAutoencoder(ConvEncoder(SHAPE, [4], code_dim=16), ConvDecoder(SHAPE, [4], code_dim=16),
                              MLP(47, [32, 12]), MLP(12, [32, 47]), MLP(16, [32, 12]))
    small = MultimodalAutoencoder(ConvEncoder(SHAPE, [4], code_dim=16), ConvDecoder(SHAPE, [4], code_dim=16),
                                  MLP(45, [32, 12]), MLP(12, [32, 45]), MLP(16, [32, 12]))
    with pytest.raises(ValueError, match="the data's poses have 48"):
        fit(small, tiny_data(32))
    mnist = MultimodalAutoencoder(ConvEncoder((1, 28, 28), [4], code_dim=16), ConvDecoder((1, 28, 28), [4], code_dim=16),
                                  MLP(48, [32, 12]), MLP(12, [32, 48]), MLP(16, [32, 12]))
    with pytest.raises(ValueError, match="PoseDataModule"):
        fit(mnist, MNISTDataModule(batch_size=16, train_size=32), limit_train_batches=1, limit_val_batches=0)


def test_regressor_learns_poses_and_checks_its_head():
    torch.manual_seed(0)
    reg = PoseRegressor(ConvEncoder(SHAPE, [4, 8], downsample="stride", code_dim=16), MLP(16, [32, 48]),
                        optimizer=partial(torch.optim.Adam, lr=3e-3))
    t = fit(reg, tiny_data(1024), max_epochs=4)
    dm = tiny_data(1024)
    dm.setup("fit")
    baseline = float(mpjpe(dm.train_set.poses.mean(0, keepdim=True).expand(64, -1, -1), dm.val_set.poses).mean())
    learned = float(t.callback_metrics["val/mpjpe"])
    assert learned < 0.9 * baseline, (learned, baseline)  # clearly better than predicting the mean training pose
    with pytest.raises(ValueError, match="3 × joints"):
        PoseRegressor(ConvEncoder(SHAPE, [4], code_dim=16), MLP(16, [32, 47]))


# --- the config and the benchmark ------------------------------------------------------------------
def test_the_config_fits_its_four_stages(run_cli):
    run = run_cli(["fit", "--config", str(CONFIGS / "pose_mmae_synthetic.yaml"),
                   "--model.init_args.pretrain_epochs=[1,1,1]", "--model.init_args.finetune_epochs=1",
                   "--data.init_args.train_size=256", "--data.init_args.val_size=32", "--data.init_args.test_size=32",
                   "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                   "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    assert run.trainer.current_epoch == 4 and run.trainer.global_step == 8  # 4 stages × 2 steps, then it stopped
    metrics = run.trainer.callback_metrics
    assert float(metrics["train/stage"]) == 3.0 and math.isfinite(float(metrics["val/mpjpe"]))
    assert run.model.encoder.image_shape == (1, 64, 64)  # from the data block


def test_benchmark_end_to_end_on_a_tiny_budget(tmp_path):
    from conftest import run_benchmark

    from benchmarks import pose

    tiny = dict(data={"train_size": 64, "val_size": 32, "test_size": 32},
                schedule={"pretrain_epochs": [1, 1, 1], "finetune_epochs": 1}, regressor_epochs=1)
    rows = run_benchmark("pose", tmp_path, tiny).rows
    assert [r["method"].split(" ")[0] for r in rows] == ["mean", "pose", "multimodal", "multimodal", "direct"]
    assert all(math.isfinite(r["test_mpjpe"]) and r["test_mpjpe"] > 0 for r in rows)
    mmae, reg = rows[3], rows[4]
    assert 0.5 < mmae["params_inference"] / reg["params_inference"] < 2  # about as many parameters
    assert mmae["params_trained"] > mmae["params_inference"]
    with open(tmp_path / "pose_synthetic.csv") as f:
        assert next(csv.reader(f)) == pose.COLUMNS
    md = (tmp_path / "pose_synthetic.md").read_text()
    assert "SYNTHETIC" in md and "Hong" in md and "not comparable" in md and " wins" in md
    assert (tmp_path / "pose_synthetic.png").stat().st_size > 10_000
