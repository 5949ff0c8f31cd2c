"""``make benchmark`` / ``make benchmark-full``: every benchmark in turn, then where the results went.

    python -m benchmarks.run --quick                  # offline on the embedded real data
    python -m benchmarks.run --full                   # paper scale (GPU when present)
    python -m benchmarks.run --quick --only denoising
    python -m benchmarks.run --quick --wandb          # + each table as a wandb.Table, each figure as a wandb.Image
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS

RUNS = "runs"  # where the W&B run of --wandb goes (runs/benchmarks/<run id>/)

# the headline comparison first
BENCHMARKS = ["denoising", "features", "generation", "adversarial", "semisupervised", "pose", "compression", "throughput"]


def start_wandb(mode: str, names: list[str]):
    """A W&B run for this benchmark session, its config the environment (device, versions, mode), offline-safe
    like the training logger; its files in ``runs/benchmarks/<run id>/wandb/``."""
    import platform

    import lightning
    import torch
    import wandb

    from ae_lightning.loggers import new_run_id, offline_safe_mode
    from benchmarks.common import hardware

    run_id = new_run_id()
    folder = Path(RUNS) / "benchmarks" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    config = {"mode": mode, "benchmarks": names, "device": hardware()[2], "python": platform.python_version(),
              "torch": torch.__version__, "lightning": lightning.__version__, "wandb": wandb.__version__}
    return wandb.init(project="ae_lightning", job_type="benchmark", group="benchmarks", name=f"benchmarks {mode}",
                      id=run_id, dir=str(folder), config=config, mode=offline_safe_mode())


def log_results(run, name: str, since: float) -> None:
    """Every results file the benchmark ``name`` wrote (changed since ``since``): ``<name>/<stem>`` as a
    ``wandb.Table`` (CSV) or a ``wandb.Image`` (PNG)."""
    import csv

    import wandb

    for path in sorted(Path(RESULTS).glob("*")):
        if path.stat().st_mtime < since or path.suffix not in (".csv", ".png"):
            continue
        if path.suffix == ".csv":
            header, *rows = list(csv.reader(path.open()))
            run.log({f"{name}/{path.stem}": wandb.Table(columns=header, data=rows)})
        else:
            run.log({f"{name}/{path.stem}": wandb.Image(str(path))})


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the classical methods' worker pool)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="run the ae_lightning benchmarks")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick")
    mode.add_argument("--full", dest="mode", action="store_const", const="full")
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS)
    ap.add_argument("--wandb", action="store_true", help="log the results to W&B (offline without credentials/network)")
    args = ap.parse_args(argv)
    mode = args.mode or "quick"
    tracker = start_wandb(mode, args.only) if args.wandb else None
    times, cpu = {}, {}
    for name in args.only:
        t0, c0, started = time.perf_counter(), cpu_seconds(), time.time()
        print(f"\n=== benchmark: {name} ({mode}) ===", flush=True)
        importlib.import_module(f"benchmarks.{name}").run(mode)
        times[name], cpu[name] = time.perf_counter() - t0, cpu_seconds() - c0
        if tracker is not None:
            log_results(tracker, name, since=started)
    if tracker is not None:
        tracker.finish()
    # wall time is what the budget is about; CPU time (with the classical methods' worker processes) tells a
    # slow machine from a busy one
    print("\ntime per benchmark (wall, CPU): "
          + ", ".join(f"{k} {v / 60:.1f} min ({cpu[k] / 60:.1f} CPU)" for k, v in times.items())
          + f"; total {sum(times.values()) / 60:.1f} min wall ({mode}); results in {RESULTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
