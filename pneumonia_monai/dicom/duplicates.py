"""The duplicate rule for SOP Instance UIDs (0008,0018): the first file of an instance wins.

Archives hold the same instance twice (a copy in another folder, a resend). ``pneumonia-monai select`` and
``pneumonia-monai infer`` (both engines) decide it by one rule, :class:`FirstOfSop`: files are taken in
input order, and a file whose SOP Instance UID an earlier file *holds* is skipped, with the reason
:func:`duplicate_reason`. A file holds its UID once it is selected (``select``) or once its row is ``ok``
(``infer``): a file that failed (unreadable pixels, a forward batch that failed) holds nothing, so a copy
of it is scored rather than skipped in favour of an original with no result. A file without a SOP
Instance UID (a JPEG or PNG film) is never anyone's duplicate.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def duplicate_reason(first: str) -> str:
    """The reason a duplicate is skipped with, naming the file that holds its SOP Instance UID."""
    return f"duplicate SOP Instance UID of {first}"


class FirstOfSop:
    """Which file holds each SOP Instance UID seen so far (see the module docstring)."""

    def __init__(self) -> None:
        self._first: dict[str, str] = {}

    def holder(self, sop_uid: str) -> str | None:
        """The name of the earlier file that holds ``sop_uid``; ``None`` if none does or it is empty."""
        return self._first.get(sop_uid) if sop_uid else None

    def hold(self, sop_uid: str, name: str) -> str | None:
        """Let the file ``name`` hold ``sop_uid`` unless an earlier file does.

        Returns:
            The name of the earlier file that holds it (``name`` is then a duplicate), else ``None``.
        """
        first = self.holder(sop_uid)
        if first is None and sop_uid:
            self._first[sop_uid] = name
        return first
