"""``--masks``: lung fields and heatmap as NIfTI on the input film's grid and affine; a DICOM SEG for DICOM.

The films are the committed real Kermany films (as PNG, NIfTI and a transposed coronal MetaImage) and
the committed sample DICOM; the SEG builder is also checked on pydicom-data's real chest CR (RG1).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import highdicom as hd
import itk
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_checks import assert_valid
from monai.data import ITKReader
from monai.transforms import LoadImage
from PIL import Image
from pydicom.data import get_testdata_file

from pneumonia_monai.cli.infer import main as infer_main
from pneumonia_monai.dicom.seg import LUNG_FIELDS_LABEL, build_lung_seg
from pneumonia_monai.dicom.writer import write_dataset_atomic
from pneumonia_monai.inference.bundle import InferenceBundle
from pneumonia_monai.inference.masks import MASK_DIR, cam_on_film, mask_names
from pneumonia_monai.inference.runner import run_inference
from pneumonia_monai.transforms.io import load_film
from pneumonia_monai.transforms.lung_crop import lung_field_mask
from pneumonia_monai.transforms.volume_io import FilmGrid
from pneumonia_monai.visualize.overlay import box_pixels

ALGORITHM = {"algorithm_name": "densenet121-pneumonia", "algorithm_version": "1.2.3"}
#: dciodvfy warnings accepted: RG1's Referring Physician's Name "ward" (copied from the source, as the
#: Study module must be) is an old Person Name form; the sample DICOM has no Study Date / Time.
ACCEPTED_WARNINGS = (
    re.compile(r"\(0x0008,0x0090\) PN Referring Physician's Name .* Retired Person Name form"),
    re.compile(r"Missing attribute or value that would be needed to build DICOMDIR - Study (Date|Time)"),
)


def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, sample_tree: Path, repo_root: Path, bundle: InferenceBundle
) -> tuple[Path, Path, object]:
    """One ``--masks`` run over a PNG, a NIfTI (LPS), a transposed coronal MetaImage and a sample DICOM."""
    root = tmp_path_factory.mktemp("masks")
    films = root / "in"
    films.mkdir()
    grey = _grey(sample_tree / "train" / "PNEUMONIA" / "person12_bacteria_46.jpeg")
    Image.fromarray(grey).save(films / "film.png")
    voxels = grey[::-1, :].T[:, None, :]  # i to the left, j one slice, k up
    nib.save(
        nib.Nifti1Image(np.ascontiguousarray(voxels), np.diag([-0.2, -1.0, 0.2, 1.0])), films / "film.nii.gz"
    )
    image = itk.image_from_array(np.ascontiguousarray(grey.T[None, :, :]))
    image.SetDirection(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]))
    itk.imwrite(image, str(films / "transposed.mha"))
    shutil.copy(
        repo_root / "bundle" / "sample_data" / "dicom" / "pneumonia_dx" / "frontal.dcm", films / "dx.dcm"
    )
    out = root / "out"
    summary = run_inference([films], out, bundle=bundle, workers=0, masks=True, progress=False)
    return films, out, summary


def test_masks_lie_on_the_input_grid_and_affine(run: tuple[Path, Path, object]) -> None:
    films, out, summary = run
    assert summary.counts == {"ok": 4, "skipped": 0, "error": 0}
    assert summary.output_failures == 0
    folder = out / MASK_DIR
    names = {"film.png", "film.nii.gz", "transposed.mha", "dx.dcm"}
    assert sorted(p.name for p in summary.mask_paths) == sorted(n for name in names for n in mask_names(name))
    # NIfTI in: the same voxel grid and affine out.
    source = nib.load(films / "film.nii.gz")
    for name in mask_names("film.nii.gz"):
        back = nib.load(folder / name)
        assert back.shape == source.shape
        np.testing.assert_allclose(back.affine, source.affine, atol=1e-6)
    # MetaImage in: its grid and affine as MONAI's ITKReader reads them (RAS+).
    mha = LoadImage(reader=ITKReader(), image_only=True)(str(films / "transposed.mha"))
    for name in mask_names("transposed.mha"):
        back = nib.load(folder / name)
        assert back.shape == tuple(mha.shape)
        np.testing.assert_allclose(back.affine, np.asarray(mha.affine), atol=1e-6)
    # Each mask shows, in display orientation, the lung fields the film has; the heatmap is in [0, 1].
    for name in names:
        film, _ = load_film(films / name)
        expected = lung_field_mask(film)
        assert expected is not None and expected.mean() > 0.1, name
        lungs_name, heat_name = mask_names(name)
        lungs = nib.load(folder / lungs_name)
        assert lungs.get_data_dtype() == np.uint8 and lungs.header.get_intent()[0] == "label"
        grid = (
            FilmGrid.from_affine(lungs.shape, lungs.affine)
            if name.endswith((".nii.gz", ".mha"))
            else FilmGrid.for_picture(*film.shape)
        )
        np.testing.assert_array_equal(grid.to_display(np.asarray(lungs.dataobj)), expected, err_msg=name)
        heat = grid.to_display(nib.load(folder / heat_name).get_fdata())
        assert heat.shape == film.shape and heat.min() >= 0.0 and heat.max() <= 1.0 and heat.max() > 0.5
    # The three films of the same picture give the same masks.
    shown = [
        FilmGrid.from_affine(nib.load(folder / n).shape, nib.load(folder / n).affine).to_display(
            np.asarray(nib.load(folder / n).dataobj)
        )
        for n in (mask_names("film.nii.gz")[0], mask_names("transposed.mha")[0])
    ]
    png_mask = np.asarray(nib.load(folder / mask_names("film.png")[0]).dataobj)[:, :, 0].T
    for mask in shown:
        np.testing.assert_array_equal(mask, png_mask)


def test_dicom_film_gets_a_segmentation_referencing_it(run: tuple[Path, Path, object]) -> None:
    films, _, summary = run
    source = pydicom.dcmread(films / "dx.dcm")
    assert [p.name for p in summary.seg_paths] == [f"{source.SOPInstanceUID}.seg.dcm"]
    path = summary.seg_paths[0]
    assert_valid(path, ACCEPTED_WARNINGS)
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.get_source_image_uids() == [
        (source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID)
    ]
    assert seg.SegmentSequence[0].SegmentLabel == LUNG_FIELDS_LABEL
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"  # Lung
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    film, _ = load_film(films / "dx.dcm")
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), lung_field_mask(film))
    assert "PatientName" in seg and seg.PatientID == source.PatientID  # the source's Patient module


def test_a_rerun_reuses_the_masks_and_redoes_missing_ones(
    run: tuple[Path, Path, object], bundle: InferenceBundle
) -> None:
    films, out, first = run
    again = run_inference([films], out, bundle=bundle, workers=0, masks=True, progress=False)
    assert again.n_reused == 4 and again.n_inferred == 0
    assert sorted(again.mask_paths) == sorted(first.mask_paths)
    assert again.seg_paths == first.seg_paths
    missing = out / MASK_DIR / mask_names("film.png")[1]
    before = missing.read_bytes()
    missing.unlink()
    third = run_inference([films], out, bundle=bundle, workers=0, masks=True, progress=False)
    assert (third.n_reused, third.n_inferred) == (3, 1)
    assert missing.read_bytes() == before  # the same map again, byte for byte


def test_infer_cli_flag(tmp_path: Path, sample_images: list[Path], repo_root: Path) -> None:
    Image.fromarray(_grey(sample_images[0])).save(tmp_path / "film.png")
    assert infer_main([str(tmp_path / "film.png"), "--output", str(tmp_path / "out"), "--masks", "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / MASK_DIR).iterdir()) == sorted(mask_names("film.png"))


def test_seg_of_a_real_cr(tmp_path: Path) -> None:
    rg1 = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"), stop_before_pixels=True)
    mask = np.zeros((rg1.Rows, rg1.Columns), dtype=bool)
    mask[300:1500, 200:800] = mask[300:1500, 1000:1600] = True
    seg = build_lung_seg(rg1, mask, **ALGORITHM)
    path = tmp_path / "seg.dcm"
    write_dataset_atomic(seg, path)
    assert_valid(path, ACCEPTED_WARNINGS)
    back = hd.seg.segread(path)
    np.testing.assert_array_equal(back.pixel_array.astype(bool), mask)
    assert back.get_source_image_uids() == [(rg1.StudyInstanceUID, rg1.SeriesInstanceUID, rg1.SOPInstanceUID)]
    assert back.PatientOrientation == rg1.PatientOrientation
    # the same source and model version give the same object; another version another one
    assert build_lung_seg(rg1, mask, **ALGORITHM).SOPInstanceUID == seg.SOPInstanceUID
    other = build_lung_seg(rg1, mask, algorithm_name="densenet121-pneumonia", algorithm_version="9")
    assert other.SOPInstanceUID != seg.SOPInstanceUID
    with pytest.raises(ValueError, match="Rows x Columns"):
        build_lung_seg(rg1, mask[:-1], **ALGORITHM)
    with pytest.raises(ValueError, match="empty"):
        build_lung_seg(rg1, np.zeros_like(mask), **ALGORITHM)
    with pytest.raises(ValueError, match="binary"):
        build_lung_seg(rg1, mask.astype(np.uint8) * 2, **ALGORITHM)


def test_cam_on_film() -> None:
    cam = np.ones((4, 4), dtype=np.float32)
    placed = cam_on_film(cam, (0.25, 0.75, 0.5, 1.0), (8, 10))
    assert box_pixels((0.25, 0.75, 0.5, 1.0), 8, 10) == (2, 6, 5, 10)
    assert placed[2:6, 5:10].min() == 1.0 and placed.sum() == 20.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cam_on_film(cam * 2, (0.0, 1.0, 0.0, 1.0), (8, 10))
    with pytest.raises(ValueError, match="increasing"):
        cam_on_film(cam, (0.5, 0.25, 0.0, 1.0), (8, 10))


def test_node_sends_the_segmentation_beside_the_sr(tmp_path: Path, repo_root: Path) -> None:
    """serve --masks: the processor's results for a study are its SR and the SEG of its scored film."""
    from pneumonia_monai.cli.serve import build_parser, config_from_args
    from pneumonia_monai.node.processor import InferenceProcessor

    args = ["--work-dir", str(tmp_path / "work"), "--dest-ae", "PACS@127.0.0.1:104"]
    assert config_from_args(build_parser().parse_args([*args, "--masks"])).masks is True
    assert config_from_args(build_parser().parse_args(args)).masks is False
    sample = repo_root / "bundle" / "sample_data" / "dicom" / "pneumonia_dx"
    frontal = pydicom.dcmread(sample / "frontal.dcm", stop_before_pixels=True)
    study = tmp_path / "inbox" / str(frontal.StudyInstanceUID)
    study.mkdir(parents=True)
    for name in ("frontal.dcm", "lateral.dcm"):  # the lateral view is skipped: no score, no SEG
        sop = pydicom.dcmread(sample / name, stop_before_pixels=True).SOPInstanceUID
        shutil.copy(sample / name, study / f"{sop}.dcm")
    processor = InferenceProcessor(bundle=repo_root / "bundle", device="cpu", masks=True)
    results = processor.process(study, tmp_path / "out")
    modalities = sorted(pydicom.dcmread(path, stop_before_pixels=True).Modality for path in results)
    assert modalities == ["SEG", "SR"]
    (seg_path,) = [path for path in results if path.name.endswith(".seg.dcm")]
    seg = hd.seg.segread(seg_path)
    assert seg.get_source_image_uids() == [
        (frontal.StudyInstanceUID, frontal.SeriesInstanceUID, frontal.SOPInstanceUID)
    ]


def test_two_inputs_with_the_same_relative_path_keep_their_own_outputs(
    tmp_path: Path, bundle: InferenceBundle, sample_images: list[Path]
) -> None:
    """``a/film.png`` and ``b/film.png``: two heatmaps and two pairs of masks, the same names on resume."""
    for folder, image in (("a", sample_images[0]), ("b", sample_images[1])):
        (tmp_path / folder).mkdir()
        Image.fromarray(_grey(image)).save(tmp_path / folder / "film.png")
    inputs, out = [tmp_path / "a", tmp_path / "b"], tmp_path / "out"
    first = run_inference(inputs, out, bundle=bundle, workers=0, masks=True, heatmaps=True, progress=False)
    assert first.counts["ok"] == 2
    pngs = sorted(p.name for p in (out / "heatmaps").glob("*.png"))
    masks = sorted(p.name for p in (out / MASK_DIR).iterdir())
    assert len(pngs) == 2 and len(set(pngs)) == 2 and all(n.startswith("film.png.") for n in pngs)
    assert len(masks) == 4 and sorted(first.mask_paths) == sorted(out / MASK_DIR / n for n in masks)
    contents = {n: (out / MASK_DIR / n).read_bytes() for n in masks}
    assert len(set(contents.values())) == 4  # nothing overwritten by the other film's
    again = run_inference(inputs, out, bundle=bundle, workers=0, masks=True, heatmaps=True, progress=False)
    assert (again.n_reused, again.n_inferred) == (2, 0)
    assert sorted(p.name for p in again.png_paths) == pngs
    assert sorted(again.mask_paths) == sorted(first.mask_paths)
