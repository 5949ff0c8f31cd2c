"""Throughput: a user's default fit against a raw PyTorch loop of the *same* net on the *same* data (issues 12, 28),
and a folder of PNG files against LitData chunks of the same images. Three paths per workload, alternating in one
process: ``raw`` (a hand-written loop), ``lightning, bare`` (its work in a minimal LightningModule) and ``suite``
(``ae-lightning fit``'s default fit less its files and terminal); only steady-state work is timed, so a ratio is
immune to the machine's speed of the day. :data:`ABOUT` (the Markdown file's text) says what each row measures.

    python -m benchmarks.throughput --quick       # CPU-sized step counts
    python -m benchmarks.throughput --full        # more steps (GPU: bf16 autocast)
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from ae_lightning.batch import images_of
from ae_lightning.callbacks import Speed
from ae_lightning.config import CONFIGS, DEFAULTS, instantiate, load_config
from ae_lightning.distributions import BernoulliLikelihood
from ae_lightning.losses import reconstruction_loss
from ae_lightning.metrics import VAL_SSIM_IMAGES
from ae_lightning.models import VAE, AdversarialAutoencoder
from ae_lightning.priors import VAL_PRIOR_MATCH_CODES
from benchmarks.common import build
from benchmarks.core import Benchmark, Context, Results, markdown_table, quiet_trainer, threads

COLUMNS = ["workload", "device", "precision", "batch_size", "path", "images_per_s", "ratio_to_raw", "ratio_to_bare"]


@dataclass
class Workload:
    name: str
    config: str
    batch_size: int
    steps: dict[str, int]  # measured training steps per mode (an epoch workload: its whole epoch)
    #: an epoch workload: (training, validation) images, the real images tiled to these counts; the timed span is
    #: the whole second epoch: its start, every training step, the validation pass and its end
    epoch: tuple[int, int] | None = None
    #: targets, as time ratios: the suite's time at most ``vs_raw`` × the raw loop's and ``vs_bare`` × the bare module's
    vs_raw: float | None = None
    vs_bare: float | None = None


WORKLOADS = [
    # batch 1024 of 64×64 conv maps is ~20 s per step on a 2-core CPU: a GPU (full mode) workload only
    Workload("conv DAE 64x64 (Gondara)", "dae_xray64", 1024, {"full": 50}, vs_bare=1.03),
    # the config's own epoch: 300 training X-rays (train_size), the 80 of the validation split, batch 10
    Workload("conv DAE epoch (train + val)", "dae_xray64", 10, {"quick": 30, "full": 30}, epoch=(300, 80),
             vs_bare=1.03),
    Workload("deep AE 784-1000-500-250-30", "deep_ae_mnist", 1024, {"quick": 12, "full": 200}, vs_raw=1 / 0.95),
    Workload("deep AE 784-1000-500-250-30", "deep_ae_mnist", 256, {"quick": 30, "full": 500}, vs_raw=1 / 0.95),
    # issue 28's VAE epoch: an 8k/2k MNIST split at batch 100, 80 training steps + 20 validation batches
    Workload("VAE epoch (train + val)", "vae_mnist", 100, {"quick": 80, "full": 80}, epoch=(8000, 2000),
             vs_raw=1.15, vs_bare=1.05),
    # the AAE's epoch, half the VAE's (three optimiser steps a batch): 40 training batches + 10 validation batches
    Workload("AAE epoch (train + val)", "aae_mnist", 100, {"quick": 40, "full": 40}, epoch=(4000, 1000), vs_bare=1.03),
]
WARMUP = 2


def _tile(dataset, n: int, exact: bool) -> None:
    """``dataset``'s (real) images repeated to at least ``n`` (exactly ``n`` if ``exact``)."""
    if len(dataset) < n or exact:
        reps = -(-n // len(dataset))
        images, labels = dataset.images.repeat(reps, 1, 1, 1), dataset.labels.repeat(reps)
        dataset.images, dataset.labels = (images[:n], labels[:n]) if exact else (images, labels)


def model_and_data(w: Workload, mode: str) -> tuple[L.LightningModule, L.LightningDataModule]:
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
    return build(cfg["model"]), data


def _transform(dataset):
    """What the dataset does to each batch it serves (e.g. MNIST's dynamic binarisation): the raw loop does it too."""
    return dataset.transform or (lambda x: x)


# --- the raw loop: what a researcher writes by hand ------------------------------------------------
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _vae_loss(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """The Bernoulli VAE's negative ELBO per image, written out: reparameterised sample, BCE over pixels, Gaussian KL."""
    if not isinstance(model.likelihood, BernoulliLikelihood) or model.hparams.free_bits or model.hparams.warmup_steps:
        raise ValueError("the raw VAE loop is written for a Bernoulli likelihood without free bits or warm-up")
    mean, log_var = model.encoder(x).float().chunk(2, dim=-1)  # (B, D) each
    z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
    logits = model.decoder(z).float()  # (B, C, H, W)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
    kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1).mean()
    return recon + model.hparams.beta * kl


def loss_of(model: L.LightningModule, x: torch.Tensor) -> torch.Tensor:
    """A model's loss as a raw loop computes it (an autoencoder's: its noise, nets and loss kind; the AAE's is its
    reconstruction loss: the evaluation loss, the first of its three updates)."""
    if isinstance(model, VAE):
        return _vae_loss(model, x)
    return reconstruction_loss(model.decoder(model.encoder(model.corrupt(x))), x, model.hparams.loss)


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor, backward) -> None:
    opt.zero_grad(set_to_none=True)
    backward(loss)
    opt.step()


def aae_step(model: AdversarialAutoencoder, x: torch.Tensor, optimizers, backward) -> None:
    """Makhzani et al.'s three updates of one batch, written out: reconstruction, discriminator (prior samples real,
    codes fake), generator (the encoder fools the discriminator). ``backward``: ``Tensor.backward``, ``manual_backward``."""
    if model.hparams.posterior != "deterministic" or model.prior.supervised or model.hparams.discriminator_steps != 1:
        raise ValueError("the raw AAE loop is written for a deterministic encoder, an unsupervised prior, one D step")
    opt_ae, opt_d, opt_g = optimizers
    enc, disc, bce = model.encoder, model.discriminator, F.binary_cross_entropy_with_logits
    _update(opt_ae, loss_of(model, x), backward)
    with torch.no_grad():
        fake = enc(x)  # (B, D)
    real_logits, fake_logits = disc(model.prior.sample(len(x), device=x.device)), disc(fake)
    _update(opt_d, bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits)),
            backward)
    logits = disc(enc(x))
    _update(opt_g, bce(logits, torch.ones_like(logits)), backward)


def _optimizers(model: L.LightningModule) -> list[torch.optim.Optimizer]:
    opts = model.configure_optimizers()
    opts = opts if isinstance(opts, list | tuple) else [opts]
    return [o["optimizer"] if isinstance(o, dict) else o for o in opts]


def raw_images_per_s(model: L.LightningModule, data, w: Workload, steps: int, device: torch.device,
                     precision: str = "32-true", fast: bool = False) -> float:
    """Plain PyTorch under the other paths' autocast; batches sliced from in-memory tensors on the device, transformed
    as the DataModule serves them; an epoch's evaluation pass computes the loss (a hand-written loop, not the
    library's batched evaluation: no copies back to the host). ``fast``: channels-last weights and images and compiled
    nets too (the best hand-written loop the issue names)."""
    model = model.to(device).train()
    images = data.train_set.images.to(device)  # (N, C, H, W)
    if fast:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
        for net in Speed.nets(model).values():
            net.compile()
    opts = _optimizers(model)
    train_tf, val_tf = _transform(data.train_set), _transform(data.val_set)
    autocast = torch.autocast(device.type, dtype=AUTOCAST.get(precision, torch.float32), enabled=precision in AUTOCAST)
    gen = torch.Generator(device=device).manual_seed(0)
    adversarial = isinstance(model, AdversarialAutoencoder)

    def train(batches: torch.Tensor) -> None:  # batches: (S, B) indices
        for batch in batches:
            x = train_tf(images[batch])  # (B, C, H, W)
            with autocast:
                if adversarial:
                    aae_step(model, x, opts, torch.Tensor.backward)
                    continue
                loss = loss_of(model, x)
            _update(opts[0], loss, torch.Tensor.backward)

    def epoch() -> None:  # shuffle, every full batch, then the evaluation pass
        order = torch.randperm(len(images), generator=gen, device=device)
        train(order[: len(images) // w.batch_size * w.batch_size].view(-1, w.batch_size))
        model.eval()
        for x in data.val_set.images.to(device).split(w.batch_size):
            with torch.no_grad(), autocast:
                loss_of(model, val_tf(x))
        model.train()

    if w.epoch is None:  # the WARMUP batches, then the timed ones, of one shuffled epoch
        batches = torch.randperm(len(images), generator=gen, device=device)[: (WARMUP + steps) * w.batch_size]
        batches = batches.view(-1, w.batch_size)
    warm, timed = ((epoch, epoch) if w.epoch is not None  # one warm epoch, then a timed one
                   else (lambda: train(batches[:WARMUP]), lambda: train(batches[WARMUP:])))
    warm()
    _sync(device)
    t0 = clock()
    timed()
    _sync(device)
    return _images(w, steps, data) / (clock() - t0)


class Bare(L.LightningModule):
    """The raw loop's work in a minimal LightningModule (the AAE's three updates by manual optimisation), the
    evaluation loss in validation; no logging, metrics or hooks of the suite: what Lightning's loop costs any user."""

    def __init__(self, model: L.LightningModule) -> None:
        super().__init__()
        self.model = model
        self.automatic_optimization = not isinstance(model, AdversarialAutoencoder)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        x = images_of(batch)
        if self.automatic_optimization:
            return loss_of(self.model, x)
        aae_step(self.model, x, self.optimizers(), self.manual_backward)
        return None

    def validation_step(self, batch, batch_idx: int) -> None:
        loss_of(self.model, images_of(batch))

    def configure_optimizers(self):
        return _optimizers(self.model)


# --- the suite: Trainer.fit on the config's DataModule -------------------------------------------------
class StepClock(L.Callback):
    """Time (:data:`clock`) of the timed span, and the training images of the batches in it (counted, not assumed).
    A step workload: from the end of batch ``warmup - 1`` to the end of batch ``last``. An epoch workload
    (``last=None``): from the end of the first epoch to the end of the second (callbacks' epoch-end hooks run before
    the module's, so the span holds one of the module's epoch ends, as it holds one epoch). The device is synchronised
    at the span's two ends only, as the raw loop is: a sync per step would stop the host from queueing the next step
    while the GPU works."""

    def __init__(self, warmup: int, last: int | None) -> None:
        self.warmup, self.last, self.start, self.end, self.images = warmup, last, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.start is not None and self.end is None:
            self.images += len(images_of(batch))
        if self.last is not None and batch_idx in (self.warmup - 1, self.last):
            self.mark(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.last is None:
            self.mark(pl_module)

    def mark(self, pl_module) -> None:
        """The span's start, then its end."""
        _sync(pl_module.device)
        if self.start is None:
            self.start = clock()
        else:
            self.end = clock()


def default_callbacks(config: str) -> list[L.Callback]:
    """The callbacks ``ae-lightning fit --config configs/<config>.yaml`` trains with (the CLI's defaults and the
    config's ``trainer.callbacks``, built by the CLI itself), less the checkpoint callbacks, progress bar and model
    summary. Fresh objects on each call."""
    import warnings

    from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar

    from ae_lightning.cli import AutoencoderCLI, SuggestingParser

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*args parameter is intended.*")  # this script's own argv is not for the CLI
        cli = AutoencoderCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                             parser_class=SuggestingParser, save_config_callback=None, run=False,
                             parser_kwargs={"default_config_files": [str(DEFAULTS)]},
                             args=["--config", str(CONFIGS / f"{config}.yaml"), "--trainer.logger=false"])
    return [cb for cb in cli.trainer.callbacks if not isinstance(cb, ModelCheckpoint | ProgressBar | ModelSummary)]


def suite_images_per_s(model, data, w: Workload, steps: int, accelerator: str, precision: str,
                       fast: bool = False, callbacks: list[L.Callback] = ()) -> float:
    """``Trainer.fit`` with ``callbacks`` (the suite path: :func:`default_callbacks`; none for the bare module);
    ``fast``: with the speed options on (channels-last, compiled nets, device-resident batches)."""
    timer = StepClock(WARMUP, None if w.epoch is not None else WARMUP + steps - 1)
    if fast:  # in place of the defaults' Speed(), all off
        callbacks = [cb for cb in callbacks if not isinstance(cb, Speed)]
        callbacks.append(Speed(channels_last=True, compile=True, device_resident_data=True))
    if w.epoch is not None:  # two whole epochs, each with its validation pass
        span = dict(max_epochs=2, limit_val_batches=1.0)
    else:  # batches, not optimiser steps: an adversarial model steps several optimisers per batch
        span = dict(max_epochs=1, limit_train_batches=WARMUP + steps, limit_val_batches=0)
    with tempfile.TemporaryDirectory(prefix="ae_throughput_") as root:  # where the image grids go
        trainer = quiet_trainer(accelerator=accelerator, precision=precision, callbacks=[timer, *callbacks],
                                default_root_dir=root, **span)
        trainer.fit(model, data)
    assert timer.images == steps * w.batch_size, f"{w.name}: timed {timer.images} images, expected {steps} full batches"
    return _images(w, steps, data) / (timer.end - timer.start)


def _images(w: Workload, steps: int, data) -> int:
    return steps * w.batch_size + (len(data.val_set) if w.epoch is not None else 0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


#: the timed spans' clock: wall time; ``--cpu-time``: this process's CPU time (:func:`process_clock`)
clock = time.perf_counter


@contextlib.contextmanager
def process_clock():
    """On a CPU shared with other jobs: the spans timed with this process's CPU time on one thread (another
    process's time slices then do not count; its pressure on caches and memory still does); restored after."""
    global clock
    clock = time.process_time
    try:
        with threads(1):
            yield
    finally:
        clock = time.perf_counter


def alternating(paths: list[str], repeats: int):
    """``paths`` ``repeats`` times, every other round reversed (each path first as often as last)."""
    for repeat in range(repeats):
        yield from paths[:: 1 if repeat % 2 == 0 else -1]


def median_ratio(speeds: list[float], base: list[float]) -> float:
    """The median of the repeats' ratios: paths that ran back to back share the machine's state, so its drift
    cancels within a repeat."""
    return statistics.median(a / b for a, b in zip(speeds, base, strict=True))


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
    every file of every split there) and of a second, warm epoch over the same loader; wall time (disk waits)."""
    t0 = time.perf_counter()
    data = make_data()
    data.setup("fit")
    loader = data.train_dataloader()
    n = sum(len(batch[0]) for batch in loader)
    t1 = time.perf_counter()
    n_warm = sum(len(batch[0]) for batch in loader)
    return n / (t1 - t0), n_warm / (time.perf_counter() - t1)


def loading_rows(repeats: int) -> list[dict]:
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

        makers = {"folder": folder_data, "streamed": lambda: StreamingImageDataModule(
            f"{tmp}/chunks", kind="xray", batch_size=LOADING_BATCH)}
        speeds: dict[str, list[tuple[float, float]]] = {path: [] for path in makers}
        # one intra-op thread, as in a DataLoader worker: a 32-image gather from memory takes 15 ms with 2 threads
        # on a busy 2-core machine (thread hand-off), 0.05 ms with one
        with threads(1):
            for path in alternating(list(makers), repeats):
                speeds[path].append(epoch_images_per_s(makers[path]))
    cold, warm = ({p: statistics.median(s[i] for s in v) for p, v in speeds.items()} for i in (0, 1))
    rows = [("folder", cold["folder"]), ("streamed", cold["streamed"]), ("folder, warm epoch", warm["folder"]),
            ("streamed, warm epoch", warm["streamed"]), ("convert (once)", convert_ips)]
    for path, ips in rows:
        print(f"  {LOADING:<30} batch {LOADING_BATCH:>5} {path:<20} {ips:10.0f} img/s  ratio {ips / cold['folder']:.3f}",
              flush=True)
    return [dict(workload=LOADING, device="cpu", precision="-", batch_size=LOADING_BATCH, path=path, images_per_s=ips,
                 ratio_to_raw=ips / cold["folder"]) for path, ips in rows]


# --- the run ---------------------------------------------------------------------------------------------
class Throughput(Benchmark):
    name = "throughput"
    doc = ("images/s of a user's default fit against a raw PyTorch loop of the same net and data and against bare "
           "Lightning, alternating")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--cpu-time", action="store_true", help="CPU only: time with this process's CPU time on "
                                                                    "one thread (a CPU shared with other jobs)")

    def run(self, ctx: Context, settings: dict) -> Results:
        """The workloads (``settings["workloads"]`` if given, else :data:`WORKLOADS` and the loading rows); ``--cpu-time``:
        the spans on :func:`process_clock` (the loading rows stay wall time: they wait on the disk)."""
        cpu_time = bool(ctx.options.get("cpu_time"))
        if cpu_time and ctx.accelerator != "cpu":
            raise ValueError("--cpu-time times CPU work: it is for CPU-only runs (a GPU works while the host waits)")
        with process_clock() if cpu_time else contextlib.nullcontext():
            return self.measure(ctx, settings, "CPU, 1 thread, fp32, process CPU time" if cpu_time else ctx.device)

    def measure(self, ctx: Context, settings: dict, hw: str) -> Results:
        workloads = [Workload(**w) for w in settings.get("workloads") or []]
        mode, accelerator, precision = ctx.mode if ctx.mode != "smoke" else "full", ctx.accelerator, ctx.precision
        device = torch.device("cuda" if accelerator == "gpu" else "cpu")
        tag = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(0).split()[-1].lower()
        print(f"throughput ({mode}) on {hw}: raw PyTorch loop vs the suite's default fit, alternating", flush=True)
        rows, verdicts = [], []
        for w in workloads or WORKLOADS:
            if mode not in w.steps:
                print(f"  {w.name} at batch {w.batch_size}: {', '.join(w.steps)} mode only", flush=True)
                continue
            steps = w.epoch[0] // w.batch_size if w.epoch is not None else w.steps[mode]
            # on a GPU also the fast paths: channels-last + compiled nets (raw and suite) + device-resident batches
            paths = ["raw", "lightning, bare", "suite"] + (["raw, fast", "suite, fast"] if device.type == "cuda" else [])
            speeds: dict[str, list[float]] = {p: [] for p in paths}
            for path in alternating(paths, settings["repeats"]):  # each a fresh model
                L.seed_everything(0, verbose=False)
                model, data = model_and_data(w, mode)
                fast = path.endswith("fast")
                if path.startswith("raw"):
                    ips = raw_images_per_s(model, data, w, steps, device, precision, fast)
                elif path == "lightning, bare":
                    ips = suite_images_per_s(Bare(model), data, w, steps, accelerator, precision)
                else:
                    ips = suite_images_per_s(model, data, w, steps, accelerator, precision, fast,
                                             default_callbacks(w.config))
                speeds[path].append(ips)
            for path in paths:  # each against the raw loop of its kind and the bare module
                ips = statistics.median(speeds[path])
                ratio = median_ratio(speeds[path], speeds["raw, fast" if path.endswith("fast") else "raw"])
                to_bare = median_ratio(speeds[path], speeds["lightning, bare"])
                rows.append(dict(workload=w.name, device=tag, precision=precision, batch_size=w.batch_size, path=path,
                                 images_per_s=ips, ratio_to_raw=ratio, ratio_to_bare=to_bare))
                print(f"  {w.name:<30} batch {w.batch_size:>5} {path:<16} {ips:10.0f} img/s  ratio {ratio:.3f}  "
                      f"time {1 / ratio:.3f}× raw, {1 / to_bare:.3f}× bare", flush=True)
                if path == "suite":
                    verdicts.append(verdict(w, rows[-1]))
        if not workloads:  # the loading rows need no model: measured on the CPU whatever the device
            rows += loading_rows(settings["loading_repeats"])
        results = ctx.results()
        results.table(f"throughput_{tag}", rows, COLUMNS)
        table = markdown_table(
            ["workload", "batch", "path", "images/s", "speed ratio to raw (loading: to folder)", "time × raw",
             "time × bare"],
            [[r["workload"], r["batch_size"], r["path"], f"{r['images_per_s']:.0f}", f"{r['ratio_to_raw']:.3f}",
              f"{1 / r['ratio_to_raw']:.3f}", f"{1 / r['ratio_to_bare']:.3f}" if r.get("ratio_to_bare") else "–"]
             for r in rows])
        verdict_text = "\n".join(f"- {v}" for v in verdicts)
        results.markdown(f"throughput_{tag}", f"# Throughput — {hw} ({mode})\n\n" + ABOUT + table
                         + "\nTargets (time ratios):\n\n" + verdict_text + "\n")
        print(table + verdict_text)
        return results


def verdict(w: Workload, suite: dict) -> str:
    """The suite's time (its ``suite`` row) against the raw loop's and the bare module's, and whether it meets the
    workload's targets."""
    raw, bare = 1 / suite["ratio_to_raw"], 1 / suite["ratio_to_bare"]
    checks = [(f"{raw:.3f}× raw (target ≤ {w.vs_raw:.2f})", raw <= w.vs_raw) if w.vs_raw else None,
              (f"{bare:.3f}× bare Lightning (target ≤ {w.vs_bare:.2f})", bare <= w.vs_bare) if w.vs_bare else None]
    checks = [c for c in checks if c]
    return (f"{w.name} at batch {w.batch_size}: the suite takes " + " and ".join(text for text, _ in checks)
            + (": met." if all(ok for _, ok in checks) else ": **not met**."))


ABOUT = (
    "Images per second, steady state (the first steps excluded), median of alternating runs of the same net from its "
    "config; the ratios are medians over the repeats of each path's speed over the raw loop's (and the bare module's) "
    "in the same repeat (back to back, so the shared machine's drift cancels); `time ×` is their inverse, the time a "
    "path takes for the same work. `raw` is a hand-written PyTorch loop over in-memory batches (transformed as the "
    "DataModule serves them: MNIST's dynamic binarisation), the model's nets and optimiser settings with its loss "
    "written out in plain torch; an epoch's evaluation pass computes the loss, no image metrics. `lightning, bare` is "
    "that work in a minimal LightningModule on the config's DataModule: Lightning's own cost, the floor for the suite. "
    "`suite` is a user's default fit: the model as its config builds it, with its default validation metrics (losses, "
    f"PSNR, SSIM over the first {VAL_SSIM_IMAGES} validation images, the VAE's active units, the AAE's prior match "
    f"over {VAL_PRIOR_MATCH_CODES} codes), and the callbacks `ae-lightning fit` adds by default plus the config's own "
    "(divergence guard, reconstruction grid, the generative models' sample grids, diagnostics and speed options at their "
    "defaults), without the checkpoint callbacks, the logger and the progress bar (files and terminal at the user's "
    "cadence, as in issue 28's measurement). All under the same precision. On a GPU, `fast` rows add channels-last "
    "weights and compiled nets to raw and suite and device-resident batches to the suite (`speed.*`), each ratio "
    "against the raw loop of its kind. Full batches only, images counted as trained; the training images are tiled "
    "so that the timed steps lie inside one epoch, as on a real-sized set. The epoch rows time the second of two "
    "epochs whole: its start, the training steps, the validation pass and its end (VAE: issue 28's 8k/2k split of "
    "the embedded digits, tiled, at batch 100; AAE: 4k/1k; conv DAE: the config's own 300 training and 80 validation "
    "X-rays at batch 10).\n\n"
    f"`{LOADING}` rows time data loading alone on the CPU (no model), median of alternating runs, same split, same "
    "batch size, local disk, no worker processes, one thread; the ratio is to `folder`. `folder` is `XRayDataModule` "
    "on the PNG files, first epoch from a cold DataModule: its `setup` decodes every file of all three splits up "
    "front (then holds them in memory), so this row pays decoding the val/test files too; `streamed` is "
    "`StreamingImageDataModule` on LitData chunks of the same images, first epoch: it reads only the training items, "
    "already decoded and resized by the conversion. The `warm epoch` rows are a second epoch over the same loader: "
    "there the folder DataModule serves batches from memory and streaming is slower — streaming is for sets that do "
    "not fit in memory or on the disk, not for 800 small images. `convert (once)` is `python -m "
    "ae_lightning.data.optimize` with 2 workers (process start-up included).\n\n"
)

main = Throughput.main

if __name__ == "__main__":
    sys.exit(main())
