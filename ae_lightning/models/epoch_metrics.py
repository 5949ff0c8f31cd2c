"""How every model's numbers reach the logger: loss terms summed on the device, logged once per epoch.

:class:`EpochMetrics` is mixed into :class:`~ae_lightning.models.Autoencoder`; a variant only calls
:meth:`EpochMetrics.log_terms` with its extra terms (``{"kl": ..., "d_loss": ...}``) and, outside training,
the step routine adds its reconstructions to PSNR/SSIM. Keys are ``{stage}/{name}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ae_lightning.metrics import VAL_SSIM_IMAGES, image_metrics


class EpochMetrics:
    """Loss terms and image metrics of a LightningModule, per stage; see :meth:`log_terms` for why they are kept
    on the device and logged at the epoch's end."""

    #: ``val/ssim`` over the first this many validation images of each epoch (per process; the same images every
    #: epoch); ``None``: every image. SSIM costs more per image than a small net's forward pass (see
    #: :mod:`ae_lightning.metrics`); ``test/ssim`` is always over every image. CLI: ``--diagnostics.ssim_images``.
    val_ssim_images: int | None = VAL_SSIM_IMAGES

    def init_epoch_metrics(self) -> None:
        """The PSNR/SSIM collections and the running sums of the terms; called once by the model's ``__init__``."""
        self.val_metrics = image_metrics("val/", ssim_images=self.val_ssim_images)
        self.test_metrics = image_metrics("test/")  # test/ssim: every image
        #: ``{"train/<name>": value}`` of the current training step, every term (see :meth:`log_terms`)
        self.train_terms: dict[str, torch.Tensor | float] = {}
        # per stage and per set of names logged together, the running sums (K,) of the terms and the image count
        self._epoch_sums: dict[str, dict[tuple[str, ...], tuple[torch.Tensor, int]]] = {}
        #: training terms a callback monitors (set at the start of each fit, see :meth:`monitored_train_terms`)
        self._monitored: frozenset[str] = frozenset()

    def start_epoch_metrics(self, stage: str) -> None:
        """Forget what an evaluation that was cut short left, and start ``stage``'s image metrics afresh."""
        self._forget_epoch_terms(stage)
        metrics = self.image_metrics_of(stage)
        # fresh metric states made in this loop's grad mode: states left by an earlier `validate` / `test`
        # call are inference tensors, which a later `fit` cannot update in place
        metrics.reset()
        if stage == "val":
            metrics["ssim"].max_images = self.val_ssim_images

    def log_step(self, out, x: torch.Tensor, stage: str) -> None:
        """Log ``{stage}/<term>`` for every loss term and, outside training, PSNR/SSIM against the clean ``x``."""
        self.log_terms(stage, out.losses, x.shape[0])
        if stage != "train":
            self.update_image_metrics(stage, out.reconstruction, x)

    def image_metrics_of(self, stage: str):
        """The PSNR/SSIM collection of ``"val"`` or ``"test"``; ``None`` for training."""
        return {"val": self.val_metrics, "test": self.test_metrics}.get(stage)

    def update_image_metrics(self, stage: str, reconstruction: torch.Tensor, x: torch.Tensor) -> None:
        """Add a batch to ``{stage}/psnr`` and ``{stage}/ssim`` (logged at the epoch end, over every process)."""
        self.image_metrics_of(stage).update(reconstruction.detach().float().clamp(0, 1), x.float())

    def log_terms(self, stage: str, terms: Mapping[str, torch.Tensor | float], batch_size: int) -> None:
        """Log ``{stage}/<name>`` for each of ``terms``.

        Lightning's ``self.log`` costs about half a millisecond of host time per key and call (it moves its
        result object to the device on every call): more than a tenth of a small net's whole step for one key,
        more than the step for five. So the terms stay on the device, summed there (weighted by ``batch_size``),
        and are logged once, as exact means over the epoch's images on every process, at the epoch's end
        (:meth:`log_epoch_means`): ``train/<name>``, ``val/<name>``, ``test/<name>``. Training also logs each
        term's step value, ``train/<name>_step``, on the steps where something reads it (:meth:`_step_values_read`:
        the logger's steps, ``trainer.log_every_n_steps``; ``train/loss`` every step while a progress bar is
        shown), and keeps each step's terms in :attr:`train_terms`, where the divergence guard reads them. A
        term a callback monitors (:meth:`monitored_train_terms`) is logged through ``self.log`` every step instead.
        """
        terms = {f"{stage}/{k}": v.detach() if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}
        if stage == "train":
            self.train_terms.update(terms)
            for k in self._monitored.intersection(terms):  # a callback reads it mid-epoch: Lightning's own path
                self.log(k, terms.pop(k), on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        self._accumulate(stage, terms, batch_size)
        read = self._step_values_read(terms) if stage == "train" else {}
        if read:
            self.log_dict({f"{k}_step": v for k, v in read.items()}, on_step=True, on_epoch=False, prog_bar=True,
                          batch_size=batch_size)

    def _step_values_read(self, terms: dict) -> dict:
        """The training terms whose step values are read on this step: all of them when the logger writes it
        (Lightning's own rule, ``log_every_n_steps``, which only its logger connector knows: read there, with
        "every step" when a Lightning version lacks it); on the other steps ``train/loss`` alone while a
        progress bar shows it; else none."""
        trainer = self._trainer
        if trainer is None:
            return {}
        if trainer.logger is not None and getattr(trainer._logger_connector, "should_update_logs", True):
            return terms
        if trainer.progress_bar_callback is not None and "train/loss" in terms:
            return {"train/loss": terms["train/loss"]}
        return {}

    def monitored_train_terms(self) -> frozenset[str]:
        """The training terms a callback of the Trainer monitors (a ``ModelCheckpoint`` or ``EarlyStopping``
        ``monitor`` of ``train/<name>``, ``train/<name>_step`` or ``train/<name>_epoch``). Those go through
        Lightning's ``self.log`` every step, on step and epoch, as Lightning logs any metric: mid-epoch
        ``train/<name>`` is then the step's value and ``train/<name>_step`` is fresh at every step, what a
        step-frequency checkpoint needs; at the epoch's end ``train/<name>`` is the epoch mean."""
        trainer = self._trainer
        monitors = [getattr(cb, "monitor", None) for cb in (trainer.callbacks if trainer is not None else [])]
        return frozenset(name.removesuffix("_step").removesuffix("_epoch") for name in monitors
                         if isinstance(name, str) and name.startswith("train/"))

    def on_train_start(self) -> None:
        self._monitored = self.monitored_train_terms()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.train_terms.clear()

    def _accumulate(self, stage: str, terms: Mapping[str, torch.Tensor | float], batch_size: int) -> None:
        """Add ``batch_size`` × each term to the stage's running sums: the tensors stacked into one (K,) sum on the
        device (a stack, a multiply and an add per call, not two ops per term; no host read, no Lightning call),
        Python numbers into one on the host."""
        sums = self._epoch_sums.setdefault(stage, {})

        def add(names: tuple[str, ...], values: torch.Tensor) -> None:  # values (K,)
            total, images = sums.get(names, (0.0, 0))
            sums[names] = (total + values * batch_size, images + batch_size)

        tensors = {k: v for k, v in terms.items() if isinstance(v, torch.Tensor)}
        numbers = {k: v for k, v in terms.items() if not isinstance(v, torch.Tensor)}
        if tensors:
            add(tuple(tensors), torch.stack([(v if v.ndim == 0 else v.reshape(())).float() for v in tensors.values()]))
        if numbers:
            add(tuple(numbers), torch.tensor(list(numbers.values()), dtype=torch.float64))

    def _forget_epoch_terms(self, stage: str) -> dict[str, tuple[torch.Tensor, int]]:
        """``{name: (sum, count)}`` kept for ``stage`` by :meth:`log_terms`, removed."""
        kept: dict[str, tuple[torch.Tensor, int]] = {}
        for names, (total, images) in self._epoch_sums.pop(stage, {}).items():
            for i, name in enumerate(names):  # a name logged in several sets of names: their sums add up
                s, n = kept.get(name, (0.0, 0))
                kept[name] = (s + total[i], n + images)
        return kept

    def log_epoch_means(self, stage: str) -> None:
        """Log the epoch means of the terms :meth:`log_terms` kept on the device for ``stage`` (over every
        process: one collective), and outside training the image metrics (PSNR, SSIM) of the epoch."""
        kept = self._forget_epoch_terms(stage)
        keys = sorted(kept)  # the same on every process: each runs the same steps
        if keys:
            total = torch.stack([torch.as_tensor(kept[k][0], device=self.device).float() for k in keys] +
                                [torch.as_tensor(float(kept[k][1]), device=self.device) for k in keys])  # (2K,)
            if self._trainer is not None and self.trainer.world_size > 1:
                total = self.trainer.strategy.reduce(total, reduce_op="sum")
            means = total[: len(keys)] / total[len(keys):].clamp(min=1)  # (K,)
            for k, v in zip(keys, means, strict=True):
                self.log(k, v, on_step=False, on_epoch=True, prog_bar=stage == "val" or k == "train/loss")
        metrics = self.image_metrics_of(stage)
        if metrics is not None and any(m.update_called for m in metrics.values()):
            self.log_dict(metrics.compute(), prog_bar=stage == "val")  # torchmetrics syncs the processes
            metrics.reset()

    def on_train_epoch_end(self) -> None:
        self.log_epoch_means("train")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch_means("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch_means("test")

    def all_processes(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` (N, ...) of every process, concatenated (N·world, ...): epoch statistics over all the images,
        not a mean of per-process statistics. A collective under DDP: every rank must call it."""
        if self._trainer is None or self.trainer.world_size < 2:
            return rows
        return self.all_gather(rows).flatten(0, 1)
