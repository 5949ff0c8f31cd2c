"""Weights & Biases logging that never hangs or prompts.

:class:`WandbLogger` is Lightning's logger with one difference: when no mode is given (neither
the ``mode`` argument nor ``WANDB_MODE``) and W&B has no credentials or cannot reach its server
within two seconds, it logs offline (``wandb sync`` uploads the run later) and says so in one
line. ``WANDB_MODE=offline`` or ``mode='disabled'`` are respected as given.

One run, one folder: the run id is chosen when the logger is made (or taken from ``version`` / ``id`` /
``$WANDB_RUN_ID``, which a sweep agent sets), so the run's folder ``<save_dir>/<project>/<id>/`` — where
the checkpoints go (:func:`ae_lightning.callbacks.run_dir`) — is known before W&B starts, and W&B's own
files (``wandb/offline-run-*``, what ``wandb sync`` uploads) go into it too (:meth:`WandbLogger.use_folder`).
"""

from __future__ import annotations

import os
import secrets
import socket
import string
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_warn

_ID_CHARS = string.ascii_lowercase + string.digits  # what W&B run ids are made of


def _wandb_reachable(timeout: float = 2.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.exists(netrc) and "api.wandb.ai" in open(netrc, encoding="utf-8", errors="ignore").read()


def new_run_id() -> str:
    """A W&B-style run id (8 characters a-z0-9) from ``secrets``, not ``random``: the CLI seeds ``random``
    first, which would give every run of a config the same id."""
    return "".join(secrets.choice(_ID_CHARS) for _ in range(8))


def offline_safe_mode(mode: str | None = None) -> str | None:
    """``mode`` as given, else ``WANDB_MODE``; without either, ``"offline"`` when W&B has no credentials or
    cannot reach its server (one warning), else ``None`` (W&B's default). For every ``wandb.init`` here."""
    if mode is None and "WANDB_MODE" in os.environ:
        # passed on explicitly: W&B's process-wide settings from an earlier run in this process would win otherwise
        return os.environ["WANDB_MODE"]
    if mode is None and (not _has_credentials() or not _wandb_reachable()):
        rank_zero_warn("W&B: no credentials or no network; logging offline (upload later with `wandb sync`)")
        return "offline"
    return mode


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger``, offline-safe, with the run's files in the run's folder (module docstring).

    Arguments are Lightning's; ``group`` and ``tags`` go to ``wandb.init`` (the CLI sets the group to the
    experiment's name and the run name to the experiment and its overrides, :func:`ae_lightning.cli.run_label`).
    """

    def __init__(self, *args, mode: str | None = None, group: str | None = None, tags: list[str] | None = None,
                 **kwargs) -> None:
        if not kwargs.get("offline", False):
            mode = offline_safe_mode(mode)
        if mode is not None:
            kwargs["mode"] = mode
        kwargs.update({k: v for k, v in (("group", group), ("tags", tags)) if v is not None})
        if not (kwargs.get("version") or kwargs.get("id")):
            # the id is the run folder's name: known now, not only once W&B has started
            kwargs["id"] = os.environ.get("WANDB_RUN_ID") or new_run_id()
        super().__init__(*args, **kwargs)

    def use_folder(self, folder: str | Path) -> None:
        """Write W&B's own files (``wandb/``) into ``folder``, the run's folder; before the run starts only."""
        if self._experiment is None:
            self._wandb_init["dir"] = str(folder)

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None and self._wandb_init.get("dir"):
            Path(self._wandb_init["dir"]).mkdir(parents=True, exist_ok=True)
        return super().experiment
