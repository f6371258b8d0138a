"""A pydicom 3 decoder plugin through imagecodecs: 12-bit JPEG Extended, JPEG 2000 and JPEG-LS.

Two reasons to have it:

- **12-bit JPEG Extended** (1.2.840.10008.1.2.4.51), which older CR archives hold: pydicom's licence-safe
  decoders cannot read it (Pillow reads 8-bit JPEG only, and pydicom 3.0's gdcm plugin refuses 12-bit
  process 4 data); the only pydicom plugin that can, pylibjpeg-libjpeg, is GPL-3.0. imagecodecs
  (BSD-3-Clause) wraps libjpeg-turbo 3, which decodes 8- and 12-bit precision.
- **Speed under threads** for grayscale JPEG 2000 (OpenJPEG) and JPEG-LS (CharLS): imagecodecs releases
  the GIL while it decodes, where pylibjpeg-openjpeg, pyjpegls and python-gdcm hold it, so the decoding
  threads of ``pneumonia-monai infer`` run side by side only with this plugin (measured on 2,000 x 2,000
  12-bit films with two threads on two cores: JPEG 2000 lossless 179 -> 102 ms per film, JPEG-LS
  92 -> 44 ms; with pylibjpeg-openjpeg, 185 -> 177 ms). The output is the same codec library's, so
  the same samples (tests compare it with the other plugins).

Colour data is left to the other plugins (``NotImplementedError`` makes pydicom try the next one).
The module follows pydicom's decoder plugin contract (``DECODER_DEPENDENCIES``, ``is_available(uid)``,
a ``_decode_frame(src, runner)`` function) and is registered by
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

_JPEG2000 = (uid.JPEG2000Lossless, uid.JPEG2000)
_JPEGLS = (uid.JPEGLSLossless, uid.JPEGLSNearLossless)

DECODER_DEPENDENCIES = {
    syntax: ("numpy", "imagecodecs") for syntax in (uid.JPEGExtended12Bit, *_JPEG2000, *_JPEGLS)
}


def is_available(uid_: str) -> bool:
    """Return ``True`` where imagecodecs, with the codec ``uid_`` needs, can decode ``uid_``."""
    if uid_ not in DECODER_DEPENDENCIES or importlib.util.find_spec("imagecodecs") is None:
        return False
    import imagecodecs

    if uid_ in _JPEG2000:
        return bool(imagecodecs.JPEG2K.available)
    if uid_ in _JPEGLS:
        return bool(imagecodecs.JPEGLS.available)
    return bool(imagecodecs.JPEG8.available)


def _container_bytes(precision: int) -> int:
    """Bytes per sample that the decoded frame is handed back in, as pydicom expects for ``precision``."""
    if not 0 < precision <= 16:
        raise NotImplementedError(f"the imagecodecs plugin decodes up to 16-bit samples, not {precision}")
    return 1 if precision <= 8 else 2


def _decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """Return the decoded samples of one grayscale frame, little endian.

    Raises:
        NotImplementedError: for colour data or samples over 16 bits (left to the other plugins).
    """
    import imagecodecs
    import numpy as np

    if runner.samples_per_pixel != 1:
        raise NotImplementedError("the imagecodecs plugin decodes grayscale frames only")
    syntax = runner.transfer_syntax
    if syntax in _JPEG2000:
        arr = imagecodecs.jpeg2k_decode(src, numthreads=1)
        # As for pylibjpeg-openjpeg: the container follows the codestream's precision, and pydicom
        # corrects a signedness that differs from Pixel Representation afterwards.
        itemsize = _container_bytes(int(runner.get_option("j2k_precision", runner.bits_stored)))
    elif syntax in _JPEGLS:
        arr = imagecodecs.jpegls_decode(src)
        itemsize = _container_bytes(int(runner.get_option("jls_precision", runner.bits_stored)))
    else:
        arr = imagecodecs.jpeg8_decode(src)
        itemsize = 1 if runner.bits_allocated == 8 else 2
    if arr.ndim != 2:
        raise NotImplementedError(f"the imagecodecs plugin expected one grayscale plane, got {arr.shape}")
    runner.set_option("bits_allocated", 8 * itemsize)
    kind = "i" if arr.dtype.kind == "i" else "u"
    return np.ascontiguousarray(arr).astype(f"<{kind}{itemsize}", copy=False).tobytes()
