"""Speed options a config switches on (``ae-lightning`` CLI arguments ``speed.*``), all off by default.

- ``channels_last``: the model's 4-D weights in NHWC memory order, so convolutions (and the activations
  they produce) run in the layout tensor cores prefer; the same numbers up to float rounding.
- ``compile``: ``torch.compile`` of every net of the model in place (:meth:`torch.nn.Module.compile`: the
  parameters, the state-dict keys and so the checkpoints stay as they are); ``compile_mode`` is passed on
  (e.g. ``max-autotune``). The first steps pay the compilation.
- ``device_resident_data``: an in-memory training, validation or test split (MNIST, the 64×64 X-rays, the
  pose figures) is copied once to the accelerator and every batch is gathered there
  (:class:`~ae_lightning.data.common.BatchGather`): no host→device copy of images per step, no loader
  workers; noise and flips are drawn on the device. A no-op on the CPU and for file-backed or streamed sets.

Mixed precision is the Trainer's own ``--trainer.precision=bf16-mixed``. Example::

    ae-lightning fit --config configs/dae_xray64.yaml --trainer.precision=bf16-mixed \\
        --speed.channels_last=true --speed.compile=true --speed.device_resident_data=true
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics import Metric, MetricCollection


class Speed(Callback):
    """See the module docstring."""

    def __init__(self, channels_last: bool = False, compile: bool = False, compile_mode: str | None = None,
                 device_resident_data: bool = False) -> None:
        self.channels_last = channels_last
        self.compile = compile
        self.compile_mode = compile_mode
        self.device_resident_data = device_resident_data

    @staticmethod
    def nets(pl_module: L.LightningModule) -> dict[str, torch.nn.Module]:
        """The model's nets: its direct submodules that hold parameters, metrics excluded."""
        return {name: m for name, m in pl_module.named_children()
                if not isinstance(m, Metric | MetricCollection) and any(True for _ in m.parameters())}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)  # 4-D tensors only; moving devices keeps the layout
        if self.compile:
            for net in self.nets(pl_module).values():
                net.compile(mode=self.compile_mode)
        if self.device_resident_data and trainer.datamodule is not None and hasattr(trainer.datamodule, "resident_device"):
            trainer.datamodule.resident_device = trainer.strategy.root_device
