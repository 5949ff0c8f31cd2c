"""Streaming from LitData chunks: the converter (``python -m ae_lightning.data.optimize``) and
``StreamingImageDataModule`` on 40 of the embedded real chest X-rays written as a PNG folder tree.

Streamed items equal the folder DataModule's (pixels bit for bit, labels, the split by patient); each
training item is seen once per epoch across 2 DDP ranks (LitData's rank split, simulated, and a real
``ddp_fork`` fit); a loader restored from its ``state_dict`` yields exactly the remaining items; a fit
resumed from its mid-epoch checkpoint trains the same batches as the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import CONFIGS
from PIL import Image

from ae_lightning.data.common import EMBEDDED, KERMANY_PATIENT
from ae_lightning.data.optimize import list_xray, pack_pixels, unpack_pixels

STREAMING = CONFIGS / "data" / "xray64_streaming.yaml"  # the data fragment: give it after an X-ray experiment

litdata = pytest.importorskip("litdata")

from ae_lightning.data import XRayDataModule  # noqa: E402
from ae_lightning.data.optimize import convert  # noqa: E402
from ae_lightning.data.streaming import DecodeItem, StreamingImageDataModule, streaming_dataset  # noqa: E402

SPLITS = ("train", "val", "test")


@pytest.fixture(autouse=True)
def _quiet():
    for name in ("lightning.pytorch", "lightning.fabric", "litdata"):
        logging.getLogger(name).setLevel(logging.ERROR)


def write_tree(root: Path, every: int = 20) -> Path:
    """Every ``every``-th embedded X-ray (both classes, several images of some patients) as a PNG tree."""
    data = np.load(EMBEDDED / "chest_xray64.npz")
    for i in range(0, len(data["images"]), every):
        path = root / str(data["names"][i]).replace(".jpeg", ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data["images"][i]).save(path)
    return root


@pytest.fixture(scope="module")
def chunks(tmp_path_factory) -> tuple[Path, Path]:
    """(folder of 40 X-ray PNGs, its LitData chunks split by patient), converted by 2 workers."""
    base = tmp_path_factory.mktemp("stream")
    folder = write_tree(base / "xrays")
    listing = list_xray(folder, 64, 0.1, 0.2, 0, KERMANY_PATIENT, "upscale")
    counts = convert(listing, str(base / "chunks"), num_workers=2)
    assert sum(counts.values()) == 40
    return folder, base / "chunks"


def names_of(loader) -> list[str]:
    return [n for batch in loader for n in batch[2]]


def named(root: Path, split: str, **kw):
    return streaming_dataset(str(root), split, DecodeItem("xray", 64, with_name=True), **kw)


def digest(x: torch.Tensor) -> str:
    return hashlib.md5(x.numpy().tobytes()).hexdigest()


# --- conversion ---------------------------------------------------------------------------------------
def test_pixels_are_stored_in_the_smallest_lossless_dtype():
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16).astype(np.float32) / 255.0
    u16 = (np.arange(4096, dtype=np.int64).reshape(64, 64) * 16 / 65535.0).astype(np.float32)
    resized = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64) ** 1.7
    for img, dtype in ((u8, np.uint8), (u16, np.uint16), (resized, np.float32)):
        packed = pack_pixels(img)
        assert packed.dtype == dtype
        assert np.array_equal(unpack_pixels(packed), img)


def test_streamed_items_equal_the_folder_datamodules(chunks):
    folder, root = chunks
    ref = XRayDataModule(str(folder), group_by=KERMANY_PATIENT)
    ref.setup("fit")
    # the folder DataModule's items, in split order, with the names the converter lists in that same order
    listing = list_xray(folder, 64, 0.1, 0.2, 0, KERMANY_PATIENT, "upscale")
    for split in SPLITS:
        folder_set = getattr(ref, f"{split}_set")
        expected = {r.name: (folder_set[i][0], int(folder_set[i][1])) for i, r in enumerate(listing.records[split])}
        ds = named(root, split)
        streamed = {ds[i][2]: ds[i][:2] for i in range(len(ds))}
        assert sorted(streamed) == sorted(expected) and len(ds) == len(folder_set)
        for name, (x, y) in streamed.items():
            assert x.shape == (1, 64, 64) and x.dtype == torch.float32
            assert torch.equal(x, expected[name][0]), name  # bit for bit
            assert y == expected[name][1], name
    # the split is by patient: no patient in two splits
    patients = {s: {n.split("/")[1].split("_")[0] for n in (r.name for r in listing.records[s])} for s in SPLITS}
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"] or
                patients["val"] & patients["test"])


def test_npz_source_round_trip_keeps_16_bit_pixels(tmp_path):
    images = (np.arange(12)[:, None, None] * 5000 + np.arange(32 * 32).reshape(1, 32, 32)).astype(np.uint16)
    np.savez(tmp_path / "s.npz", images=images, labels=np.arange(12) % 3)
    listing = list_xray(tmp_path / "s.npz", 32, 0.25, 0.25, 0, "image", "upscale")
    convert(listing, str(tmp_path / "out"), num_workers=1, image_size=32)
    ds = streaming_dataset(str(tmp_path / "out"), "train", DecodeItem("xray", 32, with_name=True))
    for i in range(len(ds)):
        x, y, name = ds[i]
        k = int(name.split("/")[-1])  # the .npz index
        assert torch.equal(x[0], torch.from_numpy((images[k] / 65535.0).astype(np.float32))) and y == k % 3


def test_every_bad_file_is_named_in_one_error(tmp_path):
    folder = write_tree(tmp_path / "xrays", every=100)
    (folder / "NORMAL" / "broken.png").write_bytes(b"not a png")
    (folder / "PNEUMONIA" / "cut.png").write_bytes((folder / "NORMAL").glob("IM-*.png").__next__().read_bytes()[:60])
    listing = list_xray(folder, 64, 0.25, 0.25, 0, "image", "upscale")
    with pytest.raises(ValueError) as err:
        convert(listing, str(tmp_path / "out"), num_workers=2)
    msg = str(err.value)
    assert "2 of 10 images" in msg and "NORMAL/broken.png" in msg and "PNEUMONIA/cut.png" in msg and "\n" not in msg
    assert not any((tmp_path / "out" / s).exists() for s in SPLITS)  # nothing partial left to stream


def test_absent_chunks_say_how_to_convert(tmp_path):
    from ae_lightning.data import DatasetNotFoundError

    dm = StreamingImageDataModule(str(tmp_path / "nothing"))
    with pytest.raises(DatasetNotFoundError, match="ae_lightning.data.optimize"):
        dm.setup("fit")


# --- DDP, shuffle, resume -------------------------------------------------------------------------------
def test_each_item_once_per_epoch_across_two_ranks(chunks):
    """LitData's split of the shuffled chunks between 2 ranks (its distributed env set as DDP would)."""
    from litdata import StreamingDataLoader
    from litdata.utilities.env import _DistributedEnv
    from torch.utils.data import default_collate

    _, root = chunks
    n = len(named(root, "train"))  # 28: a multiple of 2 ranks × batch 2, so DDP's drop_last drops nothing
    epochs = {0: [], 1: []}
    for rank in range(2):
        ds = named(root, "train", shuffle=True, seed=3, drop_last=True)
        ds.distributed_env = _DistributedEnv(world_size=2, global_rank=rank, num_nodes=1)
        loader = StreamingDataLoader(ds, batch_size=2, collate_fn=default_collate)
        for epoch in epochs:
            epochs[epoch].append(names_of(loader))
    for per_rank in epochs.values():
        assert [len(r) for r in per_rank] == [n // 2, n // 2]  # equal shares: DDP steps in lockstep
        assert sorted(per_rank[0] + per_rank[1]) == sorted(named_all(root))  # every item once
    assert epochs[0] != epochs[1]  # reshuffled per epoch


def named_all(root: Path) -> list[str]:
    ds = named(root, "train")
    return [ds[i][2] for i in range(len(ds))]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_state_dict_resumes_with_the_remaining_items(chunks, workers):
    from litdata import StreamingDataLoader
    from torch.utils.data import default_collate

    _, root = chunks

    def loader():
        return StreamingDataLoader(named(root, "train", shuffle=True, seed=5), batch_size=4, num_workers=workers,
                                   collate_fn=default_collate)

    full = names_of(loader())
    first = loader()
    it = iter(first)
    seen = [n for _ in range(3) for n in next(it)[2]]  # 3 batches of 4, then "killed"
    state = first.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + names_of(resumed) == full  # exactly the remaining items, in the uninterrupted order


class RecordBatches(L.Callback):
    """The digest of every image trained on, batch by batch (on each rank: written to ``path`` if given)."""

    def __init__(self, path: Path | None = None) -> None:
        self.batches, self.path = [], path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append([digest(x) for x in batch[0]])

    def on_train_end(self, trainer, pl_module) -> None:
        if self.path is not None:
            Path(f"{self.path}.{trainer.global_rank}").write_text("\n".join(d for b in self.batches for d in b))


def build(root: Path, batch_size: int = 4):
    """The Gondara DAE of configs/dae_xray64.yaml (tiny channels) on the chunks (configs/data/xray64_streaming.yaml)."""
    import yaml

    from ae_lightning.config import instantiate, load_config

    cfg = load_config(CONFIGS / "dae_xray64.yaml")
    cfg["data"] = yaml.safe_load(STREAMING.read_text())["data"]
    cfg["data"]["init_args"].update(root=str(root), batch_size=batch_size)
    for net in ("encoder", "decoder"):
        cfg["model"]["init_args"][net]["init_args"]["channels"] = [4, 4]
    return instantiate(cfg["model"], L.LightningModule), instantiate(cfg["data"], L.LightningDataModule)


def fit(tmp: Path, root: Path, record: L.Callback, ckpt_path: str | None = None, **kw) -> L.Trainer:
    from ae_lightning.callbacks.resume import ResumeCheckpoint

    trainer = L.Trainer(default_root_dir=tmp, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu",
                        callbacks=[record, ResumeCheckpoint(every_n_train_steps=3, dirpath=str(tmp / "ck"))], **kw)
    L.seed_everything(0, verbose=False)
    model, data = build(root)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return trainer


def test_fit_resumed_mid_epoch_from_last_ckpt_trains_the_same_batches(chunks, tmp_path):
    """Lightning's fit loop stores the stateful loader's position in last.ckpt; resuming (``--ckpt_path
    last``) continues the epoch where it stopped and the next epoch is a fresh shuffle, as uninterrupted."""
    _, root = chunks
    full, first, second = RecordBatches(), RecordBatches(), RecordBatches()
    fit(tmp_path / "full", root, full, max_epochs=2)
    fit(tmp_path / "part", root, first, max_steps=3)  # stops at step 3 of 7, last.ckpt written there
    last = tmp_path / "part" / "ck" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3
    (state,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert state["num_samples_yielded"] == 3 * 4  # the loader's position, saved by Lightning
    fit(tmp_path / "part", root, second, ckpt_path=str(last), max_epochs=2)
    assert [len(b) for b in full.batches] == [4] * 14
    assert first.batches + second.batches == full.batches


def test_fit_with_two_ddp_ranks_trains_each_item_once(chunks, tmp_path, forked_ranks):
    """A real 2-process ``ddp_fork`` fit: LitData sees the process group and splits the items between ranks."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised in this process: forked ranks cannot use it")
    _, root = chunks
    model, data = build(root, batch_size=2)
    record = RecordBatches(tmp_path / "seen")
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[record], default_root_dir=tmp_path)
    trainer.fit(model, data)
    ranks = [Path(f"{tmp_path / 'seen'}.{r}").read_text().split("\n") for r in range(2)]
    ds = named(root, "train")
    everything = sorted(digest(ds[i][0]) for i in range(len(ds)))
    assert len(ranks[0]) == len(ranks[1]) == len(everything) // 2
    assert sorted(ranks[0] + ranks[1]) == everything


def test_config_fits_from_streamed_chunks(chunks, run_cli):
    """configs/dae_xray64.yaml with the streaming data fragment through ``ae-lightning fit`` (a few steps,
    validation included): the fragment's DataModule replaces the folder one."""
    _, root = chunks
    run = run_cli(["fit", "--config", str(CONFIGS / "dae_xray64.yaml"), "--config", str(STREAMING),
                   f"--data.init_args.root={root}",
                   "--data.init_args.batch_size=8", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                   "--trainer.limit_val_batches=1",
                   "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    assert run.trainer.state.finished and run.trainer.global_step == 2
    assert type(run.datamodule).__name__ == "StreamingImageDataModule"
    assert np.isfinite(float(run.trainer.callback_metrics["val/loss"]))


def test_utkface_items_equal_the_folder_dataset(tmp_path):
    """Faces are stored as their JPEG bytes and decoded as UTKFaceDataset decodes the file: same pixels, same target."""
    from ae_lightning.data.optimize import list_utkface
    from ae_lightning.data.synthetic_faces import write_synthetic_utkface
    from ae_lightning.data.utkface import UTKFaceDataset

    root = tmp_path / "utk"
    write_synthetic_utkface(str(root), 24, image_size=64, seed=0)
    convert(list_utkface(root, 0.25, 0.25, 0, strict=False), str(tmp_path / "out"), num_workers=1)
    folder = UTKFaceDataset(root, "train", image_size=32, val_fraction=0.25, test_fraction=0.25)
    expected = {str(f.relative_to(root)): folder[i] for i, f in enumerate(folder.files)}
    ds = streaming_dataset(str(tmp_path / "out"), "train", DecodeItem("utkface", 32, with_name=True))
    assert len(ds) == len(folder)
    for i in range(len(ds)):
        x, target, name = ds[i]
        assert x.shape == (3, 32, 32) and torch.equal(x, expected[name][0]) and target == expected[name][1]


def test_celeba_items_equal_the_folder_dataset(tmp_path):
    """CelebA (the synthetic set in the official layout, header line with its trailing space): faces stored as their
    JPEG bytes, decoded with the folder DataModule's transform: same pixels, same chosen attributes, official
    partition kept."""
    from test_celeba import ATTRS, write_synthetic_celeba

    from ae_lightning.data import CelebADataModule
    from ae_lightning.data.optimize import list_celeba

    attrs = write_synthetic_celeba(tmp_path, partition=(0, 0, 0, 1, 1, 2))
    chosen = ["Male", "Smiling"]
    convert(list_celeba(tmp_path, chosen, verify_md5=False), str(tmp_path / "out"), num_workers=1)
    folder = CelebADataModule(root=str(tmp_path), attributes=chosen, image_size=32, crop_size=148, verify_md5=False)
    folder.setup("fit")
    columns = [ATTRS.index(a) for a in chosen]
    for split, first in (("train", 0), ("val", 3), ("test", 5)):
        ds = streaming_dataset(str(tmp_path / "out"), split, DecodeItem("celeba", 32, with_name=True))
        expected = getattr(folder, f"{split}_set")
        assert len(ds) == len(expected)
        for i in range(len(ds)):
            x, target, name = ds[i]
            j = int(name.removesuffix(".jpg")) - 1  # 000001.jpg is image 0
            k = j - first
            assert x.shape == (3, 32, 32) and torch.equal(x, expected[k][0])
            assert torch.equal(target, torch.as_tensor((attrs[j, columns] + 1) // 2, dtype=torch.float32))
