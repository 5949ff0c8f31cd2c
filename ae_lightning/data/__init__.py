"""DataModules and torchvision-style datasets; each runs offline on embedded real samples."""

from ae_lightning.data.celeba import CelebADataModule, CelebAFaces
from ae_lightning.data.codes import MNISTCodesDataModule
from ae_lightning.data.files import DatasetNotFoundError
from ae_lightning.data.mnist import MNISTDataModule
from ae_lightning.data.pose import PoseDataModule, SyntheticPoseDataset
from ae_lightning.data.streaming import StreamingImageDataModule
from ae_lightning.data.utkface import UTKFaceDataModule, UTKFaceDataset
from ae_lightning.data.xray import XRayDataModule, XRayDataset

__all__ = [
    "CelebADataModule",
    "CelebAFaces",
    "DatasetNotFoundError",
    "MNISTCodesDataModule",
    "MNISTDataModule",
    "PoseDataModule",
    "StreamingImageDataModule",
    "SyntheticPoseDataset",
    "UTKFaceDataModule",
    "UTKFaceDataset",
    "XRayDataModule",
    "XRayDataset",
]
