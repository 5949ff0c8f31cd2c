"""``python -m benchmarks.run --wandb``: each results CSV as a ``wandb.Table``, each figure as a ``wandb.Image``,
the environment in the run config, offline (no server), in ``runs/benchmarks/<run id>/``.

A fake benchmark (a table and a figure written in a second) stands in for the real ones, which take minutes;
``benchmarks/results/`` is redirected to ``tmp_path`` so the committed results are untouched.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

wandb = pytest.importorskip("wandb")


def test_benchmarks_run_wandb_logs_tables_and_figures_offline(tmp_path, monkeypatch):
    from test_wandb import records

    import benchmarks.run as bench
    from benchmarks import core

    results = tmp_path / "results"

    class Fake(core.Benchmark):
        """A registered benchmark is a subclass and a registry entry: this one writes a table and a figure."""

        name = "fake"

        def settings(self, mode, overrides=None):
            return {}

        def run(self, ctx, s):
            out = ctx.results()
            out.table("fake_table", [{"method": "ours", "psnr": 31.2}, {"method": "bm3d", "psnr": 30.1}],
                      ["method", "psnr"])
            image = Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
            image.save(out.path("fake_figure", "png"))
            out.files.append(out.path("fake_figure", "png"))
            return out

    monkeypatch.setitem(sys.modules, "benchmarks.fake", types.SimpleNamespace(Fake=Fake))
    monkeypatch.setitem(core.REGISTRY, "fake", "benchmarks.fake:Fake")
    monkeypatch.setattr(bench, "RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # never a server

    assert bench.main(["--quick", "--only", "fake", "--wandb", "--out", str(results)]) == 0
    wandb.teardown()  # the offline record is complete once W&B's service stopped

    (run,) = (tmp_path / "runs" / "benchmarks").glob("*/wandb/offline-run-*")
    files = run / "files"
    (table,) = files.glob("media/table/fake/fake_table_*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == ["method", "psnr"] and content["data"] == [["ours", "31.2000"], ["bm3d", "30.1000"]]
    (image,) = files.glob("media/images/fake/fake_figure_*.png")
    assert np.asarray(Image.open(image)).shape == (64, 64)
    (info,) = records(run, "run")  # the config given to wandb.init travels in the run record
    env = {item.key: json.loads(item.value_json) for item in info.config.update}
    assert env["mode"] == "quick" and env["benchmarks"] == ["fake"]
    assert {"device", "torch", "lightning", "python"} <= env.keys()
