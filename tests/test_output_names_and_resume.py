"""Per-film output names that fit any file system and stay the same on resume; what a resume redoes."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import numpy as np
import pytest
from dicom_factory import make_cr
from infer_helpers import film, write_bundle

from pneumonia_monai.inference import runner
from pneumonia_monai.inference.film_step import MAX_STEM_BYTES, FilmJob, with_output_stems
from pneumonia_monai.inference.manifest import read_results_csv
from pneumonia_monai.inference.masks import mask_names
from pneumonia_monai.inference.outputs import RunOutputs
from pneumonia_monai.inference.ray_engine import _jobs_table
from pneumonia_monai.inference.runner import run_inference

STUDY = "1.2.826.0.1.3680043.8.498.8101"


def _job(index: int, rel: str, uri: str = "") -> FilmJob:
    return FilmJob(index, Path("/nowhere") / f"{index}.dcm", Path("/nowhere"), rel, f"k{index}", uri)


def test_a_long_url_gets_a_short_name_that_still_tells_entries_apart() -> None:
    base = "https://pacs.example.org/dicom-web/studies/" + "1.2.3." * 12
    urls = [f"{base}/series/{'9.8.7.' * 10}{n}/instances/{'4.5.6.' * 10}1" for n in (1, 2)]
    jobs = with_output_stems([_job(0, urls[0], urls[0]), _job(1, urls[1], urls[1]), _job(2, "a/film.png")])
    stems = [job.output_name for job in jobs]
    assert stems[2] == "a__film.png"  # a short name is kept as it is
    assert len(set(stems)) == 3
    for stem in stems[:2]:
        longest = max(mask_names(stem), key=len) + ".tmp"
        assert len(os.fsencode(stem)) <= MAX_STEM_BYTES and len(os.fsencode(longest)) <= 255
        assert stem.startswith(urls[0][-40:].replace("/", "__")[:30])  # its end (the instance) is kept
    assert [j.output_name for j in with_output_stems(jobs)] == stems  # the same inputs, the same names


def test_the_ray_engine_s_actors_name_outputs_as_the_driver_does() -> None:
    jobs = with_output_stems([_job(0, "film.png"), _job(1, "film.png")])
    table = _jobs_table(jobs)
    assert [v.decode() for v in table.column("stem").to_pylist()] == [j.output_name for j in jobs]
    assert len(set(table.column("stem").to_pylist())) == 2


@pytest.fixture
def small_bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle")


def test_masks_not_all_written_are_written_by_the_next_run(
    tmp_path: Path, small_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pneumonia_monai.inference.bundle import load_bundle

    bundle = load_bundle(small_bundle, device="cpu")
    make_cr(tmp_path / "in" / "cr.dcm", pixels=film(0, 256), StudyInstanceUID=STUDY)
    out = tmp_path / "out"

    def no_seg(self: object, source: Path, lungs: np.ndarray, path: Path) -> None:
        raise OSError("disk full (test)")

    with monkeypatch.context() as patch:
        patch.setattr(RunOutputs, "write_seg", no_seg)
        first = run_inference([tmp_path / "in"], out, bundle=bundle, workers=0, masks=True, progress=False)
    assert first.output_failures == 1 and not first.seg_paths
    again = run_inference([tmp_path / "in"], out, bundle=bundle, workers=0, masks=True, progress=False)
    assert (again.n_reused, again.n_inferred, again.output_failures) == (0, 1, 0)
    assert len(again.seg_paths) == 1 and again.seg_paths[0].is_file()
    third = run_inference([tmp_path / "in"], out, bundle=bundle, workers=0, masks=True, progress=False)
    assert (third.n_reused, third.n_inferred) == (1, 0)


def test_force_fetches_a_manifest_entry_again(tmp_path: Path, small_bundle: Path) -> None:
    from pneumonia_monai.inference.bundle import load_bundle

    bundle = load_bundle(small_bundle, device="cpu")
    uri = "memory://bucket/force/film.dcm"
    versions = []
    for index in (0, 1):
        make_cr(tmp_path / f"v{index}.dcm", pixels=film(index, 128), StudyInstanceUID=STUDY)
        versions.append((tmp_path / f"v{index}.dcm").read_bytes())
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"uri\n{uri}\n", encoding="utf-8")
    out = tmp_path / "out"
    probabilities = []
    for version, force in ((versions[0], False), (versions[1], False), (versions[1], True)):
        with fsspec.open(uri, "wb") as handle:
            handle.write(version)
        run_inference([], out, bundle=bundle, workers=0, manifest=manifest, force=force, progress=False)
        (row,) = read_results_csv(out / "results.csv")
        probabilities.append(float(row["prob_pneumonia"]))
        cached = list((out / runner.FETCHED).iterdir())
        assert [p.read_bytes() for p in cached] == [versions[1] if force else versions[0]]
    assert probabilities[0] == probabilities[1]  # without --force the cached copy stands for the URI
    assert probabilities[2] != probabilities[0]  # with it, the changed object is read and scored


def test_fhir_of_a_dicom_file_without_preamble(tmp_path: Path, small_bundle: Path) -> None:
    """A file without the 128-byte preamble and DICM prefix is scored, and its study gets its Bundle."""
    from pneumonia_monai.inference.bundle import load_bundle

    bundle = load_bundle(small_bundle, device="cpu")
    full = tmp_path / "full.dcm"
    make_cr(full, pixels=film(2, 128), StudyInstanceUID=STUDY)
    bare = tmp_path / "in" / "bare.dcm"
    bare.parent.mkdir()
    bare.write_bytes(full.read_bytes()[132:])  # the file meta group first, no preamble
    summary = run_inference(
        [tmp_path / "in"], tmp_path / "out", bundle=bundle, workers=0, fhir=True, progress=False
    )
    assert summary.counts["ok"] == 1, summary.counts
    assert summary.output_failures == 0
    assert len(list((tmp_path / "out" / "fhir").glob("*.json"))) == 1
