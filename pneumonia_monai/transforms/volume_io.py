"""Research films: NIfTI, MetaImage and NRRD through MONAI's ``LoadImage`` readers, shown as a frontal film.

Research groups keep chest films as NIfTI (``.nii``, ``.nii.gz``; MONAI ``NibabelReader``), MetaImage
(``.mha``, ``.mhd``) or NRRD (``.nrrd``, ``.nhdr``; MONAI ``ITKReader``). These formats store a voxel
grid and its affine (a direction matrix, spacing and origin) instead of rows and columns; this module
turns such a file into the ``(rows, columns)`` display array every other film gives
(:func:`pneumonia_monai.transforms.io.load_film`), under three rules:

**Shape.** A film is one 2-D image: a 2-D file, or a 3-D one with a single slice (any of its axes may
be the one of size 1), with one grey value per voxel. A volume of more than one slice, a 4-D file (more
than one time point or volume) and a file of vectors or colours are refused, each with a reason that
says so (:meth:`VolumeHeader.problem`); its size is checked against the pixel budget from the header,
before any voxel is read.

**Orientation** (:class:`FilmGrid`). The affine is honoured, so a film stored mirrored or transposed is
shown unmirrored: the display array is the film as 3D Slicer shows it in the view of its plane, in
radiological convention (the patient faces the viewer):

- a coronal film (the single slice's normal runs anterior-posterior): columns run towards the patient's
  left, rows towards the feet, as a PA chest film is read (DICOM Patient Orientation ``L`` ``F``);
- a film whose header puts it in the axial plane, which is what a 2-D file with an identity direction
  says (MetaImage, NRRD or a 16-bit PNG read by ITK): columns towards the left, rows towards the back,
  so that a 2-D image with the identity direction is shown exactly as stored, row 0 at the top;
- a sagittal one: columns towards the back, rows towards the feet.

Each voxel axis is matched to the world axis it is closest to (:func:`nibabel.orientations.io_orientation`,
as MONAI's ``Orientation`` does), so an oblique affine is read as its nearest orientation. The grid is
kept, so that masks and heatmaps computed on the display array are written back onto the file's own
voxel grid and affine (:meth:`FilmGrid.from_display`), where they overlay the film in Slicer.

**Intensity** (:func:`display_intensities`, :data:`INTENSITY_RULE`). These formats carry no VOI LUT and
no photometric interpretation; air is taken to be dark (low values). The same rule scales every film
that is not DICOM and not 8-bit, the 16-bit PNG and TIFF films of :func:`~.io.load_raster` included:

1. a NIfTI file's own display range (``cal_min`` < ``cal_max``), where it states one, maps to [0, 1]
   (clipped), as a DICOM window does;
2. otherwise values of at least 0 are divided by ``2**b - 1``, ``b`` the smallest even bit depth of at
   least 8 that holds the largest value: 8-bit data by 255 (as a JPEG), 12-bit data stored in 16-bit
   words by 4,095 (as DICOM's Bits Stored would), full 16-bit data by 65,535. Floating-point data already
   within [0, 1] is taken as it is;
3. data with negative values is scaled from its minimum to its maximum.

The film is never cast to 8 bits and never scaled by robust percentiles (which would move with the
content): the same stored values always give the same display values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumonia_monai.formats import VOLUME_FORMATS, film_suffix
from pneumonia_monai.transforms.io import ImageLoadError

logger = logging.getLogger(__name__)

#: The intensity rule of films without a VOI (research formats, 16-bit pictures), in one line.
INTENSITY_RULE = (
    "NIfTI cal_min..cal_max when set; else values >= 0 divided by 2**b - 1 (b the smallest even bit depth "
    ">= 8 holding the maximum; float data in [0, 1] as is); data with negative values from min to max"
)
#: Bit depths are taken in steps of this many bits (detectors store 8, 10, 12, 14 or 16 bits).
_BIT_STEP = 2
#: World axes of the RAS+ frame (nibabel and MONAI): 0 = x (towards the Right), 1 = y (Anterior),
#: 2 = z (Superior). For the world axis of a film's normal: the world axes (and directions, -1 = towards
#: Left, Posterior, Inferior) along which the display rows and columns run.
_DISPLAY_AXES: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {
    1: ((2, -1), (0, -1)),  # coronal: rows to the feet, columns to the patient's left
    2: ((1, -1), (0, -1)),  # axial (a 2-D image): rows to the back, columns to the left
    0: ((2, -1), (1, -1)),  # sagittal: rows to the feet, columns to the back
}
_PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}


def is_volume_film(path: str | Path) -> bool:
    """Whether a file's name says it is a NIfTI, MetaImage or NRRD film (:data:`VOLUME_FORMATS`)."""
    return film_suffix(path) in VOLUME_FORMATS


# ------------------------------------------------------------------------------------------- header


@dataclass(frozen=True)
class VolumeHeader:
    """What a research file's header says, read without its voxels.

    Attributes:
        format: ``"NIfTI"``, ``"MetaImage"`` or ``"NRRD"``.
        shape: the voxel grid's size along each of the file's axes, as stored (NIfTI's ``dim``, ITK's
            image size).
        components: values per voxel (1 for a grey film).
        itemsize: bytes per value.
    """

    format: str
    shape: tuple[int, ...]
    components: int
    itemsize: int

    @property
    def film_shape(self) -> tuple[int, int]:
        """The two axes of more than one voxel, as stored (after :meth:`problem` said nothing)."""
        sizes = [n for n in self.shape[:3] if n > 1]
        return (sizes[0], sizes[1]) if len(sizes) == 2 else (0, 0)

    def describe(self) -> str:
        """The shape in words, e.g. ``"224 x 224 x 1"``."""
        return " x ".join(str(n) for n in self.shape)

    def problem(self) -> str | None:
        """Why the file is not one 2-D grey film, or None when it is one."""
        extra = [n for n in self.shape[3:] if n != 1]
        if extra:
            return (
                f"{len(self.shape)}-D {self.format} image ({self.describe()} voxels): a chest film is one "
                "2-D image, not a series of volumes"
            )
        spatial = self.shape[:3]
        if len(spatial) < 2 or min(spatial) < 1:
            return f"{self.format} image of {self.describe()} voxels: not a 2-D film"
        if len(spatial) == 3 and min(spatial) > 1:
            return (
                f"3-D {self.format} volume of {self.describe()} voxels ({min(spatial)} slices or more): a "
                "chest film has one slice"
            )
        if sum(1 for n in spatial if n > 1) < 2:
            return f"{self.format} image of {self.describe()} voxels: not a 2-D film"
        if self.components != 1:
            return (
                f"{self.format} image of {self.components} values per voxel (vector or colour): a chest "
                "film has one grey value per pixel"
            )
        return None


def read_header(path: str | Path) -> VolumeHeader:
    """Read a NIfTI, MetaImage or NRRD header (the voxels are not read).

    Raises:
        ImageLoadError: if the file is not one of these or its header cannot be read.
    """
    path = Path(path)
    fmt = VOLUME_FORMATS.get(film_suffix(path))
    if fmt is None:
        raise ImageLoadError(f"not a NIfTI, MetaImage or NRRD file name: {path.name}")
    if fmt == "NIfTI":
        import nibabel as nib

        try:
            img = nib.load(path)  # lazy: the header only
            if not isinstance(img, nib.Nifti1Image):  # a Nifti2Image is one too
                raise TypeError(f"nibabel read it as {type(img).__name__}, not as a NIfTI-1/2 image")
            dtype = np.dtype(img.get_data_dtype())
            shape = tuple(int(n) for n in img.header.get_data_shape())
        except FileNotFoundError:
            raise ImageLoadError(f"file not found: {path}") from None
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a broken header
            raise ImageLoadError(f"unreadable NIfTI header ({type(exc).__name__}: {exc})") from None
        components = len(dtype.fields) if dtype.fields else 1
        itemsize = dtype.itemsize // components if dtype.fields else dtype.itemsize
        return VolumeHeader(fmt, shape, components, itemsize)
    import itk

    if not path.is_file():
        raise ImageLoadError(f"file not found: {path}")
    image_io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
    if image_io is None:
        raise ImageLoadError(f"not a readable {fmt} file (ITK has no reader that takes it)")
    try:
        image_io.SetFileName(str(path))
        image_io.ReadImageInformation()
    except RuntimeError as exc:  # ITK's exceptions reach Python as RuntimeError
        text = " ".join(str(exc).split())[:300]
        raise ImageLoadError(f"unreadable {fmt} header ({text})") from None
    ndim = int(image_io.GetNumberOfDimensions())
    # ITK lists sizes fastest axis first (x, y, z); the grid is the same either way round.
    shape = tuple(int(image_io.GetDimensions(i)) for i in range(ndim))
    return VolumeHeader(
        fmt, shape, int(image_io.GetNumberOfComponents()), max(1, int(image_io.GetComponentSize()))
    )


def check_header(path: str | Path) -> VolumeHeader:
    """Read a research file's header and check that it is one 2-D film within the pixel budget.

    Raises:
        ImageLoadError: if the header cannot be read, the file is not one 2-D grey film (the message is
            :meth:`VolumeHeader.problem`) or it is over the pixel budget.
    """
    header = read_header(path)
    problem = header.problem()
    if problem is not None:
        raise ImageLoadError(problem)
    _check_size(header)
    return header


def _check_size(header: VolumeHeader) -> None:
    """Refuse a film over the pixel budget (:func:`pneumonia_monai.dicom.limits.check_decoded_size`)."""
    from pneumonia_monai.dicom import limits

    rows, cols = header.film_shape
    try:
        limits.check_decoded_size(
            rows, cols, bits_allocated=8 * header.itemsize, source=f"{header.format} header"
        )
    except limits.SizeLimitError as exc:
        raise ImageLoadError(f"{exc}; not decoded") from None


def film_decision(path: str | Path) -> tuple[str, str]:
    """Triage a research file from its header: ``("selected" | "skipped" | "error", reason)``.

    A file that is not one 2-D grey film (more slices, 4-D, vectors) is ``skipped`` with
    :meth:`VolumeHeader.problem`; an unreadable header, or one over the pixel budget, is an ``error``.
    """
    try:
        header = read_header(path)
    except ImageLoadError as exc:
        return "error", str(exc)
    problem = header.problem()
    if problem is not None:
        return "skipped", problem
    try:
        _check_size(header)
    except ImageLoadError as exc:
        return "error", str(exc)
    return "selected", f"{header.format} film of {header.describe()} voxels, taken as a frontal chest film"


# ---------------------------------------------------------------------------------------- intensity


def display_intensities(data: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Scale a film without a VOI to display intensities in [0, 1] (:data:`INTENSITY_RULE`).

    Args:
        data: the stored values (any real dtype, any shape).
        window: a display range the file states (NIfTI ``cal_min``, ``cal_max``), or None.

    Returns:
        float32 array of ``data``'s shape in [0, 1].

    Raises:
        ImageLoadError: if ``data`` is not real, empty, or not finite.
    """
    array = np.asarray(data)
    if array.size == 0:
        raise ImageLoadError("the film has no pixels")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageLoadError(f"unsupported pixel type {array.dtype} (expected grey integers or floats)")
    values = array.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ImageLoadError("the film has values that are not finite (NaN or infinity)")
    if window is not None and float(window[1]) > float(window[0]):
        lo, hi = float(window[0]), float(window[1])
    elif low >= 0.0:
        if np.issubdtype(array.dtype, np.floating) and high <= 1.0:
            return values
        bits = max(8, int(np.ceil(high)).bit_length())
        bits += -bits % _BIT_STEP
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = low, high
        logger.debug("film with negative values: scaled from its minimum to its maximum")
    if hi <= lo:
        return np.zeros_like(values)
    values -= lo
    values /= hi - lo
    np.clip(values, 0.0, 1.0, out=values)
    return values


# ---------------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class FilmGrid:
    """A film's voxel grid in its file, and how the display array lies in it.

    Attributes:
        shape: the grid's size along its three axes (a 2-D grid has a third axis of one voxel).
        affine: the 4 x 4 RAS+ affine of the grid (voxel indices to millimetres, nibabel's convention).
        axes: the grid axes that become the display rows, columns and (single) slice.
        flips: whether the display reverses each of those three.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def from_affine(cls, shape: tuple[int, ...], affine: np.ndarray) -> FilmGrid:
        """The grid of a 2-D or single-slice 3-D array and its RAS+ affine (3 x 3 for 2-D, 4 x 4).

        Raises:
            ImageLoadError: if the shape is not one of a film or the affine is degenerate.
        """
        from nibabel.orientations import io_orientation

        affine = np.asarray(affine, dtype=np.float64)
        shape = tuple(int(n) for n in shape)
        if len(shape) == 2:
            shape = (*shape, 1)
        if affine.shape == (3, 3):  # a 2-D grid: the third axis is the world's z, 1 mm
            full = np.eye(4)
            full[:2, :2], full[:2, 3] = affine[:2, :2], affine[:2, 2]
            affine = full
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ImageLoadError(f"unusable affine of shape {affine.shape} (expected a finite 4 x 4)")
        singles = [axis for axis, n in enumerate(shape) if n == 1]
        if len(shape) != 3 or len(singles) != 1:
            raise ImageLoadError(f"a grid of {shape} voxels is not one 2-D film")
        ornt = io_orientation(affine)
        if np.any(np.isnan(ornt)):
            raise ImageLoadError("the affine does not span three directions (degenerate direction matrix)")
        slice_axis = singles[0]
        normal = int(ornt[slice_axis, 0])
        (row_world, row_sign), (col_world, col_sign) = _DISPLAY_AXES[normal]
        world_to_axis = {int(ornt[axis, 0]): axis for axis in range(3)}
        row_axis, col_axis = world_to_axis[row_world], world_to_axis[col_world]
        flips = (int(ornt[row_axis, 1]) != row_sign, int(ornt[col_axis, 1]) != col_sign, False)
        grid = cls((shape[0], shape[1], shape[2]), affine, (row_axis, col_axis, slice_axis), flips)
        if grid.axes != (0, 1, 2) or any(flips):
            logger.debug(
                "%s film: display rows from grid axis %d%s, columns from axis %d%s",
                _PLANES[normal],
                row_axis,
                " reversed" if flips[0] else "",
                col_axis,
                " reversed" if flips[1] else "",
            )
        return grid

    @classmethod
    def for_picture(cls, rows: int, columns: int, spacing: tuple[float, float] = (1.0, 1.0)) -> FilmGrid:
        """The grid ITK gives a 2-D picture of ``rows`` x ``columns`` (identity direction, origin 0).

        Its affine puts the picture in the axial plane, row 0 at the top as stored, with ``spacing``
        (row spacing, column spacing) in millimetres: the grid a mask of a JPEG, PNG or DICOM film is
        written on, and the grid ``itk.imread`` would give the picture (columns along the grid's first
        axis, as ITK orders them).
        """
        row_mm, col_mm = (float(s) for s in spacing)
        if not (row_mm > 0 and col_mm > 0):
            raise ValueError(f"spacing must be positive millimetres, got {spacing!r}")
        affine = np.diag([-col_mm, -row_mm, 1.0, 1.0])  # LPS identity direction, in RAS+
        return cls.from_affine((int(columns), int(rows), 1), affine)

    @property
    def plane(self) -> str:
        """The film's plane by its header: ``"coronal"``, ``"axial"`` or ``"sagittal"``."""
        from nibabel.orientations import io_orientation

        return _PLANES[int(io_orientation(self.affine)[self.axes[2], 0])]

    @property
    def display_shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the display array."""
        return self.shape[self.axes[0]], self.shape[self.axes[1]]

    def to_display(self, data: np.ndarray) -> np.ndarray:
        """The display ``(rows, columns)`` array of an array on this grid (of ``shape``, or 2-D)."""
        grid = np.asarray(data).reshape(self.shape)
        shown = np.transpose(grid, self.axes)
        for axis, flip in enumerate(self.flips):
            if flip:
                shown = np.flip(shown, axis=axis)
        return shown[:, :, 0]

    def from_display(self, image: np.ndarray) -> np.ndarray:
        """Put a display ``(rows, columns)`` array back onto this grid (the inverse of :meth:`to_display`).

        Raises:
            ValueError: if ``image`` is not of :attr:`display_shape`.
        """
        image = np.asarray(image)
        if image.shape != self.display_shape:
            raise ValueError(f"image must have the display shape {self.display_shape}, got {image.shape}")
        shown = image[:, :, None]
        for axis, flip in enumerate(self.flips):
            if flip:
                shown = np.flip(shown, axis=axis)
        return np.ascontiguousarray(np.transpose(shown, np.argsort(self.axes)))


# ---------------------------------------------------------------------------------------------- load


def _reader(fmt: str) -> Any:
    from monai.data import ITKReader, NibabelReader

    # RAS+ affines from both (ITK's LPS is converted), the voxels in their stored type.
    return NibabelReader() if fmt == "NIfTI" else ITKReader()


def load_volume_film(path: str | Path) -> tuple[np.ndarray, dict[str, Any], FilmGrid]:
    """Load a NIfTI, MetaImage or NRRD film as a float32 ``(rows, columns)`` display array in [0, 1].

    The header is checked first (:func:`check_header`), the voxels are read by MONAI's ``LoadImage``
    (``NibabelReader`` or ``ITKReader``), the film is reoriented (:class:`FilmGrid`) and scaled
    (:func:`display_intensities`).

    Returns:
        ``(image, facts, grid)``: the display array, non-PHI facts (``format``, ``plane``) and the grid.

    Raises:
        ImageLoadError: if the file cannot be read or is not one 2-D grey film.
    """
    from monai.transforms import LoadImage

    from pneumonia_monai.dicom import limits

    path = Path(path)
    header = check_header(path)
    rows, cols = header.film_shape
    ticket = limits.film_ticket(rows * cols)  # given back when the array returned is garbage
    try:
        try:
            loaded = LoadImage(reader=_reader(header.format), image_only=True, dtype=None)(str(path))
        except Exception as exc:  # noqa: BLE001 - readers raise many types for broken voxel data
            cause: BaseException = exc
            while cause.__cause__ is not None:  # MONAI wraps the reader's error
                cause = cause.__cause__
            text = " ".join(str(cause).split())[:300]
            raise ImageLoadError(
                f"unreadable {header.format} voxel data ({type(cause).__name__}: {text})"
            ) from None
        meta = dict(loaded.meta)
        data = np.asarray(loaded.array)
        while data.ndim > 3 and data.shape[-1] == 1:  # size-1 time/vector axes (checked in the header)
            data = data[..., 0]
        grid = FilmGrid.from_affine(data.shape, np.asarray(meta["affine"]))
        window = None
        if header.format == "NIfTI":
            cal = (float(meta.get("cal_min", 0.0) or 0.0), float(meta.get("cal_max", 0.0) or 0.0))
            window = cal if cal[1] > cal[0] else None
        image = np.ascontiguousarray(display_intensities(grid.to_display(data), window))
        del data, loaded
    except BaseException:
        ticket.release()
        raise
    facts = {"format": header.format.lower(), "plane": grid.plane}
    return ticket.attach(image), facts, grid
