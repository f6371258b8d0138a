"""Keep patient values out of log lines, including those pydicom and highdicom write.

pydicom and highdicom quote the offending value when they reject one ("Invalid value for VR DA:
'1901-02-03'.", "Unable to convert '1901-02-03' to 'DA' object"), and such a message reaches this
package's log through a warning or an exception's text. A source's values are patient data, so:

- in records of the loggers that quote dataset values (:data:`QUOTING_LOGGERS`: pydicom, highdicom and
  the ``py.warnings`` logger that :func:`logging.captureWarnings` feeds), every quoted substring is
  replaced with ``'<redacted>'``;
- in every record, the value-quoting phrases of those libraries (:data:`VALUE_PATTERNS`) are redacted,
  also in the text of a logged exception and its traceback.

Nothing is installed at import time, and the library configures no handler: the commands call
:func:`install_phi_redaction` (through :func:`pneumonia_monai.cli.common.configure_logging`), which
redacts each record as it is created, whatever handler later writes it. An application that configures
its own logging can instead add :class:`PhiRedactingFilter` to its handlers.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

#: Replaces a redacted value.
REDACTED = "<redacted>"
#: Top-level loggers whose messages quote dataset values: every quoted substring of theirs is redacted.
QUOTING_LOGGERS: frozenset[str] = frozenset({"pydicom", "highdicom", "py.warnings"})

_QUOTED = r"(?:b?'[^'\n]*'|b?\"[^\"\n]*\")"
#: Phrases of pydicom and highdicom that quote a value, and how each is rewritten.
VALUE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"(Invalid value for VR \w\w: ){_QUOTED}"), rf"\1'{REDACTED}'"),
    (re.compile(rf"(Unable to convert (?:non-conformant value )?){_QUOTED}"), rf"\1'{REDACTED}'"),
    (re.compile(rf"(Value ){_QUOTED}( is not valid for elements with a VR of)"), rf"\1'{REDACTED}'\2"),
    (re.compile(rf"(The string ){_QUOTED}( is unlikely to represent)"), rf"\1'{REDACTED}'\2"),
    (
        re.compile(rf"((?:[Vv]alue|[Ss]tring) ){_QUOTED}( (?:is|are|for|of|cannot|must) )"),
        rf"\1'{REDACTED}'\2",
    ),
)
_ANY_QUOTED = re.compile(_QUOTED)
#: Marks a record factory installed by :func:`install_phi_redaction`.
_MARK = "_pneumonia_monai_redacting"


def redact(text: str, *, all_quoted: bool = False) -> str:
    """Return ``text`` with the values it quotes replaced by ``<redacted>``.

    Args:
        text: a log message (or an exception's formatted text).
        all_quoted: redact every quoted substring, not only those of :data:`VALUE_PATTERNS`.

    Raises:
        TypeError: if ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    for pattern, replacement in VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    if all_quoted:
        text = _ANY_QUOTED.sub(f"'{REDACTED}'", text)
    return text


def redact_record(record: logging.LogRecord) -> None:
    """Redact ``record`` in place: its message (merged with its arguments) and its exception text."""
    all_quoted = record.name.split(".")[0] in QUOTING_LOGGERS or record.name in QUOTING_LOGGERS
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a bad format string: let the handler report it as usual
        return
    redacted = redact(message, all_quoted=all_quoted)
    if redacted != message:
        record.msg, record.args = redacted, None
    if record.exc_info and record.exc_info[0] is not None and not getattr(record, "_phi_exc", False):
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = redact(text, all_quoted=all_quoted)
        record._phi_exc = True
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class PhiRedactingFilter(logging.Filter):
    """A handler (or logger) filter that redacts patient values from each record; it drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place (see :func:`redact_record`); always keep it."""
        redact_record(record)
        return True


def install_phi_redaction() -> None:
    """Redact every log record as it is created, whatever logger makes it and handler writes it.

    Wraps the current :func:`logging.getLogRecordFactory`; calling it again does nothing. Called by
    the commands, never at import time.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, _MARK, False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        redact_record(record)
        return record

    setattr(factory, _MARK, True)
    logging.setLogRecordFactory(factory)
