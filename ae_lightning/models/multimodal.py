"""Multimodal deep autoencoder for 2-D → 3-D human pose recovery (Hong, Yu, Wan, Tao & Wang, IEEE TIP 2015).

The lecture's four steps, as four stages of one ``Trainer.fit``:

1. ``image``: an autoencoder learns codes of the 2-D images (``encoder`` / ``decoder``, image reconstruction);
2. ``pose``: an autoencoder learns codes of the 3-D poses (``pose_encoder`` / ``pose_decoder``, pose
   reconstruction) — the pose code is a low-dimensional description of plausible poses;
3. ``map``: a network (``mapping``) maps image codes to pose codes (regression in code space, both
   autoencoders frozen);
4. ``finetune``: the chain image → ``encoder`` → code → ``mapping`` → pose code → ``pose_decoder`` → pose is
   fine-tuned end to end by backpropagation on the 3-D pose error.

Why one LightningModule with staged training rather than a sequence of fits: the stages share nets (the
image encoder of stage 1 is the one stage 3 reads and stage 4 fine-tunes), so one module holds them and one
config states the whole recipe; the stage follows from the epoch (:class:`~ae_lightning.models.staged.StagedTraining`,
the schedule mechanism of the stacked autoencoder), so a killed run resumes in the right stage with the right
frozen set and each stage's optimiser state; and the fit ends itself after the last stage. A stage with 0
epochs is skipped (``finetune_epochs: 0`` gives the model *before* fine-tuning).

Metrics: ``{split}/mpjpe`` (mean per-joint position error of the chain's pose, in the data's units — skeleton
units for :class:`~ae_lightning.data.PoseDataModule`'s SYNTHETIC figures), ``{split}/pose_ae_mpjpe`` (the pose
autoencoder's reconstruction error: the floor its code leaves), ``{split}/{stage}_loss`` for the stages and
``{split}/loss`` the current stage's loss; outside training every stage's loss is measured, so all curves are
continuous. :class:`PoseRegressor` is the direct baseline: an image net regressing the pose, no codes.

Example (the nets of ``configs/pose_mmae_synthetic.yaml``)::

    mmae = MultimodalAutoencoder(
        ConvEncoder((1, 64, 64), [16, 32, 32], downsample="stride", code_dim=128),
        ConvDecoder((1, 64, 64), [16, 32, 32], code_dim=128),
        pose_encoder=MLP(48, [128, 24]), pose_decoder=MLP(24, [128, 48]), mapping=MLP(128, [256, 24]),
        pretrain_epochs=[10, 10, 10], finetune_epochs=20)
    L.Trainer().fit(mmae, PoseDataModule())   # stops after the 50 epochs of the schedule
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ae_lightning.batch import images_of, labels_of
from ae_lightning.hparams import hyperparameter_names, init_parameters
from ae_lightning.losses import ReconstructionLoss, reconstruction_loss
from ae_lightning.models.base import Autoencoder, AutoencoderOutput
from ae_lightning.models.staged import StagedTraining
from ae_lightning.optim import LRSchedulerCallable, OptimizerCallable, configure

STAGES = ("image", "pose", "map", "finetune")
#: the nets each stage trains (the rest frozen: no gradient, eval mode)
STAGE_NETS = {0: ("encoder", "decoder"), 1: ("pose_encoder", "pose_decoder"), 2: ("mapping",),
              3: ("encoder", "mapping", "pose_decoder")}


def mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error of poses (B, J, 3), in their units, per sample (B,): the Euclidean distance
    of each joint averaged over the joints, after moving each predicted pose's root onto the target's
    (protocol 1 of Human3.6M; the SYNTHETIC targets are root-relative, so this centres the prediction)."""
    pred = pred - pred[:, :1] + target[:, :1]  # (B, J, 3)
    return (pred - target).norm(dim=-1).mean(dim=-1)  # (B,)


def poses_of(batch, pose_dim: int, who: str) -> torch.Tensor:
    """The batch's 3-D poses (B, J, 3), with one clear error for other targets (dtype and shape only: no host sync)."""
    pose = labels_of(batch)
    if (pose is None or not pose.is_floating_point() or pose.ndim != 3 or pose.shape[-1] != 3
            or pose.shape[1] * 3 != pose_dim):
        got = "no targets" if pose is None else f"targets of shape {list(pose.shape)} ({pose.dtype})"
        raise ValueError(f"{who} needs batches (images, poses (B, {pose_dim // 3}, 3)); the data yield {got}; "
                         "fix: use ae_lightning.data.PoseDataModule (or data with 3-D joint positions), and nets "
                         "built for its number of joints")
    return pose


def log_pose_error(module: L.LightningModule, pred: torch.Tensor, pose: torch.Tensor, split: str,
                   name: str = "mpjpe") -> torch.Tensor:
    """Log ``{split}/{name}``, the batch's mean per-joint position error (epoch mean weighted by batch size)."""
    err = mpjpe(pred.detach().float(), pose.float()).mean()
    train = split == "train"
    module.log(f"{split}/{name}", err, on_step=False, on_epoch=True, prog_bar=name == "mpjpe" and not train,
               sync_dist=not train, batch_size=pose.shape[0])
    return err


@dataclass
class MultimodalOutput(AutoencoderOutput):
    """A forward pass: ``reconstruction`` / ``code`` of the image autoencoder, ``pose_code`` the mapped code and
    ``pose`` (B, J, 3) the pose the chain recovers; ``pose_reconstruction`` the pose autoencoder's reconstruction
    of the true pose (when it was computed)."""

    pose: torch.Tensor | None = None
    pose_code: torch.Tensor | None = None
    pose_reconstruction: torch.Tensor | None = None


class MultimodalAutoencoder(StagedTraining, Autoencoder):
    """Image autoencoder + pose autoencoder + code mapping, pretrained stage by stage, then fine-tuned end to end.

    Args:
        encoder, decoder: the image autoencoder (vector codes: e.g. ``ConvEncoder`` / ``ConvDecoder`` with
            ``code_dim``); ``encoder`` is the first link of the recovery chain.
        pose_encoder, pose_decoder: the pose autoencoder on flattened poses (``MLP``, ``in_features`` = 3 × joints).
        mapping: image code → pose code (``MLP``).
        pretrain_epochs: epochs of the ``image``, ``pose`` and ``map`` stages (an int: the same for each).
        finetune_epochs: epochs of end-to-end fine-tuning (0: none, the chain as pretrained).
        loss: the image reconstruction loss (``bce`` for a sigmoid decoder); poses and codes use the MSE.
        optimizer: each pretraining stage's optimiser (a fresh one per stage); ``finetune_optimizer``
            fine-tuning's (default: ``optimizer``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        pose_encoder: nn.Module,
        pose_decoder: nn.Module,
        mapping: nn.Module,
        pretrain_epochs: int | list[int] = 1,
        finetune_epochs: int = 1,
        loss: ReconstructionLoss = "bce",
        optimizer: OptimizerCallable = torch.optim.Adam,
        finetune_optimizer: OptimizerCallable | None = None,
    ) -> None:
        epochs = [pretrain_epochs] * 3 if isinstance(pretrain_epochs, int) else list(pretrain_epochs)
        if len(epochs) != 3 or min(epochs) < 0 or finetune_epochs < 0:
            raise ValueError(
                "pretrain_epochs must list the epochs of the image, pose and map stages ([image, pose, map], each "
                f">= 0) and finetune_epochs must be >= 0; got pretrain_epochs={pretrain_epochs}, "
                f"finetune_epochs={finetune_epochs}"
            )
        sizes = {  # (what, size it has, size it must have)
            "mapping input vs the image code": (getattr(mapping, "in_features", None), getattr(encoder, "code_dim", None)),
            "mapping output vs the pose code": (getattr(mapping, "out_features", None),
                                                getattr(pose_encoder, "out_features", None)),
            "pose decoder input vs the pose code": (getattr(pose_decoder, "in_features", None),
                                                    getattr(pose_encoder, "out_features", None)),
            "pose decoder output vs the pose encoder input": (getattr(pose_decoder, "out_features", None),
                                                              getattr(pose_encoder, "in_features", None)),
        }
        for what, (has, want) in sizes.items():
            if has is not None and want is not None and has != want:
                raise ValueError(f"MultimodalAutoencoder: {what}: {has} != {want}; fix: make the nets' sizes agree "
                                 "(mapping: in_features = encoder code_dim, widths[-1] = pose code size)")
        pose_dim = getattr(pose_encoder, "in_features", None)
        if pose_dim is None or pose_dim % 3:
            raise ValueError(f"pose_encoder must be a vector net (e.g. ae_lightning.nets.MLP) taking 3 × joints "
                             f"features; got {type(pose_encoder).__name__} with in_features={pose_dim}")
        super().__init__(encoder, decoder, loss=loss, optimizer=optimizer)
        self.automatic_optimization = False
        self.finetune_optimizer = finetune_optimizer or optimizer
        self.pose_encoder, self.pose_decoder, self.mapping = pose_encoder, pose_decoder, mapping
        self.pretrain_epochs = epochs
        self.pose_dim = pose_dim

    # --- the schedule (StagedTraining runs it) -------------------------------------------------------
    @property
    def stage_epochs(self) -> list[int]:
        return [*self.pretrain_epochs, self.hparams.finetune_epochs]

    def stage_name(self, stage: int) -> str:
        return STAGES[stage]

    def stage_optimizers(self) -> list[OptimizerCallable]:
        return [self.optimizer] * 3 + [self.finetune_optimizer]

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        return [p for name in STAGE_NETS[stage] for p in getattr(self, name).parameters()]

    def apply_stage(self, stage: int) -> None:
        """Only ``stage``'s nets take gradients and run in train mode; the others are frozen and in eval mode."""
        self.freeze_all_but(self.stage_parameters(stage))
        for name in ("encoder", "decoder", "pose_encoder", "pose_decoder", "mapping"):
            getattr(self, name).train(name in STAGE_NETS[stage])

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data_dim = getattr(self.trainer.datamodule, "pose_dim", None) if self._trainer else None
        if data_dim is not None and data_dim != self.pose_dim:
            raise ValueError(f"the pose nets take {self.pose_dim} features ({self.pose_dim // 3} joints) but the data's "
                             f"poses have {data_dim}; fix: set pose_encoder in_features and the pose_decoder's last "
                             f"width to {data_dim}")

    # --- the chain ---------------------------------------------------------------------------------
    def decode_pose(self, pose_code: torch.Tensor) -> torch.Tensor:
        return self.pose_decoder(pose_code).view(pose_code.shape[0], -1, 3)  # (B, J, 3)

    def recover_pose(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) → code → pose code → 3-D pose (B, J, 3): what the model is for."""
        return self.decode_pose(self.mapping(self.encode(x)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> MultimodalOutput:
        code = self.encode(x)  # (B, D_image)
        pose_code = self.mapping(code)  # (B, D_pose)
        return MultimodalOutput(reconstruction=self.decode(code), code=code, input=x,
                                pose_code=pose_code, pose=self.decode_pose(pose_code))

    # --- one routine for all splits -----------------------------------------------------------------
    def stage_loss(self, x: torch.Tensor, pose: torch.Tensor, stage: int) -> torch.Tensor:
        """The loss stage ``stage`` trains on, for images ``x`` (B, C, H, W) and poses (B, J, 3)."""
        if stage == 0:
            return reconstruction_loss(self.decode(self.encode(x)), x, self.hparams.loss)
        if stage == 1:
            return F.mse_loss(self.decode_pose(self.pose_encoder(pose)), pose)
        if stage == 2:
            with torch.no_grad():  # both autoencoders are frozen: they give the mapping's input and target
                code, target = self.encode(x), self.pose_encoder(pose)  # (B, D_image), (B, D_pose)
            return F.mse_loss(self.mapping(code), target)
        return F.mse_loss(self.recover_pose(x), pose)

    def shared_step(self, batch, stage: str) -> MultimodalOutput | torch.Tensor:
        x = images_of(batch)  # (B, C, H, W)
        pose = poses_of(batch, self.pose_dim, type(self).__name__)  # (B, J, 3)
        s, train = self.stage, stage == "train"
        name = self.stage_name(s)
        if train:  # the current stage only
            loss = self.stage_loss(x, pose, s)
            self.log_terms("train", {f"{name}_loss": loss, "loss": loss, "stage": float(s)}, x.shape[0])
            return loss
        # evaluation: every stage's loss from one pass, the chain's pose error and the image autoencoder's quality
        out = self(x)
        pose_code = self.pose_encoder(pose)  # (B, D_pose)
        out.pose_reconstruction = self.decode_pose(pose_code)  # (B, J, 3)
        losses = {
            "image": reconstruction_loss(out.reconstruction, x, self.hparams.loss),
            "pose": F.mse_loss(out.pose_reconstruction, pose),
            "map": F.mse_loss(out.pose_code, pose_code),
            "finetune": F.mse_loss(out.pose, pose),
        }
        out.losses = {"loss": losses[name], **{f"{k}_loss": v for k, v in losses.items()}}
        self.log_terms(stage, out.losses, x.shape[0])
        log_pose_error(self, out.pose, pose, stage)
        log_pose_error(self, out.pose_reconstruction, pose, stage, "pose_ae_mpjpe")
        self.update_image_metrics(stage, out.reconstruction, x)
        return out

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.shared_step(batch, "train")
        self.step_stage(loss)
        return loss.detach()


class PoseRegressor(L.LightningModule):
    """The direct baseline: an image net and a head regress the 3-D pose (B, J, 3) on the MSE, no codes, no stages.

    Args:
        encoder: image net to a vector (e.g. ``ConvEncoder`` with ``code_dim``, the MMAE's image encoder).
        head: vector → 3 × joints (e.g. ``MLP``).
        optimizer, lr_scheduler: as for every module (:mod:`ae_lightning.optim`).

    Logs ``{split}/loss`` (pose MSE) and ``{split}/mpjpe``.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, optimizer: OptimizerCallable = torch.optim.Adam,
                 lr_scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__()
        plain = set(hyperparameter_names(type(self)))
        self.save_hyperparameters(ignore=[n for n in init_parameters(type(self)) if n not in plain])
        self.encoder, self.head = encoder, head
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.pose_dim = getattr(head, "out_features", None)
        if self.pose_dim is None or self.pose_dim % 3:
            raise ValueError(f"PoseRegressor's head must output 3 × joints features (e.g. an MLP whose last width "
                             f"is 48 for 16 joints); got {type(head).__name__} with out_features={self.pose_dim}")

    def setup(self, stage: str) -> None:
        """One clear error when the data's images or poses are not the ones the nets were built for."""
        data = self.trainer.datamodule if self._trainer else None
        net_shape, data_shape = getattr(self.encoder, "image_shape", None), getattr(data, "image_shape", None)
        if net_shape is not None and data_shape is not None and tuple(net_shape) != tuple(data_shape):
            raise ValueError(f"PoseRegressor: the encoder takes images {list(net_shape)} but the data yield "
                             f"{list(data_shape)}; fix: set the encoder's image_shape to {list(data_shape)}")
        data_dim = getattr(data, "pose_dim", None)
        if data_dim is not None and data_dim != self.pose_dim:
            raise ValueError(f"PoseRegressor: the head outputs {self.pose_dim} features but the data's poses have "
                             f"{data_dim}; fix: set the head's last width to {data_dim}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)).view(x.shape[0], -1, 3)  # (B, J, 3)

    def shared_step(self, batch, stage: str) -> torch.Tensor:
        x = images_of(batch)  # (B, C, H, W)
        pose = poses_of(batch, self.pose_dim, type(self).__name__)  # (B, J, 3)
        pred = self(x)  # (B, J, 3)
        loss = F.mse_loss(pred, pose)
        train = stage == "train"
        self.log(f"{stage}/loss", loss.detach(), on_step=train, on_epoch=True, prog_bar=True, sync_dist=not train,
                 batch_size=x.shape[0])
        log_pose_error(self, pred, pose, stage)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def configure_optimizers(self):
        return configure(self._trainer, self.parameters(), self.optimizer, self.lr_scheduler)
