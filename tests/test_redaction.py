"""Patient values kept out of log lines (:mod:`pneumonia_monai.redaction`, issue 10 item 9)."""

from __future__ import annotations

import io
import logging

import pydicom
import pytest
from pydicom.valuerep import DA

from pneumonia_monai.redaction import PhiRedactingFilter, install_phi_redaction, redact

BIRTH = "1901-02-03"


@pytest.mark.parametrize(
    "message",
    [
        f"Invalid value for VR DA: '{BIRTH}'.",
        f"Unable to convert '{BIRTH}' to 'DA' object",
        f"Unable to convert non-conformant value '{BIRTH}' to 'DT' object",
        f'Value "{BIRTH}" is not valid for elements with a VR of DS',
        f'The string "{BIRTH}" is unlikely to represent the intended person name',
    ],
)
def test_the_value_quoting_messages_of_pydicom_and_highdicom_are_redacted(message: str) -> None:
    assert BIRTH not in redact(message)
    assert "<redacted>" in redact(message)


def test_other_quotes_are_kept_except_for_the_quoting_loggers() -> None:
    text = "study 1.2.3: cannot write 'out/sr.dcm'"
    assert redact(text) == text
    assert "out/sr.dcm" not in redact(text, all_quoted=True)
    with pytest.raises(TypeError, match="text must be a str, got int"):
        redact(3)  # type: ignore[arg-type]


def test_the_filter_redacts_message_arguments_and_the_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PhiRedactingFilter())
    logger = logging.getLogger("pneumonia_monai.test_redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            DA(BIRTH)
        except ValueError as exc:
            logger.error("SR not written: %s: %s", type(exc).__name__, exc, exc_info=True)
        logging.getLogger("pydicom").addHandler(handler)
        with pytest.warns(UserWarning, match="Invalid value for VR PN"):
            pydicom.misc.warn_and_log("Invalid value for VR PN: 'Quokka^Brontosaurus'")
    finally:
        logger.removeHandler(handler)
        logging.getLogger("pydicom").removeHandler(handler)
    text = stream.getvalue()
    assert "SR not written: ValueError" in text and "Traceback" in text
    assert BIRTH not in text and "Quokka" not in text


def test_install_redacts_every_record_once(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())  # restored after
    install_phi_redaction()
    factory = logging.getLogRecordFactory()
    install_phi_redaction()
    assert logging.getLogRecordFactory() is factory
    with caplog.at_level(logging.WARNING):
        logging.getLogger("highdicom.sr").warning("Value %r for attribute PatientName", "Quokka^B")
    assert "Quokka" not in caplog.text and "<redacted>" in caplog.text
