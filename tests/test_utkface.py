"""UTKFace loader on synthetic cartoon faces written under real UTKFace file names."""

from __future__ import annotations

import logging

import pytest
import torch

from ae_lightning.data import DatasetNotFoundError, UTKFaceDataModule, UTKFaceDataset
from ae_lightning.data.synthetic_faces import write_synthetic_utkface
from ae_lightning.data.utkface import AGE_GROUPS, age_group, parse_name, scan_utkface


def test_parse_names():
    assert parse_name("26_1_2_20170116174525125.jpg.chip.jpg") == (26, 1, 2)
    assert parse_name("100_0_0_20170112213500903.jpg") == (100, 0, 0)
    for bad in ("39_1_20170116174525125.jpg.chip.jpg", "117_0_0_2017.jpg", "20_2_0_2017.jpg", "20_0_5_2017.jpg",
                "a_0_0_2017.jpg", "20_0_0_2017.png"):
        assert parse_name(bad) is None, bad


def test_age_groups():
    assert [age_group(a) for a in (0, 5, 6, 10, 11, 15, 16, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71, 116)] == [
        0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]
    assert len(AGE_GROUPS) == 10


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="susanqq.github.io/UTKFace.*synthetic_demo"):
        UTKFaceDataset(tmp_path / "nope")
    with pytest.raises(DatasetNotFoundError, match=r"\[age\]_\[gender\]_\[race\]"):
        UTKFaceDataset(tmp_path)
    with pytest.raises(ValueError, match="downloaded automatically"):
        UTKFaceDataset(tmp_path, download=True)


def test_malformed_names_one_warning_or_error(tmp_path, caplog):
    root = tmp_path / "UTKFace"
    write_synthetic_utkface(root, 30, image_size=32, malformed=3)
    with caplog.at_level(logging.WARNING, logger="ae_lightning.data.utkface"):
        sets = [UTKFaceDataset(root, split, image_size=16, val_fraction=0.2, test_fraction=0.2) for split in
                ("train", "val", "test")]
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 1 and "3 of 33" in lines[0] and "_1_2017010915055733" in lines[0]
    assert sum(len(s) for s in sets) == 30  # the 3 broken names are reported, the 30 good ones all used
    with pytest.raises(ValueError, match="malformed.*strict=False"):
        scan_utkface(root, strict=True)


def test_items_split_filter(tmp_path):
    root = tmp_path / "faces"
    write_synthetic_utkface(root, 40, image_size=32)
    ds = UTKFaceDataset(root, "train", image_size=24, val_fraction=0.25, test_fraction=0.25, seed=1)
    x, t = ds[0]
    assert x.shape == (3, 24, 24) and 0 <= x.min() <= x.max() <= 1
    assert set(t) == {"age", "age_group", "gender", "race"} and t["age_group"] == age_group(t["age"])
    again = UTKFaceDataset(root, "train", image_size=24, val_fraction=0.25, test_fraction=0.25, seed=1)
    other = UTKFaceDataset(root, "train", image_size=24, val_fraction=0.25, test_fraction=0.25, seed=2)
    test = UTKFaceDataset(root, "test", image_size=24, val_fraction=0.25, test_fraction=0.25, seed=1)
    assert again.files == ds.files and other.files != ds.files and not set(test.files) & set(ds.files)
    women = UTKFaceDataset(root, "train", genders=[1], races=[0, 1, 2], val_fraction=0.25, test_fraction=0.25)
    assert len(women) and all(l[1] == 1 and l[2] <= 2 for l in women.labels)


def test_datamodule_batches_and_synthetic_demo(tmp_path, caplog):
    dm = UTKFaceDataModule(root=str(tmp_path / "absent"), image_size=32, batch_size=4, synthetic_demo=True,
                           synthetic_root=str(tmp_path / "demo"), synthetic_count=40, val_fraction=0.2, test_fraction=0.2)
    with caplog.at_level(logging.WARNING, logger="ae_lightning.data.utkface"):
        dm.prepare_data()
    assert "SYNTHETIC DEMO" in caplog.text and "not photographs of people" in caplog.text
    dm.setup("fit")
    x, t = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and dm.image_shape == (3, 32, 32)
    assert t["age_group"].dtype == torch.long and t["gender"].shape == (4,)
    with pytest.raises(DatasetNotFoundError):
        UTKFaceDataModule(root=str(tmp_path / "absent")).setup("fit")


def test_every_unusable_file_is_reported_with_its_reason(tmp_path, caplog):
    """A valid name on a truncated JPEG used to crash inside the DataLoader without naming the file;
    now every image is decoded at setup and each skipped file is named with its reason, in one line."""
    root = tmp_path / "UTKFace"
    write_synthetic_utkface(root, 20, image_size=32)
    good = sorted(root.glob("*.jpg"))
    truncated = root / "30_0_1_20170116174525125.jpg.chip.jpg"
    truncated.write_bytes(good[0].read_bytes()[:300])  # a real JPEG cut short, as an interrupted download leaves it
    not_an_image = root / "41_1_3_20170117000000000.jpg.chip.jpg"
    not_an_image.write_bytes(b"<html>quota exceeded</html>")
    old = root / "117_0_0_20170117000000001.jpg"
    old.write_bytes(good[1].read_bytes())
    with caplog.at_level(logging.WARNING, logger="ae_lightning.data.utkface"):
        sets = [UTKFaceDataset(root, s, image_size=16, val_fraction=0.2, test_fraction=0.2)
                for s in ("train", "val", "test")]
    lines = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "3 of 23" in lines[0]
    line = lines[0]
    assert f"{truncated.name} (cannot decode the image (Truncated File Read" in line
    assert f"{not_an_image.name} (cannot decode the image (cannot identify image file" in line
    assert f"{old.name} (malformed name (age 117 outside 0-116))" in line
    used = {f.name for s in sets for f in s.files}
    assert len(used) == 20 and not used & {truncated.name, not_an_image.name, old.name}
    for s in sets:  # every kept file loads
        assert s[len(s) - 1][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="Truncated File Read.*strict=False"):
        scan_utkface(root, strict=True)
