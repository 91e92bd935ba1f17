"""MQTT sink against a real Mosquitto broker that each test starts on a free 127.0.0.1 port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from helpers import free_port
from test_push_http import readings, until

from pollerd.config import Secret, SinkConfig
from pollerd.metrics import Registry
from pollerd.model import Reading
from pollerd.push import TransientSinkError, make_client
from pollerd.push.forwarder import Forwarder
from pollerd.push.mqtt_options import parse_options
from pollerd.state import SinkState
from pollerd.store import Store

aiomqtt = pytest.importorskip("aiomqtt")

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")

PASSWORD = "mq-S3CRET-4242"


@dataclass
class Broker:
    dir: Path
    port: int = 0
    extra: str = ""
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            # Started as root, mosquitto drops to the user "mosquitto", which cannot reach pytest's 0700
            # temporary directories; keep the user we are.
            ("user root\n" if os.geteuid() == 0 else "")
            + f"listener {self.port} 127.0.0.1\n"
            f"persistence true\npersistence_location {self.dir}/\n"
            "max_queued_messages 0\n"         # the test subscriber must not lose what it was sent
            f"log_dest file {self.dir}/mosquitto.log\nlog_type all\n"
            + (self.extra or "allow_anonymous true\n"), encoding="utf-8")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@dataclass
class Subscriber:
    """Collects every message under ``topic``; a persistent session, so a broker restart loses nothing."""

    port: int
    topic: str = "pollerd/#"
    messages: list = field(default_factory=list)
    task: asyncio.Task | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="test-sub", clean_session=False,
                                          max_queued_incoming_messages=0) as c:
                    await c.subscribe(self.topic, qos=1)
                    self.ready.set()
                    async for m in c.messages:
                        self.messages.append((m.topic.value, bytes(m.payload), m.retain))
            except aiomqtt.MqttError:
                self.ready.clear()
                await asyncio.sleep(0.05)

    async def start(self) -> Subscriber:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 20)
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    def payloads(self, prefix: str = "pollerd/gw1/m") -> list[dict]:
        return [orjson.loads(p) for t, p, _ in self.messages if t.startswith(prefix)]

    def status(self) -> list[tuple[bytes, bool]]:
        return [(p, r) for t, p, r in self.messages if t == "pollerd/gw1/status"]


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(tmp_path / "p.db", commit_interval=0.01)
    yield st
    await st.close()


def mqtt_sink(url: str, raw_options: dict | None = None, **kw) -> SinkConfig:
    base = dict(name="up", type="mqtt", url=url, timeout=10.0, batch_size=50, retry_min=0.05, retry_max=0.3,
                linger=0.0, options=parse_options(raw_options or {}, "."))
    base.update(kw)
    return SinkConfig(**base)


def key(r: dict) -> tuple:
    return r["meter"], r["channel"], r["archive"], r["ts"]


def mixed(n: int) -> list[Reading]:
    """Readings of two meters and several channels, with + in the channel names."""
    chans = ("A+", "A-", "R+.T1", "U.L1")
    return [Reading(f"m{1 + i % 2}", chans[i % 4], "current", 1_700_000_000 + i, float(i), "Wh")
            for i in range(n)]


class Running:
    def __init__(self, store: Store, sink: SinkConfig) -> None:
        self.client = make_client(sink, "gw1")
        self.state = SinkState(sink.name, sink.type)
        self.metrics = Registry()
        self.fwd = Forwarder(store, self.client, sink, self.state, self.metrics, idle_wait=0.05)
        self.task = asyncio.create_task(self.fwd.run())

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        await self.client.close()


# ---- delivery ---------------------------------------------------------------------------------------------

async def test_qos1_delivery_topics_payloads_and_status(broker, store):
    sub = await Subscriber(broker.port).start()
    rs = mixed(120)
    await store.write(rs)
    run = Running(store, mqtt_sink(broker.url))
    try:
        await until(lambda: run.state.sent == 120, "all readings confirmed", tries=2000)
        assert await store.cursor("up") == await store.last_seq()
        await until(lambda: len(sub.payloads()) >= 120, "all readings at the subscriber", tries=2000)
    finally:
        await run.stop()
        await until(lambda: (b"offline", False) in sub.status(), "offline on close", tries=2000)
        await sub.stop()
    got = sub.payloads()
    assert got == [{"gateway": "gw1", **r.as_dict()} for r in rs]          # in order, each once
    topics = [t for t, _, _ in sub.messages if t.startswith("pollerd/gw1/m")]
    assert topics[:4] == ["pollerd/gw1/m1/A%2B", "pollerd/gw1/m2/A-", "pollerd/gw1/m1/R%2B.T1",
                          "pollerd/gw1/m2/U.L1"]
    assert sub.status()[0] == (b"online", False) and sub.status()[-1] == (b"offline", False)
    # The status is retained: a late subscriber sees the last one.
    async with aiomqtt.Client("127.0.0.1", broker.port) as c:
        await c.subscribe("pollerd/gw1/status", qos=1)
        m = await asyncio.wait_for(anext(aiter(c.messages)), 10)
        assert m.payload == b"offline" and m.retain


async def test_batch_payload_one_message_per_topic(broker, store):
    sub = await Subscriber(broker.port).start()
    rs = mixed(30)
    await store.write(rs)
    run = Running(store, mqtt_sink(broker.url, {"payload": "batch", "topic": "pollerd/{gateway}/{meter}"},
                                   batch_size=30))
    try:
        await until(lambda: run.state.sent == 30, "confirmed", tries=2000)
        await until(lambda: len(sub.payloads()) == 2, "two messages", tries=2000)
    finally:
        await run.stop()
        await sub.stop()
    by_topic = {t: orjson.loads(p) for t, p, _ in sub.messages if t.startswith("pollerd/gw1/m")}
    assert set(by_topic) == {"pollerd/gw1/m1", "pollerd/gw1/m2"}
    for meter in ("m1", "m2"):
        body = by_topic[f"pollerd/gw1/{meter}"]
        assert body == {"gateway": "gw1", "readings": [r.as_dict() for r in rs if r.meter == meter]}


async def test_last_will_when_the_gateway_dies(broker, tmp_path):
    sub = await Subscriber(broker.port, topic="pollerd/gw1/status").start()
    script = (
        "import asyncio, sys\n"
        "from pollerd.config import SinkConfig\n"
        "from pollerd.push import make_client\n"
        "from pollerd.push.mqtt_options import parse_options\n"
        "async def main():\n"
        f"    c = make_client(SinkConfig(name='up', type='mqtt', url='{broker.url}', options=parse_options({{}}, '.')), 'gw1')\n"
        "    await c.connect()\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(120)\n"
        "asyncio.run(main())\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line == b"ready\n"
        await until(lambda: (b"online", False) in sub.status(), "online", tries=2000)
        proc.kill()                                   # kill -9: no DISCONNECT, the broker sends the will
        await proc.wait()
        await until(lambda: (b"offline", False) in sub.status(), "the last will", tries=2000)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sub.stop()
    assert [p for p, _ in sub.status()] == [b"online", b"offline"]


# ---- failures ---------------------------------------------------------------------------------------------

async def test_bad_password_is_a_clear_error_and_retried(tmp_path, store, caplog):
    pwfile = tmp_path / "passwd"
    pwfile.write_text("", encoding="utf-8")
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "gateway", PASSWORD], check=True,
                   capture_output=True, timeout=30)
    pwfile.chmod(0o600)
    b = Broker(tmp_path, extra=f"allow_anonymous false\npassword_file {pwfile}\n")
    b.start()
    try:
        bad = make_client(mqtt_sink(b.url, username="gateway", password=Secret("wrong-pw")), "gw1")
        with pytest.raises(TransientSinkError) as ei:
            await bad.connect()
        assert ei.value.kind == "auth" and "check username and password" in str(ei.value)
        assert "wrong-pw" not in str(ei.value)
        await bad.close()
        anon = make_client(mqtt_sink(b.url), "gw1")
        with pytest.raises(TransientSinkError) as ei:
            await anon.connect()
        assert ei.value.kind == "auth"
        await anon.close()
        # Through the forwarder: retried with backoff, cursor untouched, health reason text in the state.
        await store.write(readings(3))
        run = Running(store, mqtt_sink(b.url, username="gateway", password=Secret("wrong-pw")))
        try:
            await until(lambda: run.state.failures >= 3, "retries", tries=2000)
            assert not run.state.connected and run.state.failing_since is not None
            assert "refused the credentials" in run.state.last_error and await store.cursor("up") == 0
        finally:
            await run.stop()
        good = Running(store, mqtt_sink(b.url, username="gateway", password=Secret(PASSWORD)))
        try:
            await until(lambda: good.state.sent == 3, "delivery with the right password", tries=2000)
        finally:
            await good.stop()
    finally:
        b.stop()
    assert PASSWORD not in caplog.text and "wrong-pw" not in caplog.text


async def test_refusal_and_hang_up_before_the_connect_thread_returns_is_still_an_auth_error(monkeypatch):
    # A broker refusing the credentials sends CONNACK and closes at once. On a loaded machine the loop can
    # read both before aiomqtt's connect thread has returned, so the hang-up is seen while aiomqtt's connect
    # task is not done yet; the CONNACK's verdict must still win over "closed before CONNACK"
    # (test_bad_password_is_a_clear_error_and_retried failed that way under load). Here the connect thread
    # is made slow on purpose.
    real_connect = aiomqtt.Client._client_connect

    def slow_connect(self) -> None:  # type: ignore[no-untyped-def]
        real_connect(self)
        time.sleep(0.3)                                    # a descheduled thread

    monkeypatch.setattr(aiomqtt.Client, "_client_connect", slow_connect)
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)                            # the CONNECT
        writer.write(bytes([0x20, 0x02, 0x00, 0x05]))      # CONNACK: not authorized
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for _ in range(2):
            client = make_client(mqtt_sink(f"mqtt://127.0.0.1:{port}", username="gateway",
                                           password=Secret("wrong-pw")), "gw1")
            with pytest.raises(TransientSinkError) as ei:
                await client.connect()
            await client.close()
            assert ei.value.kind == "auth" and "refused the credentials" in str(ei.value), str(ei.value)
    finally:
        server.close()
        await server.wait_closed()


async def test_broker_down_then_restarted_mid_backlog_loses_nothing(broker, store):
    sub = await Subscriber(broker.port).start()
    rs = mixed(3000)
    run = Running(store, mqtt_sink(broker.url, batch_size=200))
    try:
        await until(lambda: run.state.connected, "connected", tries=2000)
        await store.write(rs)
        await until(lambda: run.state.sent > 0, "some batches confirmed", tries=2000)
        broker.stop()                                 # mid-backlog: batches in flight fail
        # PUBACKs that reached our socket before the broker died still confirm their batch; once the
        # sink fails, nothing moves until the broker is back.
        await until(lambda: run.state.failures >= 1, "a failure while the broker is down", tries=2000)
        sent_at_stop = run.state.sent
        cursor_at_stop = await store.cursor("up")
        await until(lambda: run.state.failures >= 3, "more failures while the broker is down", tries=2000)
        assert run.state.failing_since is not None and await store.cursor("up") == cursor_at_stop
        assert run.state.sent == sent_at_stop and cursor_at_stop < await store.last_seq()
        broker.start()                                # same port; the subscriber's session was persisted
        await until(lambda: run.state.sent == 3000, "the rest delivered", tries=6000)
        assert await store.cursor("up") == await store.last_seq() and run.state.failing_since is None
        await until(lambda: {key(p) for p in sub.payloads()} == {key(r.as_dict()) for r in rs},
                    "every reading at the subscriber", tries=6000)
    finally:
        await run.stop()
        await sub.stop()
    fails = run.metrics.counter("pollerd_sink_failures_total", "", ("sink", "kind"))
    assert sum(fails.get(sink="up", kind=k) for k in ("network", "timeout", "refused")) >= 2


async def test_qos0_and_retain_options(broker, store):
    sub = await Subscriber(broker.port).start()
    await store.write(readings(5))
    run = Running(store, mqtt_sink(broker.url, {"qos": 0, "retain": True, "status_topic": ""}))
    try:
        await until(lambda: run.state.sent == 5, "sent", tries=2000)
        await until(lambda: len(sub.payloads()) == 5, "received", tries=2000)
    finally:
        await run.stop()
        await sub.stop()
    assert sub.status() == []                          # status_topic = "" turns the status off
    async with aiomqtt.Client("127.0.0.1", broker.port) as c:   # the last reading is retained
        await c.subscribe("pollerd/gw1/m1/#", qos=1)
        m = await asyncio.wait_for(anext(aiter(c.messages)), 10)
        assert m.retain and orjson.loads(m.payload)["value"] == 1004.0


# ---- TLS --------------------------------------------------------------------------------------------------

async def test_mqtts_with_client_certificate(tmp_path, store):
    from tls_helpers import make_pki
    pki = make_pki(tmp_path)
    port = free_port()
    b = Broker(tmp_path, extra=(
        "allow_anonymous true\n"
        f"listener {port} 127.0.0.1\ncafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        "require_certificate true\n"))
    b.start()
    url = f"mqtts://127.0.0.1:{port}"
    try:
        sub = await Subscriber(b.port).start()          # the plain listener, for the test's eyes
        no_cert = make_client(mqtt_sink(url, ca_file=str(pki.ca)), "gw1")
        with pytest.raises(TransientSinkError) as ei:   # refused at once, not after the CONNACK timeout
            await no_cert.connect()
        assert "closed the connection before CONNACK" in str(ei.value)
        await no_cert.close()
        untrusted = make_client(mqtt_sink(url, client_cert=str(pki.client_combined)), "gw1")
        with pytest.raises(TransientSinkError) as ei:   # the test CA is not trusted without ca_file
            await untrusted.connect()
        assert "certificate" in str(ei.value).lower()
        await untrusted.close()
        await store.write(readings(4))
        run = Running(store, mqtt_sink(url, ca_file=str(pki.ca), client_cert=str(pki.client_cert),
                                       client_key=str(pki.client_key)))
        try:
            await until(lambda: run.state.sent == 4, "delivered over mTLS", tries=2000)
            await until(lambda: len(sub.payloads()) == 4, "received", tries=2000)
        finally:
            await run.stop()
            await sub.stop()
    finally:
        b.stop()


class _StuckClient:
    """Stands in for aiomqtt.Client: publishes never get their PUBACK."""

    def __init__(self) -> None:
        self._disconnected = asyncio.get_running_loop().create_future()

    async def publish(self, *a, **kw) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize("how", ["timeout", "disconnect"])
async def test_a_failed_batch_leaves_no_unretrieved_future_behind(how):
    # Before: cancelling the gather of the batch's publishes set a CancelledError *exception* on it that no one
    # read, and asyncio logged "_GatheringFuture exception was never retrieved" at ERROR for every failed batch.
    import gc
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx.get("message", "")))
    try:
        client = make_client(mqtt_sink("mqtt://127.0.0.1:1", timeout=0.3), "gw1")
        stuck = _StuckClient()

        async def ensure():
            return stuck
        client._ensure = ensure  # type: ignore[method-assign]
        if how == "disconnect":
            loop.call_later(0.05, lambda: stuck._disconnected.set_exception(OSError("peer gone")))
        with pytest.raises(TransientSinkError, match="PUBACK" if how == "timeout" else "connection lost"):
            await client.send(mixed(5))
        # Drop both (the closures above share these cells) so that gc finalises the batch's futures now.
        client = stuck = None
        for _ in range(5):
            await asyncio.sleep(0.01)
            gc.collect()
    finally:
        loop.set_exception_handler(old)
    assert not [m for m in seen if "never retrieved" in m], seen


async def test_events_and_meter_status_reach_the_broker(broker, store):
    """Events on each meter's events topic (not retained), and each meter's online/offline retained on its
    status topic, published again only when it changes."""
    from pollerd.model import Event
    sub = await Subscriber(broker.port).start()
    status = {"m1": "online", "m2": "offline"}
    events = [Event("m1", "power_off", 1_700_000_000, 1_700_000_300, "phase A"), Event("m2", "cover_open",
                                                                                         1_700_000_100)]
    await store.write(mixed(4), events)
    sink = mqtt_sink(broker.url)
    client = make_client(sink, "gw1")
    state = SinkState(sink.name, sink.type)
    fwd = Forwarder(store, client, sink, state, Registry(), idle_wait=0.05, meter_status=lambda: dict(status))
    task = asyncio.create_task(fwd.run())
    try:
        await until(lambda: state.sent == 4, "readings", tries=2000)

        def on(topic: str) -> list[tuple[bytes, bool]]:
            return [(p, r) for t, p, r in sub.messages if t == topic]

        await until(lambda: len(on("pollerd/gw1/m1/events")) == 1 and len(on("pollerd/gw1/m2/events")) == 1,
                    "events", tries=2000)
        await until(lambda: bool(on("pollerd/gw1/m1/status") and on("pollerd/gw1/m2/status")), "status",
                    tries=2000)
        status["m2"] = "online"
        await until(lambda: len(on("pollerd/gw1/m2/status")) == 2, "the change", tries=2000)
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()
        await sub.stop()
    [(payload, _)] = on("pollerd/gw1/m1/events")
    assert orjson.loads(payload) == {"gateway": "gw1", **events[0].as_dict()}
    assert [p for p, _ in on("pollerd/gw1/m1/status")] == [b"online"]          # unchanged: published once
    assert [p for p, _ in on("pollerd/gw1/m2/status")] == [b"offline", b"online"]
    assert await store.event_cursor("up") == 2
    # Retained: a late subscriber gets each meter's last state, and no event (events are not retained).
    async with aiomqtt.Client("127.0.0.1", broker.port) as c:
        await c.subscribe("pollerd/gw1/+/+", qos=1)
        late: dict[str, bytes] = {}
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(1.0):
                async for m in c.messages:
                    late[m.topic.value] = bytes(m.payload)
    assert late == {"pollerd/gw1/m1/status": b"online", "pollerd/gw1/m2/status": b"online"}
