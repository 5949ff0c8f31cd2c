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
