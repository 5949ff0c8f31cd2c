"""W&B sweeps (``configs/sweeps/*.yaml``): one sampled run expanded into its command line exactly as
``wandb agent`` does (W&B's own ``create_sweep_command_args`` renders ``${args}``), then run for a few steps
in-process, without a W&B server."""

from __future__ import annotations

import pytest
import yaml
from conftest import CONFIGS, ROOT

pytest.importorskip("wandb")
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args  # noqa: E402

SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))
TINY = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--image_grid.num_images=0",
        "--trainer.callbacks=[]"]


def sample(parameters: dict, pick: int) -> dict:
    """One point of the search space: the ``pick``-th value of each list (wrapping), a range's upper end."""
    point = {}
    for name, spec in parameters.items():
        point[name] = spec["values"][pick % len(spec["values"])] if "values" in spec else spec["max"]
    return point


def command_line(sweep: dict, point: dict) -> list[str]:
    """The agent's command for ``point``: each ``${macro}`` element replaced by W&B's rendering of it."""
    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    macros["env"] = ["/usr/bin/env"]
    out = []
    for element in sweep["command"]:
        element = str(element)
        out += macros[element[2:-1]] if element.startswith("${") else [element]
    return out


def test_every_sweep_names_the_experiment_and_maps_onto_cli_flags():
    assert {p.stem for p in SWEEPS} >= {"dae_xray64", "vae_mnist"}
    for path in SWEEPS:
        sweep = yaml.safe_load(path.read_text())
        assert "${args}" in sweep["command"] and sweep["command"][1:3] == ["ae-lightning", "fit"]
        for name, spec in sweep["parameters"].items():
            assert name == "config" or name.startswith("model.init_args."), name
            for value in spec.get("values", []) if name == "config" else []:
                assert (ROOT / value).is_file(), value


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_a_sampled_sweep_run_trains_with_the_sampled_values(path, run_cli):
    sweep = yaml.safe_load(path.read_text())
    point = sample(sweep["parameters"], pick=1)
    cmd = command_line(sweep, point)
    assert cmd[:3] == ["/usr/bin/env", "ae-lightning", "fit"]
    assert all(f"--{k}={v}" in cmd for k, v in point.items())
    run = run_cli([*cmd[2:], *TINY])  # WANDB_MODE=disabled (conftest): the wandb fragment logs nothing
    assert run.trainer.global_step == 2
    model = run.config.fit.model.init_args  # the resolved config the run saved
    fragment = yaml.safe_load((ROOT / point["config"]).read_text())["model"]["init_args"]
    if path.stem == "dae_xray64":
        assert model.optimizer.init_args.lr == pytest.approx(point["model.init_args.optimizer.init_args.lr"])
        assert run.model.noise.p == pytest.approx(point["model.init_args.noise.init_args.p"])
        assert model.encoder.init_args.channels == model.decoder.init_args.channels == [64, 64, 64]  # depth3.yaml
    else:
        assert run.model.hparams.beta == pytest.approx(point["model.init_args.beta"])
        assert run.model.hparams.latent_dim == fragment["latent_dim"] == 10  # latent10.yaml
        assert model.encoder.init_args.widths[-1] == 20
    # the run's W&B name tells it apart from its sweep siblings; its group is the experiment
    init = run.trainer.logger._wandb_init
    assert init["group"] == path.stem and init["name"].startswith(f"{path.stem} ")
    assert all(f"{k.rsplit('.', 1)[-1]}={v}" in init["name"] for k, v in point.items() if k != "config")
    assert f" {ROOT.joinpath(point['config']).stem}" in init["name"]
