"""`make benchmark-full` is known to run: every benchmark's full-mode code path, capped (``--smoke``), on the
developers' full data passed explicitly. Slow tier; skipped, saying why, when the data are absent."""

from __future__ import annotations

import csv

import pytest
from conftest import run_benchmark

from benchmarks.core import REGISTRY, load_settings


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REGISTRY))
def test_full_mode_code_path_runs_capped(name, shared_data, tmp_path):
    mnist, xray = shared_data / "mnist_full", shared_data / "xray64" / "kermany_64.npz"
    for path in (mnist, xray):
        if not path.exists():
            pytest.skip(f"the smoke run needs {path} (the full MNIST and the 1,564 Kermany X-rays)")
    results = run_benchmark(name, tmp_path, mode="smoke", mnist=str(mnist), xray=str(xray))
    tables = [p for p in results.files if p.suffix == ".csv"]
    assert tables and all(p.name.endswith("_smoke.csv") for p in tables)  # never the committed names
    for path in tables:
        assert len(list(csv.DictReader(path.open()))) >= 1, path.name
    assert "Mode `smoke`" in next(p for p in results.files if p.suffix == ".md").read_text()


def test_every_registered_benchmark_has_a_smoke_setting():
    """A smoke run is the full mode with caps: each settings file states its caps (or inherits full's)."""
    for name in REGISTRY:
        smoke, full = load_settings(name, "smoke"), load_settings(name, "full")
        assert smoke["mode"] == "smoke" and set(full) - {"mode"} <= set(smoke), name


def test_an_override_of_a_setting_that_does_not_exist_is_one_clear_error():
    """A mistyped ``--set`` / test override never runs the defaults silently: the key, the file, the close names."""
    with pytest.raises(ValueError, match=r"'regressor_epoch': pose.yaml has no setting 'regressor_epoch' \(did you "
                                         r"mean regressor_epochs\?\); fix: one of .*regressor_epochs"):
        load_settings("pose", "quick", {"regressor_epoch": 3})
    with pytest.raises(ValueError, match=r"no setting 'figure.sample' \(did you mean figure.samples\?\)"):
        load_settings("pose", "quick", {"figure.sample": 3})
    assert load_settings("pose", "quick", {"figure.samples": 3, "regressor_epochs": 2})["figure"]["samples"] == 3
    # what a test or a user may set in one mode is declared for every mode (the file's defaults)
    for name in REGISTRY:
        quick, full = load_settings(name, "quick"), load_settings(name, "full")
        assert set(quick) == set(full), f"{name}.yaml: {sorted(set(quick) ^ set(full))} set in one mode only"
