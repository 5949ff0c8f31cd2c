"""Weights & Biases logging that never hangs or prompts.

:class:`WandbLogger` is Lightning's logger with one difference: when no mode is given (neither
the ``mode`` argument nor ``WANDB_MODE``) and W&B has no credentials or cannot reach its server
within two seconds, it logs offline (``wandb sync`` uploads the run later) and says so in one
line. ``WANDB_MODE=offline`` or ``mode='disabled'`` are respected as given.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_warn


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


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger``, offline-safe (see module docstring). Arguments are Lightning's."""

    def __init__(self, *args, mode: str | None = None, **kwargs) -> None:
        offline = kwargs.get("offline", False)
        if mode is None and not offline and "WANDB_MODE" not in os.environ:
            if not _has_credentials() or not _wandb_reachable():
                rank_zero_warn("W&B: no credentials or no network; logging offline (upload later with `wandb sync`)")
                mode = "offline"
        if mode is not None:
            kwargs["mode"] = mode
        super().__init__(*args, **kwargs)
