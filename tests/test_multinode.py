"""``ae-lightning fit`` unchanged under torchrun (Lightning's TorchElasticEnvironment), on the CPU with gloo.

Slow tier: each process pays its own cold imports (~5 s each on 2 busy cores).

- one "node", 2 processes: ``torchrun --nnodes=1 --nproc_per_node=2``;
- two simulated nodes on 127.0.0.1, one process each: two ``torchrun --nnodes=2 --node_rank=0/1`` launches
  meeting at one master address and port, the run folder on a "shared file system" (the same tmp folder).

Both must write ONE run folder (``version_0``, no ``version_1``) with one ``last.ckpt`` after the steps of
one short epoch, its config and its grid.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, ROOT

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
FIT = [
    "-m", "ae_lightning.cli", "fit", "--config", str(CONFIGS / "conv_ae_mnist.yaml"),
    "--trainer.accelerator=cpu", "--trainer.strategy=ddp", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    "--data.init_args.batch_size=16",
]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_one_run(tmp_path: Path, world_size: int) -> None:
    runs = tmp_path / "runs" / "conv_ae_mnist"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"], "more than one run folder"
    folder = runs / "version_0"
    assert sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt")) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert (folder / "config.yaml").is_file() and (folder / "metrics.csv").is_file()
    assert [p.name for p in (folder / "images").glob("*.png")] == ["val_reconstruction_epoch000.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing else written beside it


def args(tmp_path: Path) -> list[str]:
    return ["--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.default_root_dir",
            str(tmp_path / "runs")]


@pytest.mark.slow
def test_torchrun_one_node_two_processes(tmp_path):
    cmd = [TORCHRUN, "--nnodes=1", "--nproc_per_node=2", f"--master_port={free_port()}", *FIT,
           "--trainer.devices=2", *args(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stderr  # both processes joined one world
    check_one_run(tmp_path, 2)


@pytest.mark.slow
def test_torchrun_two_simulated_nodes(tmp_path):
    port = free_port()
    launches = [
        subprocess.Popen([TORCHRUN, "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
                          "--master_addr=127.0.0.1", f"--master_port={port}", *FIT, "--trainer.num_nodes=2",
                          "--trainer.devices=1", *args(tmp_path)],
                         cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    outs = []
    try:
        for launch in launches:
            outs.append(launch.communicate(timeout=300))
    finally:
        for launch in launches:
            launch.kill()
    for launch, (_, err) in zip(launches, outs, strict=True):
        assert launch.returncode == 0, err[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outs[1][1]  # the second "node" was rank 1 of one world
    check_one_run(tmp_path, 2)
