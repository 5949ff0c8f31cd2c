"""CelebA DataModule on a tiny synthetic CelebA written in the real on-disk layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ae_lightning.data import CelebADataModule, CelebAFaces, DatasetNotFoundError
from ae_lightning.data.celeba import LIST_FILES

ATTRS = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
]


def write_synthetic_celeba(root: Path, partition=(0, 0, 0, 0, 1, 1, 2, 2), seed: int = 0) -> np.ndarray:
    """``root/celeba`` with 178×218 JPEGs and the five list files in the official formats.

    ``partition`` gives each image's split (0 train, 1 valid, 2 test). Byte-faithful to the official
    files where it matters to a parser: the attribute header line ends with a space, and values are
    ``%2d`` fields (``-1`` / `` 1``) separated by one space. Returns the (N, 40) {-1, 1} attributes.
    Image i is a flat colour with red = 20 * i mod 256, so tests can tell images apart after the crop.
    """
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n = len(partition)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    attrs = rng.choice([-1, 1], size=(n, len(ATTRS)))
    for i, name in enumerate(names):
        img = np.zeros((218, 178, 3), np.uint8)
        img[..., 0] = (20 * i) % 256
        img[..., 1] = 100
        Image.fromarray(img).save(base / "img_align_celeba" / name, quality=95)
    # the real files: a count line, a header line (attributes / column names), then space-separated rows
    rows = [f"{nm} " + " ".join(f"{a:2d}" for a in row) for nm, row in zip(names, attrs, strict=True)]
    # the official header line ends with a space ("... Wearing_Necktie Young \n")
    (base / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(ATTRS) + " \n" + "\n".join(rows) + "\n")
    (base / "identity_CelebA.txt").write_text("".join(f"{nm} {100 + i}\n" for i, nm in enumerate(names)))
    (base / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{nm} 95 71 226 313\n" for nm in names)
    )
    (base / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x "
        "rightmouth_y\n" + "".join(f"{nm} 69 109 106 113 77 142 73 152 108 154\n" for nm in names)
    )
    (base / "list_eval_partition.txt").write_text("".join(f"{nm} {p}\n" for nm, p in zip(names, partition, strict=True)))
    return attrs


@pytest.fixture
def celeba_root(tmp_path: Path) -> tuple[Path, np.ndarray]:
    return tmp_path, write_synthetic_celeba(tmp_path)


def test_datamodule_official_splits_crop_resize_and_attributes(celeba_root):
    root, attrs = celeba_root
    # verify_md5=False: torchvision compares the list files with the MD5 sums of the official ones,
    # which synthetic files cannot match; every other check (files, layout, parsing) still runs
    dm = CelebADataModule(str(root), attributes=["Male", "Smiling"], image_size=32, crop_size=148, batch_size=3,
                          verify_md5=False, num_workers=0)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 2, 2)
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    # val images are the 5th and 6th files (partition 1): red = 20*4, 20*5 after JPEG and resizing
    assert torch.allclose(x[:, 0].mean((1, 2)), torch.tensor([80.0, 100.0]) / 255, atol=3 / 255)
    expected = (attrs[4:6][:, [ATTRS.index("Male"), ATTRS.index("Smiling")]] + 1) / 2  # {-1, 1} → {0, 1}
    assert torch.equal(y, torch.from_numpy(expected).float())
    assert dm.image_shape == (3, 32, 32) and dm.label_dim == 2


def test_train_size_and_all_attributes(celeba_root):
    root, _ = celeba_root
    dm = CelebADataModule(str(root), train_size=3, image_size=16, verify_md5=False, num_workers=0)
    dm.setup("fit")
    assert len(dm.train_set) == 3
    assert dm.train_set[0][1].shape == (40,) and dm.label_dim == 40


def test_unknown_attribute_is_named(celeba_root):
    root, _ = celeba_root
    with pytest.raises(ValueError, match="Smilling"):
        CelebAFaces(root, "train", attributes=["Smilling"], verify_md5=False)


def test_md5_mismatch_names_the_files(celeba_root):
    root, _ = celeba_root
    with pytest.raises(DatasetNotFoundError, match="list_attr_celeba.txt") as err:
        CelebAFaces(root, "train")  # verify_md5=True: synthetic files are not the official bytes
    assert "verify_md5=False" in str(err.value)


def test_missing_files_error_names_them(tmp_path: Path):
    write_synthetic_celeba(tmp_path)
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    (tmp_path / "celeba" / "identity_CelebA.txt").unlink()
    dm = CelebADataModule(str(tmp_path), verify_md5=False, num_workers=0)
    with pytest.raises(DatasetNotFoundError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "list_eval_partition.txt" in msg and "identity_CelebA.txt" in msg
    assert "list_attr_celeba.txt," not in msg.split("fix:")[0]  # present files are not listed as missing
    assert "img_align_celeba" in msg and "Google Drive" in msg


def test_empty_root_names_every_file(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as err:
        CelebAFaces(tmp_path / "nowhere", "train")
    msg = str(err.value).split("fix:")[0]
    assert all(f in msg for f in LIST_FILES) and "img_align_celeba" in msg


def test_attribute_header_with_trailing_space_gives_40_attributes(celeba_root):
    """The official header ends with a space: it used to parse as a 41st, empty attribute name, and
    every item with attributes=None raised IndexError: index 40."""
    root, attrs = celeba_root
    header = (root / "celeba" / "list_attr_celeba.txt").read_bytes().split(b"\n")[1]
    assert header.endswith(b"Young ")  # the synthetic file is byte-faithful here
    ds = CelebAFaces(root, "train", verify_md5=False)
    assert ds.attr_names == ATTRS and ds.attributes == ATTRS
    _, y = ds[3]
    assert torch.equal(y, torch.from_numpy((attrs[3] + 1) / 2).float())


def test_split_with_exactly_one_image(tmp_path: Path):
    """torchvision's split selection crashes on a one-image split ("iteration over a 0-d tensor")."""
    attrs = write_synthetic_celeba(tmp_path, partition=(0, 0, 0, 1, 2, 2))
    ds = CelebAFaces(tmp_path, "valid", verify_md5=False)
    assert len(ds) == 1 and ds.filename == ["000004.jpg"]
    _, y = ds[0]
    assert torch.equal(y, torch.from_numpy((attrs[3] + 1) / 2).float())


def test_list_files_that_disagree_are_named(celeba_root):
    root, _ = celeba_root
    path = root / "celeba" / "list_bbox_celeba.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")  # one row short
    with pytest.raises(ValueError, match="list_bbox_celeba.txt has 7 rows but .*list_eval_partition.txt lists 8"):
        CelebAFaces(root, "train", verify_md5=False)


def test_zero_batches_with_drop_last_warns(celeba_root):
    root, _ = celeba_root
    dm = CelebADataModule(str(root), image_size=16, batch_size=8, drop_last=True, verify_md5=False, num_workers=0)
    dm.setup("fit")
    with pytest.warns(UserWarning, match="train split has 4 images, fewer than batch_size=8.*zero batches"):
        loader = dm.train_dataloader()
    assert len(loader) == 0
