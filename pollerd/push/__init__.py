"""Push clients: how a batch of readings leaves the gateway (DESIGN.md §2, §4).

A client only moves one batch and says how it failed; the :class:`~pollerd.push.forwarder.Forwarder`
owns cursors, retries, backoff and parking, so every client gets the same delivery semantics.

Failure classes decide what the forwarder does with the batch:

* :class:`TransientSinkError` (network error, timeout, 5xx, 408, 429) -> the same batch is retried;
* :class:`PermanentSinkError` (any other 4xx) -> the batch is parked in the store and skipped, because
  re-sending a batch the receiver rejected on its content would block the sink forever.

The registry is an explicit dict; nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from pollerd.config import SinkConfig
from pollerd.errors import SinkError
from pollerd.model import Reading


class TransientSinkError(SinkError):
    """The batch did not get through but may on a later try: keep it and retry after a backoff.

    ``kind`` labels the failure counter: ``timeout``, ``network``, ``http`` (a retryable status),
    ``redirect`` or ``error``.
    """

    def __init__(self, message: str, *, kind: str = "error", status: int | None = None) -> None:
        self.kind = kind
        self.status = status
        super().__init__(message)


class PermanentSinkError(SinkError):
    """The receiver refused the batch for good (a 4xx other than 408/429): park it, move on."""

    kind = "rejected"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class PushClient(Protocol):
    async def connect(self) -> None: ...

    async def send(self, batch: Sequence[Reading]) -> None:
        """Deliver ``batch`` or raise :class:`TransientSinkError` / :class:`PermanentSinkError`."""
        ...

    async def close(self) -> None: ...


# Imported after the error classes on purpose: the client modules import them from this package.
from pollerd.push.http import HttpPushClient  # noqa: E402

CLIENTS: dict[str, Callable[[SinkConfig, str], PushClient]] = {
    "http": HttpPushClient,
}


def make_client(sink: SinkConfig, gateway: str) -> PushClient:
    """Build the client for ``sink.type``; ``gateway`` is the name that goes into payloads."""
    try:
        factory = CLIENTS[sink.type]
    except KeyError:
        raise SinkError(
            f"sink {sink.name!r}: unknown type {sink.type!r}, expected one of {sorted(CLIENTS)}"
        ) from None
    return factory(sink, gateway)


__all__ = [
    "CLIENTS",
    "HttpPushClient",
    "PermanentSinkError",
    "PushClient",
    "TransientSinkError",
    "make_client",
]
