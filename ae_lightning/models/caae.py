"""Conditional adversarial autoencoder for face aging (CAAE; Zhang, Song & Qi, CVPR 2017).

An encoder E maps a face to z ∈ [-1, 1]^50; a generator G rebuilds it from ``[z, age group,
gender]``. Because z is pushed toward a label-free uniform prior by D_z, and G must produce a
face that D_img accepts *for the given labels*, changing only the age label at test time ages or
rejuvenates the face (:meth:`ConditionalAdversarialAutoencoder.age_progression`).

Per batch (manual optimisation, as the release's one ``session.run`` of three optimisers):

1. **E + G** step on ``recon + w_tv·TV + w_z·E_z + w_img·G_img`` — the two adversarial terms are
   switched off for the first ``reconstruction_only_epochs`` epochs (the release pretrains 10 epochs with all
   weights 0, then trains with weights (G_img, E_z, TV) = (1e-4, 0, 0));
2. **D_z** step: uniform prior samples (real) vs E's codes (fake) — reuses the AAE's discriminator phase;
3. **D_img** step: (face, its labels) real vs (G's face, the same labels) fake.

Defaults and why: L1 reconstruction, lr 2e-4, Adam β₁ 0.5, ``weight_image_adv=1e-4`` and
``weight_tv=0`` and ``reconstruction_only_epochs=10`` as in the release. ``weight_latent_adv`` is ``1e-4``
rather than the release's 0: with 0 the trained D_z never reaches E, so nothing imposes the
uniform prior on z that the paper describes (the tanh alone only bounds z).

The module's inputs and outputs are images in [0, 1] like the rest of the suite; the nets see
[-1, 1] as in the release (x ↦ 2x − 1 in, (G + 1)/2 out), and the losses are computed there so
the release's weights keep their meaning. Batches are ``(image, target)`` with ``target`` a dict
holding ``age_group`` and ``gender`` (:class:`~ae_lightning.data.UTKFaceDataModule`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchvision.utils import make_grid

from ae_lightning.batch import images_of, labels_of
from ae_lightning.losses import adversarial_loss, reconstruction_loss, total_variation
from ae_lightning.models.adversarial import AdversarialAutoencoder, AdversarialOutput
from ae_lightning.models.base import AutoencoderOutput
from ae_lightning.models.prediction import Prediction
from ae_lightning.optim import OptimizerCallable
from ae_lightning.priors import Prior, UniformPrior


@dataclass
class CAAEOutput(AdversarialOutput):
    """Adds ``generated``: G's raw output (B, C, H, W) in [-1, 1] (``reconstruction`` is it mapped to [0, 1])."""

    generated: torch.Tensor | None = None


def to_net(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images → the nets' [-1, 1]."""
    return x * 2 - 1


def from_net(x: torch.Tensor) -> torch.Tensor:
    """The nets' [-1, 1] → [0, 1] images."""
    return (x + 1) / 2


class ConditionalAdversarialAutoencoder(AdversarialAutoencoder):
    """CAAE: E, G, D_z, D_img injected (see :mod:`ae_lightning.nets.adversarial`); see the module docstring.

    Args:
        encoder: faces (in [-1, 1]) → z ∈ [-1, 1]^D (``CAAEEncoder``).
        generator: ``(z, condition)`` → face in [-1, 1] (``CAAEGenerator``).
        latent_discriminator: z → logit (``MLPDiscriminator`` 64-32-16 with batch norm).
        image_discriminator: ``(face, condition)`` → logit (``ImageDiscriminator``).
        prior: prior on z (default uniform on [-1, 1]^D).
        num_age_groups, num_genders: label sizes; the condition is their ±1 one-hot vectors.
        loss: ``l1`` (release) or ``mse`` reconstruction.
        optimizer, discriminator_optimizer, image_discriminator_optimizer: one per phase (E+G, D_z, D_img);
            default Adam, the release's Adam(2e-4, β₁ 0.5) is set in ``configs/caae_utkface.yaml``.
        weight_image_adv, weight_latent_adv, weight_tv: weights of G_img, E_z and TV in the E+G loss.
        reconstruction_only_epochs: epochs without the adversarial terms at the start (the release's pretraining).
        num_faces: validation faces in the age-progression grid (:meth:`extra_grids`) that
            :class:`~ae_lightning.callbacks.GenerationGrids` logs each validation epoch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        generator: nn.Module,
        latent_discriminator: nn.Module,
        image_discriminator: nn.Module,
        prior: Prior | None = None,
        num_age_groups: int = 10,
        num_genders: int = 2,
        loss: Literal["l1", "mse"] = "l1",
        optimizer: OptimizerCallable = torch.optim.Adam,
        discriminator_optimizer: OptimizerCallable = torch.optim.Adam,
        image_discriminator_optimizer: OptimizerCallable = torch.optim.Adam,
        weight_image_adv: float = 1e-4,
        weight_latent_adv: float = 1e-4,
        weight_tv: float = 0.0,
        reconstruction_only_epochs: int = 10,
        gradient_clip_val: float | None = None,
        num_faces: int = 8,
    ) -> None:
        code_dim = int(getattr(encoder, "code_dim", 50))
        super().__init__(
            encoder, generator, latent_discriminator, prior if prior is not None else UniformPrior(code_dim),
            loss=loss, optimizer=optimizer, discriminator_optimizer=discriminator_optimizer,
            gradient_clip_val=gradient_clip_val,
        )
        if loss not in ("l1", "mse"):
            raise ValueError(f"CAAE reconstruction loss must be 'l1' (release) or 'mse', got {loss!r}")
        self.image_discriminator = image_discriminator
        self.image_discriminator_optimizer = image_discriminator_optimizer
        self._faces: torch.Tensor | None = None  # first validation faces (N, C, H, W) and their labels
        self._face_labels: dict[str, torch.Tensor] | None = None

    @property
    def generator(self) -> nn.Module:
        return self.decoder

    # --- labels -------------------------------------------------------------------------------
    def make_condition(self, age_group: torch.Tensor, gender: torch.Tensor, check_range: bool = True) -> torch.Tensor:
        """``(B, num_age_groups + num_genders)`` condition: one-hot vectors scaled to ±1 (the release's convention);
        ``check_range`` reads the labels on the host (a device sync: the training step checks its first batch only)."""
        hp = self.hparams
        if check_range and (age_group.min() < 0 or age_group.max() >= hp.num_age_groups
                            or gender.min() < 0 or gender.max() >= hp.num_genders):
            raise ValueError(f"age groups must lie in [0, {hp.num_age_groups}) and genders in [0, {hp.num_genders})")
        onehot = torch.cat([nn.functional.one_hot(age_group.long(), hp.num_age_groups),
                            nn.functional.one_hot(gender.long(), hp.num_genders)], dim=1)  # (B, A + G)
        return onehot.float().to(self.device) * 2 - 1

    def condition(self, batch) -> torch.Tensor:
        target = labels_of(batch)
        if not isinstance(target, dict) or "age_group" not in target or "gender" not in target:
            raise ValueError("CAAE batches must be (image, {'age_group': ..., 'gender': ...}) as UTKFaceDataModule yields")
        return self.make_condition(target["age_group"], target["gender"], self.is_first_check("labels"))

    # --- the model ----------------------------------------------------------------------------
    def posterior_of(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.encoder(to_net(x)), None  # (B, D) in [-1, 1]

    def decode(self, code: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Face in [0, 1] for codes and a condition (``model.make_condition(age_group, gender)``)."""
        if cond is None:
            raise ValueError("the CAAE generator needs a condition: pass model.make_condition(age_group, gender)")
        return from_net(self.generator(code, cond))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> CAAEOutput:
        if cond is None:
            raise ValueError("the CAAE needs the faces' labels: pass model.make_condition(age_group, gender)")
        z = self.encode(x)  # (B, D)
        g = self.generator(z, cond)  # (B, C, H, W) in [-1, 1]
        return CAAEOutput(reconstruction=from_net(g), code=z, input=x, condition=cond, generated=g)

    def compute_losses(self, out: CAAEOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        recon = reconstruction_loss(out.generated, to_net(target), self.hparams.loss)
        tv = total_variation(out.generated)
        return {"loss": recon + self.hparams.weight_tv * tv, "recon": recon, "tv": tv}

    # --- training -----------------------------------------------------------------------------
    @property
    def adversarial_terms_on(self) -> bool:
        return self.current_epoch >= self.hparams.reconstruction_only_epochs

    def training_step(self, batch, batch_idx: int) -> None:
        hp = self.hparams
        opt_eg, opt_dz, opt_dimg = self.optimizers()
        x = images_of(batch)
        # phase 1: encoder + generator
        with self._phase(opt_eg):
            out = self.shared_step(batch, "train")
            cond, loss, logs = out.condition, out.loss, {}
            if self.adversarial_terms_on:
                logs["g_loss"] = adversarial_loss(self.discriminator(out.code), True)  # E fools D_z
                logs["g_img_loss"] = adversarial_loss(self.image_discriminator(out.generated, cond), True)
                loss = loss + hp.weight_latent_adv * logs["g_loss"] + hp.weight_image_adv * logs["g_img_loss"]
            self._update(opt_eg, loss)
        # phase 2: the discriminators, on this batch's codes and faces (trained while pretraining too, as in the release)
        logs |= self.discriminator_phase(opt_dz, x, None, fake=out.code)
        logs |= self.image_discriminator_phase(opt_dimg, to_net(x), out.generated, cond)
        self.log_terms("train", logs, len(x))

    def image_discriminator_phase(self, optimizer, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor):
        """One D_img update: (face, labels) real, (G's face, same labels) fake; images in [-1, 1]."""
        with self._phase(optimizer):
            real_logits = self.image_discriminator(real, cond)
            fake_logits = self.image_discriminator(fake.detach(), cond)
            d_loss = adversarial_loss(real_logits, True) + adversarial_loss(fake_logits, False)
            self._update(optimizer, d_loss)
        return {
            "d_img_loss": d_loss.detach(),
            "d_img_acc_real": (real_logits.detach() > 0).float().mean(),
            "d_img_acc_fake": (fake_logits.detach() < 0).float().mean(),
        }

    def configure_optimizers(self):
        return [
            self.optimizer([*self.encoder.parameters(), *self.generator.parameters()]),
            self.discriminator_optimizer(self.discriminator.parameters()),
            self.image_discriminator_optimizer(self.image_discriminator.parameters()),
        ]

    # --- generating: the Generative protocol (sample and prior are the AAE's) ---------------------------
    needs_condition = True  # G draws a face for an age group and a gender

    def example_conditions(self) -> torch.Tensor:
        """One condition per (gender, age group), gender-major ``(G·A, A + G)``: the rows of the labelled sample
        grid, the same prior codes in every row."""
        hp = self.hparams
        ages = torch.arange(hp.num_age_groups).repeat(hp.num_genders)  # (G·A,)
        genders = torch.arange(hp.num_genders).repeat_interleave(hp.num_age_groups)  # (G·A,)
        return self.make_condition(ages, genders, check_range=False)  # on the model's device

    # --- age progression ------------------------------------------------------------------------
    @torch.no_grad()
    def age_progression(self, x: torch.Tensor, gender: torch.Tensor) -> torch.Tensor:
        """Each face ``x`` (N, C, H, W) in [0, 1] regenerated in every age group → ``(N, A, C, H, W)`` in [0, 1]."""
        n, a = len(x), self.hparams.num_age_groups
        z = self.encode(x.to(self.device))  # (N, D)
        ages = torch.arange(a, device=self.device).repeat(n)  # (N·A,)
        cond = self.make_condition(ages, gender.to(self.device).repeat_interleave(a))  # (N·A, A + G)
        faces = self.decode(z.repeat_interleave(a, dim=0), cond)  # (N·A, C, H, W)
        return faces.view(n, a, *x.shape[1:]).clamp(0, 1)

    #: ``ae-lightning predict`` writes each input face's age-progression grid (input | one column per age group)
    default_prediction = "progression"

    def predict_step(self, batch, batch_idx: int) -> Prediction | None:
        """``progression``: one grid (3, H', W') per input face, its gender from the batch's labels; other kinds
        as :meth:`Autoencoder.predict_step`."""
        if (getattr(self, "prediction_kind", None) or self.default_prediction) != "progression":
            return super().predict_step(batch, batch_idx)
        target = labels_of(batch)
        if not isinstance(target, dict) or "gender" not in target:
            raise ValueError("CAAE age progression needs each face's gender: predict on UTKFaceDataModule data "
                             "(or python -m ae_lightning.age_progression --images ... --gender 0|1)")
        x = self.fit_to_nets(images_of(batch))  # (B, C, H, W) at the nets' size
        grids = [self.progression_grid(face[None], g[None]) for face, g in zip(x, target["gender"], strict=True)]
        return Prediction("progression", torch.stack(grids))  # (B, 3, H', W')

    def progression_grid(self, x: torch.Tensor, gender: torch.Tensor) -> torch.Tensor:
        """Grid (3, H', W'): one row per face — the input, then one column per age group."""
        faces = self.age_progression(x, gender)  # (N, A, C, H, W)
        rows = torch.cat([x.to(faces.device).unsqueeze(1).clamp(0, 1), faces], dim=1)  # (N, A + 1, C, H, W)
        return make_grid(rows.flatten(0, 1).float().cpu(), nrow=rows.shape[1], padding=2, pad_value=1.0)

    def validation_step(self, batch, batch_idx: int) -> AutoencoderOutput:
        # cache the first validation faces with their labels, for the age-progression grid
        cache = self.hparams.num_faces
        if self._faces is None or len(self._faces) < cache:
            x, target = images_of(batch), batch[1]
            take = cache - (0 if self._faces is None else len(self._faces))
            new = {k: target[k][:take].cpu() for k in ("age_group", "gender")}
            if self._faces is None:
                self._faces, self._face_labels = x[:take].cpu(), new
            else:
                self._faces = torch.cat([self._faces, x[:take].cpu()])
                self._face_labels = {k: torch.cat([self._face_labels[k], new[k]]) for k in new}
        return super().validation_step(batch, batch_idx)

    def extra_grids(self) -> dict[str, tuple[torch.Tensor, str]]:
        """The CAAE's own validation picture, which :class:`~ae_lightning.callbacks.GenerationGrids` logs (in eval
        mode) beside the prior samples: ``val/age_progression``, the first validation faces regenerated in every age
        group (:meth:`progression_grid`); nothing before a validation batch was seen."""
        if self._faces is None:
            return {}
        n = self.hparams.num_faces
        grid = self.progression_grid(self._faces[:n], self._face_labels["gender"][:n])
        return {"val/age_progression": (grid, "input | age groups 0-5 … 71+")}
