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

    results = tmp_path / "results"

    def fake_run(mode: str) -> None:
        results.mkdir(exist_ok=True)
        (results / "fake_table.csv").write_text("method,psnr\nours,31.2000\nbm3d,30.1000\n")
        Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(results / "fake_figure.png")

    monkeypatch.setitem(sys.modules, "benchmarks.fake", types.SimpleNamespace(run=fake_run))
    monkeypatch.setattr(bench, "BENCHMARKS", ["fake"])
    monkeypatch.setattr(bench, "RESULTS", results)
    monkeypatch.setattr(bench, "RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # never a server

    assert bench.main(["--quick", "--only", "fake", "--wandb"]) == 0
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
