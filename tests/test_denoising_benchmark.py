"""The denoising benchmark's pieces, and one tiny end-to-end run of `make benchmark`'s path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_benchmark
from skimage.metrics import peak_signal_noise_ratio as sk_psnr

from ae_lightning import classical_denoisers as classical
from ae_lightning.config import CONFIGS, instantiate, load_config
from ae_lightning.data.common import EMBEDDED
from ae_lightning.metrics import psnr_ssim
from ae_lightning.noise import NoiseModel, ScaledGaussian
from benchmarks import core, denoising


@pytest.fixture(scope="module")
def xrays() -> torch.Tensor:
    """Eight real embedded chest X-rays, (8, 1, 64, 64) in [0, 1]."""
    images = np.load(EMBEDDED / "chest_xray64.npz")["images"][:8]
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


@pytest.fixture(scope="module")
def noisy(xrays) -> torch.Tensor:
    return ScaledGaussian(p=0.1)(xrays, torch.Generator().manual_seed(0))


def test_noise_grid_is_config_and_matches_the_issue():
    cfg = core.benchmark("denoising").settings("quick")
    # one list of settings: the grid fragment the noise-blind DAE config trains on, not a copy in denoising.yaml
    assert "noises" not in str(yaml.safe_load((core.HERE / "denoising.yaml").read_text()))
    assert denoising.noise_specs(cfg) == load_config("dae_residual_xray64")["model"]["init_args"]["noise"]["init_args"][
        "noises"]
    noises = [instantiate(spec, NoiseModel) for spec in denoising.noise_specs(cfg)]
    labels = [n.label for n in noises]
    assert len(set(labels)) == len(labels) == 10
    assert {"p=0.1·N(0,1)", "p=0.25·N(0,1)", "p=0.5·N(0,1)", "p=0.2·Poisson(1)", "p=0.2·Poisson(5)"} <= set(labels)
    assert {"Poisson(peak 10)", "Poisson(peak 30)"} <= set(labels)  # photon-limited y = Poisson(peak·x)/peak
    assert {"quick", "full"} <= set(yaml.safe_load((core.HERE / "denoising.yaml").read_text())["modes"])


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
        out = torch.from_numpy(pool.map_images(fn, list(noisy[:2, 0].numpy()), **kwargs)).unsqueeze(1)
    assert out.shape == (2, 1, 64, 64)
    before, _ = psnr_ssim(noisy[:2], xrays[:2])
    after, _ = psnr_ssim(out, xrays[:2])
    assert (after > before + 3).all()  # each removes a good part of σ=0.1 noise on a real X-ray


def test_nl_means_h_is_tuned_on_validation_from_the_grid(xrays, noisy):
    cfg = {"h_factors": [0.05, 0.8], "tune_images": 4, "patch_size": 5, "patch_distance": 6}
    with classical.Pool(workers=2) as pool:
        assert denoising.tune_nl_means(pool, noisy, xrays, cfg) == 0.8  # 0.05·σ barely denoises


def test_csv_and_markdown_writers(tmp_path):
    from benchmarks.core import markdown_table, write_csv

    path = write_csv(tmp_path / "t.csv", [{"a": 1, "b": 0.123456}], ["a", "b"])
    assert path.read_text().splitlines() == ["a,b", "1,0.1235"]
    with pytest.raises(ValueError):
        write_csv(tmp_path / "u.csv", [{"a": 1, "c": 2}], ["a", "b"])
    assert markdown_table(["m", "x"], [["NL-means", "1 / 2"]]).splitlines()[2] == "| NL-means | 1 / 2 |"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> str:
    """A weights file of the shipped architecture at a tiny width (random: the run's plumbing, not its quality)."""
    import lightning as L

    from ae_lightning import pretrained

    spec = load_config("denoise_pretrained_xray")["model"]
    spec["init_args"].pop("weights")
    for part in ("encoder", "decoder"):
        spec["init_args"][part]["init_args"]["channels"] = [4, 8, 8, 8]
    torch.manual_seed(0)
    model = instantiate(spec, L.LightningModule)
    path = tmp_path_factory.mktemp("weights") / "tiny_denoiser.pt"
    pretrained.save(model, path, spec, {"note": "test weights"})
    return str(path)


def _tiny(weights: str | None = None, **more) -> dict:
    """Overrides of the quick settings for a tiny run: two noise settings, one epoch, a split by image; the shipped
    denoiser's row from ``weights`` (none without)."""
    grid = load_config(CONFIGS / "noise" / "denoising_grid.yaml")
    noises = grid["init_args"]["noises"]
    grid["init_args"]["noises"] = noises[:1] + noises[3:4]  # one Gaussian, one Poisson setting
    return {"noise_grid": grid, "nl_means.h_factors": [0.6, 1.0], "nl_means.tune_images": 2,
            "split.val_fraction": 0.2, "split.test_fraction": 0.2, "split.group_by": "image",  # the .npz has no names
            "train_sizes": ["all"], "training": "blind+finetune", "finetune_epochs": 1, "test_images": None,
            "epochs": {"Gondara DAE": 1, "residual DAE": 1}, "crop": 32, "batch_size": 4, "bm3d_images": 2,
            "daes": [{"name": "Gondara DAE", "config": "dae_xray64"},
                     {"name": "residual DAE", "config": "dae_residual_xray64"}],
            "pretrained": [{"name": "shipped denoiser", "weights": weights, "config": "test weights"}] if weights else [],
            **more}


def test_end_to_end_tiny_run_writes_every_output(tmp_path, monkeypatch, tiny_weights):
    """The whole pipeline of `make benchmark` at tiny size: 20 real X-rays, 1 epoch, 2 noise settings. Besides the
    outputs, relations that must hold: every method is given the same seeded noisy copy (recomputed here from the
    seed), the CSV's PSNR is the one of the method's output images (recomputed with scikit-image), and the noisy
    input scores below every classical denoiser at every setting."""
    data = tmp_path / "tiny.npz"
    images = np.load(EMBEDDED / "chest_xray64.npz")["images"][:20]
    np.savez(data, images=images)
    inputs, reports = [], []  # (method, noise, noisy input) of every scored run; the run's Report

    def spy(fn, noisy_at: int):  # records the noisy and clean images a scoring function is given
        def wrapped(*args, **kwargs):
            scores = fn(*args, **kwargs)
            if scores.noise and scores.method:  # not NL-means' tuning runs on the validation split
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
    rows = run_benchmark("denoising", tmp_path / "out", _tiny(tiny_weights), xray=str(data)).rows
    csv_path = tmp_path / "out" / "denoising_tiny.csv"
    with csv_path.open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == denoising.COLUMNS
    by_noise = {n: {r["method"] for r in table if r["noise"] == n} for n in ("p=0.1·N(0,1)", "p=0.2·Poisson(1)")}
    daes = {"Gondara DAE", "residual DAE", "shipped denoiser"}
    gaussian = {"noisy", "median 3×3", "median 5×5", "NL-means (oracle σ)", "NL-means (blind σ)"}
    # the Poisson setting's known offset p·λ is removed from every classical method's input
    poisson = {"noisy"} | {m + denoising.BIAS_CORRECTED for m in gaussian - {"noisy"}}
    if classical.bm3d_available():
        gaussian |= {"BM3D (oracle σ)", "BM3D (blind σ)"}
        poisson |= {"BM3D (oracle σ)" + denoising.BIAS_CORRECTED, "BM3D (blind σ)" + denoising.BIAS_CORRECTED,
                    "BM3D (Anscombe VST, σ = 1)"}
    assert by_noise == {"p=0.1·N(0,1)": gaussian | daes, "p=0.2·Poisson(1)": poisson | daes}
    assert len(rows) == len(table) == len(gaussian) + len(poisson) + 6
    assert all(float(r["psnr_mean"]) > 0 and 0 < float(r["ssim_mean"]) <= 1 for r in table)
    shipped = [r for r in table if r["method"] == "shipped denoiser"]
    assert [r["train_size"] for r in shipped] == ["0", "0"] and all(r["selected"] == "false" for r in shipped)
    # selection on validation: one selected DAE per setting, the one with the best validation PSNR
    for noise in by_noise:
        dae_rows = [r for r in table if r["noise"] == noise and r["method"] in daes - {"shipped denoiser"}]
        chosen = [r for r in dae_rows if r["selected"] == "true"]
        assert len(chosen) == 1 and chosen[0] == max(dae_rows, key=lambda r: float(r["val_psnr_mean"]))
    md = (tmp_path / "out" / "denoising_tiny.md").read_text()
    assert "Gondara (2016)" in md and "Who wins" in md and "p=0.1·N(0,1)" in md
    assert "Split**: by image" in md and "validation" in md and "quality bar" in md
    assert "## The shipped denoiser vs BM3D" in md and "**shipped denoiser vs BM3D**, on all 4 scored test images" in md
    assert (tmp_path / "out" / "denoising_tiny.png").stat().st_size > 10_000

    # the same seeded noise for every method: each scored input is setting i's copy drawn with its seed
    cfg = core.benchmark("denoising").settings("quick", _tiny())
    clean = denoising.load_splits([data], cfg["split"])["test"]  # (4, 1, 64, 64)
    noises = [instantiate(spec, NoiseModel) for spec in denoising.noise_specs(cfg)]
    seeded = {n.label: denoising.noisy_copy(n, clean, denoising.NOISE_SEEDS["test"] + i) for i, n in enumerate(noises)}
    assert not torch.equal(*seeded.values())
    assert {(m, n) for m, n, _, _ in inputs} == {(m, n) for n, ms in by_noise.items() for m in ms - {"noisy"}}
    offsets = {n.label: (n.additive_moments() or (0.0, None))[0] for n in noises}
    for method, noise, given, given_clean in inputs:
        # the seeded copy itself, or minus the known offset p·λ where the row says so (BM3D blind: the first images)
        expected_input = seeded[noise] - (offsets[noise] if denoising.BIAS_CORRECTED in method else 0.0)
        assert torch.equal(given, expected_input[: len(given)]), (method, noise)
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
        for method in by_noise[label] - daes - {"noisy"}:
            s = scores[method, label]
            n = len(s.psnr)
            assert s.psnr.mean() > noisy.psnr[:n].mean() and s.ssim.mean() > noisy.ssim[:n].mean(), (method, label)


def test_per_setting_mode_trains_one_net_per_setting(tmp_path):
    """The full mode's schedule (the paper's: one net per noise setting, from scratch) at tiny size."""
    data = tmp_path / "tiny.npz"
    np.savez(data, images=np.load(EMBEDDED / "chest_xray64.npz")["images"][:12])
    rows = run_benchmark("denoising", tmp_path, _tiny(training="per_setting", bm3d_images=0, median_sizes=[3]),
                         xray=str(data)).rows
    daes = [r for r in rows if r["train_size"]]
    assert sorted((r["method"], r["noise"]) for r in daes) == sorted(
        (m, n) for m in ("Gondara DAE", "residual DAE") for n in ("p=0.1·N(0,1)", "p=0.2·Poisson(1)")
    )
    assert "trained from scratch per noise setting" in (tmp_path / "denoising_tiny.md").read_text()


def test_unknown_training_schedule_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        run_benchmark("denoising", tmp_path, _tiny(training="sometimes"))


def test_bad_data_path_is_one_clear_error(tmp_path, capsys):
    assert denoising.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "missing") in err


def test_too_small_set_names_the_minimum(tmp_path, capsys):
    np.savez(tmp_path / "three.npz", images=np.zeros((3, 64, 64), dtype=np.uint8))
    assert denoising.main(["--data", str(tmp_path / "three.npz"), "--out", str(tmp_path)]) == 2
    assert "need at least" in capsys.readouterr().err


def test_poisson_bias_and_oracle_sigma_are_the_noise_models():
    from ae_lightning.noise import Gaussian, ScaledPoisson

    assert ScaledPoisson(p=0.2, lam=5).additive_moments() == pytest.approx((1.0, 0.2 * 5**0.5))
    assert ScaledGaussian(p=0.25).additive_moments() == (0.0, 0.25)
    assert Gaussian(sigma=25, scale=255).additive_moments() == (0.0, pytest.approx(25 / 255))


def test_anscombe_bm3d_removes_the_poisson_offset(xrays):
    if not classical.bm3d_available():
        pytest.skip(classical.BM3D_MISSING)
    from ae_lightning.noise import ScaledPoisson

    noisy = ScaledPoisson(p=0.2, lam=1)(xrays[:2], torch.Generator().manual_seed(0))
    with classical.Pool(workers=2) as pool:
        out = torch.from_numpy(pool.map_images(classical.bm3d_anscombe, list(noisy[:, 0].numpy()), p=0.2, lam=1.0))
    before, _ = psnr_ssim(noisy, xrays[:2])
    after, _ = psnr_ssim(out.unsqueeze(1), xrays[:2])
    assert (after > before + 5).all()


QUICK_CSV = Path(core.RESULTS) / "denoising_xray64.csv"


@pytest.mark.slow
def test_quick_mode_shipped_denoiser_beats_every_classical_row():
    """The claim of `make benchmark`, on the committed (regenerated) quick CSV (the first 64 test images): at every
    setting but the saturated one the shipped noise-blind denoiser (no training in the run) beats NL-means, both
    median filters and every BM3D row scored on all of them (oracle σ, Anscombe) in PSNR and SSIM, but for one tie:
    at AWGN σ = 15 BM3D with the oracle σ is 0.02 dB higher in PSNR (the README and the model card say so). (The
    Gondara DAE trained in the run for 6 + 1 epochs is the paper's reproduction and carries no bar: it loses to BM3D
    at most settings.)"""
    with QUICK_CSV.open() as f:
        rows = list(csv.DictReader(f))
    noises = list(dict.fromkeys(r["noise"] for r in rows))
    assert len(noises) == 10
    failed, judged = [], 0
    for noise in noises:
        rs = [r for r in rows if r["noise"] == noise]
        if not any(r["method"].startswith("NL-means") for r in rs):  # the saturated setting: medians only, no verdict
            continue
        (ours,) = [r for r in rs if r["method"] == "shipped denoiser"]
        refs = [r for r in rs if r["method"].startswith(("NL-means", "median", "BM3D"))
                and not r["method"].startswith("BM3D (blind")]  # BM3D's blind row: the first 16 images only
        assert any(r["method"].startswith("BM3D") for r in refs)
        judged += 1
        for c in refs:
            for metric in ("psnr_mean", "ssim_mean"):
                if not float(ours[metric]) > float(c[metric]):
                    failed.append((noise, c["method"], metric, float(c[metric]) - float(ours[metric])))
    assert judged == 9
    ties = [f for f in failed if f[:3] == ("AWGN σ=15/255", "BM3D (oracle σ)", "psnr_mean") and f[3] < 0.05]
    assert failed == ties and len(ties) <= 1, failed


def test_saturated_setting_is_found_on_validation_and_left_out_of_verdicts(xrays):
    from ae_lightning.noise import Poisson, ScaledPoisson

    noises = [ScaledGaussian(p=0.1), ScaledPoisson(p=0.2, lam=5), Poisson(peak=10)]
    saturated = denoising.saturated_settings(noises, xrays, 0.5)
    assert list(saturated) == ["p=0.2·Poisson(5)"] and saturated["p=0.2·Poisson(5)"] > 0.8
    assert "no verdict" in denoising.saturation_note(0.88)


def test_photon_bm3d_uses_the_anscombe_transform_of_the_counts(xrays):
    if not classical.bm3d_available():
        pytest.skip(classical.BM3D_MISSING)
    from ae_lightning.noise import Poisson

    noisy = Poisson(peak=10)(xrays[:2], torch.Generator().manual_seed(0))
    with classical.Pool(workers=2) as pool:
        out = torch.from_numpy(pool.map_images(classical.bm3d_photon, list(noisy[:, 0].numpy()), peak=10.0)).unsqueeze(1)
        naive = torch.from_numpy(pool.map_images(classical.bm3d, list(noisy[:, 0].numpy()), sigma=0.1)).unsqueeze(1)
    before, _ = psnr_ssim(noisy, xrays[:2])
    after, _ = psnr_ssim(out, xrays[:2])
    assert (after > before + 5).all()
    assert abs(float(out.mean() - xrays[:2].mean())) < 0.01  # the exact unbiased inverse keeps the mean
    assert after.mean() > psnr_ssim(naive, xrays[:2])[0].mean()  # better than a single-σ BM3D on the raw counts
