"""Throughput: the suite's Trainer path against a raw PyTorch loop of the *same* net on the *same* data.

For each workload the model comes from its experiment config; the raw loop uses that model's own
nets, noise, loss and optimiser settings on the same in-memory images (sliced batches, the fastest
plain-PyTorch data path, transformed as the DataModule serves them), the suite path is ``Trainer.fit`` on
the config's DataModule, and ``lightning, bare`` runs the raw loop's work in a minimal LightningModule on
that DataModule (Lightning's own cost: the suite's floor). The paths alternate in one process, and only
steady-state steps count (the first ``warmup`` steps of each measurement are excluded), so a ratio is
immune to the machine's speed of the day. Workloads (issue: the GPU/multi-GPU path):

- the Gondara conv DAE (``dae_xray64``) on 64×64 X-rays at batch 1024 and at the paper's batch 10;
- the Hinton deep AE 784-1000-500-250-30 (``deep_ae_mnist``) on MNIST at batch 1024 and 256;
- a VAE epoch (``vae_mnist``) as the issue defines it: an 8k/2k MNIST split at batch 100, 80 training steps
  plus a validation pass of 20 batches, the second of two epochs timed whole; the raw loop's validation
  computes what the suite's reports (the losses, PSNR and SSIM with the same torchmetrics objects), so the
  ratio is the framework's overhead, not a difference in work;
- data loading alone (no model): one training epoch from a cold DataModule, decode included, of the
  800 embedded real chest X-rays as a folder of PNG files (``XRayDataModule``) against the same images
  streamed from LitData chunks (``StreamingImageDataModule``; needs ``ae_lightning[stream]``), same split
  and batch size; the one-off conversion (``python -m ae_lightning.data.optimize``) is a row of its own.

Writes ``benchmarks/results/throughput_<device>.csv`` / ``.md`` with columns
``workload,device,precision,batch_size,path,images_per_s,ratio_to_raw``.

    python -m benchmarks.throughput --quick       # CPU-sized step counts
    python -m benchmarks.throughput --full        # more steps (GPU: bf16 autocast)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ae_lightning.batch import images_of
from ae_lightning.callbacks import Speed
from ae_lightning.config import instantiate, load_config
from benchmarks.core import Benchmark, Context, Results, hardware, markdown_table, quiet_trainer

COLUMNS = ["workload", "device", "precision", "batch_size", "path", "images_per_s", "ratio_to_raw"]


@dataclass
class Workload:
    name: str
    config: str
    batch_size: int
    steps: dict[str, int]  # measured training steps per mode (an epoch workload: its whole epoch, see below)
    #: an epoch workload: (training, validation) images of one epoch, the real images tiled to these counts; the
    #: timed span is one whole steady-state epoch (the second): its start, every training step, the validation
    #: pass and the epoch's end
    epoch: tuple[int, int] | None = None


WORKLOADS = [
    # batch 1024 of 64×64 conv maps is ~20 s per step on a 2-core CPU: a GPU (full mode) workload only
    Workload("conv DAE 64x64 (Gondara)", "dae_xray64", 1024, {"full": 50}),
    Workload("conv DAE 64x64 (Gondara)", "dae_xray64", 10, {"quick": 20, "full": 500}),
    Workload("deep AE 784-1000-500-250-30", "deep_ae_mnist", 1024, {"quick": 12, "full": 200}),
    Workload("deep AE 784-1000-500-250-30", "deep_ae_mnist", 256, {"quick": 30, "full": 500}),
    # the VAE epoch: an 8k/2k MNIST split at batch 100, 80 training steps + 20 validation batches
    Workload("VAE epoch (train + val)", "vae_mnist", 100, {"quick": 80, "full": 80}, epoch=(8000, 2000)),
]
WARMUP = 2


def _tile(dataset, n: int, exact: bool) -> None:
    """``dataset``'s (real) images repeated to at least ``n`` (exactly ``n`` if ``exact``)."""
    if len(dataset) < n or exact:
        reps = -(-n // len(dataset))
        images, labels = dataset.images.repeat(reps, 1, 1, 1), dataset.labels.repeat(reps)
        dataset.images, dataset.labels = (images[:n], labels[:n]) if exact else (images, labels)


def build(w: Workload, mode: str) -> tuple[L.LightningModule, L.LightningDataModule]:
    """The config's model and set-up DataModule at the workload's batch size. The training images are tiled so
    that the timed steps lie in one epoch, as they do on a real-sized set (60k digits are 234 steps of 256), not
    across the epoch boundaries of the 2,100 embedded digits; an epoch workload gets exactly its split's sizes."""
    cfg = load_config(w.config)
    cfg["data"]["init_args"]["batch_size"] = w.batch_size
    cfg["data"]["init_args"].pop("train_size", None)  # every training image
    data = instantiate(cfg["data"], L.LightningDataModule)
    # full batches only, as the raw loop trains: a short last batch per epoch is a cheap step that would be
    # credited with a whole batch of images (the suite's deep AE at batch 1024 on 2,100 digits seemed 1.3× the raw loop)
    data.drop_last = True
    data.setup("fit")
    if w.epoch is not None:
        _tile(data.train_set, w.epoch[0], exact=True)
        _tile(data.val_set, w.epoch[1], exact=True)
    else:
        _tile(data.train_set, (WARMUP + w.steps[mode]) * w.batch_size, exact=False)
    return instantiate(cfg["model"], L.LightningModule), data


def _transform(dataset):
    """What the dataset does to each batch it serves (e.g. MNIST's dynamic binarisation): the raw loop does it too."""
    return dataset.transform or (lambda x: x)


# --- the raw loop: what a researcher writes by hand ------------------------------------------------
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def raw_images_per_s(model: L.LightningModule, data, w: Workload, steps: int, device: torch.device,
                     precision: str = "32-true", fast: bool = False) -> float:
    """Plain PyTorch: the model's nets, noise, loss and optimiser; batches sliced from in-memory tensors on the
    device and transformed as the DataModule serves them, under the same autocast as the suite's path. ``fast``:
    channels-last weights and images and compiled nets too (the best hand-written loop the issue names)."""
    model = model.to(device).train()
    if fast:
        model.to(memory_format=torch.channels_last)
        for net in Speed.nets(model).values():
            net.compile()
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    images = data.train_set.images.to(device)  # (N, C, H, W)
    if fast:
        images = images.contiguous(memory_format=torch.channels_last)
    train_tf, val_tf = _transform(data.train_set), _transform(data.val_set)
    autocast = torch.autocast(device.type, dtype=AUTOCAST.get(precision, torch.float32), enabled=precision in AUTOCAST)
    gen = torch.Generator(device=device).manual_seed(0)

    def train_step(x: torch.Tensor) -> None:
        x = train_tf(x)  # (B, C, H, W)
        with autocast:
            out = model(model.corrupt(x))
            loss = model.compute_losses(out, x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def val_pass() -> None:
        model.eval()
        metrics = model.val_metrics.to(device)
        for x in data.val_set.images.to(device).split(w.batch_size):
            x = val_tf(x)
            with autocast:
                out = model(model.corrupt(x))
                model.compute_losses(out, x)
            metrics.update(out.reconstruction.float().clamp(0, 1), x.float())
        metrics.compute()
        metrics.reset()
        model.train()

    if w.epoch is not None:  # one warm epoch, then a timed one: shuffle, every full batch, validation
        def epoch() -> None:
            order = torch.randperm(len(images), generator=gen, device=device)
            for batch in order[: len(images) // w.batch_size * w.batch_size].view(-1, w.batch_size):
                train_step(images[batch])
            val_pass()

        epoch()
        _sync(device)
        t0 = time.perf_counter()
        epoch()
    else:
        order = torch.randperm(len(images), generator=gen, device=device)
        batches = order[: (WARMUP + steps) * w.batch_size].view(-1, w.batch_size)
        for batch in batches[:WARMUP]:
            train_step(images[batch])
        _sync(device)
        t0 = time.perf_counter()
        for batch in batches[WARMUP:]:
            train_step(images[batch])
    _sync(device)
    return _images(w, steps, data) / (time.perf_counter() - t0)


# --- Lightning with nothing of the suite: the framework's own cost ---------------------------------------
class Bare(L.LightningModule):
    """The raw loop's work in a minimal LightningModule: the model's noise, nets, loss and optimiser, its PSNR/SSIM
    in validation; no logging, no hooks of the suite. On the suite's DataLoader, it measures what Lightning's
    loop costs any user (the floor for the suite), apart from the suite's own additions."""

    def __init__(self, model: L.LightningModule) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = images_of(batch)
        return self.model.compute_losses(self.model(self.model.corrupt(x)), x)["loss"]

    def validation_step(self, batch, batch_idx: int) -> None:
        x = images_of(batch)
        out = self.model(self.model.corrupt(x))
        self.model.compute_losses(out, x)
        self.model.val_metrics.update(out.reconstruction.float().clamp(0, 1), x.float())

    def on_validation_epoch_end(self) -> None:
        self.model.val_metrics.compute()
        self.model.val_metrics.reset()

    def configure_optimizers(self):
        return self.model.configure_optimizers()


# --- the suite: Trainer.fit on the config's DataModule -------------------------------------------------
class StepClock(L.Callback):
    """Wall time of the timed span, and the training images of the batches in it (counted, not assumed: a short
    last batch is fewer images). A step workload: from the end of the first ``warmup`` batches to the end of
    batch ``last``. An epoch workload: from the end of the first epoch to the end of the second (callbacks'
    epoch-end hooks run before the module's, so the span holds one of the module's epoch ends, as it holds one
    epoch). The device is synchronised at the span's two ends only, as the raw loop is: a sync per step would
    stop the host from queueing the next step while the GPU works."""

    def __init__(self, warmup: int, last: int | None) -> None:
        self.warmup, self.last, self.start, self.end, self.images = warmup, last, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.last is None:  # an epoch workload
            if self.start is not None:
                self.images += len(images_of(batch))
        elif self.warmup <= batch_idx <= self.last:
            self.images += len(images_of(batch))
            if batch_idx == self.last:
                self.end = _synced_time(pl_module)
        elif batch_idx == self.warmup - 1:
            self.start = _synced_time(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.last is None:
            if self.start is None:
                self.start = _synced_time(pl_module)
            else:
                self.end = _synced_time(pl_module)


def suite_images_per_s(model, data, w: Workload, steps: int, accelerator: str, precision: str,
                       fast: bool = False) -> float:
    """``Trainer.fit``; ``fast``: with the speed options (channels-last, compiled nets, device-resident batches)."""
    clock = StepClock(WARMUP, None if w.epoch is not None else WARMUP + steps - 1)
    speed = [Speed(channels_last=True, compile=True, device_resident_data=True)] if fast else []
    if w.epoch is not None:  # two whole epochs, each with its validation pass
        span = dict(max_epochs=2, limit_val_batches=1.0)
    else:  # batches, not optimiser steps: an adversarial model steps several optimisers per batch
        span = dict(max_epochs=1, limit_train_batches=WARMUP + steps, limit_val_batches=0)
    fit = quiet_trainer(accelerator=accelerator, precision=precision, callbacks=[clock, *speed], **span)
    fit.fit(model, data)
    assert clock.images == steps * w.batch_size, f"{w.name}: timed {clock.images} images, expected {steps} full batches"
    return _images(w, steps, data) / (clock.end - clock.start)


def _images(w: Workload, steps: int, data) -> int:
    return steps * w.batch_size + (len(data.val_set) if w.epoch is not None else 0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _synced_time(pl_module) -> float:
    _sync(pl_module.device)
    return time.perf_counter()


# --- data loading: a folder of image files against LitData chunks of the same images ----------------------
LOADING = "X-ray loading 64x64, 800 PNGs"
LOADING_BATCH = 32


def write_png_folder(root: Path) -> Path:
    """The 800 embedded real chest X-rays as ``CLASS/name.png`` files (how a downloaded set sits on disk)."""
    from PIL import Image

    from ae_lightning.data.common import EMBEDDED

    data = np.load(EMBEDDED / "chest_xray64.npz")
    for img, name in zip(data["images"], data["names"], strict=True):
        path = root / str(name).replace(".jpeg", ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    return root


def epoch_images_per_s(make_data) -> tuple[float, float]:
    """images/s of a cold DataModule's first training epoch (``setup`` included: the folder DataModule decodes
    every file of every split there) and of a second, warm epoch over the same loader."""
    t0 = time.perf_counter()
    data = make_data()
    data.setup("fit")
    loader = data.train_dataloader()
    n = sum(len(batch[0]) for batch in loader)
    t1 = time.perf_counter()
    n_warm = sum(len(batch[0]) for batch in loader)
    return n / (t1 - t0), n_warm / (time.perf_counter() - t1)


def loading_rows(repeats: int, tag: str) -> list[dict]:
    """images/s of folder vs streamed loading (alternating, median), and of the conversion, on the CPU."""
    try:
        import litdata  # noqa: F401
    except ImportError:
        print(f"  {LOADING}: skipped, LitData is not installed (pip install 'ae_lightning[stream]')", flush=True)
        return []
    from ae_lightning.data import StreamingImageDataModule, XRayDataModule, xray
    from ae_lightning.data.optimize import convert, list_xray

    with tempfile.TemporaryDirectory(prefix="ae_loading_") as tmp:
        folder = write_png_folder(Path(tmp) / "xrays")
        t0 = time.perf_counter()
        counts = convert(list_xray(folder, 64, 0.1, 0.2, 0, "image", "upscale"), f"{tmp}/chunks", num_workers=2)
        convert_ips = sum(counts.values()) / (time.perf_counter() - t0)

        def folder_data():
            xray._load_cached.cache_clear()  # cold: every file decoded again, as in a new process
            return XRayDataModule(str(folder), batch_size=LOADING_BATCH)

        def streamed_data():
            return StreamingImageDataModule(f"{tmp}/chunks", kind="xray", batch_size=LOADING_BATCH)

        speeds: dict[str, list[tuple[float, float]]] = {"folder": [], "streamed": []}
        # one intra-op thread, as in a DataLoader worker: a 32-image gather from memory takes 15 ms with 2 threads
        # on a busy 2-core machine (thread hand-off), 0.05 ms with one
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for repeat in range(repeats):
                for path in ("folder", "streamed")[:: 1 if repeat % 2 == 0 else -1]:
                    speeds[path].append(epoch_images_per_s(folder_data if path == "folder" else streamed_data))
        finally:
            torch.set_num_threads(threads)
    cold = {p: statistics.median(s[0] for s in v) for p, v in speeds.items()}
    warm = {p: statistics.median(s[1] for s in v) for p, v in speeds.items()}
    base = cold["folder"]
    rows = [("folder", base), ("streamed", cold["streamed"]), ("folder, warm epoch", warm["folder"]),
            ("streamed, warm epoch", warm["streamed"]), ("convert (once)", convert_ips)]
    out = []
    for path, ips in rows:
        out.append(dict(workload=LOADING, device="cpu", precision="-", batch_size=LOADING_BATCH, path=path,
                        images_per_s=ips, ratio_to_raw=ips / base))
        print(f"  {LOADING:<30} batch {LOADING_BATCH:>5} {path:<20} {ips:10.0f} img/s  ratio {ips / base:.3f}", flush=True)
    return out


# --- the run ---------------------------------------------------------------------------------------------
class Throughput(Benchmark):
    name = "throughput"
    doc = "images/s of the suite's Trainer path against a raw PyTorch loop of the same net and data, alternating"

    def run(self, ctx: Context, s: dict) -> Results:
        workloads = [Workload(**w) for w in s["workloads"]] if s.get("workloads") else None
        results = ctx.results()
        measure(ctx.mode if ctx.mode != "smoke" else "full", results, workloads, s["repeats"], s["loading_repeats"])
        return results


def measure(mode: str, results: Results, workloads: list[Workload] | None, repeats: int,
            loading_repeats: int) -> list[dict]:
    accelerator, precision, hw = hardware()
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    tag = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(0).split()[-1].lower()
    print(f"throughput ({mode}) on {hw}: raw PyTorch loop vs the suite's Trainer path, alternating", flush=True)
    rows = []
    for w in workloads or WORKLOADS:
        if mode not in w.steps:
            print(f"  {w.name} at batch {w.batch_size}: {', '.join(w.steps)} mode only", flush=True)
            continue
        steps = w.epoch[0] // w.batch_size if w.epoch is not None else w.steps[mode]
        # `lightning, bare`: the raw loop's work in a minimal LightningModule (Lightning's own cost, the suite's
        # floor); on a GPU also the fast paths: channels-last + compiled nets (raw and suite) + device-resident
        # batches (suite)
        paths = ["raw", "lightning, bare", "suite"] + (["raw, fast", "suite, fast"] if device.type == "cuda" else [])
        speeds: dict[str, list[float]] = {p: [] for p in paths}
        for repeat in range(repeats):
            for path in paths[:: 1 if repeat % 2 == 0 else -1]:  # alternating order, each a fresh model
                L.seed_everything(0, verbose=False)
                model, data = build(w, mode)
                fast = path.endswith("fast")
                if path.startswith("raw"):
                    speeds[path].append(raw_images_per_s(model, data, w, steps, device, precision, fast))
                else:
                    model = Bare(model) if path == "lightning, bare" else model
                    speeds[path].append(suite_images_per_s(model, data, w, steps, accelerator, precision, fast))
        for path in paths:
            ips = statistics.median(speeds[path])
            # each against its raw loop, repeat by repeat (the two ran back to back, on the machine's same state),
            # the median of those ratios: slow drift of a shared machine cancels within a repeat
            raw = speeds["raw, fast" if path.endswith("fast") else "raw"]
            ratio = statistics.median(a / b for a, b in zip(speeds[path], raw, strict=True))
            rows.append(dict(workload=w.name, device=tag, precision=precision, batch_size=w.batch_size, path=path,
                             images_per_s=ips, ratio_to_raw=ratio))
            print(f"  {w.name:<30} batch {w.batch_size:>5} {path:<16} {ips:10.0f} img/s  ratio {ratio:.3f}",
                  flush=True)
    if workloads is None:  # the loading rows need no model: measured on the CPU whatever the device
        rows += loading_rows(loading_repeats, tag)
    stem = f"throughput_{tag}"
    results.table(stem, rows, COLUMNS)
    table = markdown_table(["workload", "batch", "path", "images/s", "ratio to raw (loading: to folder)"],
                           [[r["workload"], r["batch_size"], r["path"], f"{r['images_per_s']:.0f}",
                             f"{r['ratio_to_raw']:.3f}"] for r in rows])
    floor = {(r["workload"], r["batch_size"]): r["ratio_to_raw"] for r in rows if r["path"] == "lightning, bare"}
    below = [f"{r['workload']} at batch {r['batch_size']} ({r['ratio_to_raw']:.3f}; Lightning's own floor, the bare "
             f"module: {floor[r['workload'], r['batch_size']]:.3f})" for r in rows
             if r["path"].startswith("suite") and r["ratio_to_raw"] < 0.95]
    verdict = ("Every suite row is within 5 % of the raw loop." if not below else
               "Below the 0.95 target: " + "; ".join(below) + ".")
    results.markdown(stem, (
        f"# Throughput — {hw} ({mode})\n\n"
        "Images per second, steady state (the first steps excluded), median of alternating runs of the same "
        "net from its config; the ratio is the median over the repeats of each path's speed over its raw loop's in "
        "the same repeat (back to back, so the shared machine's drift cancels): `raw` is a hand-written PyTorch "
        "loop over in-memory batches (transformed as the "
        "DataModule serves them: MNIST's dynamic binarisation for the VAE), `suite` is `Trainer.fit` on the "
        "config's DataModule (no logger, no checkpoints, as the benchmarks run), both under the same precision; "
        "`lightning, bare` is the raw loop's work in a minimal LightningModule (no logging, no hooks of the suite) "
        "on the same DataModule: what Lightning's own loop costs, the floor for the suite. On a GPU, `fast` rows "
        "add channels-last weights and compiled nets to both and device-resident batches to the suite "
        "(`speed.*`), each ratio against the raw loop of its kind. Full batches only, images counted as trained; "
        "the training images are tiled so that the timed steps lie inside one epoch, as on a real-sized set. The "
        "VAE row is the issue's epoch, an 8k/2k split (the 2,100/300 embedded digits tiled) at batch 100: the "
        "second of two epochs is timed whole, its start, 80 training steps, the 20 validation batches (losses, "
        "PSNR, SSIM) and its end.\n\n"
        f"`{LOADING}` rows time data loading alone on the CPU (no model), median of alternating runs, same split, "
        "same batch size, local disk, no worker processes, one thread; the ratio is to `folder`. `folder` is "
        "`XRayDataModule` "
        "on the PNG files, first epoch from a cold DataModule: its `setup` decodes every file of all three splits "
        "up front (then holds them in memory), so this row pays decoding the val/test files too; `streamed` is "
        "`StreamingImageDataModule` on LitData chunks of the same images, first epoch: it reads only the training "
        "items, already decoded and resized by the conversion. The `warm epoch` rows are a second epoch over the "
        "same loader: there the folder DataModule serves batches from memory and streaming is slower — streaming "
        "is for sets that do not fit in memory or on the disk, not for 800 small images. `convert (once)` is "
        "`python -m ae_lightning.data.optimize` with 2 workers (process start-up included).\n\n"
        + table + "\n" + verdict + "\n"))
    print(table + verdict)
    return rows


main = Throughput.main

if __name__ == "__main__":
    sys.exit(main())
