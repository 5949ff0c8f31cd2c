"""``make benchmark`` / ``make benchmark-full``: every registered benchmark in turn, then where the results went.

    python -m benchmarks.run --quick                  # offline on the embedded real data
    python -m benchmarks.run --full                   # paper scale (GPU when present)
    python -m benchmarks.run --smoke                  # the full mode's code paths, capped: minutes on a CPU
    python -m benchmarks.run --quick --only denoising
    python -m benchmarks.run --quick --wandb          # + each table as a wandb.Table, each figure as a wandb.Image

The benchmarks are :data:`benchmarks.core.REGISTRY`'s, in its order. One that crashes is reported and the others
still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from benchmarks import readme
from benchmarks.core import REGISTRY, RESULTS, Context, add_run_arguments, benchmark, hardware, out_and_data, relative

RUNS = "runs"  # where the W&B run of --wandb goes (runs/benchmarks/<run id>/)


def start_wandb(mode: str, names: list[str]):
    """A W&B run of this session, offline-safe like the training logger, its config the environment."""
    import platform

    import lightning
    import torch
    import wandb

    from ae_lightning.loggers import new_run_id, offline_safe_mode

    run_id = new_run_id()
    folder = Path(RUNS) / "benchmarks" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    config = {"mode": mode, "benchmarks": names, "device": hardware()[2], "python": platform.python_version(),
              "torch": torch.__version__, "lightning": lightning.__version__, "wandb": wandb.__version__}
    return wandb.init(project="ae_lightning", job_type="benchmark", group="benchmarks", name=f"benchmarks {mode}",
                      id=run_id, dir=str(folder), config=config, mode=offline_safe_mode())


def log_results(run, name: str, files: list[Path]) -> None:
    """A benchmark's results files: ``<name>/<stem>`` as a ``wandb.Table`` (CSV) or a ``wandb.Image`` (PNG)."""
    import csv

    import wandb

    for path in files:
        if path.suffix == ".csv":
            header, *rows = list(csv.reader(path.open()))
            run.log({f"{name}/{path.stem}": wandb.Table(columns=header, data=rows)})
        elif path.suffix == ".png":
            run.log({f"{name}/{path.stem}": wandb.Image(str(path))})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="run the ae_lightning benchmarks")
    add_run_arguments(ap, ("mnist", "xray"), data_alias=False)
    ap.add_argument("--only", nargs="+", choices=list(REGISTRY), default=list(REGISTRY))
    ap.add_argument("--wandb", action="store_true", help="log the results to W&B (offline without credentials/network)")
    args = ap.parse_args(argv)
    out, data = out_and_data(args, ("mnist", "xray"), "benchmarks")
    tracker = start_wandb(args.mode, args.only) if args.wandb else None
    times, failed = {}, {}
    for name in args.only:
        print(f"\n=== benchmark: {name} ({args.mode}) ===", flush=True)
        ctx = Context(args.mode, out, data)
        try:
            results = benchmark(name)(ctx)
        except Exception:  # report it, go on with the others, fail at the end
            traceback.print_exc()
            failed[name] = traceback.format_exc(limit=0).strip().splitlines()[-1]
        else:
            if tracker is not None:
                log_results(tracker, name, results.files)
        times[name] = ctx.elapsed()
    if tracker is not None:
        tracker.finish()
    if out == RESULTS:
        for name in readme.update():  # the READMEs' result tables are copies of the tables just written
            print(f"updated the result tables of {name}")
    # wall time is what the budget is about; CPU time (with the classical methods' worker processes) tells a
    # slow machine from a busy one
    print(f"\ntime per benchmark ({args.mode}; wall, CPU):")
    for name, (wall, cpu) in times.items():
        print(f"  {name:<16} {wall / 60:5.1f} min  ({cpu / 60:.1f} CPU-min)"
              + (f"  FAILED: {failed[name]}" if name in failed else ""))
    print(f"  {'total':<16} {sum(w for w, _ in times.values()) / 60:5.1f} min; results in {relative(str(out))}/")
    if failed:
        print(f"\n{len(failed)} of {len(times)} benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
