"""Pull mode against a real DICOMweb service: a private Orthanc with its DICOMweb plugin.

QIDO-RS search with filters, WADO-RS retrieval of a study into a folder (as stored, or transcoded on
request), STOW-RS of a pneumonia SR back into the study, and the errors a caller must see; and the node
configured with a STOW-RS destination (``--dest-stow``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import make_cr, make_dx
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from pneumonia_monai.devtools.orthanc import OrthancServer, refused_port
from pneumonia_monai.dicom.sr import ImageFinding, build_pneumonia_sr
from pneumonia_monai.dicom.writer import write_dataset_atomic
from pneumonia_monai.dicomweb import pull
from pneumonia_monai.dicomweb.pull import DicomWebError, query_studies, retrieve_study, store_instances
from pneumonia_monai.node.config import DicomDestination, NodeConfig, StowDestination
from pneumonia_monai.node.destinations import CStoreDestination, SendError, StowRsDestination
from pneumonia_monai.node.service import DicomNode


@pytest.fixture(scope="module")
def orthanc(
    tmp_path_factory: pytest.TempPathFactory, start_orthanc: Callable[..., OrthancServer]
) -> Iterator[OrthancServer]:
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def studies(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Study A: a CR in RLE lossless and a CR uncompressed; study B: one DX in JPEG 2000. Uploaded by REST."""
    folder = tmp_path_factory.mktemp("upload")
    a, b = generate_uid(), generate_uid()
    pixels = np.random.default_rng(0).integers(0, 4096, (64, 64)).astype(np.uint16)
    files = {a: [folder / "a1.dcm", folder / "a2.dcm"], b: [folder / "b1.dcm"]}
    make_cr(files[a][0], StudyInstanceUID=a, pixels=pixels, transfer_syntax=RLELossless)
    make_cr(files[a][1], StudyInstanceUID=a, InstanceNumber=2)
    make_dx(files[b][0], StudyInstanceUID=b, AccessionNumber="ACC-B", transfer_syntax=JPEG2000Lossless)
    for paths in files.values():
        for path in paths:
            orthanc.upload(path)
    return files


def test_query_studies_with_filters(orthanc: OrthancServer, studies: dict[str, list[Path]]) -> None:
    a, b = studies
    found = query_studies(orthanc.dicomweb_url)
    assert all(isinstance(ds, Dataset) for ds in found)
    assert {str(ds.StudyInstanceUID) for ds in found} == {a, b}
    (only_b,) = query_studies(orthanc.dicomweb_url, {"AccessionNumber": "ACC-B"})
    assert only_b.StudyInstanceUID == b
    (only_a,) = query_studies(
        orthanc.dicomweb_url, {"StudyInstanceUID": a}, fields=["NumberOfStudyRelatedInstances"]
    )
    assert int(only_a.NumberOfStudyRelatedInstances) == 2
    assert len(query_studies(orthanc.dicomweb_url, limit=1)) == 1
    assert query_studies(orthanc.dicomweb_url, {"StudyInstanceUID": generate_uid()}) == []
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        query_studies(orthanc.dicomweb_url, {"PatientsName": "x"})
    with pytest.raises(ValueError, match="http"):
        query_studies("ftp://example.org/dicom-web")


def test_retrieve_study_writes_each_instance_as_stored(
    orthanc: OrthancServer, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    for study_uid, uploaded in studies.items():
        paths = retrieve_study(orthanc.dicomweb_url, study_uid, tmp_path / "in" / study_uid)
        sent = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in uploaded}
        assert sorted(p.name for p in paths) == sorted(f"{uid}.dcm" for uid in sent)
        assert sorted((tmp_path / "in" / study_uid).iterdir()) == paths  # nothing else: no temporary file
        for path in paths:
            got = dcmread(path)
            original = sent[str(got.SOPInstanceUID)]
            assert got.StudyInstanceUID == study_uid
            assert got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID  # as stored
            assert got.PixelData == original.PixelData


def test_retrieve_study_can_ask_for_a_transfer_syntax(
    orthanc: OrthancServer, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    a = next(iter(studies))  # RLE + uncompressed (Debian's Orthanc cannot transcode JPEG 2000)
    paths = retrieve_study(orthanc.dicomweb_url, a, tmp_path / "x", transfer_syntax=ExplicitVRLittleEndian)
    by_uid = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in studies[a]}
    for path in paths:
        got = dcmread(path)
        assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(got.pixel_array, by_uid[str(got.SOPInstanceUID)].pixel_array)  # lossless


def test_retrieve_unknown_study_fails(orthanc: OrthancServer, tmp_path: Path) -> None:
    with pytest.raises(DicomWebError, match="retrieval of study"):
        retrieve_study(orthanc.dicomweb_url, generate_uid(), tmp_path / "nothing")
    with pytest.raises(ValueError, match="study_uid"):
        retrieve_study(orthanc.dicomweb_url, "../etc", tmp_path / "nothing")


def test_store_instances_puts_the_sr_in_the_study(
    orthanc: OrthancServer, studies: dict[str, list[Path]], tmp_path: Path
) -> None:
    b = list(studies)[1]
    headers = [dcmread(p, stop_before_pixels=True) for p in studies[b]]
    findings = [ImageFinding(str(h.SOPInstanceUID), str(h.SOPClassUID), 0.8, True) for h in headers]
    sr = build_pneumonia_sr(headers, findings, algorithm_name="test", algorithm_version="1", threshold=0.5)
    write_dataset_atomic(sr, tmp_path / "sr.dcm")

    assert store_instances(orthanc.dicomweb_url, [tmp_path / "sr.dcm"]) == [str(sr.SOPInstanceUID)]
    series = orthanc.get_json(f"/dicom-web/studies/{b}/series?Modality=SR")
    assert len(series) == 1
    (stored,) = [s for s in orthanc.sr_instances() if s["StudyInstanceUID"] == b]
    assert stored["SOPInstanceUID"] == str(sr.SOPInstanceUID)


def test_store_instances_errors(
    orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "note.txt").write_text("not DICOM")
    with pytest.raises(ValueError, match="not a readable DICOM file"):
        store_instances(orthanc.dicomweb_url, [tmp_path / "note.txt"])
    ds = make_cr(tmp_path / "cr.dcm")
    with refused_port() as port, pytest.raises(DicomWebError, match="STOW-RS"):
        store_instances(f"http://127.0.0.1:{port}/dicom-web", [tmp_path / "cr.dcm"])

    # a service that answers but lists the instance as failed (or leaves it out) is a failure too
    def refusing(self: object, datasets: list[Dataset]) -> Dataset:
        item = Dataset()
        item.ReferencedSOPInstanceUID = datasets[0].SOPInstanceUID
        item.FailureReason = 0xA700
        response = Dataset()
        response.FailedSOPSequence = [item]
        return response

    monkeypatch.setattr(pull.DICOMwebClient, "store_instances", refusing)
    with pytest.raises(DicomWebError, match=rf"{ds.SOPInstanceUID} \(reason 0xA700\)"):
        store_instances(orthanc.dicomweb_url, [tmp_path / "cr.dcm"])

    def forgetful(self: object, datasets: list[Dataset]) -> Dataset:
        response = Dataset()
        response.ReferencedSOPSequence = []
        return response

    monkeypatch.setattr(pull.DICOMwebClient, "store_instances", forgetful)
    with pytest.raises(DicomWebError, match="does not list"):
        store_instances(orthanc.dicomweb_url, [tmp_path / "cr.dcm"])


class _SrOfStudy:
    """A processor that writes a pneumonia SR for the study (no model)."""

    def process(self, study_dir: Path, out_dir: Path) -> list[Path]:
        headers = [dcmread(p, stop_before_pixels=True) for p in sorted(study_dir.glob("*.dcm"))]
        findings = [ImageFinding(str(h.SOPInstanceUID), str(h.SOPClassUID), 0.3, False) for h in headers]
        sr = build_pneumonia_sr(
            headers, findings, algorithm_name="test", algorithm_version="1", threshold=0.5
        )
        write_dataset_atomic(sr, out_dir / "sr.dcm")
        return [out_dir / "sr.dcm"]


def test_node_sends_its_results_with_stow_rs(orthanc: OrthancServer, tmp_path: Path) -> None:
    config = NodeConfig(
        work_dir=tmp_path / "work",
        destination=StowDestination(orthanc.dicomweb_url),
        port=0,
        stable_seconds=0.3,
    )
    node = DicomNode(config, processor=_SrOfStudy(), poll_interval=0.05)
    assert isinstance(node.destination, StowRsDestination)
    node.start()
    try:
        ds = make_cr(tmp_path / "cr.dcm")
        CStoreDestination(
            DicomDestination("PNEUMONIA", "127.0.0.1", node.port), calling_ae_title="MODALITY"
        ).send([tmp_path / "cr.dcm"])
        assert node.wait_idle(30)
    finally:
        node.stop(association_grace=2, drain_timeout=30)
    (stored,) = [s for s in orthanc.sr_instances() if s["StudyInstanceUID"] == ds.StudyInstanceUID]
    sr = dcmread(tmp_path / "work" / "done" / ds.StudyInstanceUID / "results" / "sr.dcm")
    assert stored["SOPInstanceUID"] == sr.SOPInstanceUID

    with refused_port() as port:
        down = StowRsDestination(StowDestination(f"http://127.0.0.1:{port}/dicom-web"))
        with pytest.raises(SendError, match=r"STOW-RS to http://127\.0\.0\.1"):
            down.send([tmp_path / "cr.dcm"])
