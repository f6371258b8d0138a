"""Triage the entries of an input: one :class:`~pneumonia_monai.dicom.selection.Decision` per file.

This is where the two kinds of film meet, above both :mod:`pneumonia_monai.dicom` and
:mod:`pneumonia_monai.transforms`: a DICOM file is decided from its header by the selection rules
(:func:`pneumonia_monai.dicom.selection.decide_header`, in the order that module's docstring gives), a
JPEG, PNG or TIFF picture by its name, and a NIfTI, MetaImage or NRRD file from its own header
(:func:`pneumonia_monai.transforms.volume_io.film_decision`). ``select``, ``infer`` (its film step), the
datalist builder and the MONAI Label app all triage through :func:`decide_file` and :func:`select_files`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from pneumonia_monai import formats
from pneumonia_monai.dicom import limits
from pneumonia_monai.dicom.duplicates import FirstOfSop, duplicate_reason
from pneumonia_monai.dicom.header import (
    HEADER_READ_ERRORS,
    NotDicomError,
    TruncatedDicomError,
    is_dicom,
    read_header,
)
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.selection import (
    ERROR,
    SELECTED,
    SKIPPED,
    Decision,
    SelectionResult,
    decide_header,
    entry_problem,
    make_decision,
    relative_path_in,
)
from pneumonia_monai.dicom.walk import iter_input_files
from pneumonia_monai.names import JUNK_REASON, is_junk
from pneumonia_monai.transforms.volume_io import film_decision

logger = logging.getLogger(__name__)


def decide_file(
    path: str | Path, rules: SelectionRules | None = None, *, root: str | Path | None = None
) -> Decision:
    """Decide one file (without the duplicate check, which needs the other files).

    Args:
        path: the file.
        rules: the rules (default: the package's).
        root: the input folder it belongs to (default: its parent), for :attr:`Decision.relative_path`.
    """
    path = Path(path)
    rules = rules or SelectionRules.default()
    root_path = Path(root) if root is not None else path.parent
    if is_junk(relative_path_in(path, root_path)):
        return make_decision(path, root_path, SKIPPED, JUNK_REASON)
    entry = entry_problem(path)
    if entry is not None:
        return make_decision(path, root_path, *entry)
    try:
        if path.stat().st_size == 0:
            return make_decision(path, root_path, SKIPPED, "zero-byte file")
        film = decide_film_file(path)
        if film is not None:
            return make_decision(path, root_path, *film)
        header = read_header(path, rules.header_keywords())
    except NotDicomError as exc:
        return make_decision(path, root_path, SKIPPED, str(exc))
    except TruncatedDicomError as exc:
        logger.warning("%s is truncated", path)
        return make_decision(path, root_path, ERROR, str(exc))
    except (limits.SizeLimitError, limits.DeflateError) as exc:
        logger.warning("%s: %s", path, type(exc).__name__)
        return make_decision(path, root_path, ERROR, str(exc))
    except RecursionError:
        logger.warning("cannot read the DICOM header of %s: RecursionError", path)
        return make_decision(
            path, root_path, ERROR, "unreadable DICOM header (sequences nested too deeply to read)"
        )
    except OSError as exc:
        logger.warning("cannot read %s: %s", path, type(exc).__name__)
        return make_decision(
            path, root_path, ERROR, f"cannot read file ({type(exc).__name__}: {exc.strerror or exc})"
        )
    except HEADER_READ_ERRORS as exc:
        logger.warning("cannot read the DICOM header of %s: %s", path, type(exc).__name__)
        return make_decision(path, root_path, ERROR, f"unreadable DICOM header ({type(exc).__name__}: {exc})")
    status, reason = decide_header(header, rules)
    return make_decision(path, root_path, status, reason, header.dataset, rules)


def decide_film_file(path: str | Path) -> tuple[str, str] | None:
    """Decide a film that is not DICOM by its name (:mod:`pneumonia_monai.formats`), or None.

    A file named as a JPEG, PNG or TIFF picture is taken as a frontal chest film; a NIfTI, MetaImage or
    NRRD file is decided from its header (:func:`pneumonia_monai.transforms.volume_io.film_decision`:
    one 2-D grey film is selected, a volume of more slices, a 4-D or vector file skipped, each with its
    reason); the ``.raw`` / ``.zraw`` voxel data beside a ``.mhd`` header of the same name is skipped as such.
    A file that is DICOM by its header is never decided here, whatever its name.
    """
    suffix = formats.film_suffix(path)
    header = formats.metaimage_header_of(path)
    if header is not None:
        return SKIPPED, f"MetaImage voxel data of {header.name} (read through that header)"
    if suffix not in formats.FILM_SUFFIXES or is_dicom(path):
        return None
    if suffix in formats.PICTURE_SUFFIXES:
        return SELECTED, f"{suffix.lstrip('.').upper()} image, taken as a frontal chest film"
    return film_decision(path)


def select_files(
    inputs: Sequence[str | Path],
    rules: SelectionRules | None = None,
    *,
    progress: Callable[[Iterable[tuple[Path, Path]]], Iterable[tuple[Path, Path]]] | None = None,
) -> SelectionResult:
    """Decide every file under ``inputs``: one :class:`Decision` per file, in a stable order.

    Args:
        inputs: files and folders (searched recursively; every file is looked at, whatever its name).
        rules: the rules (default: the package's ``selection_rules.yaml``).
        progress: wraps the file iterator to show progress (e.g. ``tqdm``); called once.

    Raises:
        ValueError: if ``inputs`` is empty.
        FileNotFoundError: if an input does not exist.
    """
    if isinstance(inputs, str | Path):
        raise TypeError("inputs must be a sequence of paths, not a single path")
    if not inputs:
        raise ValueError("select_files needs at least one input path")
    for item in inputs:
        if not Path(item).exists():
            raise FileNotFoundError(f"input not found: {item}")
    rules = rules or SelectionRules.default()
    files = list(iter_input_files(inputs))
    decisions: list[Decision] = []
    sops = FirstOfSop()
    for path, root in progress(files) if progress is not None else files:
        decision = decide_file(path, rules, root=root)
        if decision.status == SELECTED:  # the first selected file of a SOP Instance UID wins
            first = sops.hold(decision.sop_uid, decision.relative_path)
            if first is not None:
                decision = replace(decision, status=SKIPPED, reason=duplicate_reason(first))
        logger.debug("%s: %s (%s)", decision.relative_path, decision.status, decision.reason)
        decisions.append(decision)
    result = SelectionResult(decisions, rules)
    counts = result.counts()
    logger.info(
        "%d file(s): %d selected in %d study(ies), %d skipped, %d unreadable",
        len(decisions),
        counts[SELECTED],
        len(result.studies()),
        counts[SKIPPED],
        counts[ERROR],
    )
    return result
