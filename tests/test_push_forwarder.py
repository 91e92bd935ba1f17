"""Forwarder behaviour every client shares: linger batching, connect retries, failure state and /health."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from test_push_http import readings, until

from pollerd.api import HealthLimits, _Api
from pollerd.config import SinkConfig
from pollerd.errors import StoreError
from pollerd.metrics import Registry
from pollerd.model import Reading
from pollerd.push import PermanentSinkError, TransientSinkError
from pollerd.push.forwarder import Forwarder
from pollerd.state import Runtime, SinkState
from pollerd.store import Store


class FakeClient:
    """Records batches; connect fails ``connect_failures`` times first."""

    def __init__(self, connect_failures: int = 0, fail_with: Exception | None = None) -> None:
        self.connect_calls = 0
        self.connect_failures = connect_failures
        self.fail_with = fail_with or TransientSinkError("broker down", kind="network")
        self.batches: list[list[Reading]] = []
        self.closed = False

    async def connect(self) -> None:
        self.connect_calls += 1
        if self.connect_calls <= self.connect_failures:
            raise self.fail_with

    async def send(self, batch: Sequence[Reading]) -> None:
        assert self.connect_calls > self.connect_failures, "send before a successful connect"
        self.batches.append(list(batch))

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(tmp_path / "p.db", commit_interval=0.01)
    yield st
    await st.close()


def sink(**kw) -> SinkConfig:
    base = dict(name="up", type="fake", url="http://127.0.0.1:1/", batch_size=10, retry_min=0.01,
                retry_max=0.05, linger=0.0)
    base.update(kw)
    return SinkConfig(**base)


async def run_forwarder(store, client, cfg, state=None, **kw):
    state = state or SinkState(cfg.name, cfg.type)
    fwd = Forwarder(store, client, cfg, state, Registry(), idle_wait=0.05, **kw)
    task = asyncio.create_task(fwd.run())
    return state, task


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_linger_collects_a_trickle_into_one_batch(store):
    client = FakeClient()
    state, task = await run_forwarder(store, client, sink(linger=1.5))
    try:
        await until(lambda: client.connect_calls == 1, "connect")
        rs = readings(4)
        for r in rs:                        # a poll cycle committing meter by meter
            await store.write([r])
            await asyncio.sleep(0.02)
        await until(lambda: state.sent == 4, "the batch", tries=1500)
    finally:
        await stop(task)
    assert client.batches == [rs]           # one send, not four


async def test_full_batch_does_not_wait_for_linger(store):
    client = FakeClient()
    # A linger of an hour: only a full batch can go out within the test's deadline.
    state, task = await run_forwarder(store, client, sink(linger=3600.0, batch_size=3))
    try:
        await until(lambda: client.connect_calls == 1, "connect")
        await store.write(readings(1))
        await asyncio.sleep(0.1)
        assert client.batches == []          # still lingering
        await store.write(readings(2, ts0=1_800_000_000))
        await until(lambda: state.sent == 3, "the full batch")
    finally:
        await stop(task)
    assert [len(b) for b in client.batches] == [3]


async def test_backlog_goes_in_full_batches_and_the_tail_after_linger(store):
    await store.write(readings(25))
    client = FakeClient()
    ticks = [0.0]
    # A fake monotonic clock that jumps past the linger on every look: the tail is sent without waiting.
    def mono() -> float:
        ticks[0] += 10.0
        return ticks[0]
    state, task = await run_forwarder(store, client, sink(linger=5.0), monotonic=mono)
    try:
        await until(lambda: state.sent == 25, "the backlog")
    finally:
        await stop(task)
    assert [len(b) for b in client.batches] == [10, 10, 5]


async def deliver_one(store, client, cfg, state=None) -> SinkState:
    """Start a forwarder, commit one reading once it has connected, wait for its delivery, stop."""
    state, task = await run_forwarder(store, client, cfg, state)
    try:
        await until(lambda: client.connect_calls == 1, "connect")
        await store.write(readings(1))
        await until(lambda: state.sent == 1, "the reading")
    finally:
        await stop(task)
    return state


async def test_zero_linger_sends_at_once(store):
    await deliver_one(store, FakeClient(), sink(linger=0.0))


async def test_connect_failures_are_retried_with_backoff_and_reported(store):
    await store.write(readings(2))
    client = FakeClient(connect_failures=3, fail_with=TransientSinkError("bad user name or password",
                                                                            kind="auth"))
    now = [1000.0]
    state = SinkState("up", "fake")
    seen = []               # the state as /health saw it during each backoff

    async def sleep(delay: float) -> None:
        seen.append((delay, state.connected, state.failing_since, state.last_error))
        now[0] += delay
        await asyncio.sleep(0)

    metrics = Registry()
    fwd = Forwarder(store, client, sink(), state, metrics, sleep=sleep, clock=lambda: now[0], idle_wait=0.05)
    task = asyncio.create_task(fwd.run())
    try:
        await until(lambda: state.sent == 2, "delivery after connecting")
    finally:
        await stop(task)
    assert client.connect_calls == 4 and len(seen) == 3
    assert all(not conn and since == 1000.0 and "password" in err for _, conn, since, err in seen)
    assert all(0.01 <= d <= 0.05 for d, *_ in seen)
    assert state.connected and state.failing_since is None
    fails = metrics.counter("pollerd_sink_failures_total", "", ("sink", "kind"))
    assert fails.get(sink="up", kind="auth") == 3
    assert await store.cursor("up") == await store.last_seq()


async def test_connected_follows_what_sends_say_about_the_connection(store):
    class LosingClient(FakeClient):
        def __init__(self) -> None:
            super().__init__()
            self.errors: list[TransientSinkError] = []
            self.seen: list[bool] = []
            self.state: SinkState | None = None

        async def send(self, batch: Sequence[Reading]) -> None:
            assert self.state is not None
            self.seen.append(self.state.connected)
            if self.errors:
                raise self.errors.pop(0)
            await super().send(batch)

    client = LosingClient()
    client.errors = [TransientSinkError("no reply", kind="timeout"), TransientSinkError("lost", kind="network"),
                     TransientSinkError("no reply", kind="timeout")]
    client.state = SinkState("up", "fake")
    state = await deliver_one(store, client, sink(), client.state)
    # a slow reply says nothing about the connection; a lost one does, until a send gets through
    assert client.seen == [True, True, False, False] and state.connected


async def test_connect_bug_does_not_kill_the_forwarder(store):
    client = FakeClient(connect_failures=1, fail_with=RuntimeError("oops"))
    state, task = await run_forwarder(store, client, sink())
    try:
        await until(lambda: client.connect_calls == 2, "a second connect")
        assert state.connected and "RuntimeError: oops" in state.last_error
    finally:
        await stop(task)


async def test_health_shows_a_failing_sink_then_fails_after_the_budget(store):
    rt = Runtime(gateway="gw1", started=0.0)
    st = rt.sinks["up"] = SinkState("up", "mqtt")
    now = [1000.0]
    api = _Api(rt, store, Registry(), lambda: now[0], HealthLimits(sink_failing_seconds=300.0))
    assert await api.health_report() == ([], [])
    st.failing_since, st.last_error = 990.0, "sink 'up': cannot connect: Connection refused"
    reasons, warnings = await api.health_report()
    assert reasons == [] and warnings == [("sink up failing for 10 s (not connected): sink 'up': cannot connect: "
                                           "Connection refused")]
    now[0] = 1400.0
    reasons, warnings = await api.health_report()
    assert len(reasons) == 1 and "sink up failing for 410 s" in reasons[0] and warnings == []


class FlakyStore:
    """The real store, but the first ``n`` calls of the named methods raise StoreError (a full disk)."""

    def __init__(self, store: Store, n: int, *names: str) -> None:
        self._store, self.left, self._names, self.calls = store, dict.fromkeys(names, n), names, []

    def __getattr__(self, name: str):
        real = getattr(self._store, name)
        if name not in self._names:
            return real

        async def call(*a, **kw):
            self.calls.append(name)
            if self.left[name] > 0:
                self.left[name] -= 1
                raise StoreError(f"{name}: database or disk is full")
            return await real(*a, **kw)
        return call


class RefusingClient(FakeClient):
    async def send(self, batch: Sequence[Reading]) -> None:
        self.batches.append(list(batch))
        raise PermanentSinkError("HTTP 422: bad payload", status=422)


async def _run_with(store, client, flaky: FlakyStore):
    state = SinkState("up", "fake")
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        await asyncio.sleep(0)

    fwd = Forwarder(flaky, client, sink(), state, Registry(), sleep=sleep, idle_wait=0.05)  # type: ignore[arg-type]
    return state, slept, asyncio.create_task(fwd.run())


async def test_a_store_failure_after_a_confirmed_batch_retries_the_cursor_not_the_send(store):
    # Before: the StoreError from advance() ended run(), and in the daemon's task group that stopped the
    # whole daemon; and it must not re-send the confirmed batch either.
    await store.write(readings(3))
    client = FakeClient()
    flaky = FlakyStore(store, 2, "advance", "cursor")
    state, slept, task = await _run_with(store, client, flaky)
    try:
        await until(lambda: state.sent == 3, "the batch after the store recovered")
        assert not task.done()
    finally:
        if task.done():
            task.result()
        await stop(task)
    assert [len(b) for b in client.batches] == [3]          # sent once
    assert await store.cursor("up") == await store.last_seq()
    assert flaky.calls.count("advance") == 3 and flaky.calls.count("cursor") == 3
    assert len(slept) == 4 and "disk is full" in (state.last_error or "")


async def test_a_refused_batch_is_parked_and_skipped_in_one_transaction_despite_store_failures(store):
    await store.write(readings(3))
    client = RefusingClient()
    flaky = FlakyStore(store, 2, "park")
    state, slept, task = await _run_with(store, client, flaky)
    try:
        await until(lambda: state.parked == 1, "the parked batch")
        assert not task.done()
    finally:
        if task.done():
            task.result()
        await stop(task)
    assert len(client.batches) == 1                         # refused once, not sent again
    parked = await store.parked("up")
    assert [(p["first_seq"], p["last_seq"]) for p in parked] == [(1, 3)]    # parked once
    assert await store.cursor("up") == 3


async def test_park_with_advance_moves_the_cursor_atomically(store):
    await store.write(readings(4))
    await store.park("up", 1, 2, "refused", advance=True)
    assert await store.cursor("up") == 2
    await store.park("up", 1, 1, "older", advance=True)      # never moves a cursor back
    assert await store.cursor("up") == 2
    await store.park("other", 3, 4, "refused")
    assert await store.cursor("other") == 0
