"""Pieces every benchmark script shares: output folder, hardware choice, tables, quiet trainers, where the
MNIST data are, and models from the experiment configs (``configs/``) with a benchmark's stated overrides."""

from __future__ import annotations

import argparse
import copy
import csv
import logging
import math
import os
import platform
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import lightning as L
import torch

from ae_lightning.config import instantiate, load_config

RESULTS = Path(__file__).parent / "results"


def hardware() -> tuple[str, str, str]:
    """``(accelerator, precision, description)``: the GPU with bf16 autocast when there is one, else the CPU."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "gpu", precision, f"GPU {name}, {precision}"
    threads = torch.get_num_threads()
    return "cpu", "32-true", f"CPU {platform.processor() or platform.machine()}, {threads} threads, fp32"


def quiet() -> None:
    """Keep the terminal for the progress bars and the summary table."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")


def trainer(max_epochs: int, accelerator: str = "auto", precision: str = "32-true", **kwargs) -> L.Trainer:
    """A Trainer for benchmark fits: no logger, no checkpoints, no progress bar unless asked."""
    defaults = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(max_epochs=max_epochs, accelerator=accelerator, precision=precision, **defaults)


# --- every benchmark script's command line ---------------------------------------------------------
MNIST_DATA_HELP = ("MNIST root (torchvision layout, or the t10k files only); default: $AE_MNIST_ROOT, data/mnist, "
                   "../shared/data/mnist (quick) or ../shared/data/mnist_full (full), else the embedded digits")


def benchmark_parser(doc: str, full_help: str) -> argparse.ArgumentParser:
    """The options every ``python -m benchmarks.<name>`` takes (``--quick`` (default) / ``--full``, ``--out``);
    each script adds its own."""
    ap = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="mode", action="store_const", const="quick", help="the make-benchmark run")
    group.add_argument("--full", dest="mode", action="store_const", const="full", help=full_help)
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the tables and figures go")
    ap.set_defaults(mode="quick")
    return ap


def mnist_main(doc: str, full_help: str, run: Callable[[str, str | None, Path], object], argv=None) -> int:
    """The whole command line of an MNIST benchmark whose only option beyond the common ones is ``--data``:
    ``run(mode, data, out)`` under :func:`run_main`."""
    ap = benchmark_parser(doc, full_help)
    ap.add_argument("--data", help=MNIST_DATA_HELP)
    args = ap.parse_args(argv)
    return run_main(lambda: run(args.mode, args.data, args.out))


def run_main(call: Callable[[], object]) -> int:
    """Run a benchmark: missing data or a bad setting is one line on stderr and exit status 2."""
    from ae_lightning.data import DatasetNotFoundError

    try:
        call()
    except (DatasetNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def write_csv(path: Path, rows: Iterable[Mapping], columns: Sequence[str]) -> Path:
    """Rows as CSV with exactly ``columns`` (floats with 4 significant decimals)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --- where the data are ------------------------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def find_mnist(data: str | Path | None = None, mode: str = "quick") -> Path | None:
    """The MNIST folder a benchmark reads: the first that exists of ``data`` (named explicitly: the
    DataModule reports it if it is wrong), ``$AE_MNIST_ROOT``, ``data/mnist``, then the shared copy
    (``../shared/data/mnist``, the 10k test digits, in quick mode; ``../shared/data/mnist_full``, the
    60k + 10k set, in full mode). ``None``: the DataModule's embedded 3,000 digits."""
    if data:
        return Path(data).expanduser()
    shared = SHARED_DATA / ("mnist_full" if mode == "full" else "mnist")
    for cand in (os.environ.get("AE_MNIST_ROOT"), REPO / "data" / "mnist", shared):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def is_full_mnist(dm) -> bool:
    """Whether a set-up MNISTDataModule found the full 60k training set (not only the 10k test digits)."""
    return dm.source.startswith("the full MNIST")


def require_full_mnist(dm, benchmark: str) -> None:
    """Full mode refuses to call a run "full" when it found only the 10k test digits (or the embedded 3k)."""
    from ae_lightning.data import DatasetNotFoundError

    if not is_full_mnist(dm):
        raise DatasetNotFoundError(
            f"{benchmark} --full trains on the 60k MNIST training set, but found {relative(dm.source)}; fix: pass "
            "--data ROOT holding MNIST/raw/{train,t10k}-*-ubyte[.gz] (torchvision layout) or set $AE_MNIST_ROOT "
            "(or --download where the benchmark offers it, when online)"
        )


def relative(text: str) -> str:
    """``text`` with absolute paths inside this project or beside it written relative to the project
    (``/…/main/data`` → ``data``, ``/…/shared/data/mnist`` → ``../shared/data/mnist``): committed results
    carry no machine's paths."""
    text = str(text)
    for base, shown in ((REPO, ""), (REPO.parent, "../")):
        text = text.replace(str(base) + os.sep, shown)
    return text


# --- models from the experiment configs --------------------------------------------------------
CODE_KEYS = ("widths", "code_dim", "latent_dim")


def model_spec(config: str | Path, **init_args) -> dict:
    """A copy of ``configs/<config>.yaml``'s ``model`` block with ``init_args`` entries replaced."""
    spec = copy.deepcopy(load_config(config)["model"])
    spec["init_args"].update(copy.deepcopy(init_args))
    return spec


def build(spec: dict) -> L.LightningModule:
    """The LightningModule of a ``model`` block, through the one config loader (type-checked as the CLI does)."""
    return instantiate(spec, L.LightningModule)


def with_code_dim(spec: dict, code_dim: int) -> dict:
    """A copy of a config's ``model`` block whose nets produce ``code_dim``-sized codes: the encoder's and
    decoder's last ``widths`` entry (or their ``code_dim`` / ``latent_dim``), and, for an adversarial
    autoencoder, the discriminator's ``in_features`` and the prior's ``dim``."""
    spec = copy.deepcopy(spec)
    found = False
    for net in ("encoder", "decoder"):
        args = spec["init_args"].get(net, {}).get("init_args", {})
        for key in CODE_KEYS:
            if key in args:
                if key == "widths":
                    args[key] = [*args[key][:-1], code_dim]
                else:
                    args[key] = code_dim
                found = True
    if not found:
        raise ValueError(f"{spec['class_path']}: no {' / '.join(CODE_KEYS)} in its encoder/decoder init_args "
                         "to set the code size; fix: name the code size with one of these keys in the config")
    for block, key in (("discriminator", "in_features"), ("prior", "dim")):
        args = spec["init_args"].get(block, {}).get("init_args", {})
        if key in args:
            args[key] = code_dim
    return spec


def with_latent_dim(spec: dict, latent_dim: int) -> dict:
    """A copy of a VAE config's ``model`` block with a ``latent_dim``-sized ``z``: the encoder's last width is
    ``2 * latent_dim`` (means and log-variances), the decoder's last width (its input) ``latent_dim``."""
    spec = copy.deepcopy(spec)
    args = spec["init_args"]
    try:
        enc, dec = args["encoder"]["init_args"], args["decoder"]["init_args"]
        enc["widths"] = [*enc["widths"][:-1], 2 * latent_dim]
        dec["widths"] = [*dec["widths"][:-1], latent_dim]
    except KeyError as err:
        raise ValueError(f"{spec['class_path']}: with_latent_dim needs MLP encoder/decoder `widths` in the config "
                         f"(missing {err})") from None
    args["latent_dim"] = latent_dim
    return spec


def scaled_lr(spec: dict, factor: float, optimizer: str = "optimizer") -> dict:
    """A copy of a ``model`` block whose ``optimizer`` learning rate is ``factor`` times the config's
    (the config without one: torch.optim.Adam's default 1e-3)."""
    spec = copy.deepcopy(spec)
    opt = spec["init_args"].setdefault(optimizer, {"class_path": "torch.optim.Adam", "init_args": {}})
    opt.setdefault("init_args", {})
    opt["init_args"]["lr"] = opt["init_args"].get("lr", 1e-3) * factor
    return spec


def scaled_schedule(cfg: dict, scale: float) -> tuple[dict, int]:
    """An experiment config's ``model`` block and epoch count with every schedule entry scaled (at least
    1 epoch per stage). A staged model's epoch count is its own (``model.total_epochs``: it stops the fit
    after its last stage); the count returned here is then only the trainer's upper bound."""
    spec = copy.deepcopy(cfg["model"])
    args = spec["init_args"]

    def scaled(n: int) -> int:
        return max(1, math.ceil(n * scale)) if n > 0 else 0

    epochs = scaled(cfg.get("trainer", {}).get("max_epochs", 10))
    if "pretrain_epochs" in args:  # staged models: the schedule is the model's
        pre = args["pretrain_epochs"]
        args["pretrain_epochs"] = [scaled(n) for n in pre] if isinstance(pre, list) else scaled(pre)
        args["finetune_epochs"] = scaled(args.get("finetune_epochs", 0))
    return spec, epochs

def config_file(name: str | Path) -> str:
    """``configs/<name>.yaml`` as a results table names it (relative to the project)."""
    from ae_lightning.config import config_path

    return relative(str(config_path(name).resolve()))
