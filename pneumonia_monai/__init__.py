"""pneumonia_monai: a DICOM-aware chest X-ray pneumonia classifier built on MONAI."""

from __future__ import annotations

__version__ = "0.3.1"

__all__ = ["__version__"]
