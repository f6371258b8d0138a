"""The file formats a film may come in besides DICOM, recognised by their names.

DICOM is recognised by its header, whatever the file is called. Other films are recognised by their
suffix (case-insensitive; ``.nii.gz`` is one suffix):

========================= ================= =====================================================
suffix                    format            read by
========================= ================= =====================================================
``.jpeg`` ``.jpg``        JPEG              Pillow (8-bit grey levels / 255)
``.png``                  PNG               Pillow (8-bit); 16-bit: MONAI ``ITKReader``
``.tif`` ``.tiff``        TIFF              Pillow (8-bit); 16-bit: MONAI ``ITKReader``
``.nii`` ``.nii.gz``      NIfTI-1/2         MONAI ``NibabelReader``
``.mha`` ``.mhd``         MetaImage         MONAI ``ITKReader``
``.nrrd`` ``.nhdr``       NRRD              MONAI ``ITKReader``
========================= ================= =====================================================

The last three are the *research* formats (:data:`VOLUME_SUFFIXES`): they carry a voxel grid with a
direction matrix, which :mod:`pneumonia_monai.transforms.volume_io` honours.
"""

from __future__ import annotations

from pathlib import Path

#: Picture suffixes (Pillow): JPEG, PNG and TIFF.
PICTURE_SUFFIXES: frozenset[str] = frozenset({".jpeg", ".jpg", ".png", ".tif", ".tiff"})
#: Research (voxel grid) suffixes -> format name.
VOLUME_FORMATS: dict[str, str] = {
    ".nii": "NIfTI",
    ".nii.gz": "NIfTI",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
}
#: Research (voxel grid) suffixes.
VOLUME_SUFFIXES: frozenset[str] = frozenset(VOLUME_FORMATS)
#: Every suffix a film that is not DICOM may have.
FILM_SUFFIXES: frozenset[str] = PICTURE_SUFFIXES | VOLUME_SUFFIXES
_DOUBLE_SUFFIXES = (".nii.gz",)


def film_suffix(path: str | Path) -> str:
    """The lower-case suffix of a film's name, ``.nii.gz`` as one (``""`` where it has none)."""
    name = Path(path).name.lower()
    for double in _DOUBLE_SUFFIXES:
        if name.endswith(double) and len(name) > len(double):
            return double
    return Path(name).suffix


def film_stem(path: str | Path) -> str:
    """A film's name without its suffix (``person1_virus_2.nii.gz`` -> ``person1_virus_2``)."""
    name = Path(path).name
    suffix = film_suffix(path)
    return name[: len(name) - len(suffix)] if suffix else name


def is_film_name(path: str | Path) -> bool:
    """Whether a file's name says it is a film of a format other than DICOM (:data:`FILM_SUFFIXES`)."""
    return film_suffix(path) in FILM_SUFFIXES


def format_name(path: str | Path) -> str:
    """The format a film's suffix names (``"NIfTI"``, ``"PNG"`` ...), or ``""`` for another suffix."""
    suffix = film_suffix(path)
    if suffix in VOLUME_FORMATS:
        return VOLUME_FORMATS[suffix]
    if suffix in PICTURE_SUFFIXES:
        return {".jpg": "JPEG", ".tif": "TIFF"}.get(suffix, suffix.lstrip(".").upper())
    return ""


#: Suffixes of the voxel data file a detached MetaImage header (``.mhd``) points to.
METAIMAGE_DATA_SUFFIXES: frozenset[str] = frozenset({".raw", ".zraw"})


def metaimage_header_of(path: str | Path) -> Path | None:
    """The ``.mhd`` header beside a MetaImage voxel data file of the same name, or None.

    ``film.raw`` (or ``film.zraw``) next to ``film.mhd`` is that film's voxel data: it is read through
    the header, never as a film of its own.
    """
    path = Path(path)
    if film_suffix(path) not in METAIMAGE_DATA_SUFFIXES:
        return None
    for suffix in (".mhd", ".MHD"):
        header = path.with_name(film_stem(path) + suffix)
        if header.is_file():
            return header
    return None
