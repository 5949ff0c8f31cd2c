"""The denoising benchmark's pieces, and one tiny end-to-end run of `make benchmark`'s path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from skimage.metrics import peak_signal_noise_ratio as sk_psnr

from ae_lightning.config import instantiate, load_config
from ae_lightning.data.common import EMBEDDED
from ae_lightning.metrics import psnr_ssim
from ae_lightning.noise import NoiseModel, ScaledGaussian
from benchmarks import classical, denoising


@pytest.fixture(scope="module")
def xrays() -> torch.Tensor:
    """Eight real embedded chest X-rays, (8, 1, 64, 64) in [0, 1]."""
    images = np.load(EMBEDDED / "chest_xray64.npz")["images"][:8]
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


@pytest.fixture(scope="module")
def noisy(xrays) -> torch.Tensor:
    return ScaledGaussian(p=0.1)(xrays, torch.Generator().manual_seed(0))


def test_noise_grid_is_config_and_matches_the_issue():
    cfg = denoising.read_config(denoising.CONFIG)
    # one list of settings: the grid fragment the noise-blind DAE config trains on, not a copy in denoising.yaml
    assert "noises" not in yaml.safe_load(denoising.CONFIG.read_text())
    assert denoising.noise_specs(cfg) == load_config("dae_residual_xray64")["model"]["init_args"]["noise"]["init_args"][
        "noises"]
    noises = [instantiate(spec, NoiseModel) for spec in denoising.noise_specs(cfg)]
    labels = [n.label for n in noises]
    assert len(set(labels)) == len(labels) == 8
    assert {"p=0.1·N(0,1)", "p=0.25·N(0,1)", "p=0.5·N(0,1)", "p=0.2·Poisson(1)", "p=0.2·Poisson(5)"} <= set(labels)
    assert {"quick", "full"} <= set(cfg["modes"])


def test_seeded_noisy_copies_are_identical(xrays):
    n = ScaledGaussian(p=0.25)
    assert torch.equal(denoising.noisy_copy(n, xrays, 7), denoising.noisy_copy(n, xrays, 7))
    assert not torch.equal(denoising.noisy_copy(n, xrays, 7), denoising.noisy_copy(n, xrays, 8))


@pytest.mark.parametrize(
    "fn,kwargs",
    [(classical.median, {"size": 3}), (classical.nl_means, {"h_factor": 0.8}), (classical.bm3d, {})],
    ids=["median", "nl_means", "bm3d"],
)
def test_classical_denoisers_improve_psnr(xrays, noisy, fn, kwargs):
    if fn is classical.bm3d and not classical.bm3d_available():
        pytest.skip(classical.BM3D_MISSING)
    with classical.Pool(workers=2) as pool:
        out = torch.from_numpy(pool.map(fn, list(noisy[:2, 0].numpy()), **kwargs)).unsqueeze(1)
    assert out.shape == (2, 1, 64, 64)
    before, _ = psnr_ssim(noisy[:2], xrays[:2])
    after, _ = psnr_ssim(out, xrays[:2])
    assert (after > before + 3).all()  # each removes a good part of σ=0.1 noise on a real X-ray


def test_nl_means_h_is_tuned_on_validation_from_the_grid(xrays, noisy):
    cfg = {"h_factors": [0.05, 0.8], "tune_images": 4, "patch_size": 5, "patch_distance": 6}
    with classical.Pool(workers=2) as pool:
        assert denoising.tune_nl_means(pool, noisy, xrays, cfg) == 0.8  # 0.05·σ barely denoises


def test_csv_and_markdown_writers(tmp_path):
    from benchmarks.common import markdown_table, write_csv

    path = write_csv(tmp_path / "t.csv", [{"a": 1, "b": 0.123456}], ["a", "b"])
    assert path.read_text().splitlines() == ["a,b", "1,0.1235"]
    with pytest.raises(ValueError):
        write_csv(tmp_path / "u.csv", [{"a": 1, "c": 2}], ["a", "b"])
    assert markdown_table(["m", "x"], [["NL-means", "1 / 2"]]).splitlines()[2] == "| NL-means | 1 / 2 |"


def _tiny_config(tmp_path: Path) -> dict:
    cfg = denoising.read_config(denoising.CONFIG)
    noises = denoising.noise_specs(cfg)
    cfg["noise_grid"]["init_args"]["noises"] = noises[:1] + noises[3:4]  # one Gaussian, one Poisson setting
    cfg["nl_means"].update(h_factors=[0.6, 1.0], tune_images=2)
    cfg["split"].update(val_fraction=0.2, test_fraction=0.2)
    cfg["modes"]["tiny"] = dict(train_sizes=["all"], training="blind+finetune", finetune_epochs=1,
                                epochs={"Gondara DAE": 1, "residual DAE": 1}, crop=32, batch_size=4, bm3d_images=2)
    return cfg


def test_end_to_end_tiny_run_writes_every_output(tmp_path, monkeypatch):
    """The whole pipeline of `make benchmark` at tiny size: 20 real X-rays, 1 epoch, 2 noise settings. Besides the
    outputs, relations that must hold: every method is given the same seeded noisy copy (recomputed here from the
    seed), the CSV's PSNR is the one of the method's output images (recomputed with scikit-image), and the noisy
    input scores below every classical denoiser at every setting."""
    data = tmp_path / "tiny.npz"
    images = np.load(EMBEDDED / "chest_xray64.npz")["images"][:20]
    np.savez(data, images=images)
    cfg = _tiny_config(tmp_path)
    inputs, reports = [], []  # (method, noise, noisy input) of every scored run; the run's Report

    def spy(fn, noisy_at: int):  # records the noisy and clean images a scoring function is given
        def wrapped(*args, **kwargs):
            scores = fn(*args, **kwargs)
            if scores.noise:  # not NL-means' tuning runs on the validation split
                inputs.append((scores.method, scores.noise, args[noisy_at].clone(), args[noisy_at + 1]))
            return scores
        return wrapped

    class RecordingReport(denoising.Report):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            reports.append(self)

    monkeypatch.setattr(denoising, "run_classical", spy(denoising.run_classical, 3))  # (pool, method, fn, noisy, clean…)
    monkeypatch.setattr(denoising, "run_dae", spy(denoising.run_dae, 2))  # (model, name, noisy, clean, …)
    monkeypatch.setattr(denoising, "Report", RecordingReport)
    rows = denoising.run("tiny", [str(data)], tmp_path / "out", cfg, progress=False)
    csv_path = tmp_path / "out" / "denoising_tiny.csv"
    with csv_path.open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == denoising.COLUMNS
    methods = {r["method"] for r in table}
    classical_methods = {"median 3×3", "median 5×5", "NL-means"} | ({"BM3D"} if classical.bm3d_available() else set())
    expected = {"noisy", "Gondara DAE", "residual DAE"} | classical_methods
    assert methods == expected
    assert len(rows) == len(table) == 2 * len(expected)
    assert all(float(r["psnr_mean"]) > 0 and 0 < float(r["ssim_mean"]) <= 1 for r in table)
    md = (tmp_path / "out" / "denoising_tiny.md").read_text()
    assert "Gondara (2016)" in md and "Who wins" in md and "p=0.1·N(0,1)" in md
    assert (tmp_path / "out" / "denoising_tiny.png").stat().st_size > 10_000

    # the same seeded noise for every method: each scored input is setting i's copy drawn with its seed
    clean = denoising.load_splits([str(data)], cfg["split"])["test"]  # (4, 1, 64, 64)
    noises = [instantiate(spec, NoiseModel) for spec in denoising.noise_specs(cfg)]
    seeded = {n.label: denoising.noisy_copy(n, clean, denoising.NOISE_SEEDS["test"] + i) for i, n in enumerate(noises)}
    assert not torch.equal(*seeded.values())
    assert {(m, n) for m, n, _, _ in inputs} == {(m, n) for m in expected - {"noisy"} for n in seeded}
    for method, noise, given, given_clean in inputs:
        assert torch.equal(given, seeded[noise][: len(given)]), (method, noise)  # BM3D: the first images
        assert torch.equal(given_clean, clean[: len(given)]), (method, noise)
    (report,) = reports
    scores = {(s.method, s.noise): s for s in report.scores}
    for label, copy in seeded.items():
        assert torch.equal(scores["noisy", label].images, copy)

    # the CSV's numbers are those of the output images, for one setting (PSNR recomputed with scikit-image)
    label = noises[0].label
    for r in (r for r in table if r["noise"] == label):
        out = scores[r["method"], label].images.clamp(0, 1)  # (N, 1, 64, 64)
        ref = np.mean([sk_psnr(c[0].numpy(), o[0].numpy(), data_range=1.0) for c, o in zip(clean, out, strict=False)])
        assert float(r["psnr_mean"]) == pytest.approx(ref, abs=2e-3), r["method"]
        assert float(r["ssim_mean"]) == pytest.approx(float(psnr_ssim(out, clean[: len(out)])[1].mean()), abs=2e-4)

    # the noisy input is worse than every classical denoiser at every setting, in both metrics (on the same
    # images: BM3D scores a prefix). Not asserted for the DAEs: one epoch on 12 images leaves them below the
    # noisy input at σ = 0.1 (the slow test checks the trained DAEs against the classical methods instead)
    for label in seeded:
        noisy = scores["noisy", label]
        for method in classical_methods:
            s = scores[method, label]
            n = len(s.psnr)
            assert s.psnr.mean() > noisy.psnr[:n].mean() and s.ssim.mean() > noisy.ssim[:n].mean(), (method, label)


def test_per_setting_mode_trains_one_net_per_setting(tmp_path):
    """The full mode's schedule (the paper's: one net per noise setting, from scratch) at tiny size."""
    data = tmp_path / "tiny.npz"
    np.savez(data, images=np.load(EMBEDDED / "chest_xray64.npz")["images"][:12])
    cfg = _tiny_config(tmp_path)
    cfg["modes"]["tiny"].update(training="per_setting", bm3d_images=0)
    cfg["median_sizes"] = [3]
    rows = denoising.run("tiny", [str(data)], tmp_path, cfg, progress=False)
    daes = [r for r in rows if r["train_size"]]
    assert sorted((r["method"], r["noise"]) for r in daes) == sorted(
        (m, n) for m in ("Gondara DAE", "residual DAE") for n in ("p=0.1·N(0,1)", "p=0.2·Poisson(1)")
    )
    assert "trained from scratch per noise setting" in (tmp_path / "denoising_tiny.md").read_text()


def test_unknown_training_schedule_is_one_clear_error(tmp_path):
    cfg = _tiny_config(tmp_path)
    cfg["modes"]["tiny"]["training"] = "sometimes"
    with pytest.raises(ValueError, match="choose one of"):
        denoising.run("tiny", None, tmp_path, cfg, progress=False)


def test_bad_data_path_is_one_clear_error(tmp_path, capsys):
    assert denoising.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "missing") in err


def test_too_small_set_names_the_minimum(tmp_path, capsys):
    np.savez(tmp_path / "three.npz", images=np.zeros((3, 64, 64), dtype=np.uint8))
    assert denoising.main(["--data", str(tmp_path / "three.npz"), "--out", str(tmp_path)]) == 2
    assert "need at least" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_mode_dae_beats_classical_baselines(tmp_path):
    """The quality bar of `make benchmark`: at every setting a DAE beats NL-means and the median filters in both metrics."""
    rows = denoising.run("quick", None, tmp_path, progress=False)
    for noise in {r["noise"] for r in rows}:
        rs = [r for r in rows if r["noise"] == noise]
        classical_rows = [r for r in rs if r["method"] == "NL-means" or r["method"].startswith("median")]
        assert any(
            all(d["psnr_mean"] > c["psnr_mean"] and d["ssim_mean"] > c["ssim_mean"] for c in classical_rows)
            for d in rs if d["train_size"]
        ), noise
