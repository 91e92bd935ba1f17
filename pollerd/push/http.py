"""HTTP(S) push client: one JSON POST per batch.

Request::

    POST <url>
    Content-Type: application/json
    Content-Encoding: gzip                      (only with gzip = true)
    Idempotency-Key: <32 hex digits>
    Authorization: Bearer <token> | Basic ...   (when configured)

    {"gateway": "gw-7",
     "readings": [{"meter": "m1", "channel": "A+", "archive": "current", "ts": 1700000000,
                   "value": 12345.5, "unit": "Wh"},
                  {"meter": "m1", "channel": "A+", "archive": "profile", "ts": 1699999200,
                   "value": 10.0, "unit": "Wh", "quality": "incomplete"}, ...]}

Events go in batches of their own, to ``events_url`` if set, else to ``url``, told apart by the body kind::

    {"gateway": "gw-7",
     "events": [{"meter": "m1", "code": "power_off", "ts_start": 1700000000, "ts_end": 1700000360,
                 "text": "phase A off"}, ...]}

Each meter's state rides along in a readings body once known: ``"meters": {"m1": "online", "m2": "offline"}``
(online: its last cycle got an answer). It is not covered by the Idempotency-Key.

An event's natural key is ``(meter, code, ts_start)``; an event sent open (``ts_end`` null) is sent again
once it closes or its text changes, so a receiver upserts on that key. ``events = false`` declines them.

``ts`` is UTC unix seconds (an interval's start for archives), ``value`` a JSON number, ``unit`` may be "",
``quality`` appears only when it is not "good". Readings are in store order, oldest first. Any 2xx confirms
the whole batch; 401, 403, 407 (credentials refused), 408, 429, 5xx, 3xx, timeouts and network errors are
retried; any other 4xx parks it.

Every reading carries its natural key ``(meter, channel, archive, ts)`` so the receiver can de-duplicate
the re-sends that at-least-once delivery implies. The ``Idempotency-Key`` is a hash of the sink name and the
uncompressed body: a retry of a batch — the forwarder re-sends exactly the same readings — carries the same
key, and two different batches never share one (a key derived from store sequence numbers would repeat
after a store is recreated and make a receiver drop new data). A batch re-fetched with other boundaries after
a restart gets a new key, which is why the natural key stays the receiver's real de-duplication tool.

mTLS: ``client_cert`` (PEM, may hold the key too) and ``client_key``; checked at config load.

Secrets (bearer token, basic-auth password, credentials in the URL, sensitive extra headers) never reach an
exception message: the URL is shown without user info and query, and every message is scrubbed of the
secret strings before it is raised, because a receiver may echo the request headers in its error body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import ssl
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import orjson
from yarl import URL

from pollerd.config.model import SinkConfig
from pollerd.errors import OptionError
from pollerd.model import Event, Reading
from pollerd.push import PermanentSinkError, TransientSinkError
from pollerd.text import safe_url

log = logging.getLogger(__name__)

BODY_SNIPPET = 200          # chars of an error response shown in the exception
_BODY_READ = 1024           # bytes read from an error response; the rest is not worth the memory
_USER_AGENT = "pollerd"
_SENSITIVE_HEADER = re.compile(r"auth|token|key|secret|pass|cookie|session", re.IGNORECASE)
_WS = re.compile(r"\s+")
# zlib level 1: a batch of readings shrinks >10x at level 1 and level 6 saves ~10 % more for 4-5x the CPU
# (scripts/bench_http_gzip.py); a gateway's CPU is scarcer than its uplink's bytes.
_GZIP_LEVEL = 1


@dataclass(frozen=True, slots=True)
class HttpOptions:
    gzip: bool = False
    # A 2xx reply with an HTML page is a captive portal or a proxy's page far more often than a receiver's
    # answer, so it does not confirm the batch unless the receiver is known to answer so.
    accept_html: bool = False
    events: bool = True               # forward events too (false: this receiver takes readings only)
    events_url: str | None = None     # where event batches go (default: the sink's url, told apart by body kind)


def parse_options(raw: Mapping[str, object], base_dir: str) -> HttpOptions:
    """The http sink's own keys (its SinkSpec in push/registry.py)."""
    kw: dict[str, bool] = {}
    for key, default in (("gzip", False), ("accept_html", False), ("events", True)):
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise OptionError(f"{key} must be true or false, got {value!r}", (key,))
        kw[key] = value
    events_url = raw.get("events_url")
    if events_url is not None:
        if not isinstance(events_url, str) or not re.match(r"https?://[^/\s]+", events_url):
            raise OptionError(f"events_url must be an http:// or https:// URL, got {events_url!r}",
                              ("events_url",))
        if not kw["events"]:
            raise OptionError("events_url with events = false: events are not sent anywhere", ("events_url",))
    return HttpOptions(**kw, events_url=events_url)


def gzip_body(body: bytes) -> bytes:
    co = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)   # wbits 31: gzip header and trailer
    return co.compress(body) + co.flush()


def idempotency_key(sink_name: str, body: bytes) -> str:
    h = hashlib.blake2b(body, digest_size=16, person=b"pollerd-http")
    h.update(b"\0" + sink_name.encode())
    return h.hexdigest()


def ssl_option(sink: SinkConfig) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl=`` for an HTTPS sink: False (not verified), True (system CAs) or a context with the
    sink's ``ca_file`` added to the system CAs and its client certificate. Raises OSError/ssl.SSLError for
    files that do not load."""
    if not sink.client_cert:
        if not sink.verify_tls:
            return False
        if not sink.ca_file:
            return True
    ctx = ssl.create_default_context()
    if sink.ca_file:
        ctx.load_verify_locations(cafile=sink.ca_file)  # added to the system CAs, not instead
    if not sink.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if sink.client_cert:
        ctx.load_cert_chain(sink.client_cert, sink.client_key)
    return ctx


class HttpPushClient:
    """POSTs batches to ``sink.url``. Create, ``await connect()``, ``await send(batch)``..., ``await close()``."""

    def __init__(self, sink: SinkConfig, gateway: str) -> None:
        self._sink = sink
        self._gateway = gateway
        self._session: aiohttp.ClientSession | None = None
        self._where = f"sink {sink.name!r}: POST {safe_url(sink.url)}"
        self._headers, self._secrets = self._build_headers(sink)
        opts = sink.options if isinstance(sink.options, HttpOptions) else HttpOptions()
        self._gzip = opts.gzip
        self._accept_html = opts.accept_html
        self.accepts_events = opts.events
        self._events_url = opts.events_url or sink.url
        self._events_where = f"sink {sink.name!r}: POST {safe_url(self._events_url)} (events)"
        self._status: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"HttpPushClient({self._sink.name!r}, {safe_url(self._sink.url)!r})"

    @staticmethod
    def _build_headers(sink: SinkConfig) -> tuple[dict[str, str], tuple[str, ...]]:
        headers: dict[str, str] = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
        secrets: list[str] = []
        for name, value in sink.headers:
            headers[name] = value
            if _SENSITIVE_HEADER.search(name) and value:
                secrets.append(value)
        if sink.token is not None:
            token = sink.token.reveal()
            headers["Authorization"] = f"Bearer {token}"
            secrets.append(token)
        elif sink.username is not None:
            password = sink.password.reveal() if sink.password is not None else ""
            creds = base64.b64encode(f"{sink.username}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {creds}"
            secrets.extend((password, creds))
        try:
            url_password = URL(sink.url).password
        except (ValueError, TypeError):
            url_password = None
        if url_password:
            secrets.append(url_password)
        # Longest first so a secret that contains another is replaced whole.
        return headers, tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def _ssl(self) -> ssl.SSLContext | bool:
        return ssl_option(self._sink)

    async def connect(self) -> None:
        """Prepare the session. Never raises for a sink problem: a bad ca_file must not stop the daemon from
        polling, so the failure is logged here and raised again by ``send`` for the forwarder to retry."""
        try:
            self._open()
        except TransientSinkError as exc:
            log.error("%s", exc)

    def _open(self) -> None:
        if self._session is not None and not self._session.closed:
            return
        try:
            ssl_opt = self._ssl()
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(repr(f) for f in (self._sink.ca_file, self._sink.client_cert, self._sink.client_key)
                              if f)
            raise TransientSinkError(
                f"sink {self._sink.name!r}: cannot load the TLS files ({files}): {exc}", kind="tls"
            ) from None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_opt, limit=2),
            timeout=aiohttp.ClientTimeout(total=self._sink.timeout),
            headers=self._headers,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def encode(self, batch: Sequence[Reading]) -> bytes:
        return orjson.dumps({"gateway": self._gateway, "readings": [r.as_dict() for r in batch]})

    async def send_status(self, status: Mapping[str, str]) -> None:
        """The meters' online/offline state rides in the next batches' metadata (``"meters"``); no request
        of its own."""
        self._status = dict(status)

    async def send(self, batch: Sequence[Reading]) -> None:
        if batch:
            body = self.encode(batch)
            # The key covers the readings only: a retry of the same batch keeps its key even when a meter's
            # state changed in between.
            key = idempotency_key(self._sink.name, body)
            if self._status:
                body = body[:-1] + b',"meters":' + orjson.dumps(self._status, option=orjson.OPT_SORT_KEYS) + b"}"
            await self._post(self._sink.url, self._where, body, key)

    def encode_events(self, batch: Sequence[Event]) -> bytes:
        return orjson.dumps({"gateway": self._gateway, "events": [e.as_dict() for e in batch]})

    async def send_events(self, batch: Sequence[Event]) -> None:
        """One batch of events: the same POST, retries and refusals as readings, with the body kind
        ``events`` (to ``events_url`` when set)."""
        if batch:
            body = self.encode_events(batch)
            await self._post(self._events_url, self._events_where, body, idempotency_key(self._sink.name, body))

    async def _post(self, url: str, where: str, body: bytes, key: str) -> None:
        self._open()
        assert self._session is not None
        headers = {"Idempotency-Key": key}
        if self._gzip:
            body = gzip_body(body)
            headers["Content-Encoding"] = "gzip"
        # `from None` below: the original exception (and its traceback) may carry the raw URL.
        try:
            async with self._session.post(url, data=body, headers=headers,
                                          allow_redirects=False) as resp:
                status = resp.status
                html = resp.content_type == "text/html" and not self._accept_html
                if 200 <= status < 300 and not html:
                    # Read the (small) reply to its end: a connection cut in the middle of it leaves the
                    # outcome unknown, and an unknown outcome is a retry, not a confirmation.
                    while await resp.content.read(_BODY_READ * 64):
                        pass
                    return
                snippet = await self._snippet(resp)
                location = resp.headers.get("Location", "")
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            raise TransientSinkError(
                f"{where}: no reply within {self._sink.timeout:g} s", kind="timeout"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientSinkError(
                self._scrub(f"{where}: {type(exc).__name__}: {exc}"), kind="network"
            ) from None
        if 200 <= status < 300:  # an HTML page: not confirmed, the batch stays and is retried
            raise TransientSinkError(self._scrub(
                f"{where}: HTTP {status} with an HTML page, not a receiver's reply (a captive portal, a "
                f"proxy or the wrong url?); not taken as delivered; body: {snippet!r} (accept_html = true "
                f"if the receiver really answers HTML)"), kind="garbage", status=status)
        msg = f"{where}: HTTP {status}, expected 2xx; body: {snippet!r}"
        if 300 <= status < 400:
            # A redirect of a POST is a configuration problem; following it could turn the POST into a GET
            # and get the batch parked. Keep the data and retry until the URL is fixed.
            msg += f"; redirected to {safe_url(location)!r}, fix the sink url"
            raise TransientSinkError(self._scrub(msg), kind="redirect", status=status)
        if status in (401, 403, 407):
            # Credentials refused (a revoked or rotated token, a proxy wanting a login): that says nothing
            # about the batch, and every batch would be refused alike. Parking would move the cursor past the
            # whole outage; retry until the token is fixed, as an MQTT broker refusing the login is.
            raise TransientSinkError(self._scrub(msg + "; check the sink's credentials"), kind="auth",
                                     status=status)
        if status in (404, 405):
            # The url names no receiver (a typo, a path moved in a deploy, a proxy without the route): every
            # batch would be refused alike, and parking would skip the whole misconfiguration. Retry.
            raise TransientSinkError(self._scrub(msg + "; no receiver at this url: check the sink url"),
                                     kind="http", status=status)
        if status == 413:
            # Too large is about the batch's size, not its readings: a smaller batch_size gets it through
            # (batches are cut anew after a restart).
            raise TransientSinkError(self._scrub(msg + "; lower the sink's batch_size"), kind="http",
                                     status=status)
        if status in (408, 429) or status >= 500 or status < 200:
            raise TransientSinkError(self._scrub(msg), kind="http", status=status)
        raise PermanentSinkError(self._scrub(msg), status=status)

    async def _snippet(self, resp: aiohttp.ClientResponse) -> str:
        try:
            raw = await resp.content.read(_BODY_READ)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return ""
        text = _WS.sub(" ", raw.decode("utf-8", "replace")).strip()
        # Scrub before cutting, so a secret split by the cut cannot survive in part.
        return self._scrub(text)[:BODY_SNIPPET]
