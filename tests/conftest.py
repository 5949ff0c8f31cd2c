"""Shared test set-up: few threads, W&B off, real sample data when present, synthetic IDX files.

Fixtures other test files may use:

- ``shared_data``: ``../shared/data`` (or ``$AE_SHARED_DATA``); the test is skipped when absent.
- ``write_idx``: ``write_idx(path, uint8_array)`` writes an IDX file (gzipped when the name ends in .gz).
- ``mnist_root``: a temporary folder in torchvision's layout ``root/MNIST/raw`` with tiny synthetic
  train and t10k IDX files (see ``SYNTHETIC_MNIST``).
- ``tiny_mnist``: an ``MNISTDataModule`` on the embedded real digits, 256 training images, set up.
- ``run_cli``: ``run_cli([...])`` runs ``ae-lightning ...`` in this process (imports cost seconds, a
  subprocess per run would pay them again) with run directories under ``tmp_path``; returns the CLI
  object (``.trainer``, ``.model``, ``.datamodule``).

Helpers: ``OptimizerSteps`` (a callback recording, per optimiser step, which optimiser stepped and which
top-level submodules it moved), used by the adversarial models' phase tests.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

# before torch is imported: the CI machine has 2 cores shared with other jobs
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
# no test talks to W&B unless it asks to (tests/test_wandb.py)
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))  # honour a caller's OMP_NUM_THREADS=1

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SHARED_DATA = Path(os.environ.get("AE_SHARED_DATA", ROOT.parent / "shared" / "data"))

@pytest.fixture(autouse=True)
def _no_data_lookup_outside_the_test(monkeypatch, tmp_path_factory):
    """A developer's $AE_*_ROOT or ./data folder must not change what a test reads: the DataModules' lookup
    (ae_lightning.data.locate) sees neither unless a test sets them."""
    from ae_lightning.data import locate

    for var in locate.ENV.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(locate, "LOCAL", tmp_path_factory.mktemp("workdir") / "data")


def run_benchmark(name: str, out: Path, overrides: dict | None = None, mode: str = "quick", options: dict | None = None,
                  **data):
    """The one way tests run a benchmark: ``benchmarks.core``'s registered benchmark on a fresh context writing to
    ``out``, its settings changed by ``overrides`` (dotted keys); ``options``: its own command-line options (as
    ``--cpu-time`` gives ``{"cpu_time": True}``); ``data``: ``mnist=`` / ``xray=`` roots."""
    from benchmarks.core import Context, benchmark

    return benchmark(name)(Context(mode, out, data, options or {}), overrides)


# sizes of the synthetic MNIST in ``mnist_root``
SYNTHETIC_MNIST = {"train": 120, "t10k": 40}


def write_idx_file(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8) in the IDX format MNIST uses: magic 0x0000 08 ndim, big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct 28×28 uint8 images (image i has a bright square whose place encodes its label) and labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
    for i, y in enumerate(labels):
        r, c = 2 + 2 * int(y), 4 + i % 16
        images[i, r : r + 6, c : c + 6] = 255
    return images, labels


class OptimizerSteps(L.Callback):
    """For every ``optimizer.step()`` of a fit, ``(epoch, optimiser index, moved)`` in ``self.steps``: ``moved``
    is the set of top-level submodules (``encoder``, ``decoder``, ...) whose parameters that one step changed.

    Snapshots are taken by step pre/post hooks on each optimiser, so a phase that steps the wrong optimiser,
    or an optimiser holding the wrong parameters, shows in its own step instead of hiding in a batch's net change.
    """

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, frozenset[str]]] = []
        self._handles: list = []
        self._before: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, module) -> None:
        for i, opt in enumerate(trainer.optimizers):
            self._handles.append(opt.register_step_pre_hook(lambda *_: self._snapshot(module)))
            self._handles.append(opt.register_step_post_hook(lambda *_, i=i: self._record(module, i)))

    def on_train_end(self, trainer, module) -> None:
        for h in self._handles:
            h.remove()

    def _snapshot(self, module) -> None:
        self._before = {n: p.detach().clone() for n, p in module.named_parameters()}

    def _record(self, module, index: int) -> None:
        moved = frozenset(n.split(".")[0] for n, p in module.named_parameters() if not torch.equal(p, self._before[n]))
        self.steps.append((module.current_epoch, index, moved))

    def moves(self, epoch: int | None = None) -> list[tuple[int, set[str]]]:
        """``(optimiser index, moved submodules)`` per step, in order (only epoch ``epoch``'s if given)."""
        return [(i, set(m)) for e, i, m in self.steps if epoch is None or e == epoch]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample data of ``../shared/data``; skips the test on a fresh clone without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def write_idx():
    return write_idx_file


@pytest.fixture
def mnist_root(tmp_path) -> Path:
    """``root`` with ``root/MNIST/raw/{train,t10k}-*-ubyte.gz``: 120 synthetic train and 40 test digits."""
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    for k, (prefix, n) in enumerate(SYNTHETIC_MNIST.items()):
        images, labels = synthetic_digits(n, seed=k)
        write_idx_file(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_file(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path / "mnist"


@pytest.fixture
def tiny_mnist():
    """Embedded real MNIST digits (no root), 256 training images, batches of 64, already set up."""
    from ae_lightning.data import MNISTDataModule

    dm = MNISTDataModule(root=None, batch_size=64, train_size=256)
    dm.setup("fit")
    return dm


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """``run_cli(args)``: ``ae-lightning <args>`` in-process from the repository root (relative data
    roots resolve as for a user), logger ``save_dir`` = ``tmp_path/runs``, ``default_root_dir`` = ``tmp_path``."""
    import ae_lightning.cli as cli

    def run(args: list[str]):
        made = []

        class Recording(cli.AutoencoderCLI):
            def __init__(self, *a, **kw):
                made.append(self)
                super().__init__(*a, **kw)

        with monkeypatch.context() as m:
            m.setattr(cli, "AutoencoderCLI", Recording)
            m.setattr("sys.argv", ["ae-lightning"])  # pytest's own arguments are not the CLI's
            m.chdir(ROOT)
            cli.main([*args, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
                      "--trainer.default_root_dir", str(tmp_path)])
        return made[0]

    return run


@pytest.fixture
def forked_ranks():
    """Guards an in-process ``strategy=ddp_fork`` fit.

    The ranks are forks of this process: an OpenMP thread pool does not survive ``fork()``, so a
    rank entering a multi-threaded op can hang; one intra-op thread while they run avoids that. A
    120 s alarm kills the ranks and fails the test instead of hanging CI (e.g. a collective that
    only one rank makes).
    """
    import multiprocessing
    import signal

    def deadlock(signum, frame):
        for rank in multiprocessing.active_children():
            rank.kill()
        raise TimeoutError("the DDP fit did not finish in 120 s: a collective made by one rank only?")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    previous = signal.signal(signal.SIGALRM, deadlock)
    signal.alarm(120)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        torch.set_num_threads(threads)



@pytest.fixture(autouse=True)
def _finish_wandb_runs():
    """Lightning's WandbLogger leaves its run open after ``fit`` (a command-line process ends there; a test
    process goes on): finish it, or the next test's logger silently reuses it and writes into its folder."""
    yield
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
