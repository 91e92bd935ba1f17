"""Events upstream (issue 17): the store's event sequence and cursors, the forwarder's events outbox with the
guarantees of readings (batches, retries, parking, a per-sink cursor), and the http and mqtt encodings."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence

import orjson
import pytest
from aiohttp import web
from test_push_forwarder import FakeClient, run_forwarder, sink, stop
from test_push_http import readings, until

from pollerd.config import SinkConfig
from pollerd.model import Event, Reading
from pollerd.push import PermanentSinkError, TransientSinkError
from pollerd.store import Store

T0 = 1_700_000_000


class EventFake(FakeClient):
    """Takes events too; fails the first ``event_failures`` event batches with ``event_error``."""

    def __init__(self, event_failures: int = 0, event_error: Exception | None = None, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.accepts_events = True
        self.event_batches: list[list[Event]] = []
        self.event_failures = event_failures
        self.event_error = event_error or TransientSinkError("receiver down", kind="http")
        self.event_calls = 0
        self.in_flight = 0

    async def send(self, batch: Sequence[Reading]) -> None:
        assert self.in_flight == 0, "send while another batch is in flight"
        self.in_flight += 1
        await asyncio.sleep(0)
        self.in_flight -= 1
        await super().send(batch)

    async def send_events(self, batch: Sequence[Event]) -> None:
        assert self.in_flight == 0, "send_events while another batch is in flight"
        self.event_calls += 1
        if self.event_calls <= self.event_failures:
            raise self.event_error
        self.event_batches.append(list(batch))


@pytest.fixture
async def store(tmp_path):  # type: ignore[no-untyped-def]
    st = await Store.open(tmp_path / "p.db", commit_interval=0.01)
    yield st
    await st.close()


def ev(i: int, end: int | None = None, text: str = "") -> Event:
    return Event("m1", "power_off", T0 + 60 * i, end, text)


# --- the store -------------------------------------------------------------------------------------------------

async def test_event_seq_moves_on_insert_and_change_only(store: Store) -> None:
    await store.write([], [ev(1), ev(2)])
    assert [s for s, _ in await store.fetch_events_after(0, 10)] == [1, 2]
    store.new_data.clear()
    await store.write([], [ev(1), ev(2)])           # re-read unchanged: nothing new to send
    assert [s for s, _ in await store.fetch_events_after(0, 10)] == [1, 2]
    assert not store.new_data.is_set()
    await store.write([], [ev(1, end=T0 + 500)])    # closed: sent again, under a new seq
    assert store.new_data.is_set()
    got = await store.fetch_events_after(2, 10)
    assert got == [(3, ev(1, end=T0 + 500))]
    assert await store.last_event_seq() == 3


async def test_event_cursor_and_parked_events(store: Store) -> None:
    assert await store.event_cursor("up") == 0
    await store.advance_events("up", 5)
    await store.advance_events("up", 3)             # never back
    assert await store.event_cursor("up") == 5
    assert await store.cursor("up") == 0            # the readings cursor is another one
    await store.park("up", 6, 8, "refused", advance=True, kind="events")
    assert await store.event_cursor("up") == 8
    [p] = await store.parked("up")
    assert (p["kind"], p["first_seq"], p["last_seq"]) == ("events", 6, 8)


async def test_parked_events_do_not_hold_readings_back_from_pruning(store: Store) -> None:
    await store.write(readings(3))
    await store.advance("up", 3)
    await store.park("up", 1, 3, "refused", kind="events")   # event seqs 1..3, not reading seqs
    assert await store.prune(keep=0, sinks=["up"], now=T0 + 10**7) == 3


async def test_schema_5_gives_existing_events_their_id_as_seq(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pollerd.store import schema
    full = list(schema.MIGRATIONS)
    monkeypatch.setattr(schema, "MIGRATIONS", full[:4])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 4)
    path = tmp_path / "v4.db"
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA user_version = 0")
    s = await Store.open(path, commit_interval=0)
    await s.close()
    with sqlite3.connect(path) as c:  # events written by a schema-4 pollerd
        c.executemany("INSERT INTO events (meter, code, ts_start, received) VALUES ('m1', 'x', ?, 0)",
                      [(T0,), (T0 + 1,)])
    monkeypatch.setattr(schema, "MIGRATIONS", full)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(full))
    s = await Store.open(path, commit_interval=0)
    try:
        assert [q for q, _ in await s.fetch_events_after(0, 10)] == [1, 2]
        await s.write([], [Event("m1", "y", T0)])
        assert [q for q, _ in await s.fetch_events_after(0, 10)] == [1, 2, 3]
    finally:
        await s.close()


# --- the forwarder ---------------------------------------------------------------------------------------------

async def test_events_are_forwarded_in_batches_beside_readings(store: Store) -> None:
    client = EventFake()
    state, task = await run_forwarder(store, client, sink(batch_size=3))
    try:
        await store.write(readings(4), [ev(i) for i in range(5)])
        await until(lambda: sum(map(len, client.event_batches)) == 5 and state.sent == 4, "delivery")

        async def cursor_at(n: int) -> bool:  # the cursor moves right after the confirmed send
            return await store.event_cursor("up") == n

        await until(lambda: cursor_at(5), "the event cursor")
        await store.write([], [ev(0, end=T0 + 99)])          # the first event closes: sent again
        await until(lambda: sum(map(len, client.event_batches)) == 6, "the update")
        await until(lambda: cursor_at(6), "the event cursor")
    finally:
        await stop(task)
    assert [len(b) for b in client.event_batches] == [3, 2, 1]
    assert client.event_batches[-1] == [ev(0, end=T0 + 99)]


async def test_a_transient_event_failure_retries_the_same_batch(store: Store) -> None:
    client = EventFake(event_failures=2)
    state, task = await run_forwarder(store, client, sink())
    try:
        await store.write([], [ev(1), ev(2)])
        await until(lambda: bool(client.event_batches), "delivery")
    finally:
        await stop(task)
    assert client.event_calls == 3 and client.event_batches == [[ev(1), ev(2)]]
    assert state.failures == 2


async def test_a_refused_event_batch_is_parked_and_skipped(store: Store) -> None:
    client = EventFake(event_failures=1, event_error=PermanentSinkError("HTTP 422", status=422))
    state, task = await run_forwarder(store, client, sink(batch_size=2))
    try:
        await store.write([], [ev(i) for i in range(3)])
        await until(lambda: bool(client.event_batches), "the next batch")
    finally:
        await stop(task)
    [p] = await store.parked("up")
    assert (p["kind"], p["first_seq"], p["last_seq"]) == ("events", 1, 2)
    assert client.event_batches == [[ev(2)]] and state.parked == 1


@pytest.mark.parametrize("decline", ["no method", "accepts_events false"])
async def test_a_sink_may_decline_events(store: Store, decline: str) -> None:
    client: FakeClient = FakeClient() if decline == "no method" else EventFake()
    if decline != "no method":
        client.accepts_events = False  # type: ignore[attr-defined]
    state, task = await run_forwarder(store, client, sink())
    try:
        await store.write(readings(2), [ev(1)])
        await until(lambda: state.sent == 2, "readings")
        await asyncio.sleep(0.1)
    finally:
        await stop(task)
    assert getattr(client, "event_batches", []) == []
    assert await store.event_cursor("up") == 0


# --- http and mqtt ---------------------------------------------------------------------------------------------

async def test_http_events_go_to_events_url_with_their_own_body_kind(store: Store) -> None:
    from pollerd.push.http import HttpPushClient, parse_options
    bodies: dict[str, list[dict[str, object]]] = {"/in": [], "/ev": []}

    async def ingest(request: web.Request) -> web.Response:
        bodies[request.path].append(orjson.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/in", ingest)
    app.router.add_post("/ev", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    cfg = SinkConfig(name="up", type="http", url=f"{base}/in", batch_size=10, retry_min=0.01, retry_max=0.05,
                     linger=0.0, options=parse_options({"events_url": f"{base}/ev"}, ""))
    client = HttpPushClient(cfg, "gw")
    state, task = await run_forwarder(store, client, cfg)
    try:
        await store.write(readings(2), [ev(1, end=T0 + 120, text="phase A off")])
        await until(lambda: bool(bodies["/in"] and bodies["/ev"]), "both bodies")
    finally:
        await stop(task)
        await client.close()
        await runner.cleanup()
    assert bodies["/ev"] == [{"gateway": "gw", "events": [
        {"meter": "m1", "code": "power_off", "ts_start": T0 + 60, "ts_end": T0 + 120, "text": "phase A off"}]}]
    assert "events" not in bodies["/in"][0] and len(bodies["/in"][0]["readings"]) == 2  # type: ignore[arg-type]


def test_http_events_options() -> None:
    from pollerd.errors import OptionError
    from pollerd.push.http import HttpPushClient, parse_options
    off = SinkConfig(name="up", type="http", url="http://127.0.0.1:1/in", options=parse_options({"events": False}, ""))
    assert HttpPushClient(off, "gw").accepts_events is False
    with pytest.raises(OptionError, match="events = false"):
        parse_options({"events": False, "events_url": "http://x/ev"}, "")
    with pytest.raises(OptionError, match="events_url"):
        parse_options({"events_url": "ftp://x/ev"}, "")


def test_mqtt_events_topic_per_meter() -> None:
    pytest.importorskip("aiomqtt")
    from pollerd.push.mqtt import MqttPushClient
    from pollerd.push.mqtt_options import parse_options
    cfg = SinkConfig(name="b", type="mqtt", url="mqtt://127.0.0.1:1883", options=parse_options({}, ""))
    client = MqttPushClient(cfg, "gw")
    assert client.accepts_events
    [(topic, payload)] = client.encode_events([Event("m/1", "cover_open", T0, None, "")])
    assert topic == "pollerd/gw/m%2F1/events"
    assert orjson.loads(payload) == {"gateway": "gw", "meter": "m/1", "code": "cover_open", "ts_start": T0,
                                     "ts_end": None, "text": ""}
    off = SinkConfig(name="b", type="mqtt", url="mqtt://127.0.0.1:1883", options=parse_options({"events_topic": ""}, ""))
    assert MqttPushClient(off, "gw").accepts_events is False


# --- each meter's online/offline state upstream ----------------------------------------------------------------

class StatusFake(FakeClient):
    def __init__(self, fail: int = 0) -> None:
        super().__init__()
        self.statuses: list[dict[str, str]] = []
        self.fail = fail

    async def send_status(self, status: dict[str, str]) -> None:
        if self.fail:
            self.fail -= 1
            raise TransientSinkError("broker down", kind="network")
        self.statuses.append(dict(status))


async def test_meter_status_goes_to_the_client_when_it_changes(store: Store) -> None:
    from pollerd.metrics import Registry
    from pollerd.push.forwarder import Forwarder
    from pollerd.state import SinkState
    current = {"m1": "online"}
    client = StatusFake(fail=1)
    cfg = sink()
    fwd = Forwarder(store, client, cfg, SinkState("up", "fake"), Registry(), idle_wait=0.02,
                    meter_status=lambda: dict(current))
    task = asyncio.create_task(fwd.run())
    try:
        await until(lambda: bool(client.statuses), "first status (after one failed try)")
        await asyncio.sleep(0.1)
        assert client.statuses == [{"m1": "online"}]          # unchanged: not sent again
        current["m1"] = "offline"
        current["m2"] = "online"
        await until(lambda: len(client.statuses) == 2, "the change")
    finally:
        await stop(task)
    assert client.statuses[-1] == {"m1": "offline", "m2": "online"}


def test_meter_online_is_whether_the_last_cycle_answered() -> None:
    from pollerd.state import MeterState
    ms = MeterState("m1", "mercury230", "l", 1, 60.0)
    assert ms.online is None
    ms.last_poll, ms.last_ok = 100.0, 100.0
    assert ms.online is True
    ms.last_poll = 160.0
    assert ms.online is False


async def test_http_batch_metadata_carries_meter_status_outside_the_idempotency_key() -> None:
    from pollerd.push.http import HttpPushClient, idempotency_key
    got: list[tuple[dict[str, object], str]] = []

    async def ingest(request: web.Request) -> web.Response:
        got.append((orjson.loads(await request.read()), request.headers["Idempotency-Key"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/in", ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = HttpPushClient(SinkConfig(name="up", type="http", url=f"http://127.0.0.1:{port}/in"), "gw")
    rs = readings(2)
    try:
        await client.send(rs)
        await client.send_status({"m2": "offline", "m1": "online"})
        await client.send(rs)
    finally:
        await client.close()
        await runner.cleanup()
    (first, k1), (second, k2) = got
    assert "meters" not in first and second["meters"] == {"m1": "online", "m2": "offline"}
    assert second["readings"] == first["readings"]
    assert k1 == k2 == idempotency_key("up", client.encode(rs))   # a retry keeps its key


def test_mqtt_meter_status_topic_option() -> None:
    pytest.importorskip("aiomqtt")
    from pollerd.push.mqtt_options import parse_options
    assert parse_options({}, "").meter_status_topic.render({"gateway": "gw", "meter": "m+1"}) == \
        "pollerd/gw/m%2B1/status"  # type: ignore[union-attr]
    assert parse_options({"meter_status_topic": ""}, "").meter_status_topic is None


def test_the_daemon_reports_polled_meters_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pollerd.config import load_config
    from pollerd.daemon import Daemon
    from pollerd.state import MeterState
    p = tmp_path / "p.toml"
    p.write_text('[api]\nenabled = false\n')
    d = Daemon(load_config(p), tmp_path / "state")
    d.runtime.meters["a"] = MeterState("a", "mercury230", "l", 1, 60.0, last_poll=10.0, last_ok=10.0)
    d.runtime.meters["b"] = MeterState("b", "mercury230", "l", 2, 60.0, last_poll=70.0, last_ok=10.0)
    d.runtime.meters["c"] = MeterState("c", "mercury230", "l", 3, 60.0)      # not polled yet: not reported
    assert d._meter_status() == {"a": "online", "b": "offline"}


def test_the_daemon_rebuilds_meter_status_only_when_a_meter_changes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Issue 18: the sinks' status map was rebuilt over every meter on each forwarder turn. It is now the same
    # object until a cycle flips a meter online/offline or a meter leaves; the forwarder skips it by identity.
    from fakes import idle_daemon_with_meter

    from pollerd.drivers.base import PollResult
    d, mc, st = idle_daemon_with_meter(tmp_path)
    ok, failed = PollResult(()), PollResult((), answered=False, error="no answer")
    first = d._meter_status()
    assert first == {}
    d.runner._record(mc, st, ok, 100.0)  # type: ignore[arg-type]
    online = d._meter_status()
    assert online == {"a": "online"} and online is not first
    d.runner._record(mc, st, ok, 160.0)  # type: ignore[arg-type]
    assert d._meter_status() is online  # still online: nothing rebuilt
    d.runner._record(mc, st, failed, 220.0)  # type: ignore[arg-type]
    offline = d._meter_status()
    assert offline == {"a": "offline"}
    d.runner._record(mc, st, failed, 280.0)  # type: ignore[arg-type]
    assert d._meter_status() is offline
    d.runner.forget("a")
    assert d._meter_status() == {}
