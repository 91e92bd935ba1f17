"""MQTT push client (sink type ``mqtt``), on aiomqtt.

Why aiomqtt: it is the maintained asyncio MQTT client (2.x, on paho-mqtt 2.x, the Eclipse reference client),
it drives paho from the running event loop (no network thread), and its ``publish`` with QoS 1 returns only
when paho's ``on_publish`` fired, which paho calls for QoS 1 on PUBACK — so "send returned" means "the broker
has taken every message". gmqtt is unmaintained since 2022; asyncio-mqtt is aiomqtt's former name.

Messages (``payload = "reading"``, the default): one message per reading, on the topic template rendered with
``{gateway} {meter} {channel} {archive}`` (default ``pollerd/{gateway}/{meter}/{channel}``); the payload is
the reading as JSON with the gateway name::

    pollerd/gw-7/m1/A%2B   {"gateway":"gw-7","meter":"m1","channel":"A+","archive":"current",
                            "ts":1700000000,"value":12345.5,"unit":"Wh"}

With ``payload = "batch"`` the readings of one batch that render to the same topic go in one message, in
store order, shaped like the HTTP body: ``{"gateway": "gw-7", "readings": [...]}``. So
``topic = "pollerd/{gateway}/{meter}"`` gives one message per meter per batch and
``topic = "pollerd/{gateway}/readings"`` one message per batch.

Field values are percent-encoded in topics (``+ # / %`` -> ``%2B %23 %2F %25``): MQTT forbids wildcards in a
topic to publish to, and channel names contain ``+``.

Delivery: every message of a batch is published with QoS 1 (pipelined, not one round trip each) and
``send`` returns after the last PUBACK; only then does the forwarder move the cursor. A disconnect or a
missing PUBACK within ``timeout`` fails the whole batch (TransientSinkError); the next ``send`` reconnects
and publishes the batch again — receivers de-duplicate on the natural key. The session is clean: pollerd's
store, not the broker, is what remembers undelivered readings.

Status: after every connect ``online`` is published retained to ``status_topic`` (default
``pollerd/{gateway}/status``); the last will, set in CONNECT, is ``offline`` retained, which the broker
publishes when the connection dies without a DISCONNECT (power cut, kill -9, network loss past keepalive).
``close()`` publishes ``offline`` itself before disconnecting. ``status_topic = ""`` turns both off.

Events: one message per event, QoS as readings, never retained, on ``events_topic`` (default
``pollerd/{gateway}/{meter}/events``): ``{"gateway", "meter", "code", "ts_start", "ts_end", "text"}``. The
natural key is ``(meter, code, ts_start)``; an event is published again when it closes. ``events_topic = ""``
declines events.

Meter status: each meter's ``online`` (its last cycle got an answer) or ``offline``, retained on
``meter_status_topic`` (default ``pollerd/{gateway}/{meter}/status``) when it changes; ``""`` turns it off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aiomqtt
import orjson
from aiomqtt.exceptions import MqttConnectError
from yarl import URL

from pollerd.compat import timeout
from pollerd.config.model import SinkConfig
from pollerd.model import Event, Reading
from pollerd.push import TransientSinkError
from pollerd.push.mqtt_options import MqttOptions, parse_options

if TYPE_CHECKING:
    from paho.mqtt.client import Client as PahoClient
    from paho.mqtt.client import SocketLike

_T = TypeVar("_T")

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
ONLINE, OFFLINE = b"online", b"offline"
# Messages paho keeps in flight (published, PUBACK not yet back). paho's default of 20 makes a batch of 500
# wait for 25 round trips; the broker side (mosquitto max_inflight_messages) limits only what it sends.
MAX_INFLIGHT = 200
_AUTH_CODES = {4, 5, 134, 135}     # CONNACK: bad user name or password / not authorized (3.1.1 and 5)
_TOPIC_CACHE = 4096


class MqttPushClient:
    """Publishes batches to an MQTT broker. Lifecycle as in :mod:`pollerd.push`."""

    def __init__(self, sink: SinkConfig, gateway: str) -> None:
        self._sink = sink
        self._gateway = gateway
        opts = sink.options if isinstance(sink.options, MqttOptions) else parse_options({}, "")
        self._opts = opts
        url = URL(sink.url)
        self._tls = url.scheme.lower() == "mqtts"
        self._host = url.host or "localhost"
        self._port = url.explicit_port or DEFAULT_PORTS["mqtts" if self._tls else "mqtt"]
        self._where = f"sink {sink.name!r}: {url.scheme}://{self._host}:{self._port}"
        self._client_id = opts.client_id or f"pollerd-{gateway}-{sink.name}"
        self._status = opts.status_topic.render({"gateway": gateway}) if opts.status_topic else None
        self.accepts_events = opts.events_topic is not None
        self._meter_status: dict[str, str] = {}          # what the broker holds, as far as this client knows
        self._status_client: object = None
        self._client: aiomqtt.Client | None = None
        self._topics: dict[tuple[str, str, str], str] = {}
        if not self._tls and (sink.ca_file or sink.client_cert or not sink.verify_tls):
            log.warning("%s: ca_file, client_cert and verify_tls apply to mqtts:// only and are ignored",
                        self._where)

    def __repr__(self) -> str:
        return f"MqttPushClient({self._sink.name!r}, {self._host}:{self._port})"

    # ---- encoding ---------------------------------------------------------------------------------------------

    def topic(self, r: Reading) -> str:
        key = (r.meter, r.channel, r.archive)
        t = self._topics.get(key)
        if t is None:
            if len(self._topics) >= _TOPIC_CACHE:
                self._topics.clear()
            t = self._topics[key] = self._opts.topic.render(
                {"gateway": self._gateway, "meter": r.meter, "channel": r.channel, "archive": r.archive})
        return t

    def encode(self, batch: Sequence[Reading]) -> list[tuple[str, bytes]]:
        """(topic, payload) of every message of ``batch``, in order."""
        gw = self._gateway
        if self._opts.payload == "reading":
            return [(self.topic(r), orjson.dumps({"gateway": gw, **r.as_dict()})) for r in batch]
        groups: dict[str, list[dict[str, object]]] = {}
        for r in batch:
            groups.setdefault(self.topic(r), []).append(r.as_dict())
        return [(t, orjson.dumps({"gateway": gw, "readings": rs})) for t, rs in groups.items()]

    # ---- connection -------------------------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self._tls:
            return None
        sink = self._sink
        try:
            ctx = ssl.create_default_context()
            if sink.ca_file:
                ctx.load_verify_locations(cafile=sink.ca_file)
            if not sink.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if sink.client_cert:
                ctx.load_cert_chain(sink.client_cert, sink.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise TransientSinkError(f"{self._where}: cannot load the TLS files: {exc}", kind="tls") from None
        return ctx

    @staticmethod
    def _gone(client: aiomqtt.Client) -> bool:
        # aiomqtt keeps the connection's end in a private future (it has no public "is connected"); the
        # dependency is pinned below 3 for this. Reading the exception marks it retrieved for asyncio.
        fut: asyncio.Future[None] = client._disconnected
        if fut.done():
            if not fut.cancelled():
                fut.exception()
            return True
        return False

    async def connect(self) -> None:
        await self._ensure()

    async def _ensure(self) -> aiomqtt.Client:
        if self._client is not None:
            if not self._gone(self._client):
                return self._client
            await self._drop()
        sink, opts = self._sink, self._opts
        will = None
        if self._status is not None:
            will = aiomqtt.Will(self._status, OFFLINE, qos=1, retain=True)
        client = aiomqtt.Client(
            self._host, self._port,
            username=sink.username,
            password=sink.password.reveal() if sink.password is not None else None,
            identifier=self._client_id,
            logger=logging.getLogger(f"{__name__}.client"),
            will=will,
            clean_session=True,
            keepalive=opts.keepalive,
            timeout=sink.timeout,
            tls_context=self._tls_context(),
            max_inflight_messages=MAX_INFLIGHT,
            max_concurrent_outgoing_calls=MAX_INFLIGHT,
            # Small PUBLISH packets behind Nagle wait for the broker's delayed ACK (tens of ms per batch).
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # aiomqtt warns once a handful of calls are pending; a pipelined batch has batch_size of them.
        client.pending_calls_threshold = max(sink.batch_size, 1) + 10
        # paho's TCP connect (run in a thread by aiomqtt) has its own 5 s default; use the sink's timeout.
        client._client.connect_timeout = sink.timeout
        try:
            await self._enter(client)
        except MqttConnectError as exc:
            rc = getattr(exc.rc, "value", exc.rc)
            if rc in _AUTH_CODES:
                raise TransientSinkError(
                    f"{self._where}: the broker refused the credentials ({exc}); check username and password",
                    kind="auth") from None
            raise TransientSinkError(f"{self._where}: the broker refused the connection: {exc}",
                                     kind="refused") from None
        except aiomqtt.MqttError as exc:
            text = str(exc)
            kind = "timeout" if "timed out" in text.lower() else ("tls" if "ssl" in text.lower() else "network")
            raise TransientSinkError(f"{self._where}: cannot connect: {text or type(exc).__name__}",
                                     kind=kind) from None
        self._client = client
        log.info("%s: connected as %r", self._where, self._client_id)
        if self._status is not None:
            try:
                await client.publish(self._status, ONLINE, qos=1, retain=True, timeout=sink.timeout)
            except aiomqtt.MqttError as exc:
                await self._drop()
                raise TransientSinkError(f"{self._where}: status publish failed: {exc}", kind="network") from None
        return client

    async def _enter(self, client: aiomqtt.Client) -> None:
        """``client.__aenter__()``, but fail as soon as the connection dies instead of waiting out the CONNACK
        timeout: with TLS 1.3 a broker rejects a client certificate only after the handshake, by closing
        the connection, and aiomqtt would wait ``timeout`` seconds for a CONNACK that never comes."""
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        paho = client._client
        on_close = paho.on_socket_close

        def settle() -> None:
            if not closed.done():
                closed.set_result(None)

        def closed_too(c: PahoClient, userdata: Any, sock: SocketLike) -> None:
            if on_close is not None:
                on_close(c, userdata, sock)    # aiomqtt's own: unregisters the reader
            # paho closes the socket without telling aiomqtt when the peer hangs up before CONNACK;
            # may run in aiomqtt's connect thread, hence threadsafe.
            loop.call_soon_threadsafe(settle)

        paho.on_socket_close = closed_too
        enter = asyncio.ensure_future(client.__aenter__())
        gone: asyncio.Future[None] = client._disconnected
        try:
            await asyncio.wait((enter, gone, closed), return_when=asyncio.FIRST_COMPLETED)
            if not enter.done() and client._connected.done():
                # The CONNACK came before the hang-up (a broker refusing the credentials closes right after
                # it), but aiomqtt's connect thread has not returned yet (a loaded machine): its verdict is in,
                # let aiomqtt report it rather than a bare "closed before CONNACK".
                await asyncio.wait((enter,), timeout=self._sink.timeout)
        finally:
            if not enter.done():
                enter.cancel()
                try:
                    await enter
                except (asyncio.CancelledError, aiomqtt.MqttError, OSError):
                    pass
                # A cancel of ours (not the caller's) ends here; the caller's propagates from wait() above.
        try:
            if enter.done() and not enter.cancelled():
                enter.result()      # connected, or raises why not
                return
            exc = gone.exception() if gone.done() and not gone.cancelled() else None
            raise aiomqtt.MqttError(
                f"the broker closed the connection before CONNACK: "
                f"{exc or 'no reason given (a client certificate it refused, or not an MQTT listener)'}")
        except BaseException:
            self._abort(client)
            raise

    @staticmethod
    def _abort(client: aiomqtt.Client) -> None:
        # A connect that failed half way may leave paho's socket open with a reader on the loop; close it
        # (paho's own close also unregisters the reader) so a long outage of retries leaks no descriptors.
        paho = client._client
        close = getattr(paho, "_sock_close", None)
        if paho.socket() is not None and close is not None:
            try:
                close()
            except OSError:
                pass

    async def _drop(self) -> None:
        """Forget the connection (after a failure); the next send opens a new one."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            async with timeout(2.0):
                await client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, OSError, TimeoutError, asyncio.TimeoutError):
            pass
        self._gone(client)

    async def close(self) -> None:
        client = self._client
        if client is None:
            return
        if self._status is not None and not self._gone(client):
            # A clean DISCONNECT suppresses the will, so say "offline" ourselves.
            try:
                await client.publish(self._status, OFFLINE, qos=1, retain=True, timeout=2.0)
            except aiomqtt.MqttError as exc:
                log.debug("%s: offline status not published: %s", self._where, exc)
        await self._drop()

    # ---- delivery ---------------------------------------------------------------------------------------------

    async def send(self, batch: Sequence[Reading]) -> None:
        if batch:
            await self._publish(self.encode(batch), self._opts.retain)

    def encode_events(self, batch: Sequence[Event]) -> list[tuple[str, bytes]]:
        """One message per event on its meter's events topic, in order (never retained: a retained event
        would be replayed to every new subscriber as if it had just happened)."""
        assert self._opts.events_topic is not None
        gw = self._gateway
        return [(self._opts.events_topic.render({"gateway": gw, "meter": e.meter}),
                 orjson.dumps({"gateway": gw, **e.as_dict()})) for e in batch]

    async def send_status(self, status: Mapping[str, str]) -> None:
        """Each meter's ``online``/``offline``, retained on its status topic, for the meters whose state
        changed since the broker last confirmed it (all of them after a reconnect, which may follow a broker
        restart that lost its retained messages)."""
        if self._opts.meter_status_topic is None:
            return
        if self._status_client is not self._client or self._client is None:
            self._meter_status = {}
        changed = {m: s for m, s in status.items() if self._meter_status.get(m) != s}
        if not changed:
            return
        gw = self._gateway
        await self._publish([(self._opts.meter_status_topic.render({"gateway": gw, "meter": m}), s.encode())
                             for m, s in changed.items()], True)
        self._status_client = self._client
        self._meter_status.update(changed)

    async def send_events(self, batch: Sequence[Event]) -> None:
        if batch:
            await self._publish(self.encode_events(batch), False)

    async def _publish(self, messages: list[tuple[str, bytes]], retain: bool) -> None:
        client = await self._ensure()
        qos = self._opts.qos
        # All publishes go out at once and the PUBACKs come back pipelined; each publish waits for its own
        # PUBACK without a timeout of its own (math.inf) because the whole batch is bounded below.
        tasks = [asyncio.ensure_future(client.publish(t, p, qos=qos, retain=retain, timeout=math.inf))
                 for t, p in messages]
        acked = asyncio.gather(*tasks)
        # A cancelled gather ends with a CancelledError set as its *exception*; read it, or asyncio logs
        # "_GatheringFuture exception was never retrieved" at ERROR after every failed batch.
        acked.add_done_callback(_retrieve)
        # aiomqtt does not fail pending publishes when the connection drops (paho would re-send them on a
        # reconnect of the same session, which a clean session never has), so race the batch against the
        # connection's end.
        gone: asyncio.Future[None] = client._disconnected
        try:
            async with timeout(self._sink.timeout):
                await asyncio.wait((acked, gone), return_when=asyncio.FIRST_COMPLETED)
            if not acked.done():
                exc = gone.exception() if not gone.cancelled() else None
                raise aiomqtt.MqttError(f"connection lost: {exc or 'disconnected'}")
            acked.result()
        except (TimeoutError, asyncio.TimeoutError):
            await self._drop()
            raise TransientSinkError(
                f"{self._where}: no PUBACK for {sum(not t.done() for t in tasks)} of {len(tasks)} messages "
                f"within {self._sink.timeout:g} s", kind="timeout") from None
        except (aiomqtt.MqttError, OSError, ValueError) as exc:
            await self._drop()
            raise TransientSinkError(f"{self._where}: publish failed: {exc}", kind="network") from None
        finally:
            if not acked.done():
                acked.cancel()      # cancels the publishes still waiting; gather marks their outcome read


def _retrieve(fut: asyncio.Future[_T]) -> None:
    if not fut.cancelled():
        fut.exception()


__all__ = ["MqttPushClient"]
