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

from ae_lightning.config import CONFIGS, instantiate, load_config
from ae_lightning.data import MNISTDataModule
from benchmarks import adversarial, common, compression, core, denoising, features, generation, pose, semisupervised

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


def models(name: str, mode: str = "quick") -> dict:
    """The untrained models of a registered benchmark, from its settings for ``mode``."""
    bench = core.benchmark(name)
    return bench.models(bench.settings(mode))


def test_denoising_trains_the_dae_configs_with_the_grid_noise():
    built = models("denoising")
    daes = denoising.daes_of(core.benchmark("denoising").settings("quick"))
    assert set(built) == {d["name"] for d in daes} == {"Gondara DAE"}  # quick: the shipped denoiser is the residual net
    full = denoising.daes_of(core.benchmark("denoising").settings("full"))
    assert {d["name"] for d in full} == {"Gondara DAE", "residual DAE", "DnCNN-17"}
    grid = load_config(CONFIGS / "noise" / "denoising_grid.yaml")
    for dae in daes:
        assert_same(built[dae["name"]], direct(dae["config"], lambda a: a.update(noise=grid)))
        assert len(built[dae["name"]].noise.noises) == 10  # noise-blind over the whole grid


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
    cfg = core.load_settings("features", "quick")
    assert cfg["code_dim"] == 64
    built = models("features")
    assert list(built) == [m["name"] for m in cfg["models"]]
    for entry in cfg["models"]:
        assert_same(built[entry["name"]], direct(entry["config"], _code_64))


def test_generation_trains_vae_mnist_at_latent_50_and_2_and_cvae_mnist_as_is():
    built = models("generation")
    assert set(built) == {("vae", 50), ("vae", 2), ("cvae", 8)}
    assert_same(built[("vae", 50)], direct("vae_mnist"))

    def latent_2(a: dict) -> None:
        a["encoder"]["init_args"]["widths"][-1] = 4  # means and log-variances
        a["decoder"]["init_args"]["widths"][-1] = 2
        a["latent_dim"] = 2

    assert_same(built[("vae", 2)], direct("vae_mnist", latent_2))
    assert built[("vae", 2)].latent_dim == 2
    assert_same(built[("cvae", 8)], direct("cvae_mnist"))
    assert built[("cvae", 8)].hparams.test_samples == core.load_settings("generation", "quick")["k"]


def test_adversarial_trains_aae_mnist_and_aae_mog_mnist_with_and_without_the_phase():
    built = models("adversarial")
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
    for mode in ("quick", "full"):
        cfg = core.load_settings("pose", mode)
        built = models("pose", mode)
        schedule = cfg["schedule"] or {}
        assert_same(built["mmae"], direct(cfg["models"]["mmae"], lambda a, s=schedule: a.update(s)))
        assert_same(built["regressor"], direct(cfg["models"]["regressor"]))
    quick = core.load_settings("pose", "quick")
    assert models("pose")["mmae"].pretrain_epochs == quick["schedule"]["pretrain_epochs"]
    assert models("pose", "full")["mmae"].pretrain_epochs == load_config("pose_mmae_synthetic")["model"]["init_args"][
        "pretrain_epochs"]  # full mode: the config's own schedule


def test_semisupervised_trains_vae_m2_and_ssaae_configs_with_the_quick_mode_nets():
    built = models("semisupervised")
    assert list(built) == ["M1 + probe", "M2", "SS-AAE"]
    assert_same(built["M1 + probe"], direct("vae_mnist"))
    overrides = core.load_settings("semisupervised", "quick")["overrides"]

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
    built = models("compression")
    cfg = core.load_settings("compression", "quick")
    sizes = cfg["code_dims"]
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
    labels = [generation.label_of(e) for e in core.load_settings("generation", "quick")["models"]]
    assert labels == ["configs/vae_mnist.yaml", "configs/vae_mnist.yaml (latent 2)", "configs/cvae_mnist.yaml"]


def test_no_benchmark_constructs_a_net_class():
    nets = r"\b(MLPEncoder|ConvEncoder|MLPDecoder|ConvDecoder|MLPDiscriminator|ConditionalEncoder|ConditionalDecoder)\("
    for path in (ROOT / "benchmarks").glob("*.py"):
        hits = [line for line in path.read_text().splitlines() if re.search(nets, line)]
        assert not hits, f"{path.name} builds nets in Python: {hits}"


def test_benchmarks_find_mnist_by_the_datamodules_lookup(tmp_path, monkeypatch):
    """--data, $AE_MNIST_ROOT, data/mnist, (full) the download into data/mnist, (quick) the embedded digits; nothing
    beside the project, even when a folder like ../shared/data/mnist exists there."""
    from ae_lightning.data import locate

    (tmp_path / "shared" / "data" / "mnist").mkdir(parents=True)  # what our machines have beside the clone
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setattr(locate, "LOCAL", Path("data"))
    monkeypatch.delenv("AE_MNIST_ROOT", raising=False)
    assert core.mnist_source(None, "quick") == {"root": None, "download": False}  # the embedded digits
    assert core.mnist_source(None, "full") == {"root": "data/mnist", "download": True}
    (project / "data" / "mnist").mkdir(parents=True)
    assert core.mnist_source(None, "quick") == {"root": "data/mnist", "download": False}
    monkeypatch.setenv("AE_MNIST_ROOT", str(tmp_path))
    assert core.mnist_source(None, "full") == {"root": str(tmp_path), "download": False}
    assert core.mnist_source(str(tmp_path / "x"), "quick")["root"] == str(tmp_path / "x")  # --data wins
    for name in ("find_mnist", "find_root", "SHARED_DATA", "SHARED_MNIST", "SHARED_XRAYS"):
        assert not any(hasattr(m, name) for m in (common, features, generation, adversarial, compression)), name


def test_no_code_looks_beside_the_project():
    """The package and the benchmarks name no default data path outside the repository."""
    pattern = r"\.\./shared|\"shared\" */ *\"data\"|SHARED_DATA"
    found = subprocess.run(["git", "grep", "-nE", pattern, "--", "ae_lightning/*.py", "ae_lightning/**/*.py",
                            "benchmarks/*.py"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not found, found


def test_committed_paths_are_relative_to_the_project():
    beside = core.REPO.parent / "elsewhere" / "mnist"
    assert core.relative(f"the MNIST test files in {beside} only") == "the MNIST test files in ../elsewhere/mnist only"
    assert core.relative(str(core.REPO / "data" / "mnist")) == "data/mnist"
    tracked = subprocess.run(["git", "ls-files", "benchmarks/results"], cwd=ROOT, capture_output=True, text=True)
    for name in tracked.stdout.split():
        if name.endswith((".md", ".csv")):
            text = (ROOT / name).read_text()
            assert str(core.REPO) not in text and str(core.REPO.parent) not in text, name


@pytest.mark.parametrize("module", [features, generation, semisupervised], ids=["features", "generation", "semisupervised"])
def test_full_mode_refuses_the_test_digits(module, monkeypatch, tmp_path, capsys):
    """--full must not call a run "full" when it found only the 10k test digits (here: the embedded ones)."""
    monkeypatch.setattr(core, "mnist_source", lambda data=None, mode="quick": {"root": None, "download": False})
    trained = []
    monkeypatch.setattr(MNISTDataModule, "train_dataloader", lambda self: trained.append(1))
    assert module.main(["--full", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "60k" in err and "fix:" in err and not trained
