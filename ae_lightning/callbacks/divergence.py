"""Stop a diverged run loudly: a non-finite loss term ends the fit with one line naming it.

:class:`StopOnNonFinite` is on by default in ``ae-lightning`` (CLI arguments ``divergence.*``). After
every training batch it looks at the step's logged ``train/*`` values — every loss term of every
model, automatic or manual optimisation, since they all log through ``self.log`` — and raises
:class:`NonFiniteLossError` naming the epoch, the global step and the first term that is NaN or
infinite. It raises *before* any checkpoint callback of that batch runs (Lightning runs
``ModelCheckpoint`` last), and refuses to write a checkpoint whose weights are non-finite, so the
last good checkpoint is never overwritten with NaN weights. ``ae-lightning`` turns the error into
one line on stderr and exit status 1.

**Gradients, on request.** ``check_gradients=True`` also tests the gradient norm before every optimiser step,
so that a non-finite gradient behind finite loss terms never reaches the weights. It is off by default: it reads
every gradient every step (about 3 % of a small MLP's CPU step), and without it such a step still stops the run at
the next step's non-finite loss, before that step's update, with no checkpoint of the non-finite weights written
(``check_weights``). ``log_grad_norm=True`` computes the norm anyway and checks it too.

**Without host syncs on GPUs.** Reading a GPU value on the host waits for every queued kernel, so on
an accelerator the check is lazy: each step's terms (and the gradient norm) are tested on the device
and the first non-finite one is recorded there (its step, epoch, term and value), and the host reads
that record every ``check_every_n_steps`` training batches (default 100 on an accelerator, 1 on the
CPU, where a read costs nothing: there each step's terms are read at once as Python numbers), at each
epoch end, and before every checkpoint is written. The error then names the *first* non-finite step and term, and
no checkpoint is written after it, so the last good checkpoint is still the one kept; on the CPU the run also stops
before the optimiser step that would have applied a non-finite loss's gradient (and, with ``check_gradients``, any
non-finite gradient). Each value is tested once: a term noted before the optimiser step is not noted again at the
batch's end.

``log_grad_norm=True`` logs ``train/grad_norm`` (the 2-norm over all parameters) before every
optimiser step, so a blow-up can be seen coming::

    ae-lightning fit --config configs/vae_mnist.yaml --divergence.log_grad_norm=true
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class NonFiniteLossError(RuntimeError):
    """A loss term (or the weights about to be checkpointed) went NaN or infinite."""


class StopOnNonFinite(Callback):
    """Raise :class:`NonFiniteLossError` on the first non-finite ``train/*`` value; never checkpoint NaN weights.

    Args:
        log_grad_norm: log ``train/grad_norm`` before each optimiser step (and check it, as ``check_gradients``).
        check_gradients: test the gradient norm before each optimiser step (a pass over every gradient).
        check_weights: refuse to save a checkpoint whose floating-point tensors are not all finite.
        check_every_n_steps: read the device-side record on the host every this many training batches;
            ``None``: 1 on the CPU, 100 on an accelerator (see the module docstring).
    """

    MAX_TERMS = 64  # slots of the device-side record (distinct train/* keys of one run)
    GRADIENT = "gradient norm"

    def __init__(self, log_grad_norm: bool = False, check_gradients: bool = False, check_weights: bool = True,
                 check_every_n_steps: int | None = None) -> None:
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1 or null, got {check_every_n_steps}")
        self.log_grad_norm = log_grad_norm
        self.check_gradients = check_gradients
        self.check_weights = check_weights
        self.check_every_n_steps = check_every_n_steps
        self._slots: dict[str, int] = {}  # term → slot of the record
        self._index: dict[tuple[str, ...], torch.Tensor] = {}  # a step's terms → their slots, on the device
        self._record: dict[str, torch.Tensor] | None = None
        self._batches = 0
        self._noted: dict[str, torch.Tensor] = {}  # this batch's values already noted (each is tested once)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        self._every = self.check_every_n_steps or (1 if device.type == "cpu" else 100)
        self._record = None  # made on the module's device at the first record
        self._index.clear()

    # --- the device-side record ---------------------------------------------------------------
    def _new_record(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {"where": torch.full((2,), -1, dtype=torch.long, device=device),  # first (step, epoch); -1: none
                "bad": torch.zeros(self.MAX_TERMS, dtype=torch.bool, device=device),
                "value": torch.zeros(self.MAX_TERMS, device=device)}

    def _note(self, trainer: L.Trainer, values: dict[str, torch.Tensor]) -> None:
        """Record, on the device, whether any of ``values`` is non-finite (the first time only). Values already noted
        in this batch (the same tensors) are skipped; with a read every step (the CPU) the values are read at once
        and only a non-finite one is recorded."""
        values = {k: v for k, v in values.items() if self._noted.get(k) is not v}
        if not values:
            return
        self._noted.update(values)
        if self._every == 1 and all(math.isfinite(float(t)) for t in values.values()):
            return  # read now, one number at a time (the CPU: nothing to wait for, no tensor op): nothing to record
        keys = tuple(values)
        for key in keys:
            if key not in self._slots:
                if len(self._slots) == self.MAX_TERMS:
                    raise RuntimeError(f"StopOnNonFinite: more than {self.MAX_TERMS} distinct train/* terms")
                self._slots[key] = len(self._slots)
        v = torch.stack([t.detach().float().reshape(()) for t in values.values()])  # (T,)
        if self._record is None:
            self._record = self._new_record(v.device)
        if keys not in self._index:  # made once per key set: an index built from a list each step is a copy to the device
            self._index[keys] = torch.tensor([self._slots[k] for k in keys], device=v.device)
        idx, rec = self._index[keys], self._record
        bad = torch.zeros_like(rec["bad"]).index_copy(0, idx, ~torch.isfinite(v))  # (MAX_TERMS,), no boolean mask
        value = torch.zeros_like(rec["value"]).index_copy(0, idx, v)
        first = bad.any() & (rec["where"][0] < 0)  # no host read: everything stays on the device
        here = torch.full((2,), trainer.global_step, device=v.device)  # fills, not a copy from the host
        here[1].fill_(trainer.current_epoch)
        rec["where"] = torch.where(first, here, rec["where"])
        rec["bad"] = torch.where(first, bad, rec["bad"])
        rec["value"] = torch.where(first, value, rec["value"])

    def _check(self, trainer: L.Trainer) -> None:
        """Read the record on the host (one sync) and raise if a non-finite value was seen."""
        rec = self._record
        if rec is None:
            return
        step, epoch = rec["where"].tolist()
        if step < 0:
            return
        bad, value = rec["bad"].tolist(), rec["value"].tolist()
        terms = [f"{k} = {value[i]}" for k, i in self._slots.items() if bad[i]]
        losses = [t for t in terms if not t.startswith(self.GRADIENT)]
        where = f"at epoch {epoch}, global step {step}"
        if trainer.global_step != step:
            where += f" (seen at step {trainer.global_step}: checked every {self._every} batches on this device)"
        head = f"non-finite loss: {', '.join(losses)} {where}" if losses else (
            f"non-finite gradient {where} (the loss terms were still finite)")
        kept = ("the run stopped before the weights were updated" if self._every == 1
                else "no checkpoint was written after it")
        raise NonFiniteLossError(
            f"{head}; {kept} and the last checkpoint was kept as it was; fix: lower the learning rate, clip "
            "gradients, or check the data (--divergence.log_grad_norm=true logs train/grad_norm)"
        )

    # --- hooks ------------------------------------------------------------------------------------
    @staticmethod
    def logged_terms(trainer: L.Trainer, pl_module: L.LightningModule | None = None) -> dict[str, torch.Tensor]:
        """Every ``train/*`` term of this step so far: the suite's models keep them all in ``train_terms``
        (:meth:`~ae_lightning.models.Autoencoder.log_terms`: most reach Lightning's logger only every
        ``log_every_n_steps``); any other module, what it logged (``callback_metrics`` holds this step's values)."""
        terms = getattr(pl_module, "train_terms", None)
        if terms is None:
            terms = {key.removesuffix("_step"): value for key, value in trainer.callback_metrics.items()
                     if key.startswith("train/") and not key.endswith("_epoch")}
        return {k: v for k, v in terms.items()
                if k != "train/grad_norm" and isinstance(v, torch.Tensor) and v.numel() == 1}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._noted.clear()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        self._note(trainer, self.logged_terms(trainer, pl_module))  # the terms logged after the optimiser step
        self._batches += 1
        if self._batches % self._every == 0:
            self._check(trainer)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        """Check the step's loss terms (and with ``check_gradients`` the gradient norm) before the step: on the CPU
        their non-finite gradients never reach the weights."""
        values = self.logged_terms(trainer, pl_module)  # the loss terms first: if one is the cause, it is named
        if self.check_gradients or self.log_grad_norm:
            grads = [p.grad.detach() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
                if self.log_grad_norm:
                    pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)
                values[self.GRADIENT] = norm
        self._note(trainer, values)
        if self._every == 1:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._check(trainer)  # a value went non-finite since the last read: this checkpoint is not written
        if not self.check_weights:
            return
        bad = [k for k, t in checkpoint.get("state_dict", {}).items()
               if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise NonFiniteLossError(
                f"non-finite weights at epoch {trainer.current_epoch}, global step {trainer.global_step} "
                f"({', '.join(bad[:5])}{' …' if len(bad) > 5 else ''}); the checkpoint was not written, the last one "
                "was kept as it was; fix: lower the learning rate or clip gradients"
            )
