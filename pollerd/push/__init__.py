"""Push clients: how a batch of readings leaves the gateway (DESIGN.md §2, §4).

A client only moves one batch and says how it failed; the :class:`~pollerd.push.forwarder.Forwarder`
owns the cursor, batching (``batch_size`` and ``linger``), retries with capped jittered backoff, parking and
the metrics (lag in rows and seconds, failures by kind, last success time), so every client gets the same
delivery semantics and none reimplements them.

Lifecycle of a :class:`PushClient` (the forwarder is its only caller):

1. ``client = factory(sink_config, gateway_name)`` — cheap and synchronous: no I/O. Whatever can be
   checked without the network belongs in the sink's option parser, so that it fails at config load.
2. ``await client.connect()`` — once, before the first ``send``. It may raise :class:`TransientSinkError`
   (broker down, refused credentials, bad TLS material): the forwarder records it in the sink's state
   (``/health``, ``/api``), waits a backoff and calls ``connect()`` again. It never crashes the daemon.
3. ``await client.send(batch)`` — repeatedly, one call at a time, never concurrently. It returns only once the
   receiver has confirmed the whole batch (HTTP 2xx, MQTT PUBACK of every message); only then does the
   forwarder move the cursor. It raises :class:`TransientSinkError` for a failure worth retrying — the
   forwarder then calls ``send`` again later with *the same* batch, so a client that lost its connection
   must reconnect by itself inside the next ``send`` — or :class:`PermanentSinkError` when the receiver
   refused the content for good (the batch is parked and skipped). Any other exception is treated as
   transient and logged with its traceback (a client bug must not stop delivery for good).
   Cancellation may arrive at any ``await``; the client must let ``CancelledError`` through.
4. ``await client.close()`` — once, at the end, also after failures; it must not raise for a connection
   that is already gone.

Events (optional): a client with ``async send_events(batch)`` gets the meters' events (journals, clock
alarms, identity mismatches) through the same forwarder, in batches of :class:`~pollerd.model.Event` with
their own cursor, under the same rules as ``send`` (confirm the whole batch, or raise Transient/Permanent;
never called concurrently with ``send``). An event's natural key is ``(meter, code, ts_start)``; an event
that changes later (it closes, its text is filled in) is sent again. A client without ``send_events``, or
with ``accepts_events = False`` (its configuration declines them), gets none.

Meter status (optional): a client with ``async send_status(mapping)`` is handed ``{meter: "online" | "offline"}``
(meters polled at least once) whenever it changed, between batches; a failure is retried on the next turn.

Delivery is at-least-once: a batch the receiver got but whose confirmation was lost is sent again. Every
reading carries its natural key ``(meter, channel, archive, ts)`` for the receiver to de-duplicate.

Sink types: ``http`` (:mod:`pollerd.push.http`), ``mqtt`` (:mod:`pollerd.push.mqtt`) and the document
uploader ``sioi`` (run by the daemon, not a batch client). Third-party clients come in through the
entry-point group ``pollerd.push`` (see :mod:`pollerd.push.plugins`); an explicit ``load_entry_points(registry)``
call adds them to the :class:`~pollerd.push.registry.SinkRegistry` passed in when a config names a type that
is not built in, never on import. Each type's keys, parser, factory and kind are its ``SinkSpec`` in
:mod:`pollerd.push.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from pollerd.errors import PermanentSinkError, SinkError, TransientSinkError
from pollerd.push.plugins import load_entry_points
from pollerd.push.registry import PLUGIN_COMMON_KEYS, SinkRegistry, builtin_sinks

if TYPE_CHECKING:
    from pollerd.config.model import SinkConfig
    from pollerd.model import Event, Reading


class PushClient(Protocol):
    """See the module docstring for the lifecycle: connect once, send one batch at a time, close once."""

    async def connect(self) -> None: ...

    async def send(self, batch: Sequence[Reading]) -> None:
        """Deliver ``batch`` or raise :class:`TransientSinkError` / :class:`PermanentSinkError`."""
        ...

    async def close(self) -> None: ...


class EventClient(PushClient, Protocol):
    """A push client that takes events too (see "Events" in the module docstring)."""

    accepts_events: bool

    async def send_events(self, batch: Sequence[Event]) -> None:
        """Deliver ``batch`` or raise :class:`TransientSinkError` / :class:`PermanentSinkError`."""
        ...


class SinkPlugin(Protocol):
    """What a ``pollerd.push`` entry point names: a client factory carrying its configuration.

    ``config_keys``   the type-specific keys of its ``[[sinks]]`` table (besides the common ones);
    ``parse_options(raw, base_dir)``  turns those keys' raw TOML values (only the ones given) into a frozen
                      options object, stored in ``SinkConfig.options``; raises
                      ``pollerd.errors.OptionError(message, key_path)`` so the error names file:line:key;
    ``common_keys``   optional: which common sink keys apply (default :data:`PLUGIN_COMMON_KEYS`);
    ``url_schemes``   optional: accepted URL schemes (default ``("http", "https")``).
    Calling it with ``(sink_config, gateway_name)`` returns a :class:`PushClient`.
    """

    config_keys: frozenset[str]

    def parse_options(self, raw: Mapping[str, object], base_dir: str) -> object: ...

    def __call__(self, sink: SinkConfig, gateway: str) -> PushClient: ...


def make_client(sink: SinkConfig, gateway: str, registry: SinkRegistry | None = None) -> PushClient:
    """Build the batch client for ``sink.type`` from ``registry`` (default: the built-in types, plus the
    entry-point plugins when the type is not built in); ``gateway`` is the name that goes into payloads."""
    sinks = builtin_sinks() if registry is None else registry
    if sink.type not in sinks:
        load_entry_points(sinks)
    spec = sinks.get(sink.type)
    if spec is None or spec.factory is None:
        batch = sorted(t for t in sinks if sinks[t].factory is not None)
        raise SinkError(f"sink {sink.name!r}: unknown type {sink.type!r}, expected one of {batch}")
    return spec.factory(sink, gateway)


__all__ = [
    "PLUGIN_COMMON_KEYS",
    "PermanentSinkError",
    "EventClient",
    "PushClient",
    "SinkPlugin",
    "TransientSinkError",
    "make_client",
]
