"""MONAI transforms shared by the bundle's training, evaluation and inference configs."""

from pneumonia_monai.transforms.augment import RandBorderd, RandJpegd, RandRescaled, RandWindowd
from pneumonia_monai.transforms.io import ImageLoadError, LoadChestXRay, LoadChestXRayd, load_film
from pneumonia_monai.transforms.lung_crop import (
    LungFieldCrop,
    LungFieldCropd,
    RandLungFieldCropd,
    find_lung_box,
    locate_crop,
    strip_uniform_border,
)
from pneumonia_monai.transforms.pipeline import ChestXRayPreprocessd, training_chain
from pneumonia_monai.transforms.temperature import TemperatureScaled

__all__ = [
    "ChestXRayPreprocessd",
    "ImageLoadError",
    "LoadChestXRay",
    "LoadChestXRayd",
    "LungFieldCrop",
    "LungFieldCropd",
    "RandBorderd",
    "RandJpegd",
    "RandLungFieldCropd",
    "RandRescaled",
    "RandWindowd",
    "TemperatureScaled",
    "find_lung_box",
    "load_film",
    "locate_crop",
    "strip_uniform_border",
    "training_chain",
]
