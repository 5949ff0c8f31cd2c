"""A diverged run stops with one line naming the epoch, the step and the term, and writes no NaN
checkpoint (ae_lightning.callbacks.divergence, on by default in the CLI)."""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS


def finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for t in state.values() if torch.is_tensor(t) and t.is_floating_point())


def test_huge_learning_rate_stops_the_run_and_keeps_the_last_good_checkpoint(run_cli, tmp_path):
    """conv_ae_mnist at lr=1e6: the first step is finite (and checkpointed, every step), the next one
    is not. The run exits 1 with one line; last.ckpt is the finite one from before the blow-up."""
    with pytest.raises(SystemExit) as exit_:
        run_cli(["fit", "--config", str(CONFIGS / "conv_ae_mnist.yaml"),
                 "--model.init_args.optimizer.init_args.lr=1e6", "--data.init_args.train_size=256",
                 "--data.init_args.batch_size=64", "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
                 "--checkpoint.every_n_train_steps=1", "--checkpoint.monitor=null", "--divergence.log_grad_norm=true"])
    msg = str(exit_.value.code)
    assert msg.startswith("ae-lightning: non-finite loss: train/loss = nan at epoch 0, global step ") and "\n" not in msg
    step = int(msg.split("global step ")[1].split(";")[0])
    assert step >= 1 and "last checkpoint was kept" in msg and "fix:" in msg
    (last,) = tmp_path.glob("runs/conv_ae_mnist/version_0/checkpoints/last.ckpt")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == step and finite(ckpt["state_dict"])  # the step before the blow-up


def test_a_checkpoint_with_non_finite_weights_is_refused():
    """Whatever the loss said, no checkpoint with NaN weights is written over a good one."""
    from types import SimpleNamespace

    from ae_lightning.callbacks import NonFiniteLossError, StopOnNonFinite

    trainer = SimpleNamespace(current_epoch=3, global_step=40_000)
    state = {"encoder.weight": torch.tensor([1.0, float("nan")]), "steps": torch.tensor(3)}
    with pytest.raises(NonFiniteLossError, match="non-finite weights at epoch 3, global step 40000 .encoder.weight."):
        StopOnNonFinite().on_save_checkpoint(trainer, None, {"state_dict": state})
    StopOnNonFinite().on_save_checkpoint(trainer, None, {"state_dict": {"w": torch.ones(2)}})  # finite: saved


def test_the_check_reads_the_device_only_every_n_steps_and_names_the_first_bad_step(monkeypatch):
    """With check_every_n_steps=4 the callback reads nothing on the host in between (on a GPU each read
    waits for the queued kernels); a NaN at batch 6 is reported at batch 8 as step 6, with its term."""
    import sys
    from types import SimpleNamespace

    from ae_lightning.callbacks import NonFiniteLossError, StopOnNonFinite

    reads: list[int] = []
    batch = [0]
    for name in ("__bool__", "item", "tolist", "__float__"):
        original = getattr(torch.Tensor, name)

        def spy(t, *a, _original=original, **k):
            if sys._getframe(1).f_code.co_filename.endswith("divergence.py"):
                reads.append(batch[0])
            return _original(t, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    guard = StopOnNonFinite(check_every_n_steps=4)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), current_epoch=0,
                              global_step=0, callback_metrics={})
    guard.setup(trainer, None, "fit")
    with pytest.raises(NonFiniteLossError) as err:
        for batch[0] in range(1, 13):
            trainer.global_step = batch[0]
            loss = torch.tensor(float("nan") if batch[0] == 6 else 1.0 / batch[0])
            trainer.callback_metrics = {"train/loss": loss, "train/kl_step": torch.tensor(0.5),
                                        "train/loss_epoch": torch.tensor(2.0)}
            guard.on_train_batch_end(trainer, None, None, None, batch[0])
    assert batch[0] == 8 and set(reads) == {4, 8}, reads  # read at batches 4 and 8 only
    msg = str(err.value)
    assert msg.startswith("non-finite loss: train/loss = nan at epoch 0, global step 6 (seen at step 8")
    assert "train/kl" not in msg and "no checkpoint was written after it" in msg


def _cpu_guard(guard, terms: dict):
    """``guard`` set up on the CPU (a read every step), with a module whose step logged ``terms``."""
    from types import SimpleNamespace

    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), current_epoch=0,
                              global_step=3, callback_metrics={})
    module = SimpleNamespace(train_terms=terms)
    guard.setup(trainer, module, "fit")
    guard.on_train_batch_start(trainer, module, None, 0)
    return trainer, module


def test_gradients_are_checked_only_on_request(monkeypatch):
    """The gradient norm is a pass over every gradient every step (about 3 % of a small MLP's CPU step): off by
    default (a non-finite gradient behind finite losses then stops the run at the next step's loss, and no checkpoint
    of its weights is written); ``check_gradients`` stops before the update, naming the gradient."""
    from types import SimpleNamespace

    from ae_lightning.callbacks import NonFiniteLossError, StopOnNonFinite, divergence

    norms = []
    monkeypatch.setattr(divergence.torch.linalg, "vector_norm",
                        lambda t, _norm=torch.linalg.vector_norm: norms.append(t.shape) or _norm(t))
    weight = torch.nn.Parameter(torch.ones(3))
    weight.grad = torch.tensor([1.0, float("nan"), 0.0])
    optimizer = SimpleNamespace(param_groups=[{"params": [weight]}])
    guard = StopOnNonFinite()
    trainer, module = _cpu_guard(guard, {"train/loss": torch.tensor(0.5)})
    guard.on_before_optimizer_step(trainer, module, optimizer)  # the loss is finite: no error, no norm
    assert norms == []
    guard = StopOnNonFinite(check_gradients=True)
    trainer, module = _cpu_guard(guard, {"train/loss": torch.tensor(0.5)})
    with pytest.raises(NonFiniteLossError, match=r"^non-finite gradient at epoch 0, global step 3 \(the loss terms"):
        guard.on_before_optimizer_step(trainer, module, optimizer)
    assert norms


def test_each_value_is_tested_once_per_step(monkeypatch):
    """On the CPU a step's terms are read at once, as Python numbers (no tensor op), before the optimiser step and not
    read again at the batch's end; a term logged after the step (an AAE's d_loss) is read there."""
    import sys

    from ae_lightning.callbacks import StopOnNonFinite

    reads = []

    def spy(t, _float=torch.Tensor.__float__):
        if sys._getframe(1).f_code.co_filename.endswith("divergence.py"):
            reads.append(float(_float(t)))
        return _float(t)

    monkeypatch.setattr(torch.Tensor, "__float__", spy)
    guard = StopOnNonFinite()
    terms = {"train/loss": torch.tensor(0.5), "train/kl": torch.tensor(0.25)}
    trainer, module = _cpu_guard(guard, terms)
    optimizer = type("Opt", (), {"param_groups": []})()
    guard.on_before_optimizer_step(trainer, module, optimizer)
    guard.on_train_batch_end(trainer, module, None, None, 0)
    assert reads == [0.5, 0.25]
    terms["train/d_loss"] = torch.tensor(0.75)
    guard.on_train_batch_end(trainer, module, None, None, 0)
    assert reads == [0.5, 0.25, 0.75]
    guard.on_train_batch_start(trainer, module, None, 1)  # the next step: every value read again
    guard.on_before_optimizer_step(trainer, module, optimizer)
    assert len(reads) == 6
