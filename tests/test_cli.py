"""The ``ae-lightning`` command: entry point, help, resolved config, and errors for bad values."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS

from ae_lightning.cli import main

CONV = str(CONFIGS / "conv_ae_mnist.yaml")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """pytest's arguments are not the CLI's; anything a run would write lands in tmp_path."""
    monkeypatch.setattr("sys.argv", ["ae-lightning"])
    monkeypatch.chdir(tmp_path)


def test_console_script_points_at_main():
    (ep,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "ae-lightning"]
    assert ep.value == "ae_lightning.cli:main"


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("fit", "validate", "test", "predict"))


def test_print_config_resolves_the_yaml(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", CONV, "--model.init_args.optimizer.init_args.lr=0.01", "--print_config"])
    assert exit_.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.01  # command line overrides the file
    assert cfg["model"]["init_args"]["optimizer"]["class_path"] == "torch.optim.Adam"
    assert cfg["model"]["init_args"]["encoder"]["init_args"]["channels"] == [32, 64]
    assert cfg["seed_everything"] == 0 and cfg["image_grid"]["num_images"] == 8  # configs/defaults.yaml, CLI defaults
    assert cfg["checkpoint"]["monitor"] == "val/loss" and cfg["checkpoint"]["save_last"] is True
    assert cfg["trainer"]["logger"]["class_path"].endswith("CSVLogger")


def test_optimizer_switches_to_adamw_and_onecycle_in_yaml(tmp_path):
    """What a user writes to change the optimiser and schedule: YAML blocks, no code."""
    (tmp_path / "opt.yaml").write_text(yaml.safe_dump({"model": {"init_args": {
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.002, "weight_decay": 0.05}},
        "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.OneCycleLR",
                         "init_args": {"max_lr": 0.002, "total_steps": 10}}}}}))
    from ae_lightning.cli import AutoencoderCLI

    cli = AutoencoderCLI.__new__(AutoencoderCLI)  # parse and build without running
    import lightning as L

    cli.__init__(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                 run=False, args=["--config", CONV, "--config", str(tmp_path / "opt.yaml"),
                                  "--trainer.logger=false"])
    config = cli.model.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.AdamW) and config["optimizer"].defaults["weight_decay"] == 0.05
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.OneCycleLR)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--model.init_args.loss=huber", "loss"),
        ("--trainer.max_epochs=many", "max_epochs"),
        ("--data.init_args.batch_size=-x", "batch_size"),
        ("--model.init_args.no_such_argument=1", "no_such_argument"),
        ("--model=ae_lightning.models.NoSuchModel", "NoSuchModel"),
    ],
)
def test_bad_config_values_exit_with_an_error(override, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", CONV, override, "--trainer.fast_dev_run=1"])
    assert exit_.value.code != 0
    assert expected in capsys.readouterr().err


def test_missing_config_file_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(tmp_path / "nope.yaml")])
    assert exit_.value.code != 0
    assert "nope.yaml" in capsys.readouterr().err


def test_net_that_cannot_take_the_image_shape_names_shape_and_rule():
    with pytest.raises(ValueError) as err:
        main(["fit", "--config", CONV, "--model.init_args.encoder.init_args.channels=[8,16,32]",
              "--trainer.fast_dev_run=1"])
    assert "1x28x28" in str(err.value) and "divisible by 2**depth = 8" in str(err.value)


@pytest.mark.parametrize(
    "override, suggestion",
    [
        ("--trainer.max_epoks=1", "did you mean 'trainer.max_epochs'"),  # an unknown option of the subcommand
        ("--model.init_args.los=mse", "did you mean 'loss'"),  # an argument the model class does not take
        ("--model.init_args.encoder.init_args.chanels=[8]", "did you mean 'channels'"),  # a net's argument, nested
        ("--model.init_args.resdual=true", "did you mean 'residual'"),  # Autoencoder's, through DAE's **kwargs
    ],
)
def test_misspelled_key_gets_a_did_you_mean(override, suggestion, capsys):
    config = CONV if "resdual" not in override else str(CONFIGS / "dae_mnist.yaml")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", config, override, "--trainer.fast_dev_run=1"])
    err = capsys.readouterr().err
    assert exit_.value.code != 0
    assert suggestion in err and err.count("did you mean") == 1, err[-2000:]


def test_misspelled_key_in_a_yaml_file_gets_a_did_you_mean(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(CONV).read_text().replace("max_epochs", "max_epoks"))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(bad)])
    assert "did you mean 'trainer.max_epochs'" in capsys.readouterr().err
