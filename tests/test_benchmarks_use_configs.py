"""Every benchmark trains the experiment configs' models (configs/), with only its stated overrides.

Each benchmark exposes ``models(mode)``: the untrained models it would train. Here each is compared
with its config instantiated directly through ``ae_lightning.config`` and the overrides written out
by hand (same class, same parameter count). Nothing is trained.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import lightning as L
import pytest
import yaml

from ae_lightning.config import CONFIGS, instantiate, load_config
from ae_lightning.data import MNISTDataModule
from benchmarks import adversarial, common, compression, denoising, features, generation, pose, semisupervised

ROOT = Path(__file__).resolve().parent.parent


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def direct(config: str, edit=None) -> L.LightningModule:
    """``configs/<config>.yaml``'s model, instantiated directly; ``edit(init_args)`` applies the override."""
    spec = copy.deepcopy(load_config(config)["model"])
    if edit is not None:
        edit(spec["init_args"])
    return instantiate(spec, L.LightningModule)


def assert_same(built: L.LightningModule, expected: L.LightningModule) -> None:
    assert type(built) is type(expected)
    assert n_params(built) == n_params(expected)


def test_denoising_trains_the_dae_configs_with_the_grid_noise():
    built = denoising.models("quick")
    cfg = yaml.safe_load(denoising.CONFIG.read_text())
    daes = denoising.daes_of(cfg, "quick")
    assert set(built) == {d["name"] for d in daes} == {"Gondara DAE", "residual DAE"}
    assert {d["name"] for d in denoising.daes_of(cfg, "full")} == {"Gondara DAE", "residual DAE", "DnCNN-17"}
    grid = load_config(CONFIGS / "noise" / "denoising_grid.yaml")
    for dae in daes:
        assert_same(built[dae["name"]], direct(dae["config"], lambda a: a.update(noise=grid)))
        assert len(built[dae["name"]].noise.noises) == 8  # noise-blind over the whole grid


def test_denoising_finetune_scales_the_configs_learning_rate():
    spec = load_config("dae_residual_xray64")["model"]
    tuned = denoising.dae_spec(spec, {"class_path": "ae_lightning.noise.ScaledGaussian", "init_args": {"p": 0.1}}, 0.5)
    assert tuned["init_args"]["optimizer"]["init_args"]["lr"] == 0.5 * spec["init_args"]["optimizer"]["init_args"]["lr"]
    assert tuned["init_args"]["lr_scheduler"] == spec["init_args"]["lr_scheduler"]  # the rest is the config's


def _code_64(args: dict) -> None:
    for net in ("encoder", "decoder"):
        a = args[net]["init_args"]
        if "widths" in a:
            a["widths"][-1] = 64
        if "code_dim" in a:
            a["code_dim"] = 64


def test_features_trains_every_listed_config_at_the_common_code_size():
    cfg = yaml.safe_load(features.CONFIG.read_text())
    assert cfg["code_dim"] == 64
    built = features.models("quick")
    assert list(built) == [m["name"] for m in cfg["models"]]
    for entry in cfg["models"]:
        assert_same(built[entry["name"]], direct(entry["config"], _code_64))


def test_generation_trains_vae_mnist_at_latent_50_and_2_and_cvae_mnist_as_is():
    built = generation.models("quick")
    assert set(built) == {("vae", 50), ("vae", 2), ("cvae", 8)}
    assert_same(built[("vae", 50)], direct("vae_mnist"))

    def latent_2(a: dict) -> None:
        a["encoder"]["init_args"]["widths"][-1] = 4  # means and log-variances
        a["decoder"]["init_args"]["widths"][-1] = 2
        a["latent_dim"] = 2

    assert_same(built[("vae", 2)], direct("vae_mnist", latent_2))
    assert built[("vae", 2)].latent_dim == 2
    assert_same(built[("cvae", 8)], direct("cvae_mnist"))
    assert built[("cvae", 8)].hparams.test_samples == generation.MODES["quick"]["k"]


def test_adversarial_trains_aae_mnist_and_aae_mog_mnist_with_and_without_the_phase():
    built = adversarial.models("quick")
    assert set(built) == {(p, a) for p in ("gaussian", "mixture10_supervised") for a in (True, False)}

    def code_2(a: dict) -> None:
        for net in ("encoder", "decoder"):
            a[net]["init_args"]["widths"][-1] = 2
        a["discriminator"]["init_args"]["in_features"] = 2
        a["prior"]["init_args"]["dim"] = 2

    for on in (True, False):
        assert_same(built[("gaussian", on)], direct("aae_mnist", code_2))
        assert_same(built[("mixture10_supervised", on)], direct("aae_mog_mnist"))
        assert built[("gaussian", on)].hparams.adversarial is on
    assert built[("mixture10_supervised", True)].prior.supervised


def test_pose_trains_the_pose_configs_with_the_modes_schedule():
    cfg = yaml.safe_load(pose.CONFIG.read_text())
    for mode in ("quick", "full"):
        built = pose.models(mode)
        schedule = cfg["modes"][mode]["schedule"] or {}
        assert_same(built["mmae"], direct(cfg["models"]["mmae"], lambda a, s=schedule: a.update(s)))
        assert_same(built["regressor"], direct(cfg["models"]["regressor"]))
    assert pose.models("quick")["mmae"].pretrain_epochs == cfg["modes"]["quick"]["schedule"]["pretrain_epochs"]
    assert pose.models("full")["mmae"].pretrain_epochs == load_config("pose_mmae_synthetic")["model"]["init_args"][
        "pretrain_epochs"]  # full mode: the config's own schedule


def test_semisupervised_trains_vae_m2_and_ssaae_configs_with_the_quick_mode_nets():
    built = semisupervised.models("quick")
    assert list(built) == ["M1 + probe", "M2", "SS-AAE"]
    assert_same(built["M1 + probe"], direct("vae_mnist"))
    overrides = yaml.safe_load(semisupervised.CONFIG.read_text())["modes"]["quick"]["overrides"]

    def apply(name):
        def edit(args):
            for dotted, value in overrides[name].items():
                semisupervised.set_path(args, dotted, value)
        return edit

    assert_same(built["M2"], direct("m2_mnist", apply("M2")))
    assert_same(built["SS-AAE"], direct("ssaae_mnist", apply("SS-AAE")))
    assert n_params(built["M2"]) < n_params(direct("m2_mnist"))  # the overrides took effect
    with pytest.raises(ValueError, match="no 'widht'"):
        semisupervised.set_path({"encoder": {}}, "encoder.widht", 1)


def test_compression_trains_the_conv_ae_configs_at_each_code_size():
    built = compression.models("quick")
    cfg = yaml.safe_load(compression.CONFIG.read_text())
    sizes = cfg["modes"]["quick"]["code_dims"]
    assert set(built) == {(d, c) for d in cfg["datasets"] for c in sizes[d]}

    def code(n: int):
        def edit(a: dict) -> None:
            for net in ("encoder", "decoder"):
                a[net]["init_args"]["code_dim"] = n
        return edit

    for (dataset, n), model in built.items():
        assert_same(model, direct(cfg["datasets"][dataset]["config"], code(n)))


def test_every_results_table_names_its_config():
    for mod in (denoising, features, generation, adversarial, pose, semisupervised, compression):
        assert "config" in mod.COLUMNS, mod.__name__
    assert common.config_file("vae_mnist") == "configs/vae_mnist.yaml"
    labels = [generation.label_of(c, latent, o) for _, latent, c, o in generation.MODELS]
    assert labels == ["configs/vae_mnist.yaml", "configs/vae_mnist.yaml (latent 2)", "configs/cvae_mnist.yaml"]


def test_no_benchmark_constructs_a_net_class():
    nets = r"\b(MLPEncoder|ConvEncoder|MLPDecoder|ConvDecoder|MLPDiscriminator|ConditionalEncoder|ConditionalDecoder)\("
    for path in (ROOT / "benchmarks").glob("*.py"):
        hits = [line for line in path.read_text().splitlines() if re.search(nets, line)]
        assert not hits, f"{path.name} builds nets in Python: {hits}"


def test_one_mnist_finder_in_the_documented_order(tmp_path, monkeypatch):
    repo, shared = tmp_path / "main", tmp_path / "shared" / "data"
    monkeypatch.setattr(common, "REPO", repo)
    monkeypatch.setattr(common, "SHARED_DATA", shared)
    monkeypatch.delenv("AE_MNIST_ROOT", raising=False)
    assert common.find_mnist(None, "quick") is None  # nothing anywhere: the embedded digits
    for folder in (shared / "mnist", shared / "mnist_full"):
        folder.mkdir(parents=True)
    assert common.find_mnist(None, "quick") == shared / "mnist"  # the 10k test digits
    assert common.find_mnist(None, "full") == shared / "mnist_full"  # the 60k + 10k set
    (repo / "data" / "mnist").mkdir(parents=True)
    assert common.find_mnist(None, "full") == repo / "data" / "mnist"
    monkeypatch.setenv("AE_MNIST_ROOT", str(tmp_path))
    assert common.find_mnist(None, "quick") == tmp_path
    assert common.find_mnist(str(tmp_path / "x"), "quick") == tmp_path / "x"  # --data wins, even when missing
    # the finder's copies are gone from the scripts
    for name in ("find_root", "SHARED_MNIST", "MNIST"):
        assert not any(hasattr(m, name) for m in (features, generation, adversarial)), name


def test_committed_paths_are_relative_to_the_project():
    assert common.relative(f"the MNIST test files in {common.SHARED_DATA / 'mnist'} only") == \
        "the MNIST test files in ../shared/data/mnist only"
    assert common.relative(str(common.REPO / "data" / "mnist")) == "data/mnist"
    tracked = subprocess.run(["git", "ls-files", "benchmarks/results"], cwd=ROOT, capture_output=True, text=True)
    for name in tracked.stdout.split():
        if name.endswith((".md", ".csv")):
            text = (ROOT / name).read_text()
            assert str(common.REPO) not in text and str(common.SHARED_DATA) not in text, name


@pytest.mark.parametrize("module", [features, generation, semisupervised], ids=["features", "generation", "semisupervised"])
def test_full_mode_refuses_the_test_digits(module, monkeypatch, tmp_path, capsys):
    """--full must not call a run "full" when it found only the 10k test digits (here: the embedded 3k)."""
    monkeypatch.setattr(module, "find_mnist", lambda data=None, mode="quick": None)
    trained = []
    monkeypatch.setattr(MNISTDataModule, "train_dataloader", lambda self: trained.append(1))
    assert module.main(["--full", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "60k" in err and "fix:" in err and not trained
