"""The DataModules' training samplers under DDP: each process takes its own share of the seeded epoch order, so
Lightning leaves the sampler alone (it would wrap any other in a DistributedSamplerWrapper, whose second shuffle
over a fixed-length list made a mid-epoch resume fail with an IndexError), the processes' batches together are
the one-process batch, and a run resumed mid-epoch under DDP trains the batches the uninterrupted run would."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from ae_lightning.data import MNISTDataModule
from ae_lightning.data.common import EpochSampler, MixedBatches, ShardedSampler


def replicas(n: int, rank: int):
    return lambda: (n, rank)


def test_shares_are_strided_disjoint_and_together_the_one_process_order():
    one = list(EpochSampler(12, seed=3, batch_size=4, position=lambda: (1, 0)))
    shares = [list(EpochSampler(12, 3, 2, lambda: (1, 0), replicas(2, r))) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(one) == list(range(12))
    assert shares[0] == one[0::2] and shares[1] == one[1::2]
    # step k of the two processes at batch 2 = step k of one process at batch 4
    for k in range(3):
        assert sorted(shares[0][2 * k : 2 * k + 2] + shares[1][2 * k : 2 * k + 2]) == sorted(one[4 * k : 4 * k + 4])
    assert len(EpochSampler(12, 3, 2, lambda: (1, 0), replicas(2, 1))) == 6


def test_uneven_epoch_is_padded_to_equal_shares():
    shares = [list(EpochSampler(7, 0, 2, lambda: (0, 0), replicas(3, r))) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]  # every process runs the same number of steps
    assert set(shares[0] + shares[1] + shares[2]) == set(range(7))


def test_resumed_share_skips_only_this_process_trained_batches():
    full = list(EpochSampler(40, 0, 4, lambda: (2, 0), replicas(2, 1)))
    resumed = list(EpochSampler(40, 0, 4, lambda: (2, 3), replicas(2, 1)))  # 3 batches of 4 trained
    assert resumed == full[12:]


def test_mixed_batches_deal_whole_batches_and_resume():
    args = (range(10), range(10, 100), 10, 2)
    one = MixedBatches(*args, seed=3, position=lambda: (1, 0)).batches(1)
    shares = [list(MixedBatches(*args, seed=3, position=lambda: (1, 0), replicas=replicas(2, r))) for r in range(2)]
    assert shares[0] == one[0::2] and shares[1] == one[1::2]
    resumed = list(MixedBatches(*args, seed=3, position=lambda: (1, 2), replicas=replicas(2, 1)))
    assert resumed == shares[1][2:]


def fake_trainer(processes: int, rank: int) -> SimpleNamespace:
    """What the DataModule reads of its Trainer: the strategy's sampler share and the fit's position."""
    return SimpleNamespace(distributed_sampler_kwargs={"num_replicas": processes, "rank": rank}, current_epoch=0,
                           _accelerator_connector=SimpleNamespace(use_distributed_sampler=True),
                           fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(
                               batch_progress=SimpleNamespace(current=SimpleNamespace(completed=0)))))


def test_drop_last_warning_counts_each_process_share():
    """10 digits on 4 processes at batch 4: each process holds 3, so drop_last trains nothing — said at once."""
    dm = MNISTDataModule(root=None, batch_size=4, train_size=10)
    dm.drop_last = True
    dm.setup("fit")
    dm.trainer = fake_trainer(processes=4, rank=0)
    with pytest.warns(UserWarning, match=r"10 images \(3 on each of 4 processes\), fewer than batch_size=4"):
        assert len(dm.train_dataloader()) == 0


def test_lightning_leaves_the_training_sampler_alone_under_ddp():
    """Its own check: a DistributedSampler is kept as it is; a plain shuffled loader would be wrapped."""
    trainer = L.Trainer(accelerator="cpu", strategy="ddp", devices=2, logger=False)
    dm = MNISTDataModule(root=None, batch_size=8, train_size=64)
    dm.setup("fit")
    dm.trainer = fake_trainer(processes=2, rank=1)
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, ShardedSampler) and loader.sampler.replicas() == (2, 1)
    assert not trainer._data_connector._requires_distributed_sampler(loader)
    assert trainer._data_connector._requires_distributed_sampler(torch.utils.data.DataLoader(range(8), shuffle=True))
    assert len(loader) == 4  # 32 of the 64 digits on this process, batches of 8
    dm.trainer._accelerator_connector.use_distributed_sampler = False  # the user's choice: the whole epoch each
    assert len(dm.train_dataloader()) == 8


# --- a real 2-process fit, stopped mid-epoch and resumed from last.ckpt -----------------------------------
def digest(x: torch.Tensor) -> str:
    return hashlib.sha1(x.numpy().tobytes()).hexdigest()[:10]


class RecordBatches(L.Callback):
    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen += [digest(x) for x in batch[0]]

    def on_train_end(self, trainer, pl_module) -> None:
        with open(f"{self.path}.{trainer.global_rank}", "a") as f:
            f.write("".join(d + "\n" for d in self.seen))


def ddp_fit(tmp: Path, record: Path, ckpt_path: str | None = None, **kw) -> None:
    from ae_lightning.callbacks.resume import ResumeCheckpoint
    from ae_lightning.config import instantiate, load_config

    cfg = load_config("ae_mnist")
    cfg["data"]["init_args"].update(batch_size=4, train_size=32)  # 4 steps per epoch on each of 2 processes
    L.seed_everything(0, verbose=False)
    model, data = instantiate(cfg["model"], L.LightningModule), instantiate(cfg["data"], L.LightningDataModule)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=tmp,
                        callbacks=[RecordBatches(record), ResumeCheckpoint(every_n_train_steps=3, dirpath=str(tmp / "ck"))],
                        **kw)
    trainer.fit(model, data, ckpt_path=ckpt_path)


def test_ddp_fit_resumed_mid_epoch_trains_the_uninterrupted_batches(tmp_path, forked_ranks):
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised in this process: forked ranks cannot use it")
    ddp_fit(tmp_path / "full", tmp_path / "full_seen", max_epochs=2)
    ddp_fit(tmp_path / "part", tmp_path / "part_seen", max_steps=3)  # stops at step 3 of 4, last.ckpt there
    ddp_fit(tmp_path / "part", tmp_path / "part_seen", ckpt_path=str(tmp_path / "part" / "ck" / "last.ckpt"),
            max_epochs=2)
    ranks = {name: [Path(f"{tmp_path / name}.{r}").read_text().split() for r in range(2)]
             for name in ("full_seen", "part_seen")}
    assert [len(r) for r in ranks["full_seen"]] == [32, 32]  # 2 epochs × 4 steps × 4 images
    assert ranks["part_seen"] == ranks["full_seen"]
    first_epoch = ranks["full_seen"][0][:16] + ranks["full_seen"][1][:16]
    assert len(set(first_epoch)) == 32  # the ranks' shares of an epoch are disjoint: every digit once
