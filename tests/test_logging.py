"""Training terms stay on the device: no Lightning ``self.log`` call on a step nothing reads; they reach the logger
every ``log_every_n_steps`` steps (every step while a progress bar shows them) and as exact epoch means
(Autoencoder.log_terms)."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch

from ae_lightning.config import instantiate, load_config


@pytest.mark.parametrize("progress_bar, expected", [(False, [0, 0, 5, 0, 0, 5]), (True, [1, 1, 5, 1, 1, 5])])
def test_vae_terms_reach_the_logger_every_n_steps_and_as_exact_epoch_means(tmp_path, monkeypatch, progress_bar,
                                                                          expected):
    """Step values only on the logger's steps (every 3rd here), plus train/loss each step under a progress bar."""
    cfg = load_config("vae_mnist")
    cfg["data"]["init_args"].update(batch_size=50, train_size=300)  # 6 steps per epoch
    L.seed_everything(0, verbose=False)
    model = instantiate(cfg["model"], L.LightningModule)
    data = instantiate(cfg["data"], L.LightningDataModule)
    calls, steps = [], []
    original = L.LightningModule.log

    def counting_log(self, name, *args, **kwargs):
        calls.append((self.trainer.global_step, name))
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(L.LightningModule, "log", counting_log)

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            steps.append({k: float(v) for k, v in module.train_terms.items()})

    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, log_every_n_steps=3, enable_progress_bar=progress_bar,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[Record()],
                        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="run", version=0))
    trainer.fit(model, data)
    assert len(steps) == 6 and {"train/loss", "train/recon", "train/kl", "train/elbo"} <= set(steps[0])
    per_step = [sum(1 for s, n in calls if s == step and n.startswith("train/")) for step in range(6)]
    assert per_step == expected, per_step  # the 5 terms on the logger's steps 3 and 6
    rows = list(csv.DictReader((tmp_path / "run" / "version_0" / "metrics.csv").open()))
    logged_steps = [int(r["step"]) for r in rows if r.get("train/kl_step")]
    assert logged_steps == [2, 5]
    (epoch_row,) = [r for r in rows if r.get("train/kl")]
    assert float(epoch_row["train/kl"]) == pytest.approx(sum(s["train/kl"] for s in steps) / 6, rel=1e-5)
    assert float(epoch_row["train/recon"]) == pytest.approx(sum(s["train/recon"] for s in steps) / 6, rel=1e-5)
    assert float(epoch_row["train/loss"]) == pytest.approx(sum(s["train/loss"] for s in steps) / 6, rel=1e-5)
    assert [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")] == pytest.approx(
        [steps[2]["train/loss"], steps[5]["train/loss"]], rel=1e-6)
    assert torch.isfinite(torch.tensor(float(epoch_row["train/elbo"])))


def test_validation_logs_once_per_epoch_exact_means_over_every_image(monkeypatch):
    """Validation terms and PSNR/SSIM are summed on the device and logged once, at the epoch end: no self.log
    call per batch, and val/loss is the mean over every validation image (a short last batch weighs less)."""
    from ae_lightning.losses import reconstruction_loss

    cfg = load_config("ae_mnist")
    cfg["data"]["init_args"].update(batch_size=64)  # 300 val digits: batches of 64, …, 44
    L.seed_everything(0, verbose=False)
    model = instantiate(cfg["model"], L.LightningModule)
    data = instantiate(cfg["data"], L.LightningDataModule)
    data.setup("fit")
    calls = []
    original = L.LightningModule.log

    def counting_log(self, name, *args, **kwargs):
        calls.append((self.trainer.validating and self._current_fx_name, name))
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(L.LightningModule, "log", counting_log)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = trainer.validate(model, data, verbose=False)
    assert {fx for fx, _ in calls} == {"on_validation_epoch_end"}  # nothing per batch
    assert {"val/loss", "val/psnr", "val/ssim"} <= set(result)
    with torch.no_grad():
        x = data.val_set.images
        expected = reconstruction_loss(model(x).reconstruction, x, model.hparams.loss)
    assert result["val/loss"] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("monitor", ["train/loss_step", "train/loss", "train/kl_step"])
def test_a_monitored_training_term_is_fresh_at_every_step(tmp_path, monitor):
    """A step-frequency checkpoint on a training term reads that step's value, with no logger writing the step and
    no progress bar (a cluster run): monitored terms go through Lightning's own self.log every step."""
    cfg = load_config("vae_mnist")
    cfg["data"]["init_args"].update(batch_size=50, train_size=300)  # 6 steps
    L.seed_everything(0, verbose=False)
    model = instantiate(cfg["model"], L.LightningModule)
    data = instantiate(cfg["data"], L.LightningDataModule)
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            seen.append((float(trainer.callback_metrics[monitor]), float(module.train_terms[monitor.removesuffix("_step")])))

    checkpoint = L.pytorch.callbacks.ModelCheckpoint(tmp_path, monitor=monitor, every_n_train_steps=1, save_top_k=1)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Record(), checkpoint])
    trainer.fit(model, data)
    assert len(seen) == 6 and all(logged == pytest.approx(step) for logged, step in seen), seen
    assert checkpoint.best_model_score == pytest.approx(min(step for _, step in seen))
