"""One client association to a DLMS/COSEM meter, framing included, still without I/O.

:class:`ClientSession` turns APDUs into what goes on the wire (HDLC frames with segmentation and RR, or
wrapper PDUs) and the units that come back into reply APDUs; :meth:`ClientSession.framer` gives the receiver
for one reply unit, in the shape the line layer drives (``feed(bytes) -> unit | None``, ``pending``).
The caller (the driver) owns the loop: send, receive one unit, ``on_unit``, until a reply APDU comes out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pollerd.errors import FrameError

from . import acse, hdlc, wrapper
from .errors import ApduError, HdlcError
from .hdlc import Deframer, Frame, HdlcClient, LinkParams, ServerAddress
from .wrapper import WrapperDeframer, WrapperFrame

__all__ = ["ClientSession", "HdlcFramer", "SessionConfig", "WrapperFramer"]

Unit = Frame | WrapperFrame


@dataclass(frozen=True, slots=True)
class SessionConfig:
    framing: str = "hdlc"                 # "hdlc" | "wrapper"
    server: ServerAddress = field(default_factory=lambda: ServerAddress(1, 17, 4))
    client_sap: int = 16
    password: bytes | None = None         # LLS when set
    max_pdu: int = 0xFFFF
    link: LinkParams = field(default_factory=LinkParams)
    conformance: int = acse.CONFORMANCE_DEFAULT


class HdlcFramer:
    """One HDLC frame per call to ``feed``'s caller; frames beyond the first wait for the next reply.

    ``kinds``: the only frame kinds that answer the request (UA or DM for SNRM). Any other one is a late
    reply of a dropped link (issue 14) and is refused here, inside the line's exchange, so the line waits
    for silence and drops the request's own answer, still on its way, instead of leaving it for the next
    request."""

    __slots__ = ("_d", "_kinds", "_queue")

    def __init__(self, kinds: tuple[str, ...] | None = None) -> None:
        self._d = Deframer()
        self._queue: list[Frame] = []
        self._kinds = kinds

    def feed(self, data: bytes) -> Frame | None:
        self._queue += self._d.feed(data)
        if not self._queue:
            return None
        frame = self._queue.pop(0)
        if self._kinds is not None and frame.kind not in self._kinds:
            raise HdlcError(f"{frame.kind} frame where {'/'.join(self._kinds)} answers the request (a late reply?)",
                            frame.info[:32])
        return frame

    @property
    def pending(self) -> bytes:
        return b"\x7e" * min(self._d.pending, 1)

    def reset(self) -> None:
        self._d.clear()
        self._queue.clear()


class WrapperFramer:
    """One wrapper PDU per reply. ``tags``: the APDU tags that answer the request (AARE for AARQ); another
    one is a late reply of a dropped association, refused as :class:`HdlcFramer` refuses a frame."""

    __slots__ = ("_d", "_queue", "_tags")

    def __init__(self, expect: tuple[int, int], tags: bytes | None = None) -> None:
        self._d = WrapperDeframer(expect)
        self._queue: list[WrapperFrame] = []
        self._tags = tags

    def feed(self, data: bytes) -> WrapperFrame | None:
        self._queue += self._d.feed(data)
        if not self._queue:
            return None
        pdu = self._queue.pop(0)
        if self._tags is not None and (not pdu.apdu or pdu.apdu[0] not in self._tags):
            raise ApduError(f"APDU tag {pdu.apdu[:1].hex() or '(none)'} where "
                            f"{'/'.join(f'{t:02x}' for t in self._tags)} answers the request (a late reply?)",
                            pdu.apdu[:32])
        return pdu

    @property
    def pending(self) -> bytes:
        return b"\x00" * min(self._d.pending, 1)

    def reset(self) -> None:
        self._d.clear()
        self._queue.clear()


class ClientSession:
    __slots__ = ("_hdlc", "_invoke", "associated", "cfg", "conformance", "negotiated_pdu")

    def __init__(self, cfg: SessionConfig) -> None:
        if cfg.framing not in ("hdlc", "wrapper"):
            raise ValueError(f"framing {cfg.framing!r}: hdlc or wrapper")
        self.cfg = cfg
        self._hdlc = HdlcClient(cfg.server, cfg.client_sap, cfg.link) if cfg.framing == "hdlc" else None
        self._invoke = 0
        self.associated = False
        self.negotiated_pdu = 0
        self.conformance = 0

    @property
    def connected(self) -> bool:
        return self._hdlc.connected if self._hdlc is not None else True

    def framer(self, answer: str | None = None) -> HdlcFramer | WrapperFramer:
        """The receiver of one reply unit; ``answer`` ("snrm", "aarq") limits it to what answers that
        request, so a late reply of a dropped association is refused by the line's exchange itself."""
        if self._hdlc is not None:
            return HdlcFramer(("UA", "DM") if answer == "snrm" else None)
        return WrapperFramer((self.cfg.server.logical, self.cfg.client_sap),
                             bytes((acse.AARE,)) if answer == "aarq" else None)

    # -------------------------------------------------------------------------------------------- link

    def open_request(self) -> bytes | None:
        """SNRM for HDLC; None for the wrapper (TCP is the connection)."""
        self.associated = False
        return self._hdlc.snrm() if self._hdlc is not None else None

    def on_open(self, unit: Unit) -> LinkParams:
        assert self._hdlc is not None and isinstance(unit, Frame)
        return self._hdlc.on_ua(unit)

    def close_request(self) -> bytes | None:
        self.associated = False
        return self._hdlc.disc() if self._hdlc is not None else None

    def drop(self) -> None:
        """Forget the link and association (the meter timed out, the line was reset)."""
        self.associated = False
        if self._hdlc is not None:
            self._hdlc.connected = False

    def send(self, apdu: bytes) -> bytes:
        if self._hdlc is not None:
            return self._hdlc.request(apdu)
        return wrapper.encode_wrapper(self.cfg.client_sap, self.cfg.server.logical, apdu)

    def on_unit(self, unit: Unit) -> tuple[bytes | None, bytes | None]:
        """(bytes to send next, reply APDU). Both None: the unit asked for nothing and the reply continues."""
        if self._hdlc is not None:
            if not isinstance(unit, Frame):
                raise FrameError("an HDLC session received a wrapper PDU")
            return self._hdlc.on_frame(unit)
        if not isinstance(unit, WrapperFrame):
            raise FrameError("a wrapper session received an HDLC frame")
        return None, unit.apdu

    # ------------------------------------------------------------------------------------- association

    def aarq(self) -> bytes:
        cfg = self.cfg
        mech = acse.MECH_LLS if cfg.password is not None else None
        return acse.encode_aarq(acse.Aarq(acse.CONTEXT_LN, mech, cfg.password, cfg.conformance, cfg.max_pdu))

    def shown_aarq(self) -> str:
        """The AARQ for logs: the password replaced by stars."""
        raw = self.aarq()
        pw = self.cfg.password
        if pw:
            raw = raw.replace(b"\x80" + bytes((len(pw),)) + pw, b"\x80" + bytes((len(pw),)) + b"*" * len(pw))
        return raw.hex(" ")

    def on_aare(self, apdu: bytes) -> acse.Aare:
        aare = acse.parse_aare(apdu)          # raises AssociationRejected with the reason
        self.associated = True
        self.negotiated_pdu = min(aare.max_pdu or 0xFFFF, self.cfg.max_pdu)
        self.conformance = aare.conformance
        return aare

    def next_invoke(self) -> int:
        self._invoke = (self._invoke + 1) & 0x0F
        return self._invoke


def llc_free(frame: Frame) -> bytes:
    """An I-frame's information without the LLC header (for tools that show one frame)."""
    info = frame.info
    return info[3:] if info[:3] in (hdlc.LLC_REQUEST, hdlc.LLC_RESPONSE) else info
