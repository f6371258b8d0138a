"""The node's DICOM Storage SCP (pynetdicom): C-ECHO, and C-STORE of any storage SOP class into the inbox.

Presentation contexts: every storage SOP class of pynetdicom's ``AllStoragePresentationContexts``
plus Verification, each with the uncompressed transfer syntaxes (implicit and explicit VR little
endian, explicit VR big endian, deflated) and the compressed ones the project's licence-safe decoders
read in this install (JPEG baseline, extended, lossless .57 and .70, JPEG-LS, JPEG 2000, RLE; see
:mod:`pneumonia_monai.dicom.codecs`). A syntax nobody here could decode is not accepted, so the sender
learns at association time and can send another one (an archive transcodes) instead of the study
failing later. (JPEG Extended is accepted when a decoder is installed, but the licence-safe ones
decode 8-bit samples only: a 12-bit JPEG Extended study fails, with that reason.) pynetdicom
limits the contexts an association *requests* to 128; the contexts an acceptor *supports* are not
limited.

The C-STORE handler does no processing: it writes the instance, as received (the file meta
information names the accepted transfer syntax), through :meth:`Inbox.store` (temporary file, fsync,
rename, fsync) and answers Success only once that returned. A failure to write answers 0xA700 (out of
resources) and the sender keeps its copy; an instance without a usable Study or SOP Instance UID is
refused with 0xC000 (cannot understand).

Calling AE titles can be restricted: others are rejected at association (result "rejected permanent",
diagnostic "calling AE title not recognised"), with the reason logged; so is a calling or called AE
title that is not a valid AE (empty, a backslash, control characters), which pynetdicom aborts silently.

Holding connections open starves nobody: a connection becomes an association (and counts against
``max_associations``) only once its whole A-ASSOCIATE-RQ has arrived, within ``request_timeout``
seconds, and the connections still waiting for theirs have a cap of their own
(:mod:`pneumonia_monai.node.gate`). Established associations have the configuration's ACSE, DIMSE and
network timeouts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import cast

from pydicom import uid as uids
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from pneumonia_monai.dicom import codecs, limits
from pneumonia_monai.node.config import NodeConfig
from pneumonia_monai.node.gate import GatedAssociationServer, PreAssociationGate
from pneumonia_monai.node.inbox import Inbox, StoreOutcome

logger = logging.getLogger(__name__)

#: C-STORE statuses (PS3.4 Table B.2-1).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000

#: Verification SOP Class (C-ECHO; PS3.4 Annex A): pynetdicom's ``sop_class.Verification``, which it
#: makes at import time, so a type checker cannot see it.
VERIFICATION_SOP_CLASS = uids.UID("1.2.840.10008.1.1")

#: Transfer syntaxes accepted without a decoder check: pydicom reads them itself.
NATIVE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uids.ExplicitVRLittleEndian,
    uids.ImplicitVRLittleEndian,
    uids.DeflatedExplicitVRLittleEndian,
    uids.ExplicitVRBigEndian,
)
#: Compressed transfer syntaxes accepted when a licence-safe decoder for them is installed.
COMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uids.JPEGBaseline8Bit,
    uids.JPEGExtended12Bit,
    uids.JPEGLossless,
    uids.JPEGLosslessSV1,
    uids.JPEGLSLossless,
    uids.JPEGLSNearLossless,
    uids.JPEG2000Lossless,
    uids.JPEG2000,
    uids.RLELossless,
)


def accepted_transfer_syntaxes() -> list[str]:
    """Return the transfer syntaxes the node accepts: the native ones, then the decodable compressed ones.

    The compressed syntaxes without a licence-safe decoder in this install are left out, with a warning.
    """
    accepted = list(NATIVE_TRANSFER_SYNTAXES)
    refused: list[str] = []
    for syntax in COMPRESSED_TRANSFER_SYNTAXES:
        try:
            plugins = codecs.available_plugins(syntax)
        except NotImplementedError:
            plugins = []
        (accepted if plugins else refused).append(syntax)
    if refused:
        logger.warning(
            "not accepting %s: no licence-safe decoder installed",
            "; ".join(f"{codecs.syntax_label(s)} (install {codecs.install_hint(s)})" for s in refused),
        )
    return accepted


def _peer(event: Event) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title!r} at {requestor.address}:{requestor.port}"


class StorageSCP:
    """A Storage SCP that writes what it receives into an :class:`Inbox`.

    Args:
        config: the node configuration (AE title, address, allowed calling AE titles...).
        inbox: where instances go; must be opened.
        transfer_syntaxes: the syntaxes to accept; default :func:`accepted_transfer_syntaxes`.
    """

    def __init__(
        self, config: NodeConfig, inbox: Inbox, *, transfer_syntaxes: Sequence[str] | None = None
    ) -> None:
        if not isinstance(config, NodeConfig):
            raise TypeError(f"config must be a NodeConfig, got {type(config).__name__}")
        if not isinstance(inbox, Inbox):
            raise TypeError(f"inbox must be an Inbox, got {type(inbox).__name__}")
        self.config = config
        self.inbox = inbox
        syntaxes = list(accepted_transfer_syntaxes() if transfer_syntaxes is None else transfer_syntaxes)
        if not syntaxes:
            raise ValueError("transfer_syntaxes is empty")
        self.transfer_syntaxes = syntaxes
        self.ae = self._build_ae()
        self.gate = PreAssociationGate(
            request_timeout=config.request_timeout, max_pending=config.max_pending_connections
        )
        self._server: ThreadedAssociationServer | None = None
        self._closed = False
        self._counts_lock = threading.Lock()
        #: Instances stored, by :class:`StoreOutcome` value, plus ``"refused"`` and ``"error"``.
        self.counts: dict[str, int] = {outcome.value: 0 for outcome in StoreOutcome} | {
            "refused": 0,
            "error": 0,
        }

    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.config.ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:  # always set in pynetdicom's list; typed optional
                ae.add_supported_context(context.abstract_syntax, self.transfer_syntaxes)
        ae.add_supported_context(VERIFICATION_SOP_CLASS, self.transfer_syntaxes)
        ae.require_calling_aet = list(self.config.allowed_calling_aes)
        ae.require_called_aet = self.config.require_called_ae
        ae.maximum_associations = self.config.max_associations
        ae.acse_timeout = self.config.acse_timeout
        ae.dimse_timeout = self.config.dimse_timeout
        ae.network_timeout = self.config.network_timeout
        return ae

    @property
    def port(self) -> int:
        """The TCP port listened on (the real one when the configuration asked for port 0)."""
        if self._server is None:
            raise RuntimeError("the SCP is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Listen for associations (in background threads).

        Raises:
            OSError: if the address cannot be bound (port in use, say).
        """
        if self._server is not None:
            raise RuntimeError("the SCP is already started")
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_REJECTED, self._handle_rejected),
            (evt.EVT_ACCEPTED, self._handle_accepted),
        ]
        server = self.ae.make_server(
            (self.config.host, self.config.port),
            evt_handlers=handlers,
            server_class=GatedAssociationServer,
            gate=self.gate,
        )
        thread = threading.Thread(target=server.serve_forever, name="node-acceptor", daemon=True)
        thread.start()
        self.ae._servers.append(server)  # as AE.start_server does: AE.shutdown() and server.shutdown() use it
        self._server = server
        logger.info(
            "Storage SCP %r listening on %s:%d (%d transfer syntaxes, calling AE titles: %s)",
            self.config.ae_title,
            self.config.host,
            self.port,
            len(self.transfer_syntaxes),
            ", ".join(self.config.allowed_calling_aes) or "any",
        )

    def stop_accepting(self) -> None:
        """Close the listening socket: no new association; those open go on. Idempotent."""
        if self._server is not None and not self._closed:
            self._closed = True
            self._server.shutdown()
            logger.info("Storage SCP no longer accepts associations")

    def wait_for_associations(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the open associations to end; return whether they all did."""
        deadline = time.monotonic() + timeout
        while self.ae.active_associations:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def abort_associations(self) -> None:
        """Abort the associations still open (their unacknowledged instances stay with the sender)."""
        active = self.ae.active_associations
        if active:
            logger.warning("aborting %d association(s) still open", len(active))
        for assoc in active:
            assoc.abort()

    # ---------------------------------------------------------------------------------------------
    # handlers (association threads)

    def _count(self, key: str) -> None:
        with self._counts_lock:
            self.counts[key] += 1

    def _handle_accepted(self, event: Event) -> None:
        logger.debug("association accepted from %s", _peer(event))

    def _handle_echo(self, event: Event) -> int:
        logger.debug("C-ECHO from %s", _peer(event))
        return STATUS_SUCCESS

    def _handle_rejected(self, event: Event) -> None:
        requestor = event.assoc.requestor
        calling = requestor.ae_title.strip()
        request = requestor.primitive
        called = request.called_ae_title if request is not None else None
        allowed = self.config.allowed_calling_aes
        if allowed and calling not in allowed:
            reason = f"calling AE title {calling!r} is not one of {list(allowed)}"
        elif self.config.require_called_ae and called is not None and called.strip() != self.config.ae_title:
            reason = f"called AE title {called.strip()!r} is not {self.config.ae_title!r}"
        else:
            reason = f"more than {self.config.max_associations} associations at once"
        logger.warning("association from %s rejected: %s", _peer(event), reason)

    def _handle_store(self, event: Event) -> int:
        try:
            if event.context.transfer_syntax == uids.DeflatedExplicitVRLittleEndian:
                # pynetdicom inflates a deflated data set in one piece: its size is checked first
                encoded = cast(C_STORE, event.request).DataSet
                if encoded is None:
                    raise ValueError("the C-STORE request carries no data set")
                limits.check_inflated_size(encoded.getvalue())
            ds = event.dataset
            study_uid = ds.get("StudyInstanceUID")
            sop_uid = ds.get("SOPInstanceUID")
        except Exception as exc:  # noqa: BLE001 - any decoding error must become a status, not a crash
            logger.warning("C-STORE from %s refused: cannot decode the data set (%s)", _peer(event), exc)
            self._count("refused")
            return STATUS_CANNOT_UNDERSTAND
        try:
            outcome = self.inbox.store(study_uid, sop_uid, event.encoded_dataset(include_meta=True))
        except ValueError as exc:
            logger.warning("C-STORE from %s refused: %s", _peer(event), exc)
            self._count("refused")
            return STATUS_CANNOT_UNDERSTAND
        except OSError as exc:
            logger.error("C-STORE from %s failed: cannot write the instance: %s", _peer(event), exc)
            self._count("error")
            return STATUS_OUT_OF_RESOURCES
        self._count(outcome.value)
        return STATUS_SUCCESS
