"""The one exception tree of pollerd.

Every error raised on purpose by pollerd derives from :class:`PollerdError`. Messages carry evidence
(expected vs. got, the frame as hex) so that a log line alone is enough to diagnose a problem.
"""

from __future__ import annotations


class PollerdError(Exception):
    """Root of all pollerd errors."""


class ConfigError(PollerdError):
    """The configuration is invalid. ``str(err)`` is one line: ``file:line: key.path: problem``."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.problem = message
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        if key:
            where += f"{key}: "
        super().__init__(where + message)
        self.errors: tuple[ConfigError, ...] = (self,)

    @classmethod
    def several(cls, errors: list[ConfigError]) -> ConfigError:
        """One error standing for all of ``errors`` (the first, as ``str()`` and its fields; every one in
        ``errors``, in the order they were found), so a caller that shows one line still can."""
        first = errors[0]
        combined = cls(first.problem, path=first.path, line=first.line, key=first.key)
        combined.errors = tuple(errors)
        return combined


class OptionError(PollerdError, ValueError):
    """A protocol- or sink-specific key is invalid. ``key`` is the path below the meter or sink table (e.g.
    ``("registers", 3, "type")``) so the config loader can name the line. A ValueError too, as it always was."""

    def __init__(self, message: str, key: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


class FrameError(PollerdError):
    """A frame on the wire could not be accepted. ``frame`` holds the offending bytes."""

    kind = "frame"

    def __init__(self, message: str, frame: bytes | bytearray | memoryview = b"") -> None:
        self.frame = bytes(frame)
        if self.frame:
            message = f"{message} [{self.frame.hex(' ')}]"
        super().__init__(message)


class CrcError(FrameError):
    kind = "crc"


class FrameTooLong(FrameError):
    kind = "too_long"


class GarbageError(FrameError):
    """Bytes that start no message arrived where a reply should begin."""

    kind = "garbage"


class ParityError(FrameError):
    """A byte's 8th bit is not its even parity (parity-strip mode): line noise."""

    kind = "parity"


class AddressMismatch(FrameError):
    kind = "address"


class EchoError(FrameError):
    """The line returned our own request (a half-duplex adapter echoing), not a reply."""

    kind = "echo"


class TruncatedFrame(FrameError):
    kind = "truncated"


class MeterError(PollerdError):
    """The meter answered, but refused or failed the request (a protocol-level status)."""

    kind = "meter"

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ModbusException(MeterError):
    """The device answered with an exception code (``status``). ``function`` and ``address`` say what
    was asked, so a caller can split a merged read on ``status == 2``."""

    kind = "modbus_exception"

    def __init__(self, message: str, status: int, function: int, address: int, count: int) -> None:
        super().__init__(message, status)
        self.function = function
        self.address = address
        self.count = count


class SessionClosed(MeterError):
    """Mercury status 5: the channel is not open (session timed out); reopen and retry once."""

    kind = "session"


class IdentityMismatch(MeterError):
    """The meter at this address reports a different serial number than the config names."""

    kind = "identity"


class TransportError(PollerdError):
    """The byte pipe (serial port, TCP connection) failed or is not open."""

    kind = "transport"


class ReplyTimeout(PollerdError):
    """No complete reply within ``waiting_time``. ``partial`` holds the bytes received, if any."""

    kind = "timeout"

    def __init__(self, message: str, partial: bytes = b"") -> None:
        self.partial = bytes(partial)
        if self.partial:
            message = f"{message} (partial reply [{self.partial.hex(' ')}])"
        super().__init__(message)


class LineStopping(PollerdError):
    """The daemon is shutting down; no new exchange starts."""


class StoreError(PollerdError):
    """The local store cannot be opened, migrated or written."""


class SinkError(PollerdError):
    """An upstream sink refused or failed a batch."""


class TransientSinkError(SinkError):
    """The batch did not get through but may on a later try: keep it and retry after a backoff.

    ``kind`` labels the failure counter: ``timeout``, ``network``, ``http`` (a retryable status),
    ``redirect``, ``tls``, ``auth`` (credentials refused), ``refused`` (the broker refused the connection)
    or ``error``.
    """

    def __init__(self, message: str, *, kind: str = "error", status: int | None = None) -> None:
        self.kind = kind
        self.status = status
        super().__init__(message)


class PermanentSinkError(SinkError):
    """The receiver refused the batch for good (a 4xx other than 401/403/407/408/429): park it, move on."""

    kind = "rejected"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class MeterBusy(PollerdError):
    """A cycle of this meter is already running (or it is stopping); a poll-now request may retry."""


class CloudError(PollerdError):
    """A cloud source (a vendor server holding many meters, catalog: ProtocolSpec.cloud_keys) failed, refused a request or
    sent something pollerd cannot use. ``status`` is the HTTP status when there was one. Messages never carry
    the account's password, api key, session id or tokens (they are scrubbed before the error is built)."""

    kind = "cloud"

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class CloudUnreachable(CloudError):
    """No reply at all: DNS, connection refused, TLS failure, timeout. Aborts the cycle (every further
    request would wait out the same timeout)."""

    kind = "transport"


class CloudAuthError(CloudError):
    """The server refused the account's credentials (sign-in rejected, bad api key). Not retried within a
    cycle; shown as a /health reason while it lasts."""

    kind = "auth"


class SessionExpired(CloudError):
    """The sid is no longer valid: sign in again and repeat the request."""


class AlreadyRunning(PollerdError):
    """Another pollerd daemon holds the state directory's lock. ``exit_code`` 75 (EX_TEMPFAIL): under systemd
    the unit is restarted (Restart=on-failure) and takes over once the other daemon has gone."""

    exit_code = 75
