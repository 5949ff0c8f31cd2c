"""``make reproduce``: does a user's ``make benchmark`` give the numbers we commit?

Clones the committed ``HEAD`` into an empty temporary folder (nothing beside it: no data a user would not
have), runs the README's ``make benchmark`` there, and compares every quality column of every regenerated
``benchmarks/results/*.csv`` with the committed file within the tolerances below. Any drift, a missing or
extra row, a missing file or a crashed benchmark fails (exit status 1) with a table of what moved; the
largest deviation of each table is printed either way.

    python -m benchmarks.reproduce                       # clone, run, compare (what CI runs)
    python -m benchmarks.reproduce --compare-only DIR    # compare DIR's results with the committed ones

Not compared: the throughput tables (speeds are reported, not reproduced: they depend on the machine), the
``*_full`` tables (``make benchmark-full``'s, not the quick run's), ``denoising_fullsize`` (run on data that do
not ship: ``python -m benchmarks.denoising_fullsize --data PATH``), and timing columns (seconds, CPU-s,
ms per image, images/s). Every other column must match: a number within its tolerance, anything else exactly
(names, configs, settings, the chosen model).
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
from dataclasses import dataclass
from pathlib import Path

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
#: columns that are measurements of the machine, not results: reported, never compared
TIMING = {"seconds", "cpu_s", "train_s", "ms_per_image", "images_per_s", "ratio_to_raw", "device"}
#: result files that the quick run does not reproduce
SKIP = ["throughput_*.csv", "*_full.csv", "denoising_fullsize.csv"]  # the last: not make benchmark's (its data do not ship)


@dataclass
class Drift:
    table: str
    row: str
    column: str
    committed: str
    regenerated: str
    tolerance: str

    def cells(self) -> list[str]:
        return [self.table, self.row, self.column, self.committed, self.regenerated, self.tolerance]


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
    columns = list(old[0].keys()) if old else []
    drifts: list[Drift] = []
    largest: dict[str, float] = {}
    new_columns = list(new[0].keys()) if new else []
    if new and new_columns != columns:
        return [Drift(name, "(header)", "", ",".join(columns), ",".join(new_columns), "same columns")], largest
    if len(old) != len(new):
        drifts.append(Drift(name, "(rows)", "", str(len(old)), str(len(new)), "same row count"))
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        row = f"{i + 1}: {_row_name(a, columns)}"
        for col in columns:
            if col in TIMING:
                continue
            tol = tolerance(col)
            x, y = _float(a[col]), _float(b[col])
            if tol is None or x is None or y is None:
                same = a[col] == b[col] or (x is not None and y is not None and (x == y or math.isnan(x) and math.isnan(y)))
                if not same:
                    drifts.append(Drift(name, row, col, a[col], b[col], "exact"))
                continue
            if math.isnan(x) and math.isnan(y):
                continue
            delta = abs(x - y)
            largest[col] = max(largest.get(col, 0.0), delta)
            if not delta <= tol:  # NaN on one side fails too
                drifts.append(Drift(name, row, col, a[col], b[col], f"±{tol:g}"))
    return drifts, largest


def compare(committed_dir: Path, regenerated_dir: Path) -> tuple[list[Drift], dict[str, dict[str, float]]]:
    """Every committed quality table against its regenerated copy."""
    drifts: list[Drift] = []
    largest: dict[str, dict[str, float]] = {}
    for path in sorted(committed_dir.glob("*.csv")):
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in SKIP):
            continue
        other = regenerated_dir / path.name
        if not other.is_file():
            drifts.append(Drift(path.name, "(file)", "", "committed", "missing", "present"))
            continue
        found, largest[path.name] = compare_table(path.name, path, other)
        drifts += found
    return drifts, largest


def report(drifts: list[Drift], largest: dict[str, dict[str, float]]) -> str:
    lines = ["largest deviation per table (quality columns):"]
    for table, cols in largest.items():
        worst = ", ".join(f"{c} {d:.4g}" for c, d in sorted(cols.items(), key=lambda kv: -kv[1])[:4]) or "no numbers"
        lines.append(f"  {table}: {worst}")
    if drifts:
        lines += ["", f"{len(drifts)} numbers moved beyond tolerance:", "",
                  markdown_table(["table", "row", "column", "committed", "regenerated", "tolerance"],
                                 [d.cells() for d in drifts])]
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
