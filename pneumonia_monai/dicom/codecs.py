"""Which transfer syntaxes of CR/DX archives this install can decode, by pydicom 3's decoder registry.

The project depends on licence-safe decoders only: python-gdcm (BSD), pylibjpeg (MIT) with its
openjpeg (BSD/MIT) and rle (MIT) plugins, pyjpegls (MIT, CharLS BSD) and Pillow (MIT-CMU), next to
pydicom's own native and RLE decoders. The GPL-3.0 ``pylibjpeg-libjpeg`` is not required: pydicom's
``pylibjpeg`` plugin for the JPEG and JPEG-LS syntaxes runs on it, so for those syntaxes that plugin is
not counted here (:func:`check_decoders` leaves it out unless asked, :func:`missing_decoders` never
counts it), and :func:`gpl_libjpeg_installed` says whether it is present anyway.
"""

from __future__ import annotations

import importlib.util
import logging

from pydicom import uid
from pydicom.pixels import get_decoder

logger = logging.getLogger(__name__)

#: Transfer syntaxes common in CR/DX archives: UID -> name.
TRANSFER_SYNTAXES: dict[str, str] = {
    uid.ImplicitVRLittleEndian: "Implicit VR Little Endian",
    uid.ExplicitVRLittleEndian: "Explicit VR Little Endian",
    uid.ExplicitVRBigEndian: "Explicit VR Big Endian (retired)",
    uid.DeflatedExplicitVRLittleEndian: "Deflated Explicit VR Little Endian",
    uid.JPEGBaseline8Bit: "JPEG Baseline (process 1)",
    uid.JPEGExtended12Bit: "JPEG Extended (process 2 & 4)",
    uid.JPEGLossless: "JPEG Lossless (process 14)",
    uid.JPEGLosslessSV1: "JPEG Lossless SV1 (process 14, selection value 1)",
    uid.JPEGLSLossless: "JPEG-LS Lossless",
    uid.JPEGLSNearLossless: "JPEG-LS Near-Lossless",
    uid.JPEG2000Lossless: "JPEG 2000 Lossless",
    uid.JPEG2000: "JPEG 2000 (lossy)",
    uid.RLELossless: "RLE Lossless",
}

#: Licence-safe packages that decode each encapsulated syntax (any one of them is enough).
INSTALL_HINTS: dict[str, str] = {
    uid.JPEGBaseline8Bit: "python-gdcm or pillow",
    uid.JPEGExtended12Bit: "imagecodecs (12-bit), python-gdcm or pillow (8-bit)",
    uid.JPEGLossless: "python-gdcm",
    uid.JPEGLosslessSV1: "python-gdcm",
    uid.JPEGLSLossless: "pyjpegls or python-gdcm",
    uid.JPEGLSNearLossless: "pyjpegls or python-gdcm",
    uid.JPEG2000Lossless: "pylibjpeg + pylibjpeg-openjpeg, python-gdcm or pillow",
    uid.JPEG2000: "pylibjpeg + pylibjpeg-openjpeg, python-gdcm or pillow",
    uid.RLELossless: "pylibjpeg + pylibjpeg-rle (pydicom's own RLE decoder needs only numpy)",
}

#: Why 12-bit JPEG Extended can fail (pydicom 3.0's gdcm plugin refuses 12-bit process 4 data,
#: python-gdcm wheels lack the 12-bit IJG codec, Pillow reads 8-bit JPEG only): this package's
#: imagecodecs plugin is the licence-safe decoder for it.
JPEG_EXTENDED_12BIT_NOTE = (
    "12-bit JPEG Extended is decoded by the imagecodecs plugin (python-gdcm and Pillow decode 8-bit "
    "samples only); install imagecodecs"
)

#: Name given to pydicom's built-in decoding of native (uncompressed, or deflated) pixel data.
NATIVE_PLUGIN = "pydicom"

#: (syntax, pydicom plugin) pairs that only work through the GPL-3.0 pylibjpeg-libjpeg.
GPL_PLUGINS: frozenset[tuple[str, str]] = frozenset(
    (syntax, "pylibjpeg")
    for syntax in (
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
    )
)

#: Plugins tried first where several licence-safe ones decode a syntax (pydicom's own order is by
#: registration, not speed). Measured on 2,000 x 2,000 12-bit films, one core: JPEG-LS 82 ms with
#: imagecodecs and 81 ms with pyjpegls (CharLS both) against 167 ms with python-gdcm; JPEG 2000 lossless
#: 154 ms with imagecodecs, 178 ms with pylibjpeg-openjpeg, 196 ms with gdcm, 226 ms with Pillow; RLE
#: 14 ms with pylibjpeg-rle against 136 ms with pydicom's numpy decoder. imagecodecs comes first for
#: JPEG 2000 and JPEG-LS because it also releases the GIL, so decoding threads run in parallel (see
#: :mod:`pneumonia_monai.dicom.imagecodecs_plugin`). When the preferred plugins fail (colour data,
#: say), pydicom's own order is tried.
PREFERRED_PLUGINS: dict[str, tuple[str, ...]] = {
    uid.JPEGLSLossless: ("imagecodecs", "pyjpegls"),
    uid.JPEGLSNearLossless: ("imagecodecs", "pyjpegls"),
    uid.JPEG2000Lossless: ("imagecodecs", "pylibjpeg"),
    uid.JPEG2000: ("imagecodecs", "pylibjpeg"),
    uid.RLELossless: ("pylibjpeg",),
}

_EXTRA_DECODERS_REGISTERED = False


def register_extra_decoders() -> None:
    """Add this package's decoder plugins to pydicom's registry (once; idempotent).

    Today one: :mod:`pneumonia_monai.dicom.imagecodecs_plugin`, for 12-bit JPEG Extended (which no
    other licence-safe pydicom plugin decodes), JPEG 2000 and JPEG-LS. It is registered last, so
    pydicom's own order is unchanged; :data:`PREFERRED_PLUGINS` says which plugin is tried first.
    """
    global _EXTRA_DECODERS_REGISTERED
    if _EXTRA_DECODERS_REGISTERED:
        return
    from pneumonia_monai.dicom import imagecodecs_plugin

    for syntax in imagecodecs_plugin.DECODER_DEPENDENCIES:
        decoder = get_decoder(syntax)
        if imagecodecs_plugin.PLUGIN_LABEL not in decoder.available_plugins:
            decoder.add_plugin(
                imagecodecs_plugin.PLUGIN_LABEL, (imagecodecs_plugin.__name__, "_decode_frame")
            )
    _EXTRA_DECODERS_REGISTERED = True


def syntax_label(syntax: str) -> str:
    """Return ``"name (UID)"`` for a transfer syntax, the project's name where it has one."""
    known = uid.UID(str(syntax))
    name = TRANSFER_SYNTAXES.get(str(syntax)) or (known.name if known.is_transfer_syntax else "")
    return f"{name or 'unknown transfer syntax'} ({syntax})"


def install_hint(syntax: str) -> str:
    """Return which licence-safe package(s) decode ``syntax``, as a phrase for messages."""
    return INSTALL_HINTS.get(str(syntax), "no licence-safe decoder is known for it")


def available_plugins(syntax: str, include_gpl: bool = False) -> list[str]:
    """Return the pydicom decoder plugins that can decode ``syntax`` in this install.

    Native syntaxes (including deflated) are decoded by pydicom itself: ``["pydicom"]``. For the JPEG
    and JPEG-LS syntaxes the ``pylibjpeg`` plugin is left out unless ``include_gpl`` (it runs on the
    GPL-3.0 pylibjpeg-libjpeg).

    Raises:
        NotImplementedError: if pydicom has no decoder for ``syntax`` at all.
    """
    register_extra_decoders()
    decoder = get_decoder(syntax)
    if not decoder.is_encapsulated:
        return [NATIVE_PLUGIN]
    return [
        name for name in decoder.available_plugins if include_gpl or (str(syntax), name) not in GPL_PLUGINS
    ]


def preferred_plugin(syntax: str) -> str | None:
    """Return the fastest licence-safe plugin installed for ``syntax`` (:data:`PREFERRED_PLUGINS`), if any."""
    wanted = PREFERRED_PLUGINS.get(str(syntax), ())
    if not wanted:
        return None
    installed = available_plugins(syntax)
    return next((name for name in wanted if name in installed), None)


def check_decoders(include_gpl: bool = False) -> dict[str, list[str]]:
    """Return ``{transfer syntax UID: [available decoder plugin names]}`` for :data:`TRANSFER_SYNTAXES`.

    Read from pydicom 3's ``pydicom.pixels.decoders`` registry (``get_decoder(uid).available_plugins``);
    licence-safe plugins only unless ``include_gpl``.
    """
    return {syntax: available_plugins(syntax, include_gpl) for syntax in TRANSFER_SYNTAXES}


def missing_decoders() -> list[str]:
    """Return the UIDs of :data:`TRANSFER_SYNTAXES` that no licence-safe plugin can decode."""
    return [syntax for syntax, plugins in check_decoders().items() if not plugins]


def gpl_libjpeg_installed() -> bool:
    """Return whether the GPL-3.0 ``pylibjpeg-libjpeg`` (module ``libjpeg``) is importable."""
    return importlib.util.find_spec("libjpeg") is not None


def log_missing_decoders() -> None:
    """Log a warning naming the transfer syntaxes this install cannot decode (batch commands call it)."""
    missing = missing_decoders()
    if not missing:
        logger.debug("decoders available for all %d transfer syntaxes", len(TRANSFER_SYNTAXES))
        return
    logger.warning(
        "no decoder for %d transfer syntax(es); their files will be reported as errors: %s",
        len(missing),
        "; ".join(f"{syntax_label(s)} - install {install_hint(s)}" for s in missing),
    )
