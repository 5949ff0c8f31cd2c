"""The one data lookup order every DataModule (and so the CLI, the benchmarks and predict) follows."""

from __future__ import annotations

import numpy as np
import pytest

from ae_lightning.data import MNISTDataModule, XRayDataModule, locate
from ae_lightning.data.mnist import EMBEDDED_DIGITS


def test_order_passed_env_local_download_embedded(tmp_path, monkeypatch):
    monkeypatch.setattr(locate, "LOCAL", tmp_path / "data")
    assert locate.locate("mnist") == locate.Located(None, "embedded")
    assert locate.locate("mnist", download=True) == locate.Located(tmp_path / "data" / "mnist",
                                                                   f"download into {tmp_path / 'data' / 'mnist'}")
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    assert locate.locate("mnist").root == tmp_path / "data" / "mnist"
    monkeypatch.setenv("AE_MNIST_ROOT", str(tmp_path / "env"))
    assert locate.locate("mnist") == locate.Located(tmp_path / "env", "$AE_MNIST_ROOT")
    assert locate.locate("mnist", tmp_path / "mine").rule == "passed"
    assert locate.locate("xray", [tmp_path / "a", tmp_path / "b"]).root == [tmp_path / "a", tmp_path / "b"]
    assert locate.locate("xray").root is None  # the other family's variable is its own
    with pytest.raises(ValueError, match="unknown dataset family"):
        locate.locate("cifar")


def test_mnist_datamodule_reads_the_environment_variable(mnist_root, monkeypatch):
    monkeypatch.setenv("AE_MNIST_ROOT", str(mnist_root))
    dm = MNISTDataModule(batch_size=8)
    dm.setup("fit")
    assert str(mnist_root) in dm.source and "full MNIST" in dm.source
    monkeypatch.delenv("AE_MNIST_ROOT")
    dm = MNISTDataModule(batch_size=8)
    dm.setup("fit")
    assert dm.source == EMBEDDED_DIGITS and len(dm.train_set) == 7000  # the whole embedded 10k test set, 70 %


def test_missing_env_root_names_the_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("AE_MNIST_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(Exception, match=r"nowhere \(\$AE_MNIST_ROOT\) does not exist"):
        MNISTDataModule().setup("fit")


def test_xray_datamodule_reads_the_environment_variable(tmp_path, monkeypatch):
    images = (np.random.default_rng(0).random((30, 64, 64)) * 255).astype(np.uint8)
    np.savez(tmp_path / "x.npz", images=images)
    monkeypatch.setenv("AE_XRAY_ROOT", str(tmp_path / "x.npz"))
    dm = XRayDataModule(batch_size=4)
    dm.setup("fit")
    assert "$AE_XRAY_ROOT" in dm.source and len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 30
    monkeypatch.delenv("AE_XRAY_ROOT")
    dm = XRayDataModule(batch_size=4)
    dm.setup("fit")
    assert dm.source.startswith("the embedded chest X-rays")


def test_predict_split_error_names_predict_root(tmp_path):
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.full((80, 80), 100 + i, np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(ValueError, match="predict_root"):
        XRayDataModule(root=str(tmp_path)).setup("fit")

