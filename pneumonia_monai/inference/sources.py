"""Input manifests: a CSV or Parquet list of URIs to infer on, and fetching each URI's bytes.

``infer --manifest FILE`` (both engines) takes, besides files and folders, a table of URIs for archives
nobody lists by walking a folder (an object store, an IDC cohort). The column read is ``uri`` (else
``path``, else the only column); empty cells are ignored. Each entry is one of:

- a **local path** (absolute, or relative to the manifest's folder) or a ``file://`` URI: read in place,
  like a file given on the command line;
- an **object-store URI** (``s3://``, ``gs://``, ``az://``, ... any protocol fsspec knows, with its
  filesystem package installed: ``s3fs``, ``gcsfs``): fetched with :func:`fsspec.open`;
- a **DICOMweb instance URL** ``http(s)://HOST/BASE/studies/{study}/series/{series}/instances/{sop}``:
  fetched with WADO-RS as stored (:func:`pneumonia_monai.dicomweb.pull.retrieve_instance`).

A fetched entry is copied once into the run's cache (``OUT/.state/fetched/<sha256 of the URI>``, written
atomically: a retried task or a resumed run finds it there), since the selection rules, the decoders and
the SR writer read files; its row's ``path`` is the URI without credentials. Its resume key is the URI
itself: a changed object under the same URI is only seen again with ``--force``.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from pneumonia_monai import atomic
from pneumonia_monai.inference.film_step import FilmJob
from pneumonia_monai.inference.journal import file_key

logger = logging.getLogger(__name__)

#: Column names read from a manifest, in order of preference.
MANIFEST_COLUMNS: tuple[str, ...] = ("uri", "path")
#: Folder of fetched entries, under the output's state folder (``runner.FETCHED``).
FETCHED_DIR = "fetched"
#: Reading a fetched object, at most this many bytes at a time.
CHUNK = 1 << 20
_WADO = re.compile(
    r"^(?P<base>https?://.+?)/studies/(?P<study>[0-9.]+)/series/(?P<series>[0-9.]+)"
    r"/instances/(?P<sop>[0-9.]+)/?$"
)
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


class SourceError(RuntimeError):
    """An entry of a manifest could not be fetched; the message says which and why (no credentials)."""


def public_uri(uri: str) -> str:
    """The URI without user name or password (what rows and logs carry)."""
    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def uri_scheme(uri: str) -> str:
    """``""`` for a local path, else the URI's scheme in lower case (``s3``, ``https``, ``file``)."""
    match = _SCHEME.match(uri)
    return match.group("scheme").lower() if match else ""


def read_manifest(path: str | Path) -> list[str]:
    """Read the entries of a manifest (``.parquet``/``.pq`` by pyarrow, anything else as CSV).

    Raises:
        FileNotFoundError: if the manifest does not exist.
        ValueError: if it has no usable column (the message names the columns it has).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    if path.suffix.lower() in {".parquet", ".pq"}:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - pyarrow comes with the ray extra
            raise ValueError(
                f"{path}: reading a Parquet manifest needs pyarrow (pip install .[ray])"
            ) from exc
        table = pq.read_table(path)
        names = list(table.column_names)
        column = _column(path, names)
        values = table.column(column).to_pylist()
    else:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            try:
                names = next(reader)
            except StopIteration:
                raise ValueError(
                    f"manifest {path} is empty: give a header row naming a 'uri' column"
                ) from None
            index = names.index(_column(path, names))
            values = [row[index] if index < len(row) else "" for row in reader]
    entries = [str(value).strip() for value in values if value is not None and str(value).strip()]
    logger.info("manifest %s: %d entr(ies)", path.name, len(entries))
    return entries


def _column(path: Path, names: list[str]) -> str:
    for name in MANIFEST_COLUMNS:
        if name in names:
            return name
    if len(names) == 1:
        return names[0]
    raise ValueError(f"manifest {path} has no column {' or '.join(MANIFEST_COLUMNS)} (columns: {names})")


def manifest_jobs(manifest: str | Path, cache: Path, first_index: int = 0) -> list[FilmJob]:
    """The jobs of a manifest's entries, numbered from ``first_index``; ``cache`` holds fetched entries.

    Raises:
        FileNotFoundError, ValueError: see :func:`read_manifest`; ValueError also for an entry of an
            unknown kind (``ftp://``, a DICOMweb URL that is not an instance's).
    """
    manifest = Path(manifest)
    jobs: list[FilmJob] = []
    for entry in read_manifest(manifest):
        scheme = uri_scheme(entry)
        index = first_index + len(jobs)
        if scheme in ("", "file"):
            local = Path(unquote(urlsplit(entry).path)) if scheme == "file" else Path(entry)
            if not local.is_absolute():
                local = manifest.parent / local
            local = Path(local.absolute())
            try:
                key = file_key(local)
            except OSError:  # a missing file is an error row (entry_problem), not the end of the run
                key = hashlib.sha256(str(local).encode("utf-8", "surrogateescape")).hexdigest()
            jobs.append(FilmJob(index, local, local.parent, entry, key))
            continue
        if scheme in ("http", "https") and not _WADO.match(entry):
            raise ValueError(
                f"manifest entry {public_uri(entry)!r} is not a DICOMweb instance URL "
                "(.../studies/{study}/series/{series}/instances/{sop})"
            )
        if scheme not in ("http", "https"):
            _check_protocol(scheme, entry)
        digest = hashlib.sha256(entry.encode("utf-8", "surrogateescape")).hexdigest()
        suffix = Path(urlsplit(entry).path).suffix.lower()  # JPEG/PNG films are known by their suffix
        name = digest + (suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else "")
        folder = cache / FETCHED_DIR
        jobs.append(FilmJob(index, folder / name, folder, public_uri(entry), digest, uri=entry))
    return jobs


def _check_protocol(scheme: str, entry: str) -> None:
    try:
        from fsspec.registry import known_implementations
    except ImportError as exc:  # pragma: no cover - fsspec comes with the ray extra
        raise ValueError(f"manifest entry {public_uri(entry)!r} needs fsspec (pip install .[ray])") from exc
    if scheme not in known_implementations:
        raise ValueError(f"manifest entry {public_uri(entry)!r}: unknown protocol {scheme!r}")


def fetch(uri: str, path: Path) -> Path:
    """Copy the object at ``uri`` to ``path`` (atomically) unless it is there already; return ``path``.

    Raises:
        SourceError: if it cannot be fetched (the message names the URI without credentials).
    """
    if path.is_file():
        return path
    where = public_uri(uri)
    match = _WADO.match(uri)
    try:
        if match:
            from pneumonia_monai.dicomweb.pull import DicomWebError, retrieve_instance

            try:
                return retrieve_instance(
                    match.group("base"), match.group("study"), match.group("series"), match.group("sop"), path
                )
            except (DicomWebError, ValueError) as exc:
                raise SourceError(f"cannot fetch {where}: {exc}") from exc
        import fsspec

        with fsspec.open(uri, "rb") as source, atomic.atomic_open(path, "wb") as target:
            while chunk := source.read(CHUNK):
                target.write(chunk)
    except SourceError:
        raise
    except Exception as exc:  # every filesystem has its own errors: each is that entry's error row
        raise SourceError(f"cannot fetch {where} ({type(exc).__name__}: {exc})".replace(uri, where)) from exc
    return path
