"""``make reproduce``: does a user's ``make benchmark`` give the numbers we commit?

Clones ``HEAD`` into an empty temporary folder (no data a user would not have), runs ``make benchmark`` there
and compares every regenerated ``benchmarks/results/*.csv`` with the committed one: numbers within the
tolerances below, every other cell (names, configs, settings, the chosen model) exactly. A drift, a missing
or extra row, a missing file or a crashed benchmark fails (exit status 1) with a table of what moved; the
largest deviation of each table is printed either way. Not compared: :data:`SKIP`'s tables, :data:`TIMING`'s
columns.

    python -m benchmarks.reproduce                       # clone, run, compare (what CI runs)
    python -m benchmarks.reproduce --compare-only DIR    # compare DIR's results with the committed ones
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from benchmarks.core import REPO, RESULTS, markdown_table

#: absolute tolerance per quality column, by the first matching name pattern (fnmatch)
TOLERANCES: list[tuple[str, float]] = [
    ("*psnr*", 0.05),          # dB
    ("*ssim*", 0.002),
    ("*error*", 0.005),        # fractions: 0.5 percentage points
    ("*accuracy*", 0.005),
    ("elbo", 1.0),             # nats
    ("nll*", 1.0),
    ("bpp*", 0.01),            # bits per pixel
    ("*mpjpe*", 0.002),        # skeleton units
    ("test_ci95", 0.002),
    ("test_mse", 0.001),
    ("test_bce", 0.005),
    ("prior_mmd", 0.01),
    ("prior_ks", 0.02),
]
#: columns that measure the machine, not the method: reported, never compared
TIMING = {"seconds", "cpu_s", "train_s", "ms_per_image", "images_per_s", "ratio_to_raw", "device"}
#: result files the quick run does not reproduce: speeds (they depend on the machine), ``make benchmark-full``'s
#: tables, and ``denoising_fullsize`` (its data do not ship: ``python -m benchmarks.denoising_fullsize --data PATH``)
SKIP = ["throughput_*.csv", "*_full.csv", "denoising_fullsize.csv"]


class Drift(NamedTuple):
    table: str
    row: str
    column: str
    committed: str
    regenerated: str
    tolerance: str


def tolerance(column: str) -> float | None:
    """The column's tolerance; ``None``: not a quality number (compared exactly)."""
    return next((tol for pattern, tol in TOLERANCES if fnmatch.fnmatch(column, pattern)), None)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _row_name(row: dict[str, str], columns: list[str]) -> str:
    """A row's label: its leading non-numeric cells (model, method, setting)."""
    keys = [row[c] for c in columns if tolerance(c) is None and c not in TIMING and _float(row[c]) is None and row[c]]
    return " · ".join(keys[:3]) or "?"


def compare_table(name: str, committed: Path, regenerated: Path) -> tuple[list[Drift], dict[str, float]]:
    """Drifts of one table and the largest |Δ| of each compared quality column."""
    old, new = list(csv.DictReader(committed.open())), list(csv.DictReader(regenerated.open()))
    columns, new_columns = (list(rows[0]) if rows else [] for rows in (old, new))
    largest: dict[str, float] = {}
    if new and new_columns != columns:
        return [Drift(name, "(header)", "", ",".join(columns), ",".join(new_columns), "same columns")], largest
    drifts = [] if len(old) == len(new) else [Drift(name, "(rows)", "", str(len(old)), str(len(new)), "same row count")]
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        row = f"{i + 1}: {_row_name(a, columns)}"
        for col in (c for c in columns if c not in TIMING):
            tol, x, y = tolerance(col), _float(a[col]), _float(b[col])
            if x is not None and y is not None and math.isnan(x) and math.isnan(y):
                continue
            if tol is None or x is None or y is None:
                if a[col] != b[col] and not (x is not None and x == y):  # the same number, however written
                    drifts.append(Drift(name, row, col, a[col], b[col], "exact"))
                continue
            largest[col] = max(largest.get(col, 0.0), abs(x - y))
            if not abs(x - y) <= tol:  # NaN on one side fails too
                drifts.append(Drift(name, row, col, a[col], b[col], f"±{tol:g}"))
    return drifts, largest


def compare(committed_dir: Path, regenerated_dir: Path) -> tuple[list[Drift], dict[str, dict[str, float]]]:
    """Every committed quality table against its regenerated copy."""
    drifts: list[Drift] = []
    largest: dict[str, dict[str, float]] = {}
    for path in sorted(committed_dir.glob("*.csv")):
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in SKIP):
            continue
        if not (regenerated_dir / path.name).is_file():
            drifts.append(Drift(path.name, "(file)", "", "committed", "missing", "present"))
            continue
        found, largest[path.name] = compare_table(path.name, path, regenerated_dir / path.name)
        drifts += found
    return drifts, largest


def report(drifts: list[Drift], largest: dict[str, dict[str, float]]) -> str:
    lines = ["largest deviation per table (quality columns):"]
    for table, cols in largest.items():
        worst = ", ".join(f"{c} {d:.4g}" for c, d in sorted(cols.items(), key=lambda kv: -kv[1])[:4]) or "no numbers"
        lines.append(f"  {table}: {worst}")
    if drifts:
        lines += ["", f"{len(drifts)} numbers moved beyond tolerance:", "",
                  markdown_table(Drift._fields, drifts)]
    else:
        lines.append("every committed quality number reproduced within tolerance")
    return "\n".join(lines)


def clone_and_run() -> tuple[Path, int, float]:
    """Clone ``HEAD`` into an empty temporary folder and run ``make benchmark`` there, as a new user would."""
    tmp = Path(tempfile.mkdtemp(prefix="ae_reproduce_"))
    clone = tmp / "ae_lightning"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
    print(f"cloned HEAD into an empty folder; running `make benchmark` there (log: {clone / 'benchmark.log'})",
          flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AE_")}  # no data path a user would not have
    env.setdefault("WANDB_MODE", "offline")
    t0 = time.perf_counter()
    with (clone / "benchmark.log").open("w") as log:
        proc = subprocess.Popen(["make", "benchmark"], cwd=clone, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:  # keep CI's log alive and complete
            sys.stdout.write(line)
            log.write(line)
        code = proc.wait()
    return clone, code, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("--compare-only", type=Path, metavar="DIR",
                    help="compare DIR (a results folder) with the committed results; run nothing")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone (its .venv is several GB)")
    args = ap.parse_args(argv)
    code, wall = 0, 0.0
    if args.compare_only:
        drifts, largest = compare(RESULTS, args.compare_only)
    else:
        clone, code, wall = clone_and_run()
        try:
            drifts, largest = compare(RESULTS, clone / "benchmarks" / "results")
        finally:
            if args.keep:
                print(f"kept the clone: {clone}")
            else:
                shutil.rmtree(clone.parent, ignore_errors=True)
    print("\n" + report(drifts, largest))
    if not args.compare_only:
        print(f"\n`make benchmark` in the fresh clone: exit status {code}, {wall / 60:.1f} min")
    if code != 0:
        print("make benchmark failed in the fresh clone: see the log above", file=sys.stderr)
    return 1 if drifts or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
