"""Stacked autoencoder with greedy layer-wise pretraining, then fine-tuning, in one ``Trainer.fit``.

The lecture's three steps (Bengio et al. 2007; Vincent et al. 2010 for the denoising variant):

1. train a one-layer autoencoder on the input ``x`` → code ``h1``;
2. freeze it and train the next one-layer autoencoder on ``h1`` → ``h2``, and so on;
3. fine-tune the whole stack with backpropagation: ``reconstruction`` through the deep autoencoder
   or ``supervised`` with a linear classifier head on the top code (cross-entropy on the labels).

The nets are an injected :class:`~ae_lightning.nets.MLPEncoder` / :class:`~ae_lightning.nets.MLPDecoder`
pair: pretraining stage ``i`` trains encoder layer ``i`` together with its mirror image in the
decoder, so after pretraining the pair *is* the deep autoencoder that fine-tuning trains. The
schedule is in epochs: ``pretrain_epochs[i]`` epochs for layer ``i``, then ``finetune_epochs``;
the stage follows from ``current_epoch``, so a run resumed from a checkpoint continues in the
right stage with the right frozen set, and the module ends the fit after its last stage (no
``trainer.max_epochs`` to keep in step with the schedule). Each stage has its own optimiser (``configure_optimizers``
returns one per stage; manual optimisation steps the current one), so a stage starts with fresh
optimiser state and every optimiser's state is checkpointed. The schedule mechanism is
:class:`~ae_lightning.models.staged.StagedTraining`, shared with the multimodal pose autoencoder. Example::

    sdae = StackedAutoencoder(MLPEncoder((1, 28, 28), [1000, 1000, 1000]), MLPDecoder((1, 28, 28), [1000, 1000, 1000]),
                              pretrain_epochs=[10, 10, 10], finetune_epochs=30, finetune="supervised",
                              noise=Masking(0.25), loss="bce", hidden_loss="bce")
    L.Trainer().fit(sdae, MNISTDataModule())   # stops after the 60 epochs of the schedule
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ae_lightning.batch import images_of, labels_of
from ae_lightning.losses import ReconstructionLoss, reconstruction_loss
from ae_lightning.models.base import Autoencoder, AutoencoderOutput
from ae_lightning.models.sparse import SparsityPenalty, activation_stats
from ae_lightning.models.staged import StagedTraining
from ae_lightning.nets import MLPDecoder, MLPEncoder
from ae_lightning.noise import NoiseModel
from ae_lightning.optim import OptimizerCallable

Finetune = Literal["reconstruction", "supervised"]


@dataclass
class StackedOutput(AutoencoderOutput):
    """A stage's forward pass: ``reconstruction`` of ``target`` (the clean input of the layer being
    trained: flattened pixels for layer 0, the previous code above), and class ``logits`` when the
    supervised fine-tuning stage ran; outside training, ``stack_reconstruction`` is the clean image
    reconstructed through the layers trained so far (scored by PSNR/SSIM and shown in the image grid)."""

    target: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    stack_reconstruction: torch.Tensor | None = None


class StackedAutoencoder(StagedTraining, Autoencoder):
    """Greedy layer-wise pretrained deep MLP autoencoder (optionally denoising and/or sparse per layer).

    Args:
        encoder, decoder: an ``MLPEncoder`` and an ``MLPDecoder`` with the same ``widths`` (one
            pretraining stage per width); a tied decoder shares the encoder's weights.
        pretrain_epochs: epochs per pretraining stage, one entry per layer (an int: the same for all).
        finetune_epochs: epochs of fine-tuning after the last stage (0: none).
        finetune: ``reconstruction`` (the whole deep autoencoder) or ``supervised`` (a linear
            classifier head on the top code, cross-entropy with the DataModule's labels).
        num_classes: classes of the supervised head.
        noise: corruption of each pretraining stage's input (stacked *denoising* autoencoder,
            e.g. :class:`~ae_lightning.noise.Masking`); the stage reconstructs the clean input.
        sparsity: penalty on each pretraining stage's code (stacked *sparse* autoencoder).
        loss: reconstruction loss on pixels (layer 0 and reconstruction fine-tuning).
        hidden_loss: reconstruction loss for the codes of the layers above (``bce`` suits sigmoid codes).
        optimizer: optimiser of each pretraining stage (default Adam); ``finetune_optimizer`` that of
            fine-tuning (default: ``optimizer``). Each stage gets a fresh one.

    Logs ``train/stage`` (0 … L-1 pretraining layer, L fine-tuning), the per-stage losses
    ``{split}/layer{i}_loss`` (1-based) and ``{split}/finetune_loss`` (plus ``{split}/accuracy`` when
    supervised), and ``{split}/loss``, the current stage's loss.
    """

    def __init__(
        self,
        encoder: MLPEncoder,
        decoder: MLPDecoder,
        pretrain_epochs: int | list[int] = 1,
        finetune_epochs: int = 1,
        finetune: Finetune = "reconstruction",
        num_classes: int = 10,
        noise: NoiseModel | None = None,
        sparsity: SparsityPenalty | None = None,
        loss: ReconstructionLoss = "bce",
        hidden_loss: ReconstructionLoss = "mse",
        optimizer: OptimizerCallable = torch.optim.Adam,
        finetune_optimizer: OptimizerCallable | None = None,
        active_threshold: float = 0.5,
    ) -> None:
        if not isinstance(encoder, MLPEncoder) or not isinstance(decoder, MLPDecoder):
            raise TypeError(
                "StackedAutoencoder pretrains fully connected layers one at a time: it needs an MLPEncoder and an "
                f"MLPDecoder, got {type(encoder).__name__} and {type(decoder).__name__}"
            )
        if encoder.widths != decoder.widths:
            raise ValueError(f"encoder widths {encoder.widths} and decoder widths {decoder.widths} must be equal")
        depth = len(encoder.widths)
        epochs = [pretrain_epochs] * depth if isinstance(pretrain_epochs, int) else list(pretrain_epochs)
        if len(epochs) != depth or min(epochs) < 0 or finetune_epochs < 0:
            raise ValueError(
                f"pretrain_epochs must list one epoch count >= 0 per layer ({depth} layers: {encoder.widths}) "
                f"and finetune_epochs must be >= 0; got pretrain_epochs={pretrain_epochs}, finetune_epochs={finetune_epochs}"
            )
        if finetune not in ("reconstruction", "supervised"):
            raise ValueError(f"finetune must be 'reconstruction' or 'supervised', got {finetune!r}")
        super().__init__(encoder, decoder, loss=loss, optimizer=optimizer)
        self.finetune_optimizer = finetune_optimizer or optimizer
        self.automatic_optimization = False
        self.noise = noise
        self.sparsity = sparsity
        self.depth = depth
        self.pretrain_epochs = epochs
        self.head = nn.Linear(encoder.code_dim, num_classes) if finetune == "supervised" else None

    # --- the schedule (StagedTraining runs it) -------------------------------------------------------
    @property
    def stage_epochs(self) -> list[int]:
        """One pretraining stage per layer, then fine-tuning when ``finetune_epochs > 0``."""
        finetune = self.hparams.finetune_epochs
        return [*self.pretrain_epochs, *([finetune] if finetune > 0 else [])]

    def stage_name(self, stage: int) -> str:
        return f"layer{stage + 1}" if stage < self.depth else "finetune"

    def stage_optimizers(self) -> list[OptimizerCallable]:
        return [self.optimizer] * self.depth + ([self.finetune_optimizer] if self.hparams.finetune_epochs > 0 else [])

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        """What stage ``stage`` optimises: encoder layer ``i`` and its mirror decoder layer, or everything."""
        if stage >= self.depth:
            nets = [self.encoder, self.head] if self.head is not None else [self.encoder, self.decoder]
            return [p for net in nets for p in net.parameters()]
        j = self.depth - 1 - stage  # the decoder's layers run in reverse
        mirror = self.decoder.biases[j : j + 1] if self.decoder.tied else self.decoder.linears[j].parameters()
        return [*self.encoder.linears[stage].parameters(), *mirror]

    def apply_stage(self, stage: int) -> None:
        """Freeze everything but ``stage``'s parameters: no gradient, eval mode (frozen layers stay bit-identical)."""
        self.freeze_all_but(self.stage_parameters(stage))
        for i in range(self.depth):
            active = stage >= self.depth or i == stage
            j = self.depth - 1 - i
            decoder_layer = [] if self.decoder.tied else [self.decoder.linears[j]]
            for module in (self.encoder.linears[i], self.encoder.activations[i], *decoder_layer,
                           self.decoder.activations[j]):
                module.train(active)
        if self.head is not None:
            self.head.train(stage >= self.depth)

    # --- the layers -----------------------------------------------------------------------------
    def encode_layer(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.encoder.activations[i](self.encoder.linears[i](h))  # (B, widths[i])

    def decode_layer(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Inverse of encoder layer ``i``: ``(B, widths[i])`` → ``(B, widths[i-1])`` (flat pixels for ``i = 0``)."""
        j = self.depth - 1 - i
        if self.decoder.tied:
            weight, bias = self.encoder.linears[i].weight.t(), self.decoder.biases[j]
        else:
            weight, bias = self.decoder.linears[j].weight, self.decoder.linears[j].bias
        return self.decoder.activations[j](F.linear(h, weight, bias))

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None, depth: int | None = None) -> torch.Tensor:
        """The code after the first ``depth`` layers (all by default); ``depth=0`` gives the flat pixels."""
        h = x.flatten(1)  # (B, C*H*W)
        for i in range(self.depth if depth is None else depth):
            h = self.encode_layer(i, h)
        return h  # (B, widths[depth-1])

    def decode(self, code: torch.Tensor, cond: torch.Tensor | None = None, depth: int | None = None) -> torch.Tensor:
        h = code
        for i in reversed(range(self.depth if depth is None else depth)):
            h = self.decode_layer(i, h)
        return h.view(-1, *self.encoder.image_shape)  # (B, C, H, W)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None, depth: int | None = None) -> AutoencoderOutput:
        """Reconstruct through the first ``depth`` layers of the stack (the whole deep autoencoder by default)."""
        code = self.encode(x, depth=depth)
        return AutoencoderOutput(reconstruction=self.decode(code, depth=depth), code=code, input=x, condition=cond)

    def condition(self, batch) -> torch.Tensor | None:
        """The class labels for supervised fine-tuning; ``None`` otherwise."""
        return labels_of(batch) if self.head is not None else None

    def corrupt_layer(self, i: int, h: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Stage ``i``'s input with the denoising noise; codes are not clipped to [0, 1] like images."""
        if self.noise is None:
            return h
        return self.noise(h, generator) if i == 0 else self.noise.corrupt(h, generator)

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.corrupt_layer(0, x, generator)

    # --- one routine for all splits ---------------------------------------------------------------
    def stage_forward(self, x: torch.Tensor, y: torch.Tensor | None, stage: int,
                      generator: torch.Generator | None) -> StackedOutput:
        """Forward pass and losses of ``stage`` for clean images ``x`` (B, C, H, W) and labels ``y``."""
        if stage < self.depth:
            with torch.no_grad():  # the layers below are frozen: they only provide this layer's input
                target = self.encode(x, depth=stage)  # (B, widths[stage-1]) or (B, C*H*W)
            layer_input = self.corrupt_layer(stage, target, generator)  # like target
            code = self.encode_layer(stage, layer_input)  # (B, widths[stage])
            recon = self.decode_layer(stage, code)  # like target
            kind = self.hparams.loss if stage == 0 else self.hparams.hidden_loss
            losses = {"loss": reconstruction_loss(recon, target, kind)}
            if self.sparsity is not None:
                penalty = self.sparsity(code)
                losses = {"recon": losses["loss"], "sparsity": penalty, "loss": losses["loss"] + penalty}
            return StackedOutput(reconstruction=recon, code=code, input=layer_input, losses=losses, target=target)
        if self.head is None:
            out = self(x)
            return StackedOutput(reconstruction=out.reconstruction, code=out.code, target=x,
                                 losses={"loss": reconstruction_loss(out.reconstruction, x, self.hparams.loss)})
        if y is None or (self.is_first_check("labels") and bool((y < 0).any())):  # host sync: first batch only
            raise ValueError("finetune='supervised' needs labelled data (the DataModule yields no labels or label -1); "
                             "fix: use labelled data or finetune: reconstruction")
        code = self.encode(x)  # (B, code_dim)
        logits = self.head(code)  # (B, num_classes)
        losses = {"loss": F.cross_entropy(logits.float(), y),
                  "accuracy": (logits.argmax(1) == y).float().mean()}
        return StackedOutput(reconstruction=x, code=code, losses=losses, logits=logits)

    def shared_step(self, batch, stage: str) -> StackedOutput:
        x = images_of(batch)  # (B, C, H, W) clean
        y = self.condition(batch)
        s = self.stage
        train = stage == "train"
        out = self.stage_forward(x, y, s, None if train else self._eval_generator())
        if self.sparsity is not None and s < self.depth and self.global_step == 0 and train:
            self.sparsity.check(out.code)
        name = self.stage_name(s)
        logged = {f"{name}_{k}": v for k, v in out.losses.items() if k != "accuracy"}
        if "accuracy" in out.losses:
            logged["accuracy"] = out.losses["accuracy"]
        if s < self.depth:
            logged.update({f"{name}_{k}": v for k, v in activation_stats(out.code, self.hparams.active_threshold).items()})
        if train:
            logged["stage"] = float(s)
        self.log_terms(stage, {**logged, "loss": out.loss}, x.shape[0])
        if not train:
            # image quality of the stack trained so far (clean input), comparable within a stage
            with torch.no_grad():
                out.stack_reconstruction = self(x, depth=min(s + 1, self.depth)).reconstruction  # (B, C, H, W)
            self.update_image_metrics(stage, out.stack_reconstruction, x)
        return out

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        out = self.shared_step(batch, "train")
        self.step_stage(out.loss)
        return out.loss.detach()

    def grid_rows(self, batch, out: StackedOutput) -> list[tuple[str, torch.Tensor]]:
        """Clean images and their reconstruction through the layers trained so far (what PSNR/SSIM score)."""
        return [("clean", images_of(batch)), ("reconstruction (stack so far)", out.stack_reconstruction)]
