"""The reproduction check: a regenerated results folder against the committed tables."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from benchmarks import reproduce
from benchmarks.core import RESULTS


def copy_results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    shutil.copytree(RESULTS, out)
    return out


def rewrite(path: Path, row: int, column: str, value: str) -> str:
    rows = list(csv.DictReader(path.open()))
    old = rows[row][column]
    rows[row][column] = value
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return old


def test_committed_results_reproduce_themselves(tmp_path):
    drifts, largest = reproduce.compare(RESULTS, copy_results(tmp_path))
    assert drifts == [] and largest  # every committed quality table was compared
    assert all(d == 0 for cols in largest.values() for d in cols.values())


def test_a_changed_number_fails_with_a_table(tmp_path):
    out = copy_results(tmp_path)
    old = rewrite(out / "denoising_xray64.csv", 3, "psnr_mean", "99.0")
    rewrite(out / "generation_mnist.csv", 0, "nll_k", "1.0")
    drifts, _ = reproduce.compare(RESULTS, out)
    moved = {(d.table, d.column) for d in drifts}
    assert moved == {("denoising_xray64.csv", "psnr_mean"), ("generation_mnist.csv", "nll_k")}
    assert any(d.committed == old and d.regenerated == "99.0" and d.tolerance == "±0.05" for d in drifts)
    text = reproduce.report(drifts, {})
    assert "2 numbers moved" in text and "| denoising_xray64.csv |" in text


def test_within_tolerance_passes_and_timings_are_not_compared(tmp_path):
    out = copy_results(tmp_path)
    old = float(rewrite(out / "denoising_xray64.csv", 3, "psnr_mean", "0"))
    rewrite(out / "denoising_xray64.csv", 3, "psnr_mean", f"{old + 0.04:.4f}")
    rewrite(out / "denoising_xray64.csv", 3, "ms_per_image", "12345")
    drifts, largest = reproduce.compare(RESULTS, out)
    assert drifts == [] and abs(largest["denoising_xray64.csv"]["psnr_mean"] - 0.04) < 1e-3


def test_missing_row_file_and_changed_choice_fail(tmp_path):
    out = copy_results(tmp_path)
    rows = (out / "generation_mnist.csv").read_text().splitlines()
    (out / "generation_mnist.csv").write_text("\n".join(rows[:-1]) + "\n")
    (out / "features_mnist.csv").unlink()
    rewrite(out / "denoising_xray64.csv", 3, "method", "another method")
    drifts, _ = reproduce.compare(RESULTS, out)
    kinds = {(d.table, d.row) for d in drifts}
    assert ("generation_mnist.csv", "(rows)") in kinds and ("features_mnist.csv", "(file)") in kinds
    assert any(d.table == "denoising_xray64.csv" and d.column == "method" and d.tolerance == "exact" for d in drifts)


def test_speed_and_full_tables_are_not_reproduced(tmp_path):
    out = copy_results(tmp_path)
    for path in out.glob("throughput_*.csv"):
        path.unlink()
    for path in out.glob("*_full.csv"):
        path.unlink()
    assert reproduce.compare(RESULTS, out)[0] == []
