"""Research formats in: NIfTI, MetaImage, NRRD and 16-bit PNG/TIFF films, reoriented and scaled by one rule.

Every file is built here from the committed real Kermany films (``bundle/sample_data``): the same film
as an 8-bit PNG, NIfTI with voxel axes in RAS and in LPS order, a flipped direction matrix, MetaImage,
NRRD and 16-bit pictures of 12-bit data must give the same network input (within 1/255) and the same
probability (within 0.01) through the shipped bundle.
"""

from __future__ import annotations

from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from pneumonia_monai.data.datalist import prepare_datalist
from pneumonia_monai.data.films import list_films
from pneumonia_monai.data.kaggle import scan_kaggle_tree
from pneumonia_monai.formats import film_stem, film_suffix, is_film_name
from pneumonia_monai.inference.bundle import InferenceBundle
from pneumonia_monai.inference.runner import run_inference
from pneumonia_monai.transforms.io import ImageLoadError, load_film
from pneumonia_monai.transforms.volume_io import FilmGrid, display_intensities, film_decision
from pneumonia_monai.triage import select_files

FILMS = ["NORMAL/IM-0236-0001.jpeg", "PNEUMONIA/person12_bacteria_46.jpeg"]
SPACING = 0.143  # mm: a typical detector pitch


def _grey(jpeg: Path) -> np.ndarray:
    return np.asarray(Image.open(jpeg).convert("L"))


# Writers. ``grey[row, col]`` is the film as read: rows run to the feet, columns to the patient's left.


def nifti_ras(grey: np.ndarray, path: Path) -> Path:
    """Coronal NIfTI with voxel axes ordered R, A, S (what MONAI's Orientation('RAS') writes)."""
    voxels = grey[::-1, ::-1].T[:, None, :]  # i to the right, j one slice, k up
    nib.save(nib.Nifti1Image(np.ascontiguousarray(voxels), np.diag([SPACING, 1.0, SPACING, 1.0])), path)
    return path


def nifti_lps(grey: np.ndarray, path: Path) -> Path:
    """Coronal NIfTI with voxel axes ordered L, P, S (DICOM's patient axes)."""
    voxels = grey[::-1, :].T[:, None, :]  # i to the left, j one slice, k up
    nib.save(nib.Nifti1Image(np.ascontiguousarray(voxels), np.diag([-SPACING, -1.0, SPACING, 1.0])), path)
    return path


def nifti_flipped(grey: np.ndarray, path: Path, *, honest: bool = True) -> Path:
    """Coronal NIfTI stored mirrored (i to the right); ``honest``: its affine says so, else it lies."""
    voxels = grey[::-1, ::-1].T[:, None, :]
    x = SPACING if honest else -SPACING
    nib.save(nib.Nifti1Image(np.ascontiguousarray(voxels), np.diag([x, -1.0, SPACING, 1.0])), path)
    return path


def itk_2d(values: np.ndarray, path: Path) -> Path:
    """A 2-D ITK image (identity direction): MetaImage or NRRD by the suffix."""
    image = itk.image_from_array(np.ascontiguousarray(values))
    image.SetSpacing((SPACING, SPACING))
    itk.imwrite(image, str(path))
    return path


def itk_coronal_transposed(values: np.ndarray, path: Path) -> Path:
    """A 3-D single-slice ITK image stored transposed: its fastest axis runs down the patient."""
    volume = np.ascontiguousarray(values.T[None, :, :])  # numpy (z, y, x): z one slice, y = cols, x = rows
    image = itk.image_from_array(volume)
    # LPS direction columns: index x -> feet (0, 0, -1), index y -> left (1, 0, 0), index z -> back
    image.SetDirection(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]))
    itk.imwrite(image, str(path))
    return path


def research_files(jpeg: Path, out: Path) -> dict[str, Path]:
    """The film of ``jpeg`` in every research format; name -> file."""
    grey = _grey(jpeg)
    twelve = grey.astype(np.uint16) * 16 + 8  # 12-bit data in 16-bit words
    png = out / "film.png"
    Image.fromarray(grey).save(png)
    png16 = out / "film16.png"
    Image.fromarray(twelve).save(png16)
    tiff16 = out / "film16.tif"
    Image.fromarray(twelve).save(tiff16)
    return {
        "png": png,
        "nifti_ras": nifti_ras(grey, out / "ras.nii.gz"),
        "nifti_lps": nifti_lps(grey, out / "lps.nii"),
        "nifti_flipped_direction": nifti_flipped(grey, out / "flipped.nii.gz"),
        "metaimage": itk_2d(grey, out / "film.mha"),
        "metaimage_mhd": itk_2d(twelve, out / "film12.mhd"),
        "nrrd": itk_2d(twelve, out / "film12.nrrd"),
        "nrrd_transposed_coronal": itk_coronal_transposed(grey, out / "transposed.nrrd"),
        "png16": png16,
        "tiff16": tiff16,
    }


def _run(bundle: InferenceBundle, *paths: Path) -> tuple[list[torch.Tensor], list[float]]:
    """The network inputs of ``paths`` and their p(pneumonia), in one forward pass."""
    images = [bundle.preprocessing({"image": str(path)})["image"].as_tensor() for path in paths]
    with torch.inference_mode():
        probs = bundle.predict(torch.stack(images))
    return images, [bundle.pneumonia_probability(p) for p in probs]


def test_film_names() -> None:
    assert film_suffix("a/B.NII.GZ") == ".nii.gz"
    assert film_suffix("x.gz") == ".gz"
    assert film_stem("person1_virus_2.nii.gz") == "person1_virus_2"
    assert film_stem("IM-0001-0001.mha") == "IM-0001-0001"
    assert [is_film_name(n) for n in ("a.nrrd", "a.mhd", "a.raw", "a.tiff", "a.dcm", "a.nii")] == [
        True,
        True,
        False,
        True,
        False,
        True,
    ]


@pytest.mark.parametrize("film", FILMS)
def test_same_tensor_and_probability_in_every_research_format(
    film: str, tmp_path: Path, sample_tree: Path, bundle: InferenceBundle
) -> None:
    files = research_files(sample_tree / "train" / film, tmp_path)
    images, probs = _run(bundle, *files.values())
    reference, reference_prob = images[0], probs[0]  # the PNG
    for name, image, prob in zip(files, images, probs, strict=True):
        assert image.shape == reference.shape, name
        diff = float((image - reference).abs().max())
        assert diff <= 1 / 255, f"{name}: tensor differs from the PNG's by {diff:.5f}"
        assert abs(prob - reference_prob) <= 0.01, f"{name}: p={prob:.4f} vs PNG p={reference_prob:.4f}"


def test_orientation_is_honoured_and_a_lying_affine_is_not(tmp_path: Path, sample_images: list[Path]) -> None:
    grey = _grey(sample_images[0])
    expected = grey.astype(np.float32) / 255.0
    for path in (
        nifti_ras(grey, tmp_path / "ras.nii.gz"),
        nifti_lps(grey, tmp_path / "lps.nii.gz"),
        nifti_flipped(grey, tmp_path / "flipped.nii.gz"),
        itk_coronal_transposed(grey, tmp_path / "transposed.mha"),
    ):
        image, facts = load_film(path)
        assert facts["plane"] == "coronal", path.name
        np.testing.assert_array_equal(image, expected, err_msg=path.name)
    # The same voxels under an affine that does not say they are mirrored: shown mirrored, as Slicer would.
    image, _ = load_film(nifti_flipped(grey, tmp_path / "lying.nii.gz", honest=False))
    np.testing.assert_array_equal(image, expected[:, ::-1])
    # A 2-D file with the identity direction is shown as stored.
    image, facts = load_film(itk_2d(grey, tmp_path / "plain.nrrd"))
    assert facts["plane"] == "axial"
    np.testing.assert_array_equal(image, expected)


def test_the_model_never_sees_a_mirrored_film(
    tmp_path: Path, sample_tree: Path, bundle: InferenceBundle
) -> None:
    """A flipped direction matrix is undone before the network: its input is the PNG's, not its mirror."""
    grey = _grey(sample_tree / "train" / FILMS[1])  # asymmetric: the heart and a consolidation on one side
    (tmp_path / "in").mkdir()
    flipped = nifti_flipped(grey, tmp_path / "in" / "flipped.nii.gz")
    png, mirror = tmp_path / "film.png", tmp_path / "mirror.png"
    Image.fromarray(grey).save(png)
    Image.fromarray(np.ascontiguousarray(grey[:, ::-1])).save(mirror)
    (upright, mirrored), _ = _run(bundle, png, mirror)
    assert float((upright - mirrored).abs().max()) > 0.5  # the check has teeth: the mirror is far
    seen: list[torch.Tensor] = []
    handle = bundle.network.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().cpu()))
    try:
        summary = run_inference([flipped], tmp_path / "out", bundle=bundle, workers=0, progress=False)
    finally:
        handle.remove()
    assert summary.counts["ok"] == 1
    assert len(seen) == 1
    network_input = seen[0][0].float()
    assert float((network_input - upright).abs().max()) <= 1 / 255
    assert float((network_input - mirrored).abs().max()) > 0.5


def test_volumes_and_vectors_are_refused_with_a_reason(tmp_path: Path, sample_images: list[Path]) -> None:
    grey = _grey(sample_images[0])[:64, :64]
    stack = np.stack([grey] * 3, axis=-1)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stack), np.eye(4)), tmp_path / "stack.nii.gz")
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stack[:, :, None, :]), np.eye(4)), tmp_path / "series.nii")
    itk.imwrite(itk.image_from_array(np.ascontiguousarray(stack), is_vector=True), str(tmp_path / "rgb.mha"))
    itk.imwrite(
        itk.image_from_array(np.ascontiguousarray(np.moveaxis(stack, -1, 0))), str(tmp_path / "ct.nrrd")
    )
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    expected = {
        "stack.nii.gz": (
            "skipped",
            "3-D NIfTI volume of 64 x 64 x 3 voxels (3 slices or more): a chest film has one slice",
        ),
        "series.nii": (
            "skipped",
            "4-D NIfTI image (64 x 64 x 1 x 3 voxels): a chest film is one 2-D image, "
            "not a series of volumes",
        ),
        "rgb.mha": (
            "skipped",
            "MetaImage image of 3 values per voxel (vector or colour): a chest film has one grey "
            "value per pixel",
        ),
        "ct.nrrd": (
            "skipped",
            "3-D NRRD volume of 64 x 64 x 3 voxels (3 slices or more): a chest film has one slice",
        ),
    }
    for name, (status, reason) in expected.items():
        assert film_decision(tmp_path / name) == (status, reason)
        with pytest.raises(ImageLoadError) as caught:
            load_film(tmp_path / name)
        assert str(caught.value) == reason
    status, reason = film_decision(tmp_path / "broken.nii.gz")
    assert status == "error" and reason.startswith("unreadable NIfTI header")
    # select says the same, one row per file
    rows = {d.relative_path: (d.status, d.reason) for d in select_files([tmp_path]).decisions}
    for name, decision in expected.items():
        assert rows[name] == decision
    assert rows["broken.nii.gz"][0] == "error"


def test_select_takes_a_single_slice_film(tmp_path: Path, sample_images: list[Path]) -> None:
    grey = _grey(sample_images[0])
    nifti_lps(grey, tmp_path / "film.nii.gz")
    rows = {d.relative_path: (d.status, d.reason) for d in select_files([tmp_path]).decisions}
    voxels = f"{grey.shape[1]} x 1 x {grey.shape[0]}"  # i to the left, j the one slice, k up
    rows_expected = ("selected", f"NIfTI film of {voxels} voxels, taken as a frontal chest film")
    assert rows["film.nii.gz"] == rows_expected
    # A detached MetaImage: the header is the film, its voxel data file is accounted for as such.
    itk_2d(grey, tmp_path / "detached.mhd")
    (tmp_path / "stray.raw").write_bytes(b"\0" * 64)
    rows = {d.relative_path: (d.status, d.reason) for d in select_files([tmp_path]).decisions}
    assert rows["detached.mhd"][0] == "selected"
    assert rows["detached.raw"] == (
        "skipped",
        "MetaImage voxel data of detached.mhd (read through that header)",
    )
    assert rows["stray.raw"][0] == "skipped" and rows["stray.raw"][1].startswith("not a DICOM file")


def test_one_intensity_rule() -> None:
    eight = np.array([[0, 100, 255]], dtype=np.uint16)
    np.testing.assert_allclose(display_intensities(eight), eight / 255.0, rtol=1e-6)
    twelve = np.array([[0, 2048, 4000]], dtype=np.uint16)  # 12 bits hold 4000: / 4095
    np.testing.assert_allclose(display_intensities(twelve), twelve / 4095.0, rtol=1e-6)
    nine = np.array([[0, 300]], dtype=np.int32)  # 9 bits -> the even depth 10: / 1023
    np.testing.assert_allclose(display_intensities(nine), nine / 1023.0, rtol=1e-6)
    full = np.array([[0, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(display_intensities(full), [[0.0, 1.0]])
    unit = np.array([[0.25, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(display_intensities(unit), unit)
    signed = np.array([[-1000, 0, 1000]], dtype=np.int16)
    np.testing.assert_allclose(display_intensities(signed), [[0.0, 0.5, 1.0]])
    np.testing.assert_allclose(display_intensities(twelve, window=(0.0, 2048.0)), [[0.0, 1.0, 1.0]])
    with pytest.raises(ImageLoadError, match="not finite"):
        display_intensities(np.array([[0.0, np.nan]]))


def test_nifti_display_range_is_honoured(tmp_path: Path, sample_images: list[Path]) -> None:
    grey = _grey(sample_images[0])
    twelve = (grey.astype(np.uint16) * 16)[::-1, :].T[:, None, :]
    img = nib.Nifti1Image(np.ascontiguousarray(twelve), np.diag([-1.0, -1.0, 1.0, 1.0]))
    img.header["cal_min"], img.header["cal_max"] = 0.0, 255.0 * 16
    nib.save(img, tmp_path / "windowed.nii.gz")
    image, _ = load_film(tmp_path / "windowed.nii.gz")
    np.testing.assert_allclose(image, grey / 255.0, atol=1e-6)


def test_grid_round_trip() -> None:
    rng = np.random.default_rng(0)
    for affine in (np.diag([-1.0, -1.0, 1.0, 1.0]), np.diag([1.0, 1.0, -2.0, 1.0])):
        for shape in ((5, 7, 1), (5, 1, 7), (1, 5, 7)):
            grid = FilmGrid.from_affine(shape, affine)
            voxels = rng.integers(0, 9, size=shape)
            np.testing.assert_array_equal(grid.from_display(grid.to_display(voxels)), voxels)
    picture = FilmGrid.for_picture(3, 4)
    values = np.arange(12).reshape(3, 4)
    assert picture.shape == (4, 3, 1)
    np.testing.assert_array_equal(picture.to_display(picture.from_display(values)), values)


def test_datalist_reads_research_films(tmp_path: Path, sample_images: list[Path]) -> None:
    grey = _grey(sample_images[0])
    (tmp_path / "train" / "NORMAL").mkdir(parents=True)
    (tmp_path / "train" / "PNEUMONIA").mkdir(parents=True)
    nifti_lps(grey, tmp_path / "train" / "NORMAL" / "IM-0001-0001.nii.gz")
    itk_2d(grey, tmp_path / "train" / "PNEUMONIA" / "person7_bacteria_30.mha")
    (tmp_path / "train" / "PNEUMONIA" / "person7_bacteria_30.raw").write_bytes(b"")  # not a film
    assert [Path(item["image"]).name for item in list_films(tmp_path)] == [
        "IM-0001-0001.nii.gz",
        "person7_bacteria_30.mha",
    ]  # the bundle's own inference listing
    records = {Path(r.image).name: r for r in scan_kaggle_tree(tmp_path)}
    assert sorted(records) == ["IM-0001-0001.nii.gz", "person7_bacteria_30.mha"]
    assert records["IM-0001-0001.nii.gz"].patient_id == "IM-0001"
    assert (records["person7_bacteria_30.mha"].patient_id, records["person7_bacteria_30.mha"].subtype) == (
        "person7",
        "bacterial",
    )


def test_bundle_datalist_of_a_relative_tree_has_absolute_paths(
    tmp_path: Path, sample_images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training loaders read in threads while ITK may change the working directory: paths are absolute."""
    grey = _grey(sample_images[0])
    for label, name in (("NORMAL", "IM-0001-0001.mha"), ("PNEUMONIA", "person7_bacteria_30.nii.gz")):
        (tmp_path / "tree" / "train" / label).mkdir(parents=True)
        path = tmp_path / "tree" / "train" / label / name
        if name.endswith(".mha"):
            itk_2d(grey, path)
        else:
            nifti_lps(grey, path)
    monkeypatch.chdir(tmp_path)
    datalist = prepare_datalist("tree", val_fraction=0.5, split_mode="random")
    images = [item["image"] for items in datalist.values() for item in items]
    assert len(images) == 2
    assert all(Path(image).is_absolute() and Path(image).is_file() for image in images)


def test_sixteen_bit_pictures_read_as_monai_itk_reads_them(tmp_path: Path, sample_images: list[Path]) -> None:
    """Pillow decodes 16-bit PNG/TIFF (as it does 8-bit ones); MONAI's ITKReader gives the same film."""
    from monai.data import ITKReader
    from monai.transforms import LoadImage

    twelve = _grey(sample_images[0]).astype(np.uint16) * 16 + 8
    for name in ("film.png", "film.tif"):
        Image.fromarray(twelve).save(tmp_path / name)
        image, _ = load_film(tmp_path / name)
        loaded = LoadImage(reader=ITKReader(), image_only=True, dtype=None)(str(tmp_path / name))
        grid = FilmGrid.from_affine(tuple(loaded.shape), np.asarray(loaded.affine))
        np.testing.assert_array_equal(image, display_intensities(grid.to_display(np.asarray(loaded))))
        np.testing.assert_allclose(image, twelve / 4095.0, rtol=1e-6)


def test_pixel_budget_is_checked_from_the_header(tmp_path: Path, sample_images: list[Path]) -> None:
    from pneumonia_monai.dicom import limits

    grey = _grey(sample_images[0])
    nifti_lps(grey, tmp_path / "film.nii.gz")
    itk_2d(grey, tmp_path / "film.nrrd")
    previous = limits.set_max_pixels(1000)
    try:
        for name, fmt in (("film.nii.gz", "NIfTI"), ("film.nrrd", "NRRD")):
            status, reason = film_decision(tmp_path / name)
            assert status == "error"
            assert reason.startswith(f"image too large ({fmt} header)") and reason.endswith("not decoded")
            with pytest.raises(ImageLoadError, match="over the limit of 1000"):
                load_film(tmp_path / name)
    finally:
        limits.set_max_pixels(previous)


def test_two_d_and_singleton_four_d_nifti_are_films(tmp_path: Path, sample_images: list[Path]) -> None:
    grey = _grey(sample_images[0])
    voxels = np.ascontiguousarray(grey.T)  # i to the left (columns), j to the back (rows): as ITK writes
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(voxels, affine), tmp_path / "two_d.nii")
    nib.save(nib.Nifti1Image(voxels[:, :, None, None], affine), tmp_path / "one_time_point.nii.gz")
    for name in ("two_d.nii", "one_time_point.nii.gz"):
        assert film_decision(tmp_path / name)[0] == "selected", name
        image, facts = load_film(tmp_path / name)
        assert facts["plane"] == "axial"
        np.testing.assert_array_equal(image, grey.astype(np.float32) / 255.0, err_msg=name)
