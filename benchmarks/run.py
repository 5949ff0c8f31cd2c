"""``make benchmark`` / ``make benchmark-full``: every benchmark in turn, then where the results went.

    python -m benchmarks.run --quick                  # offline on the embedded real data
    python -m benchmarks.run --full                   # paper scale (GPU when present)
    python -m benchmarks.run --quick --only denoising
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
import time

from benchmarks.common import RESULTS

# the headline comparison first
BENCHMARKS = ["denoising", "features", "generation", "adversarial"]


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
    args = ap.parse_args(argv)
    mode = args.mode or "quick"
    times, cpu = {}, {}
    for name in args.only:
        t0, c0 = time.perf_counter(), cpu_seconds()
        print(f"\n=== benchmark: {name} ({mode}) ===", flush=True)
        importlib.import_module(f"benchmarks.{name}").run(mode)
        times[name], cpu[name] = time.perf_counter() - t0, cpu_seconds() - c0
    # wall time is what the budget is about; CPU time (with the classical methods' worker processes) tells a
    # slow machine from a busy one
    print("\ntime per benchmark (wall, CPU): "
          + ", ".join(f"{k} {v / 60:.1f} min ({cpu[k] / 60:.1f} CPU)" for k, v in times.items())
          + f"; total {sum(times.values()) / 60:.1f} min wall ({mode}); results in {RESULTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
