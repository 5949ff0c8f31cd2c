"""W&B logging never needs the network: offline runs write their run directory, no prompt, no hang.

Every test here points W&B at an unreachable local port and fails (instead of hanging) after a
time limit; a read from stdin (a login prompt) fails the test.
"""

from __future__ import annotations

import builtins
import getpass
import signal
import struct

import pytest
import yaml
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
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))  # staged artifact files
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


def finish():
    """End the run and stop W&B's service: only then is the offline record (``run-*.wandb``) complete."""
    wandb.finish()
    wandb.teardown()


def records(run_folder, kind: str) -> list:
    """The ``kind`` records (``run``, ``artifact``, ``history``…) of an offline run's ``run-*.wandb`` file.

    The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of
    chunks (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) holding protobuf ``Record`` messages.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_folder.glob("run-*.wandb")
    data, pos, out, buf = path.read_bytes(), 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, chunk = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if chunk == 0:  # block padding
            pos += left
            continue
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if chunk in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == kind:
                out.append(getattr(record, kind))
    return out


FIT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
       "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_cli_fit_with_the_wandb_fragment_writes_an_offline_run(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = run_cli(["fit", "--config", str(CONFIGS / "ae_mnist.yaml"), "--config", str(CONFIGS / "logger" / "wandb.yaml"),
                   *FIT, "--model.init_args.optimizer.init_args.lr=0.003"])
    logger = run.trainer.logger
    assert type(logger) is WandbLogger
    assert logger.experiment.settings.mode == "offline"
    assert logger.experiment.project == "ae_lightning"
    finish()
    # one folder: runs/ae_lightning/<run id>/ holds the checkpoints, the config, the grids and W&B's own files
    folder = tmp_path / "runs" / "ae_lightning" / logger.version
    (wandb_run,) = offline_runs(tmp_path / "runs")
    assert wandb_run.parent.parent == folder
    assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "config.yaml").is_file()
    assert [p.name for p in (folder / "images").glob("*.png")] == ["val_reconstruction_epoch000.png"]
    assert list((wandb_run / "files" / "media" / "images").glob("**/*.png")), "the image grid was not logged to W&B"
    (info,) = records(wandb_run, "run")
    assert info.display_name.startswith("ae_mnist ") and "lr=0.003" in info.display_name  # told apart in a sweep
    assert info.run_group == "ae_mnist"
    assert records(wandb_run, "history"), "no metrics in the offline record"
    # the checkpoints as artifacts model-<id> (log_model: true), the best one with aliases best + latest
    artifacts = records(wandb_run, "artifact")
    assert {a.name for a in artifacts} == {f"model-{logger.version}"} and {a.type for a in artifacts} == {"model"}
    assert any(set(a.aliases) == {"best", "latest"} for a in artifacts)
    assert all([e.path for e in a.manifest.contents] == ["model.ckpt"] for a in artifacts)


def test_two_wandb_runs_never_share_a_folder(tmp_path, monkeypatch, run_cli):
    """The second W&B run writes its own config, grids and checkpoints: nothing of the first is overwritten."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    folders = []
    for seed in (1, 2):
        run = run_cli(["fit", "--config", str(CONFIGS / "ae_mnist.yaml"), "--config",
                       str(CONFIGS / "logger" / "wandb.yaml"), *FIT, f"--seed_everything={seed}"])
        folders.append(tmp_path / "runs" / "ae_lightning" / run.trainer.logger.version)
        finish()
        first = folders[0]
        assert yaml.safe_load((first / "config.yaml").read_text())["seed_everything"] == 1
    assert folders[0] != folders[1]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ae_lightning"]  # no runs/config.yaml, runs/images
    for seed, folder in enumerate(folders, 1):
        assert yaml.safe_load((folder / "config.yaml").read_text())["seed_everything"] == seed
        assert (folder / "images" / "val_reconstruction_epoch000.png").is_file()
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        assert len(offline_runs(folder)) == 1


def test_csv_and_wandb_together_write_one_folder(tmp_path, monkeypatch):
    """CSV first, W&B second: the CSV run folder holds everything, W&B's offline run included."""
    import ae_lightning.cli as cli

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)  # the fragment's save_dir: runs (relative)
    monkeypatch.setattr("sys.argv", ["ae-lightning"])
    cli.main(["fit", "--config", str(CONFIGS / "ae_mnist.yaml"), "--config", str(CONFIGS / "logger" / "csv_wandb.yaml"),
              *FIT, "--trainer.default_root_dir", str(tmp_path)])
    finish()
    folder = tmp_path / "runs" / "ae_mnist" / "version_0"
    for name in ("metrics.csv", "config.yaml", "checkpoints/last.ckpt", "images/val_reconstruction_epoch000.png"):
        assert (folder / name).is_file(), name
    (wandb_run,) = offline_runs(tmp_path / "runs")
    assert wandb_run.parent.parent == folder
    assert records(wandb_run, "artifact")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ae_mnist"]


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
        assert logger._wandb_init["mode"] == "offline"  # WANDB_MODE, passed on explicitly
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
