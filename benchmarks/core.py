"""The benchmark skeleton: a benchmark is one :class:`Benchmark` subclass (its science) plus one settings YAML.

Everything else is here: the settings (:func:`load_settings`), the :class:`Context` of a run (mode, output
folder, device, data, the clock), the :class:`Results` that write the CSV, Markdown and figures, the command
line of ``python -m benchmarks.<name>`` (:meth:`Benchmark.main`) and the :data:`REGISTRY` that
``benchmarks/run.py`` (``make benchmark``) iterates. Adding a benchmark::

    # benchmarks/mine.py                             # benchmarks/mine.yaml
    class Mine(Benchmark):                           # epochs: 10
        name = "mine"                                # modes:
        data = ("mnist",)                            #   quick: {train_size: 2000}
                                                     #   full: {train_size: null}
        def models(self, settings):                  #   smoke: {epochs: 1}
            return {"vae": build(model_spec("vae_mnist"))}

        def run(self, ctx, settings):
            dm = ctx.mnist(self.name, train_size=settings["train_size"])
            ...
            results = ctx.results()
            results.table("mine_mnist", rows, COLUMNS)
            results.markdown("mine_mnist", "# Mine\\n\\n...")  # + the time line
            return results

    main = Mine.main                                 # + "mine": "benchmarks.mine:Mine" in REGISTRY
    if __name__ == "__main__":                       # python -m benchmarks.mine --quick|--full|--smoke
        sys.exit(main())

Modes: ``quick`` (``make benchmark``: offline, the embedded data, the committed tables), ``full`` (paper scale;
its tables carry ``_full``) and ``smoke``: the full mode's code path with the settings' ``smoke:`` caps and at
most :data:`SMOKE_BATCHES` batches per epoch (its tables carry ``_smoke`` and go to a temporary folder unless
``--out`` says otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import difflib
import importlib
import logging
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
MODES = ("quick", "full", "smoke")
SMOKE_BATCHES = 3  # a smoke run's cap on training / validation / test batches per epoch

#: the benchmarks ``make benchmark`` runs, in order (the headline first): name -> "module:Class"
REGISTRY: dict[str, str] = {
    "denoising": "benchmarks.denoising:Denoising",
    "features": "benchmarks.features:Features",
    "generation": "benchmarks.generation:Generation",
    "adversarial": "benchmarks.adversarial:Adversarial",
    "semisupervised": "benchmarks.semisupervised:SemiSupervised",
    "pose": "benchmarks.pose:Pose",
    "compression": "benchmarks.compression:Compression",
    "throughput": "benchmarks.throughput:Throughput",
}


def benchmark(name: str) -> Benchmark:
    """The registered benchmark ``name``, instantiated."""
    if name not in REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; registered: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()


# --- settings ------------------------------------------------------------------------------------
def merge(base: dict, update: Mapping) -> dict:
    """``base`` updated in place by ``update``, nested mappings merged key by key."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def set_dotted(settings: dict, key: str, value: Any, where: str = "the settings") -> None:
    """``settings["a"]["b"] = value`` for ``key="a.b"`` (a key that exists whole, dots and all, wins). A key that
    is not a setting is an error naming the close ones: a mistyped override never runs the defaults silently."""
    node, rest, block = settings, key, ""
    while rest not in node:
        head, dot, rest = rest.partition(".")
        if not (dot and isinstance(node.get(head), dict)):
            close = difflib.get_close_matches(head, node, n=3)
            hint = f" (did you mean {' / '.join(block + c for c in close)}?)" if close else ""
            raise ValueError(f"override {key!r}: {where} has no setting {block + head!r}{hint}; fix: one of "
                             f"{', '.join(block + k for k in sorted(node))}")
        node, block = node[head], f"{block}{head}."
    node[rest] = value


def load_settings(name: str, mode: str, overrides: Mapping[str, Any] | None = None) -> dict:
    """``benchmarks/<name>.yaml`` with ``modes: {<mode>: …}`` merged in (``smoke`` is ``full`` then ``smoke``),
    then ``overrides`` (dotted keys reach into blocks): the one way tests and users change a benchmark's settings."""
    path = HERE / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text()) or {}
    modes = raw.pop("modes", {})
    for step in ("full", "smoke") if mode == "smoke" else (mode,):
        if step not in modes and not (step == "smoke" and "full" in modes):
            raise ValueError(f"{path.name} has no mode {step!r} (it has: {', '.join(modes) or 'none'})")
        merge(raw, modes.get(step) or {})
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value, path.name)
    raw["mode"] = mode
    return raw


# --- the run's context -----------------------------------------------------------------------------
def hardware() -> tuple[str, str, str]:
    """``(accelerator, precision, description)``: the GPU with bf16 autocast when there is one, else the CPU."""
    if torch.cuda.is_available():
        precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "gpu", precision, f"GPU {torch.cuda.get_device_name(0)}, {precision}"
    threads = torch.get_num_threads()
    return "cpu", "32-true", f"CPU {platform.processor() or platform.machine()}, {threads} threads, fp32"


def quiet() -> None:
    """Keep the terminal for the progress bars and the summary table."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in ("does not have many workers", "LeafSpec", "no `val_dataloader`"):
        warnings.filterwarnings("ignore", f".*{message}.*")


@contextlib.contextmanager
def threads(n: int | None):
    """torch's intra-op threads set to ``n`` for a block (``None``: unchanged): small nets on a CPU run faster on
    one thread than on two."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def quiet_trainer(**kwargs) -> L.Trainer:
    """A Trainer with no logger, checkpoints, progress bar, model summary or sanity check unless asked."""
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   num_sanity_val_steps=0)
    return L.Trainer(**{**options, **kwargs})


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the classical methods' worker pool)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Stopwatch:
    """Wall and CPU seconds (:func:`cpu_seconds`: worker processes included) since it was started: the one clock of
    the benchmarks' time lines and per-model times."""

    def __init__(self) -> None:
        self.started = (time.perf_counter(), cpu_seconds())

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.started[0], cpu_seconds() - self.started[1]


def relative(text: str) -> str:
    """``text`` with absolute paths in or beside the project written relative to it (``/…/project/data`` →
    ``data``, ``/…/beside/x`` → ``../beside/x``): committed results carry no machine's paths."""
    text = str(text)
    for base, shown in ((REPO, ""), (REPO.parent, "../")):
        text = text.replace(str(base) + os.sep, shown)
    return text


@dataclass
class Context:
    """What one benchmark run knows besides its settings; built once (:meth:`Benchmark.main`, ``run.py``)."""

    mode: str = "quick"
    out: Path = RESULTS
    #: a dataset family's command-line value; absent or ``None``: the DataModules' lookup decides
    data: dict[str, Any] = field(default_factory=dict)
    #: the benchmark's own command-line options (``Benchmark.add_arguments``)
    options: dict[str, Any] = field(default_factory=dict)
    progress: bool = False
    accelerator: str = field(init=False)
    precision: str = field(init=False)
    device: str = field(init=False)
    clock: Stopwatch = field(init=False)  # started when the context is built

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        self.out = Path(self.out)
        self.accelerator, self.precision, self.device = hardware()
        self.clock = Stopwatch()

    @property
    def full(self) -> bool:
        """Whether the full mode's code path runs (``full``, or its capped ``smoke`` walk)."""
        return self.mode in ("full", "smoke")

    def elapsed(self) -> tuple[float, float]:
        """Wall and CPU seconds since the context was built."""
        return self.clock.elapsed()

    def trainer(self, max_epochs: int, **kwargs) -> L.Trainer:
        """A :func:`quiet_trainer` on the run's device; a smoke run caps every epoch at :data:`SMOKE_BATCHES`."""
        options = dict(enable_progress_bar=self.progress, accelerator=self.accelerator, precision=self.precision)
        if self.mode == "smoke":
            options.update({f"limit_{stage}_batches": SMOKE_BATCHES for stage in ("train", "val", "test")})
        return quiet_trainer(max_epochs=max_epochs, **{**options, **kwargs})

    def data_root(self, family: str) -> Any:
        return self.data.get(family)

    def mnist(self, benchmark: str, **kwargs):
        """A set-up MNIST DataModule by the one lookup order; full mode refuses anything but the 60k training set."""
        from ae_lightning.data import MNISTDataModule

        dm = MNISTDataModule(**mnist_source(self.data_root("mnist"), "full" if self.full else "quick"), **kwargs)
        dm.prepare_data()
        dm.setup("fit")
        if self.full:
            require_full_mnist(dm, benchmark)
        return dm

    def results(self) -> Results:
        return Results(self)


def mnist_source(data: str | Path | None = None, mode: str = "quick") -> dict:
    """``root`` and ``download`` for :class:`~ae_lightning.data.MNISTDataModule` by :mod:`ae_lightning.data.locate`:
    ``--data``, ``$AE_MNIST_ROOT``, ``data/mnist``, then (full mode) the download into ``data/mnist``, else the
    embedded 10k test digits (``root=None``). Nothing outside the project is searched."""
    from ae_lightning.data.locate import locate

    located = locate("mnist", data, download=mode == "full")
    return {"root": None if located.root is None else str(located.root),
            "download": located.rule.startswith("download")}


def xray_source(data: str | Path | Sequence | None) -> tuple[list[Path] | None, str, str]:
    """``(sources, name, words)``: the X-ray sources by the DataModules' lookup (``--data``, ``$AE_XRAY_ROOT``,
    ``data/xray``; ``None``: the embedded chest X-rays), the name the results files carry (``xray64``, a single
    source's stem, ``combined``) and the sources in words for the tables."""
    from ae_lightning.data.locate import locate

    root = locate("xray", data).root
    if root is None:
        return None, "xray64", "the embedded real chest X-rays (Kermany et al. 2018)"
    roots = root if isinstance(root, list) else [root]
    one = roots[0]
    name = "combined" if len(roots) > 1 else (one.stem if one.suffix else one.name).replace(" ", "_") or "data"
    return roots, name, ", ".join(relative(str(r.resolve())) for r in roots)


def split_by(group_by: str) -> str:
    """An X-ray split rule (``group_by``) in words."""
    return {"image": "by image (no grouping)", "parent": "by parent folder"}.get(
        group_by, f"by patient (patient = the match of `{group_by}` in the file name)")


def is_full_mnist(dm) -> bool:
    """Whether a set-up MNISTDataModule found the full 60k training set (not only the 10k test digits)."""
    return dm.source.startswith("the full MNIST")


def require_full_mnist(dm, benchmark: str) -> None:
    from ae_lightning.data import DatasetNotFoundError

    if not is_full_mnist(dm):
        raise DatasetNotFoundError(
            f"{benchmark} --full trains on the 60k MNIST training set, but found {relative(dm.source)}; fix: pass "
            "--data ROOT holding MNIST/raw/{train,t10k}-*-ubyte[.gz] (torchvision layout) or set $AE_MNIST_ROOT, "
            "or run online with neither set: full mode downloads MNIST into data/mnist"
        )


# --- results ---------------------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Iterable[Mapping], columns: Sequence[str]) -> Path:
    """Rows as CSV with exactly ``columns`` (floats with 4 decimals)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


class Results:
    """A run's output files: ``<stem>[_<mode>].{csv,md,png}`` in the context's folder (quick mode: the committed
    names); paths in them relative to the project, each Markdown file ending with the time line."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.files: list[Path] = []
        self.rows: list[dict] = []  # every table's rows: what the run returns

    def path(self, stem: str, ext: str) -> Path:
        suffix = "" if self.ctx.mode == "quick" else f"_{self.ctx.mode}"
        self.ctx.out.mkdir(parents=True, exist_ok=True)
        return self.ctx.out / f"{stem}{suffix}.{ext}"

    def _written(self, path: Path) -> Path:
        self.files.append(path)
        return path

    def table(self, stem: str, rows: Sequence[Mapping], columns: Sequence[str]) -> Path:
        self.rows += list(rows)
        return self._written(write_csv(self.path(stem, "csv"), rows, columns))

    def time_line(self) -> str:
        wall, cpu = self.ctx.elapsed()
        return (f"Mode `{self.ctx.mode}`, {hardware()[2]}, {wall / 60:.1f} min wall / {cpu / 60:.1f} CPU-min "
                "(this benchmark, this run).")

    def markdown(self, stem: str, text: str) -> Path:
        path = self.path(stem, "md")
        path.write_text(relative(text).rstrip() + "\n\n" + self.time_line() + "\n")
        return self._written(path)

    def image_grid(self, stem: str, images: torch.Tensor, nrow: int) -> Path:
        """Images (N, C, H, W) in [0, 1] as one grid."""
        from torchvision.utils import make_grid, save_image

        path = self.path(stem, "png")
        save_image(make_grid(images.float().cpu(), nrow=nrow, pad_value=1.0), path)
        return self._written(path)

    def figure(self, stem: str, fig) -> Path:
        """A matplotlib figure, closed after."""
        import matplotlib.pyplot as plt

        path = self.path(stem, "png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return self._written(path)


# --- the command line and the benchmark base -------------------------------------------------------
DATA_HELP = {
    "mnist": "MNIST root (torchvision layout, or the t10k files only); default: $AE_MNIST_ROOT, data/mnist, then "
             "(full mode) torchvision's download into data/mnist, else (quick) the embedded 10k test digits",
    "xray": "X-ray folder or .npz (repeat for a union); default: $AE_XRAY_ROOT, data/xray, else the embedded 800 "
            "chest X-rays",
    "fullres": "a folder of full-size X-rays (PNG/JPEG/TIFF/DICOM); required: they do not ship",
}
MODE_HELP = {"quick": "the make-benchmark run (default)", "full": "paper scale (GPU when present)",
             "smoke": "walk the full mode's code path with capped epochs, batches and images"}


def add_run_arguments(ap: argparse.ArgumentParser, families: Sequence[str], data_alias: bool = True) -> None:
    """``--quick/--full/--smoke``, ``--out`` and one data option per family (the first also ``--data``)."""
    group = ap.add_mutually_exclusive_group()
    for mode, text in MODE_HELP.items():
        group.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode, help=text)
    ap.add_argument("--out", type=Path, help="where the tables and figures go (default: benchmarks/results; "
                                             "smoke: a temporary folder)")
    for i, family in enumerate(families):
        flags = [f"--{family}"] + (["--data"] if i == 0 and data_alias else [])
        ap.add_argument(*flags, dest=f"data_{family}", action="append" if family == "xray" else "store",
                        help=DATA_HELP[family])
    ap.set_defaults(mode="quick")


def out_and_data(args: argparse.Namespace, families: Sequence[str], prefix: str) -> tuple[Path, dict[str, Any]]:
    """The results folder (smoke: a new temporary one) and the data options of :func:`add_run_arguments`."""
    out = args.out or (Path(tempfile.mkdtemp(prefix=f"{prefix}_smoke_")) if args.mode == "smoke" else RESULTS)
    data = {f: getattr(args, f"data_{f}") for f in families}
    if isinstance(data.get("xray"), list) and len(data["xray"]) == 1:
        data["xray"] = data["xray"][0]
    return out, data


class Benchmark:
    """One benchmark: its name (settings ``benchmarks/<name>.yaml``), the datasets it reads, and its science."""

    name: ClassVar[str]
    data: ClassVar[tuple[str, ...]] = ()  # dataset families read (the first also answers ``--data``)
    doc: ClassVar[str] = ""  # one line for ``--help``

    def settings(self, mode: str, overrides: Mapping[str, Any] | None = None) -> dict:
        return load_settings(self.name, mode, overrides)

    def models(self, settings: dict) -> dict[Any, L.LightningModule]:
        """The untrained models, built from the experiment configs (the tests compare them with the configs)."""
        return {}

    def run(self, ctx: Context, settings: dict) -> Results:
        raise NotImplementedError

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The benchmark's own command-line options (their values reach ``run`` as ``ctx.options``)."""

    def __call__(self, ctx: Context, overrides: Mapping[str, Any] | None = None) -> Results:
        quiet()
        return self.run(ctx, self.settings(ctx.mode, overrides))

    def parser(self) -> argparse.ArgumentParser:
        ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{self.name}", description=self.doc or None)
        add_run_arguments(ap, self.data)
        ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                        help="override a setting of benchmarks/<name>.yaml (dotted keys; the value parsed as YAML)")
        ap.add_argument("--progress", action="store_true", help="show the training progress bars")
        self.add_arguments(ap)
        return ap

    def context_of(self, args: argparse.Namespace) -> tuple[Context, dict]:
        out, data = out_and_data(args, self.data, self.name)
        known = {"mode", "out", "set", "progress"} | {f"data_{f}" for f in self.data}
        options = {k: v for k, v in vars(args).items() if k not in known}
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r}: expected KEY=VALUE")
            overrides[key] = yaml.safe_load(value)
        return Context(args.mode, out, data, options, args.progress), overrides

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> int:
        """``python -m benchmarks.<name>``: missing data or a bad setting is one line on stderr and exit status 2."""
        from ae_lightning.data import DatasetNotFoundError

        bench = cls()
        args = bench.parser().parse_args(argv)
        try:
            ctx, overrides = bench.context_of(args)
            results = bench(ctx, overrides)
        except (DatasetNotFoundError, ValueError, KeyError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("wrote " + ", ".join(relative(str(p)) for p in results.files))
        return 0
