"""Paper-scale MNIST in a fixed wall-clock budget on one GPU (issue 26): every model at once, then its test numbers.

    python scripts/mnist_full.py MNIST_ROOT OUTDIR MINUTES [--smoke] [--only NAME ...]
    bash scripts/train_mnist_full.sh MNIST_ROOT OUTDIR MINUTES          # the same (SMOKE=1 adds --smoke)

``MNIST_ROOT`` holds the 60k + 10k digits (torchvision layout or the four IDX files). The models are the
``configs/full/`` experiments, trained with ``ae-lightning fit`` as separate processes sharing the GPU:

=============  ===============================  ===================================================
name           config                           tested
=============  ===============================  ===================================================
vae            vae_burda_mnist.yaml             test/nll_k5000 (IWAE bound, k = 5000, chunked)
sdae3          sdae3_mnist.yaml                 test/error of the fine-tuned stack
mlp3x1000      mlp3x1000_mnist.yaml             the same net from random init, same fine-tuning
m2             m2_mnist.yaml                    test/error of q(y|x), M2 on pixels, 100 labels
m1, m1m2       vae_burda_mnist.yaml, then       M1+M2: M2 on the codes of a VAE (M1) trained first
               m1m2_mnist.yaml
ssaae          ssaae_mnist.yaml                 test/error, semi-supervised AAE, 100 labels
logreg         (in this process)                softmax regression on the pixels of the 100 labels
=============  ===============================  ===================================================

Timeline: (1) **calibration**: each model trains a few batches under :class:`~ae_lightning.callbacks.StepTimer`,
all at once (so the numbers include their contention for the GPU); (2) **fits**: the epochs that fit the budget
(85 % of it, from the measured seconds per epoch) are passed as the config's epochs (so the LR schedules span the
fit and the resolved ``config.yaml`` states them), with ``trainer.max_time`` and a SIGTERM at the deadline as
guards (the suite's ResumeCheckpoint writes ``last.ckpt`` on SIGTERM and every 2 minutes); M1 takes 40 % of its
pipeline's window, then M1+M2 is calibrated and trained on its codes; (3) **tests**: ``ae-lightning test`` on each
run's best validation checkpoint (VAE: ``val/elbo``; classifiers: ``val/accuracy``), from the run's resolved config.

OUTDIR gets ``<name>/version_0/`` (fit: ``config.yaml``, ``metrics.csv``, ``checkpoints/``), ``<name>/version_1/``
(test metrics), ``logs/<name>.*.log``, ``calibration/<name>.json``, one ``<name>.json`` per model and
``summary.csv`` / ``summary.json``. ``--smoke``: a CPU check of the whole path (3 batches an epoch, at most 2
epochs, k = 10 on 2 test batches; its deadlines are not enforced: on a loaded 2-core CPU starting the processes
alone takes minutes).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT / "configs" / "full"

#: what each fit is, the paper's number for its table, and the metric its test reports
MODELS: dict[str, dict] = {
    "vae": {"config": "vae_burda_mnist.yaml", "metric": "test/nll_k5000", "paper": 86.76,
            "what": "Burda et al. 2016 VAE 784-200-200-50, test NLL (nats, IWAE k=5000)"},
    "sdae3": {"config": "sdae3_mnist.yaml", "metric": "test/accuracy", "paper": 0.0128, "checkpoint": "last",
              "what": "Vincent et al. 2010 SDAE-3, 25 % masking, fine-tuned test error"},
    "mlp3x1000": {"config": "mlp3x1000_mnist.yaml", "metric": "test/accuracy", "paper": 0.0160, "checkpoint": "last",
                  "what": "3x1000 MLP from random init, the SDAE's fine-tuning (Vincent et al.'s MLP row)"},
    "m2": {"config": "m2_mnist.yaml", "metric": "test/error", "paper": 0.1197,
           "what": "Kingma et al. 2014 M2 on pixels, 100 labels, test error"},
    "m1": {"config": "vae_burda_mnist.yaml", "metric": None, "paper": None,
           "what": "M1 for M1+M2: the VAE, trained for 40 % of its pipeline's window"},
    "m1m2": {"config": "m1m2_mnist.yaml", "metric": "test/error", "paper": 0.0333,
             "what": "Kingma et al. 2014 M1+M2, 100 labels, test error"},
    "ssaae": {"config": "ssaae_mnist.yaml", "metric": "test/error", "paper": 0.0190,
              "what": "Makhzani et al. 2015 semi-supervised AAE, 100 labels, test error"},
}
PARALLEL = ["vae", "sdae3", "mlp3x1000", "m2", "ssaae", "m1"]  # calibrated together, then fitted together
M1_SHARE = 0.4           # of the M1+M2 pipeline's fit window
SAFETY = 0.85            # of a fit window planned as training epochs (validation, checkpoints, drift)
PRETRAIN_SHARE = 0.5     # of the SDAE's window spent pretraining (the rest: fine-tuning, the MLP baseline's too)
UPPER_LAYERS = 1.15      # SDAE layers 2-3 also run the frozen layers below: a little dearer than layer 1


class Run:
    """One model's state across the phases (what ends up in ``<name>.json``)."""

    def __init__(self, name: str, out: Path, data_root: str) -> None:
        self.name, self.out, self.data_root = name, out, data_root
        self.spec = MODELS[name]
        self.config = FULL / self.spec["config"]
        self.extra: list[str] = []           # overrides every command of this model gets (M1+M2: M1's checkpoint)
        self.calibration: dict | None = None
        self.plan: dict = {}
        self.fit_s: float | None = None
        self.result: dict = {"model": name, "what": self.spec["what"], "config": f"configs/full/{self.spec['config']}",
                             "paper": self.spec["paper"], "metric": self.spec["metric"]}

    @property
    def run_dir(self) -> Path:
        return self.out / self.name / "version_0"


class Orchestra:
    def __init__(self, data_root: str, out: Path, minutes: float, smoke: bool, only: list[str] | None,
                 prune: bool = False) -> None:
        self.prune = prune
        self.data_root, self.out, self.smoke = str(Path(data_root).expanduser().resolve()), out.resolve(), smoke
        self.t0 = time.time()
        self.deadline = self.t0 + 60 * minutes
        # tests run last and in parallel: a process start, the data, a pass over the 10k test digits
        # (the VAE's k = 5000 bound is ~5·10⁷ decoder rows: seconds on a GPU)
        self.test_reserve = 40.0 if smoke else min(120.0, max(45.0, 0.15 * 60 * minutes))
        self.fit_deadline = self.deadline - self.test_reserve
        names = [n for n in MODELS if only is None or n in only or (n == "m1" and "m1m2" in only)]
        stale = [n for n in names if (self.out / n).exists()]
        if stale:  # version_0 must be this fit's, version_1 this test's
            raise SystemExit(f"{self.out} already holds runs of {stale}; fix: a fresh OUTDIR")
        self.runs = {n: Run(n, self.out, self.data_root) for n in names}
        self.lock = threading.Lock()
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "calibration").mkdir(parents=True, exist_ok=True)

    # --- processes -----------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        with self.lock:
            print(f"[{time.time() - self.t0:7.1f}s] {msg}", flush=True)

    def command(self, run: Run, sub: str, *args: str, config: Path | None = None) -> list[str]:
        base = [sys.executable, "-m", "ae_lightning.cli", sub, "--config", str(config or run.config)]
        data = [] if config is not None else ["--data.init_args.root", run.data_root, *run.extra]
        smoke = ["--trainer.limit_val_batches", "2"] if self.smoke and sub == "fit" else []
        return [*base, *data, *smoke, "--trainer.enable_progress_bar", "false", *args]

    def call(self, run: Run, what: str, cmd: list[str], deadline: float | None) -> tuple[int, float]:
        """Run ``cmd`` (log in ``logs/<name>.<what>.log``); at ``deadline`` SIGTERM (the run saves last.ckpt and
        exits), 60 s later SIGKILL. Returns ``(exit status, wall seconds)``."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled",
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        log = self.out / "logs" / f"{run.name}.{what}.log"
        start = time.time()
        with open(log, "w") as fh:
            fh.write(" ".join(cmd) + "\n\n")
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
            termed = False
            while proc.poll() is None:
                if deadline is not None and time.time() > deadline and not termed:
                    self.log(f"{run.name}: {what} past its deadline, SIGTERM")
                    proc.send_signal(signal.SIGTERM)
                    termed = True
                if termed and time.time() > deadline + 60:
                    proc.kill()
                time.sleep(0.5)
        wall = time.time() - start
        self.log(f"{run.name}: {what} exit {proc.returncode} after {wall:.0f}s (log: {log.relative_to(self.out)})")
        return proc.returncode, wall

    # --- 1. calibration --------------------------------------------------------------------------------
    def calibrate(self, run: Run, timeout: float) -> None:
        path = self.out / "calibration" / f"{run.name}.json"
        warmup, batches = (1, 2) if self.smoke else (20, 100)
        timer = json.dumps({"class_path": "ae_lightning.callbacks.StepTimer",
                            "init_args": {"path": str(path), "warmup": warmup, "batches": batches}})
        cmd = self.command(run, "fit", f"--trainer.callbacks+={timer}", "--trainer.limit_val_batches", "0",
                           "--trainer.num_sanity_val_steps", "0", "--trainer.max_epochs", "1",
                           "--trainer.logger.init_args.save_dir", str(self.out / "calibration"),
                           "--trainer.logger.init_args.name", run.name,
                           *(["--trainer.limit_train_batches", "3"] if self.smoke else []))
        status, wall = self.call(run, "calibrate", cmd, time.time() + timeout)
        if status != 0 or not path.is_file():
            raise RuntimeError(f"{run.name}: calibration failed (exit {status}); see logs/{run.name}.calibrate.log")
        cal = json.loads(path.read_text())
        if self.smoke:  # the smoke fits run 3 batches an epoch whatever the full epoch would be
            cal["s_per_epoch"] = cal["s_per_batch"] * 3
        shutil.rmtree(self.out / "calibration" / run.name, ignore_errors=True)  # its checkpoints: nothing to keep
        cal["wall_s"] = wall
        cal["startup_s"] = max(0.0, wall - (warmup + batches) * cal["s_per_batch"])
        run.calibration = cal
        run.result["calibration"] = cal

    # --- 2. plans and fits ---------------------------------------------------------------------------------
    def epochs(self, window: float, s_per_epoch: float, cap: int = 10**6) -> int:
        return max(1, min(cap, math.floor(SAFETY * window / s_per_epoch)))

    def plan(self, run: Run, end: float) -> list[str]:
        """The fit's overrides: epochs for the window until ``end``, and the time guard."""
        cal = run.calibration
        window = end - time.time() - cal["startup_s"]
        cap = 2 if self.smoke else 10**6
        if run.name == "sdae3":
            finetune_cost = self.runs["mlp3x1000"].calibration["s_per_epoch"] if "mlp3x1000" in self.runs and \
                self.runs["mlp3x1000"].calibration else 1.5 * cal["s_per_epoch"]
            p = self.epochs(PRETRAIN_SHARE * window, 3 * UPPER_LAYERS * cal["s_per_epoch"], cap=1 if self.smoke else cap)
            f = self.epochs((1 - PRETRAIN_SHARE) * window, finetune_cost, cap=1 if self.smoke else cap)
            run.plan = {"pretrain_epochs": [p, p, p], "finetune_epochs": f, "window_s": window}
            args = ["--model.init_args.pretrain_epochs", json.dumps([p, p, p]), "--model.init_args.finetune_epochs", str(f)]
        elif run.name == "mlp3x1000":  # the SDAE's fine-tuning budget: the same epochs
            f = self.epochs((1 - PRETRAIN_SHARE) * window, cal["s_per_epoch"], cap=1 if self.smoke else cap)
            run.plan = {"finetune_epochs": f, "window_s": window}
            args = ["--model.init_args.finetune_epochs", str(f)]
        else:
            e = self.epochs(window, cal["s_per_epoch"], cap=cap)
            run.plan = {"max_epochs": e, "window_s": window}
            args = ["--trainer.max_epochs", str(e)]
        guard = max(600 if self.smoke else 1, int(end - time.time()))
        args += ["--trainer.max_time", f"00:{guard // 3600:02d}:{guard // 60 % 60:02d}:{guard % 60:02d}",
                 "--resume.every_n_minutes", "2",
                 "--trainer.logger.init_args.save_dir", str(self.out), "--trainer.logger.init_args.name", run.name]
        if self.smoke:  # (the CLI's test takes test_samples from the checkpoint's hyperparameters: set it here)
            args += ["--trainer.limit_train_batches", "3",
                     *(["--model.init_args.test_samples", "10"] if run.config.name.startswith("vae") else [])]
        run.result["plan"] = run.plan
        return args

    def fit(self, run: Run, end: float) -> None:
        if run.calibration is None:
            self.calibrate(run, timeout=600.0 if self.smoke else max(30.0, min(120.0, 0.3 * (end - time.time()))))
        args = self.plan(run, end)
        self.log(f"{run.name}: fit {run.plan}")
        status, wall = self.call(run, "fit", self.command(run, "fit", *args), None if self.smoke else end)
        run.fit_s = wall
        run.result["fit_exit"] = status
        run.result["fit_wall_s"] = round(wall, 1)

    def m1m2_pipeline(self) -> None:
        m1, m1m2 = self.runs["m1"], self.runs["m1m2"]
        start = time.time()
        self.fit(m1, start + M1_SHARE * (self.fit_deadline - start))
        ckpt = best_checkpoint(m1.run_dir)
        if ckpt is None:
            raise RuntimeError("m1: no checkpoint; M1+M2 cannot run")
        m1m2.extra = ["--data.init_args.checkpoint", str(ckpt)]
        m1m2.result["m1_checkpoint"] = str(ckpt.relative_to(self.out))
        self.fit(m1m2, self.fit_deadline)

    # --- 3. tests ------------------------------------------------------------------------------------------
    def test(self, run: Run) -> None:
        ckpt = best_checkpoint(run.run_dir, run.spec.get("checkpoint", "best"))
        resolved = run.run_dir / "config.yaml"
        if ckpt is None or not resolved.is_file():
            run.result["test_error"] = "no checkpoint or config.yaml: the fit did not get far enough"
            return
        args = ["--ckpt_path", str(ckpt)]
        if self.smoke:
            args += ["--trainer.limit_test_batches", "2"]
        status, wall = self.call(run, "test", self.command(run, "test", *args, config=resolved),
                                 None if self.smoke else self.deadline + 120)
        run.result.update(test_exit=status, test_wall_s=round(wall, 1), tested_checkpoint=str(ckpt.relative_to(self.out)))
        tests = sorted(run.out.joinpath(run.name).glob("version_*/metrics.csv"))
        metrics = read_last_row(tests[-1]) if len(tests) > 1 else {}
        run.result["test"] = {k: v for k, v in metrics.items() if k.startswith("test/")}

    # --- the whole thing -------------------------------------------------------------------------------------
    def run(self) -> int:
        order = [n for n in PARALLEL if n in self.runs]
        self.log(f"budget {self.deadline - self.t0:.0f}s; fits end by {self.fit_deadline - self.t0:.0f}s; models {order}"
                 + (" + m1m2" if "m1m2" in self.runs else ""))
        # smoke mode checks the path, not the clock: a loaded 2-core CPU takes a minute to start seven processes
        calibration_timeout = 600.0 if self.smoke else max(45.0, min(120.0, 0.2 * (self.fit_deadline - self.t0)))
        shared = {"m1": "vae"} if {"m1", "vae"} <= set(order) else {}  # M1 is the VAE's config: one calibration
        with ThreadPoolExecutor(len(order)) as pool:
            for job in [pool.submit(self.calibrate, self.runs[n], calibration_timeout) for n in order if n not in shared]:
                if job.exception() is not None:
                    self.log(str(job.exception()))
        for n, source in shared.items():
            self.runs[n].calibration = self.runs[source].calibration
        failed = {n for n in order if self.runs[n].calibration is None}
        for n in failed:
            self.runs[n].result["error"] = "calibration failed"
        with ThreadPoolExecutor(len(order)) as pool:
            jobs = {n: pool.submit(self.m1m2_pipeline if n == "m1" and "m1m2" in self.runs else self.fit,
                                   *([] if n == "m1" and "m1m2" in self.runs else [self.runs[n], self.fit_deadline]))
                    for n in order if n not in failed}
            for n, job in jobs.items():
                if job.exception() is not None:
                    self.log(f"{n}: {job.exception()}")
                    self.runs[n].result["error"] = str(job.exception())
        tested = [r for n, r in self.runs.items() if r.spec["metric"] and r.fit_s is not None]
        with ThreadPoolExecutor(max(1, len(tested))) as pool:
            list(pool.map(self.test, tested))
        self.logreg()
        if self.prune:
            self.prune_checkpoints()
        return self.write()

    def prune_checkpoints(self, limit_mb: float = 20.0) -> None:
        """After the tests: delete checkpoints over ``limit_mb`` (SDAE, MLP, SS-AAE, M2: 30–90 MB each, two per run);
        the VAE's, M1's and M1+M2's (a few MB) stay for later evaluations."""
        freed = 0
        for ckpt in self.out.glob("*/version_*/checkpoints/*.ckpt"):
            size = ckpt.stat().st_size
            if size > limit_mb * 2**20:
                ckpt.unlink()
                freed += size
        self.log(f"pruned {freed / 2**20:.0f} MB of checkpoints over {limit_mb:g} MB")

    def logreg(self) -> None:
        """The 100 labels alone: softmax regression on the pixels, L2 chosen on the val split."""
        start = time.time()
        try:
            sys.path.insert(0, str(ROOT))
            from ae_lightning.baselines import pixel_logistic_regression

            result = pixel_logistic_regression(self.data_root, labelled_per_class=10, seed=0,
                                               max_iter=50 if self.smoke else 500)
        except Exception as err:  # a baseline must not cost the models' numbers
            result = {"error": repr(err)}
        result.update(model="logreg", what="softmax regression on the pixels of the 100 labelled digits",
                      paper=None, wall_s=round(time.time() - start, 1))
        (self.out / "logreg.json").write_text(json.dumps(result, indent=1) + "\n")
        self.log(f"logreg: {result.get('test_error', result.get('error'))}")
        self.logreg_result = result

    def write(self) -> int:
        rows = []
        for name, run in self.runs.items():
            r = run.result
            r["device"] = (r.get("calibration") or {}).get("device_name")
            r["epochs_trained"] = epochs_trained(run.run_dir)
            if self.smoke and name == "vae":  # k = 10 in smoke mode
                r["metric"] = "test/nll_k10"
            best = (r.get("test") or {}).get(r["metric"]) if r["metric"] else None
            if best is not None and r["metric"].endswith("accuracy"):  # the papers report errors
                r["metric"], best = r["metric"].replace("accuracy", "error"), 1 - best
            r["value"] = best
            if best is not None and r["paper"] is not None:
                r["distance_to_paper"] = best - r["paper"]
            (self.out / f"{name}.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
            rows.append({"model": name, "metric": r["metric"], "value": best, "paper": r["paper"],
                         "epochs": r["epochs_trained"], "fit_wall_s": r.get("fit_wall_s"), "device": r["device"],
                         "config": r["config"], "error": r.get("error", "")})
        lr = getattr(self, "logreg_result", {})
        rows.append({"model": "logreg", "metric": "test/error", "value": lr.get("test_error"), "paper": None,
                     "epochs": None, "fit_wall_s": lr.get("wall_s"), "device": "cpu", "config": "",
                     "error": lr.get("error", "")})
        with open(self.out / "summary.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        total = time.time() - self.t0
        (self.out / "summary.json").write_text(json.dumps({"wall_s": round(total, 1), "smoke": self.smoke,
                                                           "rows": rows}, indent=1, default=str) + "\n")
        self.log(f"done in {total:.0f}s: {self.out / 'summary.csv'}")
        for row in rows:
            self.log(f"  {row['model']:>10}  {row['metric'] or '-':>15}  {row['value']}  (paper {row['paper']}, "
                     f"epochs {row['epochs']})")
        return 0 if all(r["value"] is not None for r in rows if r["metric"]) else 1


# --- reading a run's files ----------------------------------------------------------------------------
def best_checkpoint(run_dir: Path, which: str = "best") -> Path | None:
    """The monitored best (``epoch=…ckpt``; ``which="last"``: the end of the fit), else ``last.ckpt``."""
    folder = run_dir / "checkpoints"
    best = sorted(p for p in folder.glob("*.ckpt") if p.name != "last.ckpt")
    if best and which == "best":
        return max(best, key=lambda p: p.stat().st_mtime)
    last = folder / "last.ckpt"
    return last if last.is_file() else None


def read_last_row(path: Path) -> dict:
    """Every column's last non-empty value in a Lightning metrics.csv."""
    values: dict = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                if v not in ("", None):
                    values[k] = float(v)
    return values


def epochs_trained(run_dir: Path) -> int | None:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None
    with open(path) as fh:
        epochs = [int(row["epoch"]) for row in csv.DictReader(fh) if row.get("epoch") not in ("", None)]
    return max(epochs) + 1 if epochs else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the full MNIST (60k + 10k digits)")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("minutes", type=float, help="wall-clock budget for everything")
    parser.add_argument("--smoke", action="store_true", help="CPU check: 3 batches an epoch, at most 2 epochs")
    parser.add_argument("--only", nargs="+", choices=[*MODELS], help="a subset of the models")
    parser.add_argument("--prune", action="store_true", help="after the tests, delete checkpoints over 20 MB")
    args = parser.parse_args(argv)
    return Orchestra(args.root, args.out, args.minutes, args.smoke, args.only, args.prune).run()


if __name__ == "__main__":
    sys.exit(main())
