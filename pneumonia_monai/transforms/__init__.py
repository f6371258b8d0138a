"""MONAI transforms shared by the bundle's training, evaluation and inference configs."""

from pneumonia_monai.transforms.io import ImageLoadError, LoadChestXRay, LoadChestXRayd, load_film
from pneumonia_monai.transforms.lung_crop import LungFieldCrop, LungFieldCropd, find_lung_box
from pneumonia_monai.transforms.pipeline import ChestXRayPreprocessd

__all__ = [
    "ChestXRayPreprocessd",
    "ImageLoadError",
    "LoadChestXRay",
    "LoadChestXRayd",
    "LungFieldCrop",
    "LungFieldCropd",
    "find_lung_box",
    "load_film",
]
