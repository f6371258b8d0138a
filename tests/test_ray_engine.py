"""The Ray Data engine (``infer --engine ray``) against the local engine, and the manifest input.

One local Ray (``ray.init(num_cpus=2)``) serves the module. On the mixed folder of ``test_infer_cli``
(DICOM in four transfer syntaxes, a duplicate SOP Instance UID, laterals, an SR, broken and empty files,
JPEG/PNG, junk) the Ray engine's rows must be the local engine's; an actor killed mid-run must leave one
row per file; a rerun must reuse every row. The manifest tests run on the local engine (no Ray).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pydicom
import pytest
from infer_helpers import SMALL_NET, build_dataset, write_bundle

from pneumonia_monai.cli import infer as infer_cli
from pneumonia_monai.inference.manifest import (
    RESULT_COLUMNS,
    RESULTS_PARQUET,
    ResultRow,
    read_results_csv,
    write_results_parquet,
)
from pneumonia_monai.inference.runner import run_inference

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.slow  # a local Ray takes some 15 s to start its actors on two cores

FLOATS = ("prob_pneumonia", "threshold")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "bundle", network_def=SMALL_NET)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("data") / "in")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, bundle_dir, dataset):
    out = tmp_path_factory.mktemp("local") / "out"
    summary = run_inference([dataset], out, bundle=bundle_dir, heatmaps=True, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory, local_ray, bundle_dir, dataset):
    out = tmp_path_factory.mktemp("ray") / "out"
    summary = run_inference(
        [dataset], out, bundle=bundle_dir, heatmaps=True, progress=False, engine="ray", ray_actors=2
    )
    return out, summary


def assert_same_rows(
    ray_rows: list[dict[str, str]], local_rows: list[dict[str, str]], key: str = "path"
) -> None:
    """The same rows in the same order: every cell equal, probabilities within 1e-4."""
    assert [r[key] for r in ray_rows] == [r[key] for r in local_rows]
    for got, want in zip(ray_rows, local_rows, strict=True):
        assert {k: v for k, v in got.items() if k not in FLOATS} == {
            k: v for k, v in want.items() if k not in FLOATS
        }, got[key]
        for column in FLOATS:
            if want[column] == "":
                assert got[column] == "", (got[key], column)
            else:
                assert math.isclose(float(got[column]), float(want[column]), abs_tol=1e-4), (
                    got[key],
                    column,
                )


def sr_uids(out: Path) -> dict[str, tuple[str, str]]:
    """SR file name -> (SOP Instance UID, Series Instance UID) of every SR of a run."""
    found = {}
    for path in sorted((out / "sr").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        found[path.name] = (str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID))
    return found


def test_ray_rows_equal_local_rows(local_run, ray_run):
    (local_out, local), (ray_out, summary) = local_run, ray_run
    local_rows = read_results_csv(local_out / "results.csv")
    ray_rows = read_results_csv(ray_out / "results.csv")
    assert {r["status"] for r in local_rows} == {"ok", "skipped", "error"}  # the folder has all three
    assert any("duplicate SOP Instance UID" in r["reason"] for r in local_rows)
    assert_same_rows(ray_rows, local_rows)
    assert summary.counts == local.counts and summary.exit_code == local.exit_code == 1
    # the local engine never scores a later file of a SOP Instance UID; an actor does, before the rule
    duplicates = sum("duplicate SOP Instance UID" in r["reason"] for r in local_rows)
    assert local.n_inferred == local.counts["ok"] and summary.n_inferred == local.n_inferred + duplicates
    # studies: the same rows; one SR per study, with the same deterministic UIDs
    studies = read_results_csv(local_out / "studies.csv")
    assert len(studies) == 3
    assert_same_rows(read_results_csv(ray_out / "studies.csv"), studies, key="study_uid")
    assert sr_uids(ray_out) and sr_uids(ray_out) == sr_uids(local_out)
    # heatmaps: the same files (PNG per ok film, Secondary Capture per ok DICOM film)
    names = {p.name for p in (local_out / "heatmaps").iterdir()}
    assert {p.name for p in (ray_out / "heatmaps").iterdir()} == names
    assert sorted(p.name for p in summary.png_paths) == sorted(p.name for p in local.png_paths)
    # results.parquet: the rows of results.json, typed
    table = pq.read_table(ray_out / RESULTS_PARQUET)
    assert tuple(table.column_names) == RESULT_COLUMNS
    assert table.to_pylist() == json.loads((ray_out / "results.json").read_text(encoding="utf-8"))
    assert not (local_out / RESULTS_PARQUET).exists()  # the local engine writes it when asked only


def test_ray_rerun_resumes_every_row(ray_run, bundle_dir, dataset):
    out, first = ray_run
    before = read_results_csv(out / "results.csv")
    summary = run_inference(
        [dataset], out, bundle=bundle_dir, heatmaps=True, progress=False, engine="ray", ray_actors=1
    )
    errors = first.counts["error"]
    assert summary.n_inferred == 0 and summary.n_reused == len(before) - errors  # errors are retried
    assert read_results_csv(out / "results.csv") == before
    # the local engine into the same folder, without --parquet: no results.parquet left to disagree
    assert run_inference([dataset], out, bundle=bundle_dir, heatmaps=True, progress=False).n_inferred == 0
    assert read_results_csv(out / "results.csv") == before and not (out / RESULTS_PARQUET).exists()


def _scorer_actors() -> list[dict]:
    """The live FilmScorer actors of this Ray, from the GCS actor table (no dashboard needed)."""
    from ray._private import state

    return [
        actor
        for actor in state.actors().values()
        if "FilmScorer" in str(actor.get("ActorClassName", "")) and actor.get("State") == "ALIVE"
    ]


def _journal_lines(out: Path) -> int:
    journal = out / ".state" / "journal.jsonl"
    return journal.read_text(encoding="utf-8").count("\n") if journal.is_file() else 0


def test_killed_actor_leaves_one_row_per_file(tmp_path, local_ray, bundle_dir, dataset):
    """SIGKILL from outside kills a scoring actor mid-run; Ray restarts it, and every file has one row.

    The actor's process id comes from the GCS actor table; the kill comes once the journal holds a row
    and while files are still to be scored. A write the kill cut short leaves no temporary file behind.
    """
    import os
    import shutil
    import signal
    import threading

    from PIL import Image

    data = tmp_path / "in"
    shutil.copytree(dataset, data)
    (data / "more").mkdir()
    with Image.open(data / "kaggle/PNEUMONIA/person1_virus_1.png") as img:
        for i in range(60):  # more films, so that the run is still going when the kill comes
            img.save(data / f"more/film_{i:02d}.png")
    local_out = tmp_path / "local"
    local = run_inference([data], local_out, bundle=bundle_dir, heatmaps=True, progress=False)
    local_rows = read_results_csv(local_out / "results.csv")
    total = len(local_rows)
    out = tmp_path / "out"
    killed: list[tuple[int, int]] = []  # (pid, journal lines at the kill)
    done = threading.Event()

    def kill_one_actor() -> None:
        deadline = time.monotonic() + 300
        while not done.is_set() and time.monotonic() < deadline:
            lines = _journal_lines(out)
            actors = _scorer_actors() if lines else []
            if actors:
                pid = int(actors[0]["Pid"])
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, lines))
                return
            done.wait(0.05)

    killer = threading.Thread(target=kill_one_actor, daemon=True)
    killer.start()
    try:
        summary = run_inference(
            [data],
            out,
            bundle=bundle_dir,
            heatmaps=True,
            progress=False,
            engine="ray",
            ray_actors=2,
            batch_size=2,
        )
    finally:
        done.set()
        killer.join(10)
    assert killed, "no scoring actor was found alive to kill"
    assert killed[0][1] < total  # killed while files were still to be scored
    from ray._private import state

    restarts = [a["NumRestarts"] for a in state.actors().values() if "FilmScorer" in str(a["ActorClassName"])]
    assert max(restarts) >= 1  # Ray restarted the killed actor and retried its batch
    rows = read_results_csv(out / "results.csv")
    assert len(rows) == len({r["path"] for r in rows}) == total
    assert_same_rows(rows, local_rows)
    assert summary.counts == local.counts
    journal = [json.loads(line) for line in (out / ".state" / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == len({line["key"] for line in journal}) == len(rows)
    assert not list(out.rglob("*.tmp"))


def test_manifest_csv_and_parquet_local_engine(tmp_path, bundle_dir, dataset):
    """A manifest of local paths (relative, absolute, file://), a missing file and an fsspec memory:// URI."""
    import fsspec

    film = dataset / "studyA" / "pa.dcm"
    with fsspec.open("memory://bucket/remote/film.dcm", "wb") as handle:
        handle.write((dataset / "studyB" / "pa_rle_mono1.dcm").read_bytes())
    entries = [
        "in/studyA/pa.dcm",
        str(dataset / "kaggle/NORMAL/IM-0001.jpeg"),
        film.with_name("lateral.dcm").as_uri(),
        "in/missing.dcm",
        "memory://bucket/remote/film.dcm",
        "memory://bucket/remote/gone.dcm",
    ]
    manifest = dataset.parent / "manifest.csv"
    manifest.write_text("uri,label\n" + "".join(f"{e},x\n" for e in entries), encoding="utf-8")
    out = tmp_path / "out"
    status = infer_cli.main(
        ["--manifest", str(manifest), "--output", str(out), "--bundle", str(bundle_dir), "-q"]
    )
    assert status == 1  # the missing entries are errors
    rows = read_results_csv(out / "results.csv")
    assert [r["path"] for r in rows] == entries
    by_path = {r["path"]: r for r in rows}
    assert [by_path[e]["status"] for e in entries] == ["ok", "ok", "skipped", "error", "ok", "error"]
    assert "gone.dcm" in by_path["memory://bucket/remote/gone.dcm"]["reason"]
    assert by_path["memory://bucket/remote/film.dcm"]["study_uid"]  # triaged from the fetched header
    assert (out / "sr" / f"{by_path['memory://bucket/remote/film.dcm']['study_uid']}.dcm").is_file()
    # the same entries as Parquet (column "path"), into another folder, with --parquet: the same rows
    parquet_manifest = dataset.parent / "manifest.parquet"
    import pyarrow as pa

    pq.write_table(pa.table({"path": entries}), parquet_manifest)
    out2 = tmp_path / "out2"
    args = [
        "--manifest",
        str(parquet_manifest),
        "--output",
        str(out2),
        "--bundle",
        str(bundle_dir),
        "--parquet",
        "-q",
    ]
    assert infer_cli.main(args) == 1
    assert read_results_csv(out2 / "results.csv") == rows
    assert pq.read_table(out2 / RESULTS_PARQUET).column("path").to_pylist() == entries


def test_manifest_without_a_usable_column_is_a_usage_error(tmp_path, bundle_dir):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\na.dcm,x\n", encoding="utf-8")
    out = tmp_path / "out"
    assert (
        infer_cli.main(["--manifest", str(manifest), "--output", str(out), "--bundle", str(bundle_dir)]) == 2
    )
    assert not (out / "results.csv").exists()


def test_engine_flags_and_refusals(tmp_path, bundle_dir, dataset):
    args = infer_cli.build_parser().parse_args(
        [
            "x",
            "-o",
            "o",
            "--engine",
            "ray",
            "--ray-address",
            "auto",
            "--ray-actors",
            "3",
            "--manifest",
            "m.csv",
        ]
    )
    assert (args.engine, args.ray_address, args.ray_actors, args.manifest) == (
        "ray",
        "auto",
        3,
        Path("m.csv"),
    )
    assert infer_cli.build_parser().parse_args(["x", "-o", "o"]).engine == "local"
    common = [str(dataset), "--output", str(tmp_path / "out"), "--bundle", str(bundle_dir)]
    assert infer_cli.main([*common, "--engine", "ray", "--masks"]) == 2
    with pytest.raises(SystemExit):
        infer_cli.build_parser().parse_args(["x", "-o", "o", "--engine", "spark"])


def test_results_parquet_shards_and_back(tmp_path):
    rows = [
        ResultRow(f"f{i}.dcm", "ok", "r", prob_pneumonia=0.1 * i, prediction="normal", threshold=0.9)
        for i in range(5)
    ]
    written = write_results_parquet(tmp_path, rows, shard_rows=2)
    assert [p.name for p in written] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    table = pq.read_table(tmp_path / RESULTS_PARQUET)
    assert table.column("path").to_pylist() == [f"f{i}.dcm" for i in range(5)]
    assert table.column("prob_pneumonia").to_pylist() == [0.1 * i for i in range(5)]
    written = write_results_parquet(tmp_path, rows[:1])  # fewer rows: one file, the shards gone
    assert written == [tmp_path / RESULTS_PARQUET] and (tmp_path / RESULTS_PARQUET).is_file()
    with pytest.raises(ValueError, match="shard_rows"):
        write_results_parquet(tmp_path, rows, shard_rows=0)
