"""A pydicom 3 decoder plugin for 12-bit JPEG Extended (process 4), through imagecodecs.

pydicom's licence-safe decoders cannot read 12-bit JPEG Extended (1.2.840.10008.1.2.4.51), which older
CR archives hold: Pillow reads 8-bit JPEG only, and pydicom 3.0's gdcm plugin refuses 12-bit process 4
data. The only pydicom plugin that can, pylibjpeg-libjpeg, is GPL-3.0. imagecodecs (BSD-3-Clause)
wraps libjpeg-turbo 3, which decodes 8- and 12-bit precision; this module is the plugin that hands
it the frames. It follows pydicom's decoder plugin contract (``DECODER_DEPENDENCIES``,
``is_available(uid)``, a ``_decode_frame(src, runner)`` function) and is registered by
:func:`pneumonia_monai.dicom.codecs.register_extra_decoders`.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from pydicom import uid

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.pixels.decoders.base import DecodeRunner

#: Plugin label in pydicom's decoder registry.
PLUGIN_LABEL = "imagecodecs"

DECODER_DEPENDENCIES = {uid.JPEGExtended12Bit: ("numpy", "imagecodecs")}


def is_available(uid_: str) -> bool:
    """Return ``True`` where imagecodecs, with its libjpeg-turbo codec, can decode ``uid_``."""
    if uid_ not in DECODER_DEPENDENCIES or importlib.util.find_spec("imagecodecs") is None:
        return False
    import imagecodecs

    return bool(imagecodecs.JPEG8.available)


def _decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """Return the decoded samples of one grayscale JPEG Extended frame, little endian.

    Raises:
        NotImplementedError: for colour data (left to the other plugins).
    """
    import imagecodecs
    import numpy as np

    if runner.samples_per_pixel != 1:
        raise NotImplementedError("the imagecodecs plugin decodes grayscale JPEG Extended only")
    arr = imagecodecs.jpeg8_decode(src)
    dtype = "<u1" if runner.bits_allocated == 8 else "<u2"
    return np.ascontiguousarray(arr, dtype=dtype).tobytes()
