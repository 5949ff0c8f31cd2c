"""Every experiment config in configs/*.yaml (found by glob) trains with fast_dev_run, in-process.

Configs whose real data are absent raise ``DatasetNotFoundError`` and are skipped with its message; so are
configs whose shipped pretrained weights are absent (``WeightsNotFoundError``, e.g. before the training run).
Also: a short real run writes the run directory (checkpoints, resolved config, metrics, image grids)
and its checkpoint tests through ``ae-lightning test``; the config fragments compose.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS

from ae_lightning.config import object_arguments
from ae_lightning.data import DatasetNotFoundError
from ae_lightning.pretrained import WeightsNotFoundError

FRAGMENTS = {"trainer.yaml", "defaults.yaml"}  # shared settings, not experiments (sub-folders: fragments)
EXPERIMENTS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name not in FRAGMENTS)
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(autouse=True)
def _quiet_lightning():
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def data_absent(err: BaseException) -> DatasetNotFoundError | WeightsNotFoundError | str | None:
    """The DatasetNotFoundError (or WeightsNotFoundError) behind ``err`` (jsonargparse may wrap errors raised while
    instantiating; a DDP rank's error reaches the test as the text of its traceback)."""
    while err is not None:
        if isinstance(err, DatasetNotFoundError | WeightsNotFoundError):
            return err
        for name in ("DatasetNotFoundError: ", "WeightsNotFoundError: "):
            if type(err).__name__ == "ProcessRaisedException" and name in str(err):
                return str(err).split(name)[-1].strip()
        err = err.__cause__ or err.__context__
    return None


def test_configs_are_found():
    names = {p.stem for p in EXPERIMENTS}
    assert {"ae_mnist", "deep_ae_mnist", "conv_ae_mnist", "dae_mnist", "dae_xray64"} <= names


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_config_layout(config):
    """An experiment holds what is its own: model and data; the shared preamble (seed, logger, run name,
    checkpoints) comes from configs/defaults.yaml and the CLI, never repeated."""
    cfg = yaml.safe_load(config.read_text())
    assert {"model", "data"} <= set(cfg), f"{config.name}: missing model/data"
    assert "class_path" in cfg["model"] and "class_path" in cfg["data"]
    repeated = {"seed_everything"} & set(cfg) | {"logger"} & set(cfg.get("trainer") or {})
    callbacks = [c["class_path"] for c in (cfg.get("trainer") or {}).get("callbacks", [])]
    assert not repeated and not any(c.endswith("ModelCheckpoint") for c in callbacks), \
        f"{config.name}: {sorted(repeated) or callbacks} belong to configs/defaults.yaml / the CLI's checkpoint.*"


def test_defaults_give_every_run_its_seed_logger_and_checkpoints():
    defaults = yaml.safe_load((CONFIGS / "defaults.yaml").read_text())
    assert defaults["seed_everything"] == 0
    assert defaults["trainer"]["logger"]["init_args"] == {"save_dir": "runs", "name": None}


def fit_or_skip(run_cli, config: Path, *args: str, batch_size: int = 8, offline: bool = False):
    """``ae-lightning fit --config <config> <args>`` with a small batch (these runs check wiring, not learning);
    skipped with the DataModule's message when the config's real data are absent. ``offline``: a config's
    offline stand-in data (``OFFLINE_DATA``) instead."""
    cmd = ["fit", "--config", str(config), *args, *QUIET]
    if "batch_size" in yaml.safe_load(config.read_text())["data"].get("init_args", {}):
        cmd.append(f"--data.init_args.batch_size={batch_size}")
    if offline:
        cmd += OFFLINE_DATA.get(config.stem, [])
    try:
        return run_cli(cmd)
    except Exception as err:
        if (absent := data_absent(err)) is not None:
            pytest.skip(f"{config.name}: data absent: {absent}")
        raise


# the CAAE's manual optimisation under DDP or on a GPU matters more than its real faces: the offline cartoon faces
OFFLINE_DATA = {"caae_utkface": ["--data.init_args.synthetic_demo=true"]}


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_config_fast_dev_run(config, run_cli, tmp_path):
    run = fit_or_skip(run_cli, config, "--trainer.fast_dev_run=1")
    trainer = run.trainer
    assert trainer.state.finished and trainer.state.fn == "fit"
    assert trainer.global_step >= 1  # at least one optimiser step
    metrics = trainer.callback_metrics
    train = {k: float(v) for k, v in metrics.items() if k.startswith("train/")}
    assert train, f"no train/ metric logged: {sorted(metrics)}"
    assert all(math.isfinite(v) for v in train.values()), train
    assert "val/loss" in metrics and math.isfinite(float(metrics["val/loss"])), sorted(metrics)
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    # the checkpoint holds plain hyperparameters only, and the Lightning way of loading it works for every
    # model class: Model.load_from_checkpoint(path, **the objects from the config)
    path = tmp_path / "model.ckpt"
    run.trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    plain = {k: v for k, v in run.model.hparams.items() if not k.startswith("_")}  # the CLI adds _class_path
    assert {k: v for k, v in saved["hyper_parameters"].items() if not k.startswith("_")} == plain
    model_spec = yaml.safe_load(run.parser.dump(run.config))["fit"]["model"]  # as config.yaml holds it
    again = type(run.model).load_from_checkpoint(path, weights_only=True, **object_arguments(model_spec))
    assert {k: v for k, v in again.hparams.items() if not k.startswith("_")} == plain
    for (name, a), (_, b) in zip(run.model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a.cpu(), b.cpu()), name


def test_fit_writes_the_run_directory_and_test_reloads_it(tmp_path, run_cli):
    config = CONFIGS / "dae_mnist.yaml"
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
             "--trainer.log_every_n_steps=1", *QUIET]
    run = run_cli(["fit", "--config", str(config), *short])
    run_dir = tmp_path / "runs" / "dae_mnist" / "version_0"
    assert Path(run.trainer.log_dir).resolve() == run_dir.resolve()
    # resolved config: the full, re-usable config, including what the YAML left to defaults
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "ae_lightning.models.DenoisingAutoencoder"
    assert saved["model"]["init_args"]["noise"]["init_args"]["fraction"] == 0.4
    assert saved["trainer"]["limit_train_batches"] == 3 and "image_grid" in saved
    # metrics: one row per step logged, with the validation metrics
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    columns = set(rows[0])
    assert {"train/loss_step", "train/loss", "val/loss", "val/psnr", "val/ssim"} <= columns, columns
    val = [float(r["val/psnr"]) for r in rows if r["val/psnr"]]
    assert len(val) == 1 and 0 < val[0] < 60
    # checkpoints: best and last, loadable without unpickling arbitrary objects
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["epoch=0-step=3.ckpt", "last.ckpt"], ckpts
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3 and state["hyper_parameters"]["loss"] == "bce"
    # image grid: clean | noisy | reconstruction of 8 digits
    (png,) = (run_dir / "images").glob("*.png")
    assert png.name == "val_reconstruction_epoch000.png"
    from PIL import Image

    assert Image.open(png).size == (8 * 30 + 2, 3 * 30 + 2)
    # `ae-lightning test --ckpt_path` reloads the checkpoint and reports test metrics
    test = run_cli(["test", "--config", str(config), "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"),
                    "--trainer.limit_test_batches=2", *QUIET])
    metrics = test.trainer.callback_metrics
    assert {"test/loss", "test/psnr", "test/ssim"} <= set(metrics)
    torch.testing.assert_close(test.model.encoder.linears[0].weight, run.model.encoder.linears[0].weight)


@pytest.mark.parametrize("fragment", ["logger/csv.yaml", "trainer.yaml"])
def test_fragments_compose_with_an_experiment(fragment, run_cli):
    args = ["fit", "--config", str(CONFIGS / "ae_mnist.yaml"), "--config", str(CONFIGS / fragment),
            "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", "--trainer.devices=1", *QUIET]
    run = run_cli(args)
    assert run.trainer.state.finished
    frag = yaml.safe_load((CONFIGS / fragment).read_text())["trainer"]
    if "precision" in frag:
        assert run.trainer.precision == frag["precision"]
    if "logger" in frag:
        assert type(run.trainer.logger).__name__ in ("CSVLogger", "DummyLogger")  # fast_dev_run swaps in a dummy


def test_nets_take_the_image_shape_from_the_data(run_cli, tmp_path):
    """image_shape is written once, in the data block: resizing the data resizes every net, and the
    resolved config records the shape the nets were built with."""
    assert not any("image_shape" in p.read_text() for p in EXPERIMENTS)  # no config repeats it
    run = run_cli(["fit", "--config", str(CONFIGS / "dae_xray64.yaml"), "--data.init_args.image_size=32",
                   "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
                   *QUIET])
    assert run.model.encoder.image_shape == run.model.decoder.image_shape == (1, 32, 32)
    saved = yaml.safe_load((tmp_path / "runs" / "dae_xray64" / "version_0" / "config.yaml").read_text())
    assert saved["model"]["init_args"]["encoder"]["init_args"]["image_shape"] == [1, 32, 32]
    # the same rule outside the CLI: the loader benchmarks and scripts use
    from ae_lightning.config import load_config

    assert load_config("cvae_mnist")["model"]["init_args"]["encoder"]["init_args"]["net"]["init_args"][
        "image_shape"] == [1, 28, 28]


@pytest.mark.slow
@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_config_fits_under_ddp_with_two_cpu_processes(config, run_cli, tmp_path, forked_ranks):
    """Every experiment fits a short epoch under DDP with 2 CPU processes (gloo; ``ddp_fork`` so the ranks
    import nothing again): unused parameters, collectives made by one rank only, CPU tensors in synced
    logs, each fail here. Validation included, one checkpoint written by rank 0."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised in this process: forked ranks cannot use it")
    run = fit_or_skip(run_cli, config, "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp_fork",
                      "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                      offline=True)
    assert run.trainer.world_size == 2 and run.trainer.state.finished
    (last,) = tmp_path.glob(f"runs/{config.stem}/version_0/checkpoints/last.ckpt")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] >= 2  # two batches (3 optimiser steps each for the adversarial models)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_every_config_the_docs_name_exists():
    """A command in the README, a benchmark README, a model card or a module's docstring that names
    ``configs/<name>.yaml`` (or a run folder ``runs/<name>/``) names a config that exists: a user copies them."""
    import re

    root = CONFIGS.parent
    docs = [root / "README.md", root / "benchmarks" / "README.md", *sorted((root / "ae_lightning").rglob("*.md")),
            *sorted((root / "ae_lightning").rglob("*.py")), *sorted((root / "scripts").glob("*"))]
    missing = []
    for doc in docs:
        if not doc.is_file():
            continue
        text = doc.read_text(errors="replace")
        for m in re.finditer(r"configs/([\w./-]+?\.yaml)|runs/(rd_xray64_[\d.]+)/", text):
            path = CONFIGS / m[1] if m[1] else CONFIGS / f"{m[2]}.yaml"
            if "<" not in m[0] and "*" not in m[0] and not path.is_file():
                missing.append(f"{doc.relative_to(root)}: {m[0]}")
    assert not missing, "\n".join(missing)
