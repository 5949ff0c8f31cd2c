"""MNISTDataModule on IDX files written in the real format, the test-files-only fallback, the embedded
default, bad files, and the real test set in ../shared/data when present."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SYNTHETIC_MNIST, synthetic_digits

from ae_lightning.data import DatasetNotFoundError, MNISTDataModule
from ae_lightning.data.mnist import read_idx

OFFICIAL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def setup(**kw) -> MNISTDataModule:
    dm = MNISTDataModule(**kw)
    dm.setup("fit")
    return dm


def as_uint8(ds) -> np.ndarray:
    return np.rint(ds.images.squeeze(1).numpy() * 255).astype(np.uint8)


def write_pair(write_idx, folder, prefix, n, seed, gz=True):
    images, labels = synthetic_digits(n, seed)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


# --- IDX reading ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_roundtrip(tmp_path, write_idx, name):
    arr = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = write_idx(tmp_path / name, arr)
    if name.endswith(".gz"):
        assert gzip.decompress(path.read_bytes())[:4] == b"\x00\x00\x08\x03"  # the real magic number
    np.testing.assert_array_equal(read_idx(path), arr)


def test_bad_magic_number(tmp_path, write_idx):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 4, 4), np.uint8))
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0D  # float data type: not the unsigned-byte MNIST files
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="bad magic number") as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file(tmp_path, write_idx, gz):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    raw = path.read_bytes()[:-100]
    if gz:
        path = tmp_path / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    with pytest.raises(ValueError, match="truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "[4, 28, 28]" in str(err.value)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(ValueError, match="cannot read MNIST file") as err:
        read_idx(path)
    assert str(path) in str(err.value)


# --- the DataModule ---------------------------------------------------------------------------
def test_full_set_in_torchvision_layout(mnist_root):
    n_train, n_test = SYNTHETIC_MNIST["train"], SYNTHETIC_MNIST["t10k"]
    dm = setup(root=str(mnist_root), val_fraction=0.1, batch_size=16)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (n_train - 12, 12, n_test)
    assert dm.source == f"the full MNIST set in {mnist_root}"
    # test is the official test file, in order; train ∪ val is the train file
    test_images, test_labels = synthetic_digits(n_test, seed=1)
    np.testing.assert_array_equal(as_uint8(dm.test_set), test_images)
    np.testing.assert_array_equal(dm.test_set.labels.numpy(), test_labels)
    train_images, _ = synthetic_digits(n_train, seed=0)
    seen = np.concatenate([as_uint8(dm.train_set), as_uint8(dm.val_set)])
    assert sorted(map(bytes, seen)) == sorted(map(bytes, train_images))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert 0 <= x.min() and x.max() <= 1


def test_raw_and_gz_files_give_the_same_data(tmp_path, write_idx):
    for gz, sub in ((True, "gz"), (False, "raw")):
        write_pair(write_idx, tmp_path / sub / "MNIST" / "raw", "t10k", 50, seed=3, gz=gz)
    a, b = setup(root=str(tmp_path / "gz")), setup(root=str(tmp_path / "raw"))
    for split in ("train_set", "val_set", "test_set"):
        assert torch.equal(getattr(a, split).images, getattr(b, split).images)


def test_test_files_only_fallback_splits_with_a_seed_and_says_so(tmp_path, write_idx, caplog):
    images, labels = write_pair(write_idx, tmp_path, "t10k", 100, seed=5)  # directly in root, as in ../shared/data
    with caplog.at_level(logging.WARNING, logger="ae_lightning.data.mnist"):
        dm = setup(root=str(tmp_path), val_fraction=0.1, test_fraction=0.2, seed=7)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (70, 10, 20)
    assert "MNIST test files" in dm.source
    messages = [r.getMessage() for r in caplog.records]
    assert any("test files" in m and "seed 7" in m and "70 train / 10 val / 20 test" in m for m in messages), messages
    # disjoint and complete: every test-file image lands in exactly one split
    parts = [as_uint8(getattr(dm, s)) for s in ("train_set", "val_set", "test_set")]
    assert sorted(map(bytes, np.concatenate(parts))) == sorted(map(bytes, images))
    # the same seed gives the same split, another seed another one
    same, other = setup(root=str(tmp_path), seed=7), setup(root=str(tmp_path), seed=8)
    assert torch.equal(same.val_set.images, dm.val_set.images)
    assert not torch.equal(other.val_set.images, dm.val_set.images)


def test_embedded_default():
    dm = setup(root=None, batch_size=32)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (7000, 1000, 2000)  # the whole t10k set
    assert "embedded" in dm.source
    assert torch.bincount(torch.cat([dm.train_set.labels, dm.val_set.labels, dm.test_set.labels])).tolist() == \
        OFFICIAL_TEST_COUNTS
    assert dm.image_shape == (1, 28, 28)
    labels = torch.cat([dm.train_set.labels, dm.val_set.labels, dm.test_set.labels])
    assert set(labels.tolist()) == set(range(10))
    images = dm.train_set.images
    assert images.min() == 0 and images.max() == 1
    assert 0.1 < images.mean() < 0.15  # real digits: ~13 % ink


def test_train_size_and_binarize():
    dm = setup(root=None, train_size=100, binarize=True)
    assert len(dm.train_set) == 100 and len(dm.val_set) == 1000
    x, _ = dm.train_set[0]
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="train_size=8000"):
        setup(root=None, train_size=8000)


def test_missing_root_raises_dataset_not_found(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as err:
        setup(root=str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "MNIST/raw" in msg and "download=True" in msg and "\n" not in msg


def test_folder_without_idx_files_raises_dataset_not_found(tmp_path):
    (tmp_path / "readme.txt").write_text("no digits here")
    with pytest.raises(DatasetNotFoundError, match="no MNIST IDX files") as err:
        setup(root=str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_image_label_count_mismatch(tmp_path, write_idx):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(9, np.uint8))
    with pytest.raises(ValueError, match="holds 10 images but .* holds 9 labels") as err:
        setup(root=str(tmp_path))
    assert str(tmp_path / "t10k-images-idx3-ubyte") in str(err.value)
    assert str(tmp_path / "t10k-labels-idx1-ubyte") in str(err.value)


def test_count_mismatch_in_the_full_set_names_both_files_and_counts(mnist_root, write_idx):
    """Was a bare IndexError mid-epoch: the train labels file one label short of its images."""
    raw = mnist_root / "MNIST" / "raw"
    labels = raw / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(SYNTHETIC_MNIST["train"] - 1, np.uint8))
    with pytest.raises(ValueError) as err:
        setup(root=str(mnist_root))
    msg = str(err.value)
    assert str(raw / "train-images-idx3-ubyte.gz") in msg and str(labels) in msg
    assert f"{SYNTHETIC_MNIST['train']} images" in msg and f"{SYNTHETIC_MNIST['train'] - 1} labels" in msg
    assert "re-download" in msg and "\n" not in msg


@pytest.mark.parametrize("magic", [b"\x00\x00\x08\x01", b"\x00\x00\x08\x09", b"\x01\x00\x08\x03"])
def test_full_magic_number_is_checked_and_called_bad_magic(tmp_path, write_idx, magic):
    """A labels file where the images belong (0x0801), a garbage dimension byte (0x0809, which
    used to read as "truncated") and a wrong first byte: each is a bad magic number, naming the file."""
    write_pair(write_idx, tmp_path, "t10k", 20, seed=0, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[:4] = magic
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="bad magic number") as err:
        setup(root=str(tmp_path))
    msg = str(err.value)
    assert str(path) in msg and "2051" in msg and "truncated" not in msg and "fix:" in msg


def test_swapped_images_and_labels_files(tmp_path, write_idx):
    images, labels = synthetic_digits(20, 0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", labels)  # swapped on disk
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", images)
    with pytest.raises(ValueError, match="bad magic number: expected 2051.*found 2049"):
        setup(root=str(tmp_path))


def test_setup_test_reads_only_the_test_files(mnist_root):
    """Testing a checkpoint does not need the training files: a corrupt train file is not read."""
    (mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    dm = MNISTDataModule(root=str(mnist_root))
    dm.setup("test")
    assert len(dm.test_set) == SYNTHETIC_MNIST["t10k"] and dm.train_set is None
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape[1:] == (1, 28, 28)
    with pytest.raises(ValueError, match="cannot read MNIST file .*train-images"):
        dm.setup("fit")


def test_download_without_a_root_goes_to_the_projects_data_folder(monkeypatch):
    """With no root and nothing found, download=True fetches into data/mnist (the lookup's download rule)."""
    import torchvision

    from ae_lightning.data import locate

    fetched = []
    monkeypatch.setattr(torchvision.datasets, "MNIST", lambda root, train, download: fetched.append((root, train)))
    MNISTDataModule(root=None, download=True).prepare_data()
    assert fetched == [(str(locate.LOCAL / "mnist"), True), (str(locate.LOCAL / "mnist"), False)]


def test_failed_download_is_one_clear_error_and_leaves_no_empty_folder(monkeypatch, tmp_path):
    """Offline (or a mirror down): one error naming the folder, the cause and the fix; the folders the download
    made are removed again (an empty data/mnist would be "found" by the next run's lookup); a user's own folder
    and its files stay."""
    import torchvision

    def offline(root, train, download):
        (Path(root) / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)  # as torchvision does before fetching
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://…, got: <urlopen error>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    fresh = tmp_path / "new" / "fresh"
    with pytest.raises(DatasetNotFoundError) as err:
        MNISTDataModule(root=str(fresh), download=True).prepare_data()
    msg = str(err.value)
    assert str(fresh) in msg and "Error downloading train-images-idx3-ubyte.gz" in msg and "fix:" in msg
    assert "<urlopen error>" in msg and "network" in msg and "\n" not in msg and not (tmp_path / "new").exists()
    own = tmp_path / "own"
    (own / "notes.txt").parent.mkdir()
    (own / "notes.txt").write_text("mine")
    with pytest.raises(DatasetNotFoundError):
        MNISTDataModule(root=str(own), download=True).prepare_data()
    assert (own / "notes.txt").read_text() == "mine" and not (own / "MNIST").exists()


# --- real data ----------------------------------------------------------------------------------
def test_real_mnist_test_set(shared_data):
    root = shared_data / "mnist"
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no MNIST test files in {root}")
    dm = setup(root=str(root))
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (7000, 1000, 2000)
    labels = torch.cat([dm.train_set.labels, dm.val_set.labels, dm.test_set.labels])
    assert torch.bincount(labels).tolist() == OFFICIAL_TEST_COUNTS
    # the embedded digits are the same 10k test set, bytes unchanged: a fresh clone splits exactly these digits
    from ae_lightning.data.common import EMBEDDED

    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        np.testing.assert_array_equal(read_idx(EMBEDDED / f"{stem}.gz"), read_idx(root / f"{stem}.gz"))
    embedded = setup(root=None)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(embedded, f"{split}_set").images, getattr(dm, f"{split}_set").images), split
