"""DLMS/COSEM errors: frame-level ones are :class:`pollerd.errors.FrameError` (they carry the bytes as hex),
answers the meter gave on purpose are :class:`pollerd.errors.MeterError` (they carry the meter's code)."""

from __future__ import annotations

from pollerd.errors import FrameError, MeterError

__all__ = [
    "ApduError", "AssociationRejected", "DataAccessError", "DataError", "HdlcError", "LinkRefused",
    "SegmentError", "WrapperError",
]


class HdlcError(FrameError):
    """An HDLC frame that is well formed but not acceptable here (unexpected type, bad format field)."""

    kind = "hdlc"


class WrapperError(FrameError):
    """A TCP wrapper header that is not version 1."""

    kind = "wrapper"


class SegmentError(FrameError):
    """A segment or block out of order (N(S), block number), or a reassembled message past its cap."""

    kind = "segment"


class DataError(FrameError):
    """A-XDR data that does not decode: unknown tag, truncated value, a type other than the one expected."""

    kind = "data"


class ApduError(FrameError):
    """An APDU that is not the answer to the request (wrong tag, wrong invoke id, truncated)."""

    kind = "apdu"


class LinkRefused(MeterError):
    """The meter answered SNRM or DISC with DM (disconnected mode) or an I-frame with FRMR."""

    kind = "link"


class AssociationRejected(MeterError):
    """AARE with result != accepted. ``reason`` is the diagnostic's name (e.g. ``authentication-failure``)."""

    kind = "association"

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        self.reason = reason
        super().__init__(message, status)


class DataAccessError(MeterError):
    """A GET/SET result other than success: ``status`` is the Data-Access-Result code, ``reason`` its name."""

    kind = "access"

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        self.reason = reason
        super().__init__(message, status)
