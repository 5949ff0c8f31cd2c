"""X-ray data: folder trees (8/16-bit PNG, PGM, TIFF, JPEG, DICOM), .npz and MedMNIST files written
with their real libraries, crop/resize, labels, seeded splits, bad inputs, and the real samples in
../shared/data when present."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ae_lightning.data import DatasetNotFoundError, XRayDataModule, XRayDataset
from ae_lightning.data.common import EMBEDDED
from ae_lightning.data.xray import load_xray_source, read_image_file

HAS_PYDICOM = importlib.util.find_spec("pydicom") is not None


def save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    (im.convert(mode) if mode else im).save(path)
    return path


def const(h: int, w: int, value: int, dtype=np.uint8) -> np.ndarray:
    return np.full((h, w), value, dtype=dtype)


# (relative path, array, expected value in [0, 1] after reading)
TREE = [
    ("NORMAL/a.png", np.pad(const(80, 80, 200), ((0, 0), (20, 20))), 200 / 255),  # 8-bit, wide: crop drops the bands
    ("NORMAL/b.pgm", const(64, 64, 100), 100 / 255),  # 8-bit PGM
    ("NORMAL/c.jpg", const(64, 64, 50), 50 / 255),  # JPEG (lossy, but flat)
    ("PNEUMONIA/d.png", const(64, 64, 30000, np.uint16), 30000 / 65535),  # 16-bit PNG
    ("PNEUMONIA/e.tif", const(96, 64, 1000, np.uint16), 1000 / 65535),  # 16-bit TIFF, dark and tall
    ("PNEUMONIA/f.pgm", const(64, 64, 500, np.uint16), 500 / 65535),  # 16-bit PGM (maxval 65535), dark
    ("PNEUMONIA/g.tiff", const(70, 70, 255), 1.0),  # 8-bit TIFF, resized
]


@pytest.fixture
def xray_tree(tmp_path) -> Path:
    root = tmp_path / "xrays"
    for rel, arr, _ in TREE:
        save(root / rel, arr)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 1] = 255  # pure green → luma 0.587·255
    save(root / "PNEUMONIA" / "h.jpeg", rgb)
    return root


def npz(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def numbered(n: int, size: int = 32) -> np.ndarray:
    """``n`` flat images whose grey value identifies them: image i is (3·i)/255 everywhere."""
    return np.stack([const(size, size, 3 * i) for i in range(n)])


def ids(ds: XRayDataset) -> list[int]:
    return [round(v * 255 / 3) for v in ds.images.mean(dim=(1, 2, 3)).tolist()]


def one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert str(path) in msg, msg
    assert "\n" not in msg, msg
    return msg


# --- formats ------------------------------------------------------------------------------------
def test_folder_tree_of_every_format(xray_tree):
    src = load_xray_source(xray_tree, image_size=64)
    expected_names = [rel for rel, _, _ in TREE] + ["PNEUMONIA/h.jpeg"]
    assert src.names == sorted(expected_names)
    assert src.images.shape == (8, 64, 64) and src.images.dtype == np.float32
    assert src.images.min() >= 0 and src.images.max() <= 1
    for rel, _, value in TREE:
        img = src.images[src.names.index(rel)]
        tol = 3 / 255 if rel.endswith(".jpg") else 1e-3
        assert abs(img.mean() - value) < tol and img.std() < tol, (rel, img.mean(), value)
    green = src.images[src.names.index("PNEUMONIA/h.jpeg")]
    assert abs(green.mean() - 0.587) < 0.02  # colour → luma grayscale
    # class labels from the sub-folder names, sorted
    assert src.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]


def test_16_bit_files_keep_their_16_bit_scale(tmp_path):
    """A dark 16-bit image is dark: 500/65535, not 500/255 (nor clipped to 1)."""
    ramp = (np.arange(64 * 64).reshape(64, 64) % 200).astype(np.uint16)
    for ext in ("png", "tif", "pgm"):
        got = read_image_file(save(tmp_path / f"ramp.{ext}", ramp))
        np.testing.assert_allclose(got, ramp / 65535, atol=1e-6, err_msg=ext)
    full = read_image_file(save(tmp_path / "full.png", const(8, 8, 65535, np.uint16)))
    assert full.min() == 1.0


def test_centre_crop_and_antialiased_resize(tmp_path):
    # the centre square is white, the bands beside it black: a centre crop keeps only white
    wide = np.pad(const(64, 64, 255), ((0, 0), (32, 32)))
    tall = np.pad(const(64, 64, 255), ((32, 32), (0, 0)))
    checker = (np.indices((128, 128)).sum(0) % 2 * 255).astype(np.uint8)  # 1-px checkerboard
    for name, arr in (("wide", wide), ("tall", tall), ("checker", checker)):
        save(tmp_path / "imgs" / f"{name}.png", arr)
    src = load_xray_source(tmp_path / "imgs", image_size=32)
    by = dict(zip(src.names, src.images, strict=True))
    assert by["wide.png"].shape == (32, 32)
    assert by["wide.png"].min() > 0.99 and by["tall.png"].min() > 0.99
    # antialiasing averages the checkerboard to grey; point sampling would give 0s or 1s
    inner = by["checker.png"][2:-2, 2:-2]
    assert abs(inner.mean() - 0.5) < 0.02 and inner.std() < 0.05


@pytest.mark.skipif(HAS_PYDICOM, reason="checks the message shown when pydicom is missing")
def test_dicom_without_pydicom_says_how_to_install(tmp_path):
    path = tmp_path / "scan.dcm"
    path.write_bytes(b"\0" * 200)
    with pytest.raises(ImportError, match=r"pip install 'ae_lightning\[dicom\]'") as err:
        read_image_file(path)
    one_line_naming(err, path)


def write_dicom(path: Path, arr: np.ndarray, bits_stored: int, photometric: str = "MONOCHROME2") -> Path:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.PixelData = arr.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


@pytest.mark.skipif(not HAS_PYDICOM, reason="pydicom not installed (pip install 'ae_lightning[dicom]')")
def test_dicom_files(tmp_path):
    root = tmp_path / "dicom"
    write_dicom(root / "a.dcm", const(64, 64, 1024, np.uint16), bits_stored=12)  # 12-bit: 1024/4095
    write_dicom(root / "b.dcm", const(64, 64, 1024, np.uint16), bits_stored=12, photometric="MONOCHROME1")
    save(root / "c.png", const(64, 64, 0))
    src = load_xray_source(root, image_size=64)
    assert src.names == ["a.dcm", "b.dcm", "c.png"]
    assert src.images[0].mean() == pytest.approx(1024 / 4095, abs=1e-4)
    assert src.images[1].mean() == pytest.approx(1 - 1024 / 4095, abs=1e-4)  # MONOCHROME1: 0 is white
    broken = root / "d.dcm"
    broken.write_bytes(b"not a dicom file")
    with pytest.raises(ValueError, match="corrupt") as err:
        read_image_file(broken)
    one_line_naming(err, broken)


def test_npz_with_images_and_labels(tmp_path):
    path = npz(tmp_path / "set.npz", images=numbered(20), labels=np.arange(20) % 2)
    ds = XRayDataset(str(path), "train", image_size=16, val_fraction=0.2, test_fraction=0.2)
    assert len(ds) == 12 and ds.images.shape == (12, 1, 16, 16)
    assert [i % 2 for i in ids(ds)] == ds.labels.tolist()  # labels travel with their images


@pytest.mark.parametrize(
    "images",
    [
        numbered(6)[..., None],  # (N, H, W, 1)
        np.repeat(numbered(6)[..., None], 3, -1),  # (N, H, W, 3)
        numbered(6).astype(np.float32) / 255,  # float in [0, 1]
    ],
    ids=["channel", "rgb", "float"],
)
def test_npz_image_layouts(tmp_path, images):
    src = load_xray_source(npz(tmp_path / "x.npz", images=images), image_size=32)
    assert src.images.shape == (6, 32, 32)
    np.testing.assert_allclose(src.images.mean((1, 2)), np.arange(6) * 3 / 255, atol=1e-6)
    assert src.labels.tolist() == [-1] * 6


def test_medmnist_npz_keeps_the_official_splits(tmp_path):
    ids_of = {"train": range(0, 30), "val": range(30, 37), "test": range(37, 46)}
    arrays = {}
    for split, r in ids_of.items():
        arrays[f"{split}_images"] = np.stack([const(28, 28, 3 * i) for i in r])
        arrays[f"{split}_labels"] = (np.array(list(r)) % 2).reshape(-1, 1)
    path = npz(tmp_path / "pneumoniamnist.npz", **arrays)
    for split, r in ids_of.items():
        ds = XRayDataset(str(path), split, image_size=28, val_fraction=0.5, test_fraction=0.3)  # fractions ignored
        assert ids(ds) == list(r)
        assert ds.labels.tolist() == [i % 2 for i in r]
    assert XRayDataset(str(path), "val", image_size=16).images.shape == (7, 1, 16, 16)  # down-sized
    assert XRayDataset(str(path), "val", image_size=40).images.shape == (7, 1, 40, 40)  # up-sized, with a warning
    with pytest.raises(ValueError, match="28x28, smaller than the requested image_size=64") as err:
        XRayDataset(str(path), "train", image_size=64, small_images="error")
    one_line_naming(err, path)


# --- splits -------------------------------------------------------------------------------------
def test_seeded_split_is_disjoint_complete_and_reproducible(tmp_path):
    path = str(npz(tmp_path / "fifty.npz", images=numbered(50)))
    split = {s: ids(XRayDataset(path, s, image_size=32, seed=3)) for s in ("train", "val", "test")}
    assert [len(v) for v in split.values()] == [35, 5, 10]
    assert sorted(sum(split.values(), [])) == list(range(50))
    assert ids(XRayDataset(path, "val", image_size=32, seed=3)) == split["val"]
    assert ids(XRayDataset(path, "val", image_size=32, seed=4)) != split["val"]
    subset = ids(XRayDataset(path, "train", image_size=32, seed=3, train_size=10))
    assert len(subset) == 10 and set(subset) <= set(split["train"])
    with pytest.raises(ValueError, match="train_size=40"):
        XRayDataset(path, "train", image_size=32, train_size=40)


def test_datamodule_on_a_folder(xray_tree):
    dm = XRayDataModule(root=str(xray_tree), image_size=32, batch_size=2, val_fraction=0.25, test_fraction=0.25)
    dm.setup("fit")
    assert dm.image_shape == (1, 32, 32)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 2, 2)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 1, 32, 32) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1}


def test_union_of_sources_is_labelled_by_source(tmp_path, xray_tree):
    other = str(npz(tmp_path / "other.npz", images=numbered(10)))
    ds = XRayDataset([str(xray_tree), other], "train", image_size=32, val_fraction=0.25, test_fraction=0.25)
    assert len(ds) == 4 + 6
    assert ds.labels.tolist() == [0] * 4 + [1] * 6


def test_hflip_flips_training_images_only(tmp_path):
    arr = np.zeros((8, 16, 16), np.uint8)
    arr[:, :, :4] = 255  # bright left edge
    path = str(npz(tmp_path / "edge.npz", images=arr))
    dm = XRayDataModule(root=path, image_size=16, hflip=True, val_fraction=0.25, test_fraction=0.25)
    dm.setup("fit")
    torch.manual_seed(0)
    flipped = [dm.train_set[0][0][0, 0, -1].item() == 1.0 for _ in range(40)]
    assert 5 < sum(flipped) < 35
    assert all(dm.val_set[0][0][0, 0, 0].item() == 1.0 for _ in range(5))


def test_embedded_default():
    sets = {s: XRayDataset(None, s) for s in ("train", "val", "test")}
    assert [len(d) for d in sets.values()] == [560, 80, 160]
    labels = torch.cat([d.labels for d in sets.values()])
    assert torch.bincount(labels).tolist() == [206, 594]  # NORMAL, PNEUMONIA
    x, y = sets["train"][0]
    assert x.shape == (1, 64, 64) and 0 <= x.min() and x.max() <= 1 and x.std() > 0.05


# --- bad input: one line naming the path ---------------------------------------------------------
def test_missing_root(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        XRayDataset(str(tmp_path / "missing"), "train")
    assert "folder tree" in one_line_naming(err, tmp_path / "missing")


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="it is empty") as err:
        XRayDataModule(root=str(tmp_path)).setup("fit")
    one_line_naming(err, tmp_path)


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "table.csv").write_text("x")
    with pytest.raises(DatasetNotFoundError, match=r"found only \.csv, \.txt") as err:
        load_xray_source(tmp_path)
    one_line_naming(err, tmp_path)


def test_corrupt_image_file_is_reported_not_dropped(xray_tree):
    bad = xray_tree / "NORMAL" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    with pytest.raises(ValueError, match="corrupt") as err:
        load_xray_source(xray_tree)
    msg = one_line_naming(err, xray_tree)
    assert "NORMAL/zz_broken.png (" in msg


def test_every_bad_file_is_reported_in_one_message(xray_tree):
    """Not one error per run: every unreadable file of the tree, each with its reason, in one line."""
    png = xray_tree / "NORMAL" / "broken.png"
    png.write_bytes(save(xray_tree / "tmp.png", const(64, 64, 7)).read_bytes()[:60])  # a real PNG cut short
    (xray_tree / "tmp.png").unlink()
    jpg = xray_tree / "PNEUMONIA" / "empty.jpg"
    jpg.write_bytes(b"")
    pgm = xray_tree / "PNEUMONIA" / "header_only.pgm"
    pgm.write_bytes(b"P5\n64 64\n255\n")  # a PGM header without its pixels
    with pytest.raises(ValueError) as err:
        load_xray_source(xray_tree)
    msg = one_line_naming(err, xray_tree)
    assert f"3 of {len(TREE) + 4} X-ray files" in msg
    for f in (png, jpg, pgm):
        rel = str(f.relative_to(xray_tree))
        assert f"{rel} (" in msg, (rel, msg)
    assert "cannot identify image file" in msg  # the reason, not only the name
    assert "fix: replace or remove" in msg


def test_image_smaller_than_the_requested_size_is_upscaled_with_a_warning(tmp_path, caplog):
    save(tmp_path / "imgs" / "small.png", const(40, 50, 9))
    save(tmp_path / "imgs" / "big.png", const(80, 80, 9))
    with caplog.at_level("WARNING", logger="ae_lightning.data.xray"):
        src = load_xray_source(tmp_path / "imgs", image_size=64)
    assert src.images.shape == (2, 64, 64) and np.allclose(src.images, 9 / 255, atol=1e-3)
    (line,) = [r.getMessage() for r in caplog.records if "upscaled" in r.getMessage()]
    assert "1 images smaller than image_size=64" in line and "small.png (50x40" in line and "small_images=error" in line


def test_small_images_refused_with_the_option(tmp_path):
    save(tmp_path / "imgs" / "small.png", const(40, 50, 9))
    save(tmp_path / "imgs" / "tiny.png", const(8, 8, 9))
    save(tmp_path / "imgs" / "big.png", const(80, 80, 9))
    with pytest.raises(ValueError, match="2 of 3 X-ray files") as err:
        load_xray_source(tmp_path / "imgs", image_size=64, small_images="error")
    msg = one_line_naming(err, tmp_path / "imgs")
    assert "small.png (50x40, smaller than the requested image_size=64)" in msg and "tiny.png (8x8" in msg


def test_medmnist_with_missing_splits_loads_the_others_and_names_the_key(tmp_path, caplog):
    arrays = {"train_images": numbered(12, 28), "train_labels": np.zeros((12, 1), np.uint8),
              "val_images": numbered(4, 28), "val_labels": np.ones((4, 1), np.uint8)}  # no test_images
    path = npz(tmp_path / "partial.npz", **arrays)
    with caplog.at_level("WARNING", logger="ae_lightning.data.xray"):
        dm = XRayDataModule(root=str(path), image_size=28, batch_size=4)
        dm.setup("fit")
    assert len(dm.train_set) == 12 and len(dm.val_set) == 4 and dm.test_set is None
    assert "missing: test_images" in caplog.text
    assert next(iter(dm.train_dataloader()))[0].shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="no 'test_images' array") as err:
        dm.test_dataloader()
    one_line_naming(err, path)
    with pytest.raises(ValueError, match="no 'test_images' array"):
        XRayDataset(str(path), "test", image_size=28)


def test_npz_is_closed_on_every_path(tmp_path, monkeypatch):
    """np.load keeps the zip open until closed: every path (success, missing key, bad labels) closes it."""
    opened = []
    real_load = np.load

    def tracking_load(*a, **kw):
        opened.append(real_load(*a, **kw))
        return opened[-1]

    monkeypatch.setattr(np, "load", tracking_load)
    good = npz(tmp_path / "good.npz", images=numbered(10, 32))
    no_images = npz(tmp_path / "none.npz", pixels=numbered(3))
    bad_labels = npz(tmp_path / "labels.npz", images=numbered(10, 32), labels=np.zeros(3, np.int64))
    load_xray_source(good, image_size=32)
    for path, match in ((no_images, "no 'images'"), (bad_labels, r"'labels' has shape \(3,\) but there are 10 images")):
        with pytest.raises(ValueError, match=match) as err:
            load_xray_source(path, image_size=32)
        one_line_naming(err, path)
    assert len(opened) == 3 and all(f.zip is None for f in opened)  # NpzFile.close() drops its zip


def test_npz_without_images(tmp_path):
    path = npz(tmp_path / "x.npz", pixels=numbered(3))
    with pytest.raises(ValueError, match=r"\['pixels'\] but no 'images'") as err:
        load_xray_source(path)
    one_line_naming(err, path)


def test_corrupt_npz(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ValueError, match="cannot read") as err:
        load_xray_source(path)
    one_line_naming(err, path)


def test_float_npz_outside_unit_range(tmp_path):
    path = npz(tmp_path / "x.npz", images=numbered(3).astype(np.float32))  # 0..6, not scaled
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]") as err:
        load_xray_source(path)
    one_line_naming(err, path)


def test_root_that_is_not_a_folder_or_npz(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a.png")
    with pytest.raises(ValueError, match="is a .txt file") as err:
        load_xray_source(path)
    one_line_naming(err, path)


def test_dataset_argument_errors():
    with pytest.raises(ValueError, match="not downloaded automatically"):
        XRayDataset(None, "train", download=True)
    with pytest.raises(ValueError, match="split must be one of"):
        XRayDataset(None, "dev")


# --- real data -----------------------------------------------------------------------------------
def test_real_kermany_64(shared_data):
    path = shared_data / "xray64" / "kermany_64.npz"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    src = load_xray_source(path, image_size=64)
    raw = np.load(path)
    assert src.images.shape == (1564, 64, 64)
    np.testing.assert_allclose(src.images, raw["images"] / 255, atol=1e-6)  # already 64×64: no resampling
    assert np.bincount(src.labels).tolist() == [403, 1161]  # NORMAL, PNEUMONIA from the 'CLASS/file' names
    # the embedded X-rays are a subset of it, pixels unchanged
    emb = np.load(EMBEDDED / "chest_xray64.npz")
    where = {n: i for i, n in enumerate(raw["names"])}
    rows = [where[n] for n in emb["names"]]
    np.testing.assert_array_equal(emb["images"], raw["images"][rows])


def test_real_pneumoniamnist(shared_data):
    path = shared_data / "pneumoniamnist" / "pneumoniamnist_subset.npz"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    dm = XRayDataModule(root=str(path), image_size=28)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (3882, 524, 624)
    raw = np.load(path)
    np.testing.assert_allclose(dm.test_set.images[:, 0].numpy(), raw["test_images"] / 255, atol=1e-6)
    assert dm.train_set.labels.tolist() == raw["train_labels"][:, 0].tolist()


def test_real_nih_full_resolution(shared_data):
    folder = shared_data / "chest_xray_fullres"
    if not any(folder.glob("*.png")):
        pytest.skip(f"no PNGs in {folder}")
    full = load_xray_source(folder, image_size=512)
    small = load_xray_source(folder, image_size=64)
    assert full.images.shape == (2, 512, 512) and small.images.shape == (2, 64, 64)
    # antialiased down-sizing keeps each image's brightness
    np.testing.assert_allclose(small.images.mean((1, 2)), full.images.mean((1, 2)), atol=0.01)
    assert small.images.std() > 0.1


def test_bmp_folder_as_the_isbi_dental_set_ships(tmp_path):
    """The ISBI 2015 cephalometric radiographs come as 8-bit BMP files (1935×2400): a folder of them loads."""
    for i, value in enumerate((40, 160)):
        Image.fromarray(np.full((120, 96), value, dtype=np.uint8)).save(tmp_path / f"{i + 1:03d}.bmp")
    src = load_xray_source(tmp_path, image_size=32)
    assert src.images.shape == (2, 32, 32)
    np.testing.assert_allclose(src.images.mean(axis=(1, 2)), [40 / 255, 160 / 255], atol=1e-3)


# --- split by patient ----------------------------------------------------------------------------
def test_embedded_split_by_patient_keeps_every_patient_in_one_split():
    """The embedded Kermany names carry patient ids; split by them, no patient is in two splits."""
    from ae_lightning.data.common import KERMANY_PATIENT, group_keys

    names = [str(n) for n in np.load(EMBEDDED / "chest_xray64.npz")["names"]]
    keys = group_keys(names, KERMANY_PATIENT, "embedded")
    assert len(set(keys)) < len(names)  # patients with several images exist: a split by image would leak
    src = load_xray_source(None)
    from ae_lightning.data.xray import split_source

    idx = split_source(src, 0.1, 0.2, 0, KERMANY_PATIENT)
    patients = {s: {keys[i] for i in idx[s]} for s in idx}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(len(names)))
    sizes = {s: len(XRayDataset(None, s, group_by=KERMANY_PATIENT)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 800 and abs(sizes["test"] - 160) < 8 and abs(sizes["val"] - 80) < 8
    # the split by image does put patients in two splits (what the rule prevents)
    by_image = split_source(src, 0.1, 0.2, 0)
    assert {keys[i] for i in by_image["train"]} & {keys[i] for i in by_image["test"]}
    dm = XRayDataModule(group_by=KERMANY_PATIENT)
    dm.setup("fit")
    assert len(dm.test_set) == sizes["test"]


def test_group_by_parent_folder_and_unmatched_names(tmp_path):
    from ae_lightning.data.common import group_keys, grouped_split

    names = [f"p{i // 3}/img{i}.png" for i in range(30)]  # 10 patients, 3 images each
    keys = group_keys(names, "parent", "t")
    tr, va, te = grouped_split(keys, 0.2, 0.2, 1, "t")
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(30))
    assert len({keys[i] for i in tr} & {keys[i] for i in te}) == 0 and len(te) == 6
    assert group_keys(["a/x_12.png"], r"x_(\d+)", "t") == ["12"]
    with pytest.raises(ValueError, match="matches no group in 1 of 2"):
        group_keys(["person1_a.png", "IM-2.png"], r"person\d+_", "t")


# --- extra training sources ------------------------------------------------------------------------
def patient_npz(path: Path, patients: list[int], per_patient: int = 2, offset: int = 0) -> Path:
    """An .npz of distinct 16×16 images named ``CLASS/person<k>_<j>.png`` (``per_patient`` images per patient)."""
    names = [f"P/person{p}_{j}.png" for p in patients for j in range(per_patient)]
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, (len(names), 16, 16)).astype(np.uint8)
    np.savez(path, images=images, names=np.array(names))
    return path


def test_extra_train_joins_training_only_without_val_or_test_patients(tmp_path):
    from ae_lightning.data.common import group_keys

    rule = r"person\d+_"
    main = patient_npz(tmp_path / "main.npz", list(range(20)))  # 20 patients × 2 images
    extra = patient_npz(tmp_path / "extra.npz", list(range(10, 40)), per_patient=3, offset=1)  # patients 10..39
    kw = dict(image_size=16, group_by=rule, val_fraction=0.2, test_fraction=0.2, seed=0)
    plain = {s: XRayDataset(str(main), s, **kw) for s in ("train", "val", "test")}
    held_out = {k for s in ("val", "test") for k in group_keys(plain[s].names, rule, "t")}
    assert held_out & {f"person{p}_" for p in range(10, 20)}  # the extra set has val/test patients to leave out
    train = XRayDataset(str(main), "train", extra_train=[str(extra)], **kw)
    patients = set(group_keys(train.names, rule, "t"))
    assert not patients & held_out  # no val/test patient among the training images
    expected_extra = [n for n in (f"P/person{p}_{j}.png" for p in range(10, 40) for j in range(3))
                      if group_keys([n], rule, "t")[0] not in held_out]
    assert train.names == plain["train"].names + expected_extra  # the main split first, unchanged
    assert len(train) == len(plain["train"]) + len(expected_extra)
    # val and test are the main source's alone, whatever the extras
    for s in ("val", "test"):
        with_extra = XRayDataset(str(main), s, extra_train=[str(extra)], **kw)
        assert with_extra.names == plain[s].names and torch.equal(with_extra.images, plain[s].images)


def test_extra_train_drops_images_repeated_from_the_main_source(tmp_path):
    main = patient_npz(tmp_path / "main.npz", list(range(20)))
    raw = np.load(main)
    # the extra set repeats every main image under other names (another export of the same files) plus 4 new ones
    new = np.random.default_rng(5).integers(0, 256, (4, 16, 16)).astype(np.uint8)
    np.savez(tmp_path / "extra.npz", images=np.concatenate([raw["images"], new]),
             names=np.array([f"copy/{i}.png" for i in range(len(raw["images"]) + 4)]))
    dm = XRayDataModule(str(main), image_size=16, val_fraction=0.2, test_fraction=0.2,
                        extra_train=str(tmp_path / "extra.npz"))  # group_by image: identity is what counts
    dm.setup("fit")
    main_train = XRayDataset(str(main), "train", image_size=16, val_fraction=0.2, test_fraction=0.2)
    assert len(dm.train_set) == len(main_train) + 4
    assert dm.train_set.names[-4:] == [f"copy/{i}.png" for i in range(40, 44)]
    assert len(dm.val_set) == 8 and len(dm.test_set) == 8

