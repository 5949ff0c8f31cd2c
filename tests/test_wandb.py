"""W&B logging never needs the network: offline runs write their run directory, no prompt, no hang.

Every test here points W&B at an unreachable local port and fails (instead of hanging) after a
time limit; a read from stdin (a login prompt) fails the test.
"""

from __future__ import annotations

import builtins
import getpass
import signal

import pytest
from conftest import CONFIGS

import ae_lightning.loggers as loggers
from ae_lightning.loggers import WandbLogger

wandb = pytest.importorskip("wandb")

LIMIT_S = 180


def _no_prompt(*args, **kwargs):
    raise AssertionError("W&B asked for input")


@pytest.fixture(autouse=True)
def offline_world(tmp_path, monkeypatch):
    """No network, no credentials, W&B files under tmp_path, prompts fail, hangs time out."""
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # closed port: refused at once
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(builtins, "input", _no_prompt)
    monkeypatch.setattr(getpass, "getpass", _no_prompt)

    def timeout(signum, frame):
        raise TimeoutError(f"W&B did not finish within {LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
    if wandb.run is not None:
        wandb.finish()


def offline_runs(folder):
    return sorted(folder.glob("**/wandb/offline-run-*"))


def test_cli_fit_with_the_wandb_fragment_writes_an_offline_run(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = run_cli([
        "fit", "--config", str(CONFIGS / "ae_mnist.yaml"), "--config", str(CONFIGS / "logger" / "wandb.yaml"),
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ])
    logger = run.trainer.logger
    assert type(logger) is WandbLogger
    assert logger.experiment.settings.mode == "offline"
    assert logger.experiment.project == "ae_lightning"
    wandb.finish()
    (run_dir,) = offline_runs(tmp_path / "runs")
    (records,) = run_dir.glob("run-*.wandb")
    assert records.stat().st_size > 1000  # metrics, config and the image went into the offline record
    assert list((run_dir / "files" / "media" / "images").glob("**/*.png")), "the image grid was not logged to W&B"
    assert list((tmp_path / "runs").glob("**/checkpoints/last.ckpt"))


def test_no_credentials_and_no_network_falls_back_to_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a W&B key
    with pytest.warns(UserWarning, match="logging offline"):
        logger = WandbLogger(project="ae_lightning_test", save_dir=str(tmp_path / "runs"))
    assert logger.experiment.settings.mode == "offline"
    logger.log_metrics({"val/loss": 0.5}, step=0)
    wandb.finish()
    assert len(offline_runs(tmp_path / "runs")) == 1


def test_unreachable_server_with_credentials_falls_back_to_offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert loggers._has_credentials()
    assert not loggers._wandb_reachable(timeout=1.0)
    with pytest.warns(UserWarning, match="logging offline"):
        logger = WandbLogger(project="ae_lightning_test")
    assert logger._wandb_init["mode"] == "offline"


@pytest.mark.parametrize("how", ["env", "argument"])
def test_a_given_mode_is_respected_without_probing_the_network(how, monkeypatch):
    def probe(*a, **k):
        raise AssertionError("the network was probed although a mode was given")

    monkeypatch.setattr(loggers, "_wandb_reachable", probe)
    if how == "env":
        monkeypatch.setenv("WANDB_MODE", "offline")
        logger = WandbLogger(project="ae_lightning_test")
        assert "mode" not in logger._wandb_init  # wandb reads WANDB_MODE itself
    else:
        monkeypatch.delenv("WANDB_MODE", raising=False)
        logger = WandbLogger(project="ae_lightning_test", mode="online")
        assert logger._wandb_init["mode"] == "online"


def test_disabled_mode_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = WandbLogger(project="ae_lightning_test", save_dir=str(tmp_path / "runs"), mode="disabled")
    logger.log_metrics({"val/loss": 0.5}, step=0)
    assert logger.experiment.settings.mode == "disabled"
    wandb.finish()
    assert not offline_runs(tmp_path) and not list(tmp_path.glob("**/*.wandb"))
