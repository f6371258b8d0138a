"""Deterministic identifiers: DICOM UIDs derived from content, pseudonyms and salted patient hashes.

Re-running a conversion must give the same UIDs, so the UIDs written by
:mod:`pneumonia_monai.data.kaggle_dicom` are *name-based*: a version 5 (SHA-1, name-based) UUID of
the inputs, written under the ``2.25`` arc as PS3.5 Annex B.2 and ISO/IEC 9834-8 allow for any UUID. Note that
``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)`` is *not* deterministic: with ``prefix=None``
pydicom ignores ``entropy_srcs`` and returns a random UUID.

Pseudonyms and patient hashes are one-way (SHA-256 / HMAC-SHA-256) and short enough for the DICOM value
representations they go into (LO: 64 characters, PN component: 64 characters).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from pathlib import Path

from pydicom.uid import UID

#: Namespace of every name-based UUID this package derives. Never change it: that would change every UID.
UID_NAMESPACE: uuid.UUID = uuid.UUID("0400c9ff-e9f6-4b3d-8633-f2911517f619")

_CHUNK = 1 << 20


def _check_parts(parts: tuple[str, ...], what: str) -> None:
    if not parts:
        raise ValueError(f"{what} needs at least one part")
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"{what} parts must be str, got {type(part).__name__}: {part!r}")
        if not part:
            raise ValueError(f"{what} parts must be non-empty strings, got {parts!r}")


def derived_uuid(*parts: str) -> uuid.UUID:
    """Return the name-based (version 5) UUID of ``parts`` in :data:`UID_NAMESPACE`.

    The parts are serialised as a JSON list, so ``("ab", "c")`` and ``("a", "bc")`` differ. It is the
    UUID behind :func:`derived_uid`, and the id of the FHIR resources (:mod:`pneumonia_monai.fhir`).

    Raises:
        ValueError: if no part is given or a part is empty.
        TypeError: if a part is not a string.
    """
    _check_parts(parts, "derived_uuid")
    name = json.dumps(list(parts), ensure_ascii=True, separators=(",", ":"))
    return uuid.uuid5(UID_NAMESPACE, name)


def derived_uid(*parts: str) -> UID:
    """Return the ``2.25`` UID of a name-based UUID of ``parts`` (:func:`derived_uuid`).

    The parts are serialised as a JSON list, so ``("ab", "c")`` and ``("a", "bc")`` give different UIDs.

    Args:
        *parts: the non-empty strings the UID is derived from (a kind tag, a content digest, a path ...).

    Returns:
        A valid DICOM UID of at most 44 characters.

    Raises:
        ValueError: if no part is given or a part is empty.
        TypeError: if a part is not a string.
    """
    _check_parts(parts, "derived_uid")
    return UID(f"2.25.{derived_uuid(*parts).int}")


#: ``operating_point`` of a run that uses the bundle's own threshold (a site's own is named in its
#: overlay, :mod:`pneumonia_monai.site_overlay`).
BUNDLE_OPERATING_POINT = "bundle"


def result_version(model_version: str, operating_point: str | None = None) -> str:
    """The version the identifiers of a result derive from: the model version, with a site's operating point.

    With the bundle's own threshold (``operating_point`` ``None``, empty or ``"bundle"``) it is
    ``model_version`` unchanged. A site's threshold can call a film differently, so results made at a
    site operating point (:mod:`pneumonia_monai.site_overlay`) are other objects:
    ``"<model_version> <operating point>"``.
    """
    if operating_point in (None, "", BUNDLE_OPERATING_POINT):
        return model_version
    return f"{model_version} {operating_point}"


#: Kinds of result object :func:`result_uids` derives identifiers for.
RESULT_KINDS: frozenset[str] = frozenset({"sr", "sc", "seg"})


def result_uids(
    kind: str, study_uid: str, model_version: str, source_sop_instance_uids: Iterable[str]
) -> tuple[UID, UID]:
    """Return the (Series Instance UID, SOP Instance UID) of a result object, derived from what it reports on.

    The same study, model version and set of source images always give the same UIDs, so a resend, a
    rerun or the same study pushed to the node and pulled with ``infer`` give the *same* object (a
    PACS stores it once), while another model version or another set of images gives new ones. The
    sources are sorted and de-duplicated first: their order does not matter.

    Args:
        kind: ``"sr"`` (the study's report), ``"sc"`` (a heatmap Secondary Capture) or ``"seg"`` (a
            lung-field Segmentation).
        study_uid: Study Instance UID of the sources.
        model_version: version of the model that produced the result.
        source_sop_instance_uids: SOP Instance UIDs of the images the object reports on.

    Returns:
        Two distinct ``2.25`` UIDs (:func:`derived_uid`).

    Raises:
        ValueError: if ``kind`` is unknown, a value is empty, or no source is given.
        TypeError: if a value is not a string.
    """
    if kind not in RESULT_KINDS:
        raise ValueError(f"kind must be one of {sorted(RESULT_KINDS)}, got {kind!r}")
    if isinstance(source_sop_instance_uids, str):
        raise TypeError(
            f"source_sop_instance_uids must be a collection of UIDs, got {source_sop_instance_uids!r}"
        )
    sources = sorted({str(uid) if isinstance(uid, UID) else uid for uid in source_sop_instance_uids})
    if not sources:
        raise ValueError("result_uids() needs at least one source SOP Instance UID")
    parts = (str(study_uid) if isinstance(study_uid, UID) else study_uid, model_version, *sources)
    _check_parts(parts, "result_uids")
    return derived_uid(f"{kind} series", *parts), derived_uid(f"{kind} instance", *parts)


def file_digest(path: str | Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pseudonym(identifier: str, *, namespace: str, prefix: str = "ANON", length: int = 12) -> str:
    """Return a stable pseudonym for an identifier that is already public (a Kaggle patient id, say).

    The pseudonym is ``prefix`` + the first ``length`` upper-case hex digits of
    ``SHA-256(namespace + NUL + identifier)``; it contains only ``[A-Z0-9]`` so it is valid as a
    Patient ID (LO), a Patient's Name (PN) and a folder name.

    Args:
        identifier: the identifier to replace.
        namespace: what the identifier is unique within (``"kermany2018"``), so equal ids of two data
            sets do not share a pseudonym.
        prefix: upper-case letters/digits put in front.
        length: number of hex digits kept (8 to 32).

    Raises:
        ValueError: if ``identifier`` or ``namespace`` is empty, ``prefix`` is not alphanumeric upper case,
            or ``length`` is out of range.
    """
    if not identifier:
        raise ValueError("pseudonym() needs a non-empty identifier")
    if not namespace:
        raise ValueError("pseudonym() needs a non-empty namespace")
    if not (prefix.isascii() and prefix.isalnum() and prefix.upper() == prefix):
        raise ValueError(f"prefix must be upper-case ASCII letters and digits, got {prefix!r}")
    if not 8 <= length <= 32:
        raise ValueError(f"length must be between 8 and 32, got {length!r}")
    digest = hashlib.sha256(f"{namespace}\x00{identifier}".encode()).hexdigest().upper()
    return f"{prefix}{digest[:length]}"


def salted_patient_hash(patient_id: str, salt: str, *, length: int = 16) -> str:
    """Return a keyed one-way hash of a Patient ID, for grouping without the identifier.

    ``HMAC-SHA-256(salt, patient_id)`` truncated to ``length`` hex digits and prefixed with ``P``. Without
    the salt, a hash cannot be checked against a guessed Patient ID, which is what makes it safe to write
    into a datalist.

    Args:
        patient_id: the Patient ID (0010,0020) value.
        salt: a secret; keep it to get the same hashes on a later run.
        length: number of hex digits kept (8 to 64).

    Raises:
        ValueError: if ``patient_id`` or ``salt`` is empty or ``length`` is out of range.
    """
    if not patient_id:
        raise ValueError("salted_patient_hash() needs a non-empty patient_id")
    if not salt:
        raise ValueError("salted_patient_hash() needs a non-empty salt")
    if not 8 <= length <= 64:
        raise ValueError(f"length must be between 8 and 64, got {length!r}")
    mac = hmac.new(salt.encode(), patient_id.encode(), hashlib.sha256).hexdigest()
    return f"P{mac[:length]}"
