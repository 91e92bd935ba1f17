"""HTTP push client and forwarder against a local aiohttp server on 127.0.0.1 and the real Store."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

from pollerd.config import Secret, SinkConfig
from pollerd.errors import SinkError, StoreError
from pollerd.metrics import Registry
from pollerd.model import Reading
from pollerd.push import PermanentSinkError, TransientSinkError, make_client
from pollerd.push.forwarder import Forwarder
from pollerd.push.http import HttpPushClient
from pollerd.push.registry import builtin_sinks
from pollerd.state import SinkState
from pollerd.store import Store

TOKEN = "tok-S3CRET-0123456789"
PASSWORD = "pw-S3CRET-987654"


# ---- a scripted upstream -----------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int = 200
    body: str = "ok"
    delay: float = 0.0
    gate: asyncio.Event | None = None      # hold the reply until the test sets it
    content_type: str = "text/plain"


@dataclass
class Upstream:
    url: str = ""
    script: list[Reply] = field(default_factory=list)   # consumed in order; then 200
    requests: list[dict] = field(default_factory=list)  # every request as it arrived
    delivered: list[dict] = field(default_factory=list)  # readings of requests answered 2xx
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    echo_auth: bool = False

    async def handle(self, request: web.Request) -> web.Response:
        wire = await request.read()     # as sent: the servers here run with auto_decompress=False
        raw = gzip.decompress(wire) if request.headers.get("Content-Encoding") == "gzip" else wire
        entry = {"headers": dict(request.headers), "body": orjson.loads(raw), "raw": raw, "wire": wire}
        self.requests.append(entry)
        self.arrived.set()
        reply = self.script.pop(0) if self.script else Reply()
        if reply.gate is not None:
            await reply.gate.wait()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = reply.body
        if self.echo_auth:
            body += " you sent Authorization: " + request.headers.get("Authorization", "")
        if 200 <= reply.status < 300:
            self.delivered.extend(entry["body"]["readings"])
        return web.Response(status=reply.status, text=body, content_type=reply.content_type)


@pytest.fixture
async def upstream():
    up = Upstream()
    app = web.Application()
    app.router.add_post("/ingest", up.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up.url = f"http://127.0.0.1:{runner.addresses[0][1]}/ingest"
    yield up
    await runner.cleanup()


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(tmp_path / "p.db", commit_interval=0.01)
    yield st
    await st.close()


def sink_cfg(url: str, **kw) -> SinkConfig:
    base = dict(name="up", type="http", url=url, timeout=2.0, batch_size=2, retry_min=0.01, retry_max=0.05)
    base.update(kw)
    return SinkConfig(**base)


def readings(n: int, meter: str = "m1", ts0: int = 1_700_000_000) -> list[Reading]:
    return [Reading(meter, "A+", "profile", ts0 + 1800 * i, 1000.0 + i, "Wh") for i in range(n)]


class FakeSleep:
    """Records backoff delays without waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


async def until(cond: Callable[[], bool | Awaitable[bool]], what: str, tries: int = 500) -> None:
    for _ in range(tries):
        r = cond()
        if not isinstance(r, bool):
            r = await r
        if r:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Running:
    fwd: Forwarder
    task: asyncio.Task
    client: HttpPushClient
    state: SinkState
    metrics: Registry
    sleep: FakeSleep

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.client.close()


async def start_forwarder(store: Store, sink: SinkConfig, **kw) -> Running:
    client = HttpPushClient(sink, "gw1")
    await client.connect()
    state = SinkState(sink.name, sink.type)
    metrics = Registry()
    sleep = FakeSleep()
    fwd = Forwarder(store, client, sink, state, metrics, sleep=sleep, idle_wait=0.05, **kw)
    task = asyncio.create_task(fwd.run(), name=f"forwarder:{sink.name}")
    return Running(fwd, task, client, state, metrics, sleep)


def as_wire(rs: list[Reading]) -> list[dict]:
    return [r.as_dict() for r in rs]


# ---- the client alone --------------------------------------------------------------------------------------

async def test_body_shape_and_bearer(upstream):
    client = make_client(sink_cfg(upstream.url, token=Secret(TOKEN), headers=(("X-Site", "north"),)), "gw1")
    batch = [Reading("m1", "A+", "current", 1_700_000_000, 12345.5, "Wh"),
             Reading("m1", "A+", "profile", 1_699_999_200, 10.0, "Wh", quality="incomplete")]
    await client.connect()
    try:
        await client.send(batch)
    finally:
        await client.close()
    [req] = upstream.requests
    assert req["body"] == {
        "gateway": "gw1",
        "readings": [
            {"meter": "m1", "channel": "A+", "archive": "current", "ts": 1_700_000_000, "value": 12345.5,
             "unit": "Wh"},
            {"meter": "m1", "channel": "A+", "archive": "profile", "ts": 1_699_999_200, "value": 10.0,
             "unit": "Wh", "quality": "incomplete"},
        ],
    }
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert req["headers"]["X-Site"] == "north"


async def test_basic_auth_header(upstream):
    client = HttpPushClient(sink_cfg(upstream.url, username="alice", password=Secret(PASSWORD)), "gw1")
    try:
        await client.send(readings(1))      # connects on first use
    finally:
        await client.close()
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert upstream.requests[0]["headers"]["Authorization"] == expected


@pytest.mark.parametrize("status, exc_type", [(500, TransientSinkError), (503, TransientSinkError),
                                              (408, TransientSinkError), (429, TransientSinkError),
                                              (400, PermanentSinkError), (422, PermanentSinkError),
                                              (401, TransientSinkError), (403, TransientSinkError),
                                              (404, TransientSinkError), (405, TransientSinkError),
                                              (413, TransientSinkError), (409, PermanentSinkError),
                                              (307, TransientSinkError)])
async def test_status_classification(upstream, status, exc_type):
    upstream.script = [Reply(status, body="x" * 500)]
    client = HttpPushClient(sink_cfg(upstream.url), "gw1")
    try:
        with pytest.raises(exc_type) as ei:
            await client.send(readings(1))
    finally:
        await client.close()
    text = str(ei.value)
    assert f"HTTP {status}" in text
    assert ei.value.status == status
    # the body is quoted, but only a short slice of it
    assert "x" * 200 in text and "x" * 201 not in text


PORTAL = "<!DOCTYPE html><html><head><title>Hotel WiFi login</title></head><body>Sign in</body></html>"


async def test_a_2xx_html_page_is_not_a_confirmation(upstream, store):
    rs = readings(2)
    await store.write(rs)
    upstream.script = [Reply(200, body=PORTAL, content_type="text/html")]
    run = await start_forwarder(store, sink_cfg(upstream.url))
    try:
        await until(lambda: run.state.sent == 2, "sent after the portal went away")
    finally:
        await run.stop()
    assert len(upstream.requests) == 2 and run.state.failures == 1
    assert "HTTP 200 with an HTML page" in run.state.last_error and "Hotel WiFi" in run.state.last_error
    fails = run.metrics.counter("pollerd_sink_failures_total", "", ("sink", "kind"))
    assert fails.get(sink="up", kind="garbage") == 1
    # A receiver that does answer HTML, said so in the config: confirmed at once.
    from pollerd.push.http import HttpOptions
    upstream.script = [Reply(200, body=PORTAL, content_type="text/html")]
    client = HttpPushClient(sink_cfg(upstream.url, options=HttpOptions(accept_html=True)), "gw1")
    try:
        await client.send(readings(1))
    finally:
        await client.close()


async def test_unknown_sink_type_is_refused():
    assert {t for t in builtin_sinks() if builtin_sinks()[t].kind == "batch"} >= {"http", "mqtt"}
    with pytest.raises(SinkError, match="unknown type 'ftp'"):
        make_client(sink_cfg("http://127.0.0.1:1/", type="ftp"), "gw1")


async def test_no_secret_in_errors(upstream, caplog, store):
    caplog.set_level(logging.DEBUG)
    upstream.echo_auth = True
    # The receiver echoes our Authorization header back in its error body.
    for cfg in (sink_cfg(upstream.url, token=Secret(TOKEN)),
                sink_cfg(upstream.url, username="alice", password=Secret(PASSWORD))):
        upstream.script = [Reply(401, body="denied")]
        client = HttpPushClient(cfg, "gw1")
        try:
            with pytest.raises(TransientSinkError) as ei:
                await client.send(readings(1))
        finally:
            await client.close()
        assert "denied you sent Authorization:" in str(ei.value)     # the echo is there ...
        for secret in (TOKEN, PASSWORD, base64.b64encode(f"alice:{PASSWORD}".encode()).decode()):
            assert secret not in str(ei.value)                      # ... but scrubbed
            assert secret not in repr(client)
    # Network failure with credentials inside the URL (nothing listens on port 1).
    bad = sink_cfg(f"http://alice:{PASSWORD}@127.0.0.1:1/ingest?api_key={TOKEN}")
    client = HttpPushClient(bad, "gw1")
    try:
        with pytest.raises(TransientSinkError) as ei:
            await client.send(readings(1))
    finally:
        await client.close()
    assert ei.value.kind == "network"
    assert "127.0.0.1:1" in str(ei.value)
    assert PASSWORD not in str(ei.value) and TOKEN not in str(ei.value)
    # And through the forwarder's logs: a refused batch is logged with the (scrubbed) reason.
    await store.write(readings(1))
    upstream.script = [Reply(400, body="nope")]  # refused content: parked, with the echo scrubbed
    run = await start_forwarder(store, sink_cfg(upstream.url, token=Secret(TOKEN)))
    try:
        await until(lambda: run.state.parked == 1, "the batch to be parked")
    finally:
        await run.stop()
    assert any("parked" in r.getMessage() for r in caplog.records)
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert TOKEN not in logged and PASSWORD not in logged


# ---- the forwarder -----------------------------------------------------------------------------------------

async def test_2xx_advances_cursor(upstream, store):
    rs = readings(5)
    await store.write(rs)
    run = await start_forwarder(store, sink_cfg(upstream.url))
    try:
        await until(lambda: run.state.sent == 5, "all readings sent")
        assert await store.cursor("up") == await store.last_seq()
    finally:
        await run.stop()
    assert upstream.delivered == as_wire(rs)
    assert [len(r["body"]["readings"]) for r in upstream.requests] == [2, 2, 1]   # batch_size=2
    assert run.metrics.counter("pollerd_sink_sent_total", "", ("sink",)).get(sink="up") == 5
    assert run.metrics.gauge("pollerd_sink_last_success_timestamp", "", ("sink",)).get(sink="up") > 0
    assert run.state.last_success is not None
    assert run.state.lag_rows == 0


async def test_new_rows_are_forwarded_when_written_later(upstream, store):
    run = await start_forwarder(store, sink_cfg(upstream.url))
    try:
        await until(lambda: run.state.lag_rows == 0 and not upstream.requests, "an idle forwarder")
        rs = readings(3)
        await store.write(rs)
        await until(lambda: run.state.sent == 3, "late rows sent")
    finally:
        await run.stop()
    assert upstream.delivered == as_wire(rs)


async def test_500_then_200_delivers_once_in_order(upstream, store):
    rs = readings(4)
    await store.write(rs)
    upstream.script = [Reply(500, body="boom"), Reply(502, body="gateway")]
    run = await start_forwarder(store, sink_cfg(upstream.url))
    try:
        await until(lambda: run.state.sent == 4, "all readings sent")
    finally:
        await run.stop()
    assert upstream.delivered == as_wire(rs)        # exactly once, in order
    # the same first batch was offered three times
    assert [r["body"]["readings"] for r in upstream.requests[:3]] == [as_wire(rs[:2])] * 3
    fails = run.metrics.counter("pollerd_sink_failures_total", "", ("sink", "kind"))
    assert fails.get(sink="up", kind="http") == 2
    assert len(run.sleep.delays) == 2
    assert run.state.failures == 2 and "HTTP 502" in run.state.last_error


async def test_timeout_is_retried(upstream, store):
    rs = readings(2)
    await store.write(rs)
    upstream.script = [Reply(200, delay=1.0)]
    run = await start_forwarder(store, sink_cfg(upstream.url, timeout=0.2))
    try:
        await until(lambda: run.state.sent == 2, "the batch sent after a timeout")
    finally:
        await run.stop()
    fails = run.metrics.counter("pollerd_sink_failures_total", "", ("sink", "kind"))
    assert fails.get(sink="up", kind="timeout") == 1
    assert await store.cursor("up") == await store.last_seq()
    assert [r["body"]["readings"] for r in upstream.requests] == [as_wire(rs)] * 2


async def test_429_is_retried(upstream, store):
    await store.write(readings(1))
    upstream.script = [Reply(429, body="slow down")]
    run = await start_forwarder(store, sink_cfg(upstream.url))
    try:
        await until(lambda: run.state.sent == 1, "the batch sent after 429")
    finally:
        await run.stop()
    assert run.state.parked == 0 and await store.parked() == []
    assert len(upstream.requests) == 2


@pytest.mark.parametrize("status", [401, 403, 407])
async def test_refused_credentials_are_retried_not_parked(upstream, store, status):
    # A revoked or rotated token refuses every batch, whatever it holds: parking would move the cursor past
    # the whole outage (and nothing re-sends parked batches). Like an MQTT broker refusing the credentials,
    # it is retried with backoff until someone fixes the token.
    await store.write(readings(2))  # one batch
    upstream.script = [Reply(status, body="token expired")] * 2
    run = await start_forwarder(store, sink_cfg(upstream.url))
    try:
        await until(lambda: run.state.sent == 2, "the batch sent once the token works again")
    finally:
        await run.stop()
    assert run.state.parked == 0 and await store.parked() == []
    assert len(upstream.requests) == 3 and await store.cursor("up") == await store.last_seq()
    fails = run.metrics.counter("pollerd_sink_failures_total", "", ("sink", "kind"))
    assert fails.get(sink="up", kind="auth") == 2


async def test_400_parks_and_moves_on(upstream, store, caplog):
    caplog.set_level(logging.ERROR, logger="pollerd.push.forwarder")
    rs = readings(4)
    await store.write(rs)
    upstream.script = [Reply(400, body="bad channel A+")]
    run = await start_forwarder(store, sink_cfg(upstream.url))
    try:
        await until(lambda: run.state.sent == 2, "the second batch sent")
        last = await store.last_seq()
        assert await store.cursor("up") == last
    finally:
        await run.stop()
    assert upstream.delivered == as_wire(rs[2:])
    assert len(upstream.requests) == 2                  # the refused batch was not retried
    parked = await store.parked("up")
    assert len(parked) == 1
    first_seq, last_seq = parked[0]["first_seq"], parked[0]["last_seq"]
    assert last_seq - first_seq == 1 and last_seq == last - 2
    assert "HTTP 400" in parked[0]["reason"] and "bad channel" in parked[0]["reason"]
    assert run.metrics.counter("pollerd_sink_parked_batches_total", "", ("sink",)).get(sink="up") == 1
    assert run.state.parked == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "parked" in errors[0].getMessage()


async def test_cancel_mid_send_keeps_cursor(upstream, store):
    await store.write(readings(2))
    gate = asyncio.Event()
    upstream.script = [Reply(200, gate=gate)]
    run = await start_forwarder(store, sink_cfg(upstream.url))
    try:
        await until(lambda: upstream.arrived.is_set(), "the request to reach the server")
    finally:
        await run.stop()              # cancelled while the POST is in flight
        gate.set()
    assert await store.cursor("up") == 0
    assert run.state.sent == 0
    # A new forwarder re-sends the same batch: nothing was lost by the cancel.
    run2 = await start_forwarder(store, sink_cfg(upstream.url))
    try:
        await until(lambda: run2.state.sent == 2, "the batch re-sent")
    finally:
        await run2.stop()
    assert await store.cursor("up") == await store.last_seq()


async def test_backoff_is_capped_exponential_with_jitter():
    sink = sink_cfg("http://127.0.0.1:1/", retry_min=1.0, retry_max=10.0)
    hi = Forwarder(None, None, sink, SinkState("up", "http"), Registry(), rng=lambda: 1.0)
    lo = Forwarder(None, None, sink, SinkState("up", "http"), Registry(), rng=lambda: 0.0)
    assert [hi.backoff(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert [lo.backoff(n) for n in range(6)] == [1.0] * 6
    mid = Forwarder(None, None, sink, SinkState("up", "http"), Registry(), rng=lambda: 0.5)
    assert mid.backoff(3) == 4.5
    assert hi.backoff(10_000) == 10.0      # no float overflow on a long outage


async def test_lag_metrics(upstream, store):
    now = [1_700_000_000.0 + 3600]
    old = readings(3, ts0=1_700_000_000)           # there before the forwarder started
    await store.write(old)
    upstream.script = [Reply(500)] * 1000           # sink down
    run = await start_forwarder(store, sink_cfg(upstream.url), clock=lambda: now[0])
    try:
        await until(lambda: len(upstream.requests) >= 2, "retries")
        assert run.state.lag_rows == 3
        assert run.state.lag_seconds == 3600.0      # rows older than the forwarder: age by ts
        g = run.metrics.gauge("pollerd_sink_lag_seconds", "", ("sink",))
        assert g.get(sink="up") == 3600.0
        assert run.metrics.gauge("pollerd_sink_lag_rows", "", ("sink",)).get(sink="up") == 3
    finally:
        await run.stop()
    # A backfilled archive row (old ts) that arrives while the forwarder runs ages from its arrival.
    run = await start_forwarder(store, sink_cfg(upstream.url), clock=lambda: now[0])
    upstream.script = []
    try:
        await until(lambda: run.state.sent == 3, "backlog sent")
        await store.write(readings(1, ts0=1_600_000_000))
        upstream.script = [Reply(503)] * 1000
        await until(lambda: run.state.lag_rows == 1, "new row seen")
        now[0] += 60
        n = len(upstream.requests)
        await until(lambda: len(upstream.requests) > n + 1, "more retries")
        assert run.state.lag_seconds == 60.0
    finally:
        await run.stop()


# ---- TLS ---------------------------------------------------------------------------------------------------

@pytest.fixture
async def tls_upstream(tmp_path):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl binary not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    up = Upstream()
    app = web.Application()
    app.router.add_post("/ingest", up.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    up.url = f"https://127.0.0.1:{runner.addresses[0][1]}/ingest"
    yield up, str(cert)
    await runner.cleanup()


async def send_once(cfg: SinkConfig) -> None:
    client = HttpPushClient(cfg, "gw1")
    await client.connect()
    try:
        await client.send(readings(1))
    finally:
        await client.close()


async def test_tls_verified_by_default(tls_upstream):
    up, cert = tls_upstream
    with pytest.raises(TransientSinkError) as ei:
        await send_once(sink_cfg(up.url))              # self-signed: refused
    assert ei.value.kind == "network" and "certificate" in str(ei.value).lower()
    assert up.delivered == []
    await send_once(sink_cfg(up.url, ca_file=cert))     # trusted through ca_file
    await send_once(sink_cfg(up.url, verify_tls=False))
    assert len(up.delivered) == 2


async def test_bad_ca_file_does_not_stop_connect(tmp_path, caplog):
    cfg = sink_cfg("https://127.0.0.1:1/ingest", ca_file=str(tmp_path / "missing.pem"))
    client = HttpPushClient(cfg, "gw1")
    await client.connect()                                # logged, not raised: polling goes on
    assert "missing.pem" in caplog.text
    with pytest.raises(TransientSinkError) as ei:
        await client.send(readings(1))
    assert ei.value.kind == "tls"
    await client.close()


async def test_store_read_error_is_retried_not_fatal(upstream, store):
    rs = readings(2)
    await store.write(rs)
    real = store.fetch_after
    calls = []

    async def flaky(seq, limit):
        calls.append(seq)
        if len(calls) == 1:
            raise StoreError("fetch outbox: OperationalError: disk I/O error")
        return await real(seq, limit)

    store.fetch_after = flaky
    run = await start_forwarder(store, sink_cfg(upstream.url))
    try:
        await until(lambda: run.state.sent == 2, "delivery after a store hiccup")
    finally:
        await run.stop()
        del store.fetch_after
    assert run.metrics.counter("pollerd_sink_failures_total", "", ("sink", "kind")).get(sink="up", kind="store") == 1
    assert upstream.delivered == as_wire(rs)


# ---- gzip, Idempotency-Key, mTLS, garbage upstreams ----------------------------------------------------------

async def test_gzip_body_and_idempotency_key_stable_across_retries(upstream, store):
    from pollerd.push.http import HttpOptions
    rs = readings(3)
    await store.write(rs)
    upstream.script = [Reply(503, body="busy")]
    run = await start_forwarder(store, sink_cfg(upstream.url, batch_size=10, options=HttpOptions(gzip=True)))
    try:
        await until(lambda: run.state.sent == 3, "the batch after a retry")
    finally:
        await run.stop()
    first, second = upstream.requests
    for req in (first, second):
        assert req["headers"]["Content-Encoding"] == "gzip"
        assert orjson.loads(gzip.decompress(req["wire"])) == {"gateway": "gw1", "readings": as_wire(rs)}
        assert len(req["wire"]) < len(orjson.dumps(req["body"]))
    key = first["headers"]["Idempotency-Key"]
    assert len(key) == 32 and int(key, 16) >= 0
    assert second["headers"]["Idempotency-Key"] == key          # a retry carries the same key
    assert upstream.delivered == as_wire(rs)


async def test_idempotency_key_differs_per_batch_and_per_sink(upstream):
    keys = []
    for name, batch in (("up", readings(2)), ("up", readings(2, ts0=1_800_000_000)), ("other", readings(2))):
        client = HttpPushClient(sink_cfg(upstream.url, name=name), "gw1")
        try:
            await client.send(batch)
        finally:
            await client.close()
        keys.append(upstream.requests[-1]["headers"]["Idempotency-Key"])
    assert len(set(keys)) == 3
    assert "Content-Encoding" not in upstream.requests[0]["headers"]     # gzip is off by default


@pytest.fixture
async def mtls_upstream(tmp_path):
    import ssl

    from tls_helpers import make_pki
    pki = make_pki(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    up = Upstream()
    peers: list = []

    async def handle(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peercert"))
        return await up.handle(request)

    app = web.Application()
    app.router.add_post("/ingest", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    up.url = f"https://127.0.0.1:{runner.addresses[0][1]}/ingest"
    yield up, pki, peers
    await runner.cleanup()


async def test_mtls_client_certificate(mtls_upstream):
    up, pki, peers = mtls_upstream
    with pytest.raises(TransientSinkError) as ei:                   # no client certificate: refused
        await send_once(sink_cfg(up.url, ca_file=str(pki.ca)))
    assert ei.value.kind == "network"
    assert up.delivered == []
    await send_once(sink_cfg(up.url, ca_file=str(pki.ca), client_cert=str(pki.client_cert),
                             client_key=str(pki.client_key)))
    await send_once(sink_cfg(up.url, ca_file=str(pki.ca), client_cert=str(pki.client_combined)))
    assert len(up.delivered) == 2
    subjects = [dict(x[0] for x in p["subject"]) for p in peers]
    assert subjects == [{"commonName": "gateway-7"}] * 2


@pytest.mark.parametrize("reply", [
    b"\x00\x01garbage that is not HTTP\r\n\r\n",                      # not HTTP at all
    b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort",             # cut off mid-body
    b"",                                                              # hangs up without a word
])
async def test_garbage_or_silent_upstream_is_retried_not_lost(store, reply):
    """A peer that answers garbage is a transient failure: the batch is retried with backoff, not lost."""
    answers = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            answers.append(reply)
            writer.write(reply)
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/ingest"
    await store.write(readings(2))
    run = await start_forwarder(store, sink_cfg(url, timeout=2.0))
    try:
        await until(lambda: len(run.sleep.delays) >= 3, "three retries")
        assert run.state.sent == 0 and await store.cursor("up") == 0
        assert run.state.failing_since is not None and run.state.last_error
    finally:
        await run.stop()
        server.close()
        await server.wait_closed()
    fails = run.metrics.counter("pollerd_sink_failures_total", "", ("sink", "kind"))
    assert fails.get(sink="up", kind="network") + fails.get(sink="up", kind="timeout") >= 3


async def test_upstream_that_never_answers_times_out_and_retries(store):
    held: list = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)                 # read nothing, answer nothing

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/ingest"
    await store.write(readings(1))
    run = await start_forwarder(store, sink_cfg(url, timeout=0.3))
    try:
        await until(lambda: len(run.sleep.delays) >= 2, "two timed-out tries", tries=1500)
        assert "no reply within 0.3 s" in run.state.last_error and await store.cursor("up") == 0
    finally:
        await run.stop()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()
