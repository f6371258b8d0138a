"""``infer --dicomweb``: pull studies from a real PACS (a private Orthanc), classify, STOW the SRs back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from repo_paths import SAMPLE_DICOM

from pneumonia_monai.cli.infer import main as infer_main
from pneumonia_monai.devtools.orthanc import OrthancServer
from pneumonia_monai.dicomweb import pull


@pytest.fixture(scope="module")
def orthanc(
    tmp_path_factory: pytest.TempPathFactory, start_orthanc: Callable[..., OrthancServer]
) -> Iterator[OrthancServer]:
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        for path in sorted(SAMPLE_DICOM.rglob("*.dcm")):
            server.upload(path)
        yield server


def _sr_series(orthanc: OrthancServer, study_uid: str) -> list[dict]:
    found = orthanc.post_json("/tools/find", {"Level": "Series", "Query": {"StudyInstanceUID": study_uid}})
    series = [orthanc.get_json(f"/series/{oid}") for oid in found]
    return [s for s in series if s["MainDicomTags"].get("Modality") == "SR"]


def test_pull_classify_and_stow(tmp_path: Path, tiny_bundle: Path, orthanc: OrthancServer) -> None:
    studies = orthanc.post_json("/tools/find", {"Level": "Study", "Query": {}, "Expand": True})
    uids = sorted(s["MainDicomTags"]["StudyInstanceUID"] for s in studies)
    assert len(uids) == 4
    out = tmp_path / "out"
    rc = infer_main(
        [
            "--output", str(out), "--bundle", str(tiny_bundle), "--workers", "0",
            "--dicomweb", orthanc.dicomweb_url, "--study", uids[0], "--query", "ModalitiesInStudy=DX",
            "--limit", "2", "--stow", "-q",
        ]
    )  # fmt: skip
    assert rc == 0
    pulled = {p.name for p in (out / "dicomweb").iterdir()}
    assert uids[0] in pulled and 2 <= len(pulled) <= 3  # --study plus up to 2 from the query, deduplicated
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) - 1 == sum(1 for _ in (out / "dicomweb").rglob("*.dcm"))
    for study_uid in pulled:
        assert (out / "sr" / f"{study_uid}.dcm").is_file()
        assert len(_sr_series(orthanc, study_uid)) == 1, "the SR did not come back to the PACS"


def test_pull_usage_and_failures(tmp_path: Path, tiny_bundle: Path, orthanc: OrthancServer) -> None:
    out = tmp_path / "out"
    assert infer_main(["--output", str(out), "-q"]) == 2
    assert infer_main(["--output", str(out), "--dicomweb", orthanc.dicomweb_url, "-q"]) == 2
    assert infer_main(["--output", str(out), "--study", "1.2.3", "-q"]) == 2
    assert infer_main(["--output", str(out), "--dicomweb", orthanc.dicomweb_url, "--query", "bad", "-q"]) == 2
    # an unknown study is a failure of that study, not a crash
    rc = infer_main(
        ["--output", str(out), "--bundle", str(tiny_bundle), "--dicomweb", orthanc.dicomweb_url,
         "--study", "1.2.826.0.1.3680043.8.498.1", "-q"]
    )  # fmt: skip
    assert rc == 1


def test_query_keys_are_qido_filters_never_parameters_of_the_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every ``--query KEY=VALUE`` reaches QIDO-RS as a filter on attribute KEY, whatever KEY is.

    ``fields=X`` was once spread as a keyword argument into ``query_studies`` and landed on its own
    ``fields`` parameter (X's characters were then checked as attribute keywords); ``limit=X`` on its
    ``limit``. A key that is no DICOM keyword is refused by name, before any request.
    """
    searches: list[dict[str, Any]] = []

    class RecordingClient:
        """Stands in for dicomweb-client's DICOMwebClient: records each study search, finds nothing."""

        def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
            self.url = url

        def set_http_retry_params(self, retry: bool) -> None:
            assert retry is False

        def search_for_studies(self, **kwargs: Any) -> list[dict]:
            searches.append(kwargs)
            return []

    monkeypatch.setattr(pull, "DICOMwebClient", RecordingClient)
    base = ["--output", str(tmp_path / "out"), "--dicomweb", "http://127.0.0.1:9/dicom-web", "-q"]
    rc = infer_main(
        [*base, "--query", "ModalitiesInStudy=DX", "--query", "StudyDescription=X", "--limit", "3"]
    )
    assert rc == 1  # nothing matched: no study could be retrieved
    assert searches == [
        {
            "search_filters": {"ModalitiesInStudy": "DX", "StudyDescription": "X"},
            "fields": None,
            "limit": 3,
            "get_remaining": False,
        }
    ]
    for key in ("fields", "limit"):
        caplog.clear()
        assert infer_main([*base, "--query", f"{key}=StudyDescription"]) == 2
        assert f"DICOMweb: {key!r} is not a DICOM keyword" in caplog.text
    assert len(searches) == 1
    with pytest.raises(TypeError, match="filters must be a mapping"):
        pull.query_studies("http://127.0.0.1:9/dicom-web", [("StudyDescription", "X")])


def test_manifest_of_dicomweb_instance_urls(
    tmp_path: Path, tiny_bundle: Path, orthanc: OrthancServer
) -> None:
    """``--manifest`` entries that are WADO-RS instance URLs are fetched as stored and triaged like files."""
    import pydicom

    def url(path: Path) -> str:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return (
            f"{orthanc.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )

    frontal, lateral = (
        SAMPLE_DICOM / "pneumonia_dx" / "frontal.dcm",
        SAMPLE_DICOM / "pneumonia_dx" / "lateral.dcm",
    )
    unknown = url(frontal).rsplit("/", 1)[0] + "/1.2.3.4.5"
    entries = [url(frontal), url(lateral), unknown]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("uri\n" + "\n".join(entries) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    rc = infer_main(["--manifest", str(manifest), "--output", str(out), "--bundle", str(tiny_bundle), "-q"])
    assert rc == 1  # the unknown instance is an error row
    rows = (out / "results.csv").read_text().splitlines()[1:]
    statuses = [row.split(",")[1] for row in rows]
    assert statuses == ["ok", "skipped", "error"]
    assert [row.split(",")[0] for row in rows] == entries
    fetched = sorted((out / ".state" / "fetched").iterdir())
    assert len(fetched) == 2 and fetched[0].read_bytes()[128:132] == b"DICM"
    study_uid = pydicom.dcmread(frontal, stop_before_pixels=True).StudyInstanceUID
    assert (out / "sr" / f"{study_uid}.dcm").is_file()
