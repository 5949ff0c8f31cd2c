"""A 2-process CPU DDP fit (gloo) of the conv autoencoder through the real command line.

``strategy=ddp`` re-launches the command for rank 1, so it runs in a subprocess here (inside
pytest the re-launch would start a second pytest).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import torch
from conftest import CONFIGS


def test_ddp_two_cpu_processes(tmp_path):
    runs = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "ae_lightning.cli", "fit", "--config", str(CONFIGS / "conv_ae_mnist.yaml"),
        "--trainer.accelerator=cpu", "--trainer.strategy=ddp", "--trainer.devices=2",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--data.init_args.batch_size=16",
        "--trainer.logger.init_args.save_dir", str(runs), "--trainer.default_root_dir", str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr  # a second process joined
    run_dir = runs / "conv_ae_mnist" / "version_0"
    assert not (runs / "conv_ae_mnist" / "version_1").exists()  # rank 1 logs nothing of its own
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [r["step"] for r in rows if r.get("train/loss_step")] == ["0", "1"]
    assert len([r for r in rows if r.get("val/loss")]) == 1  # synced across ranks, logged once
    assert (run_dir / "config.yaml").is_file()
    assert list((run_dir / "images").glob("*.png"))
