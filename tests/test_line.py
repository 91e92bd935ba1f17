"""The line layer against a fake link: completion by the codec, timeouts, bad frames, pause, reconnect."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from fakes import FakeLink, bytewise

from pollerd.config import LineConfig
from pollerd.errors import CrcError, ReplyTimeout, TransportError
from pollerd.line import Line, LineStopping
from pollerd.metrics import Registry
from pollerd.protocols import mercury230 as m
from pollerd.protocols.crc import append_crc
from pollerd.state import LineState

U1_REQ = m.read_aux(0, 0x11)
U1_REPLY = bytes.fromhex("00 00 40 5E B0 1C")  # wb-mqtt-serial fixture: U1 = 241.28 V


def make_line(link: FakeLink, **kw: object) -> tuple[Line, Registry]:
    cfg = LineConfig(name="bus", type="tcp", host="127.0.0.1", port=1, reconnect_min=0.05,
                     reconnect_max=0.2, **kw)  # type: ignore[arg-type]
    reg = Registry()
    line = Line(cfg, LineState("bus", "tcp"), reg)
    line.link = link  # type: ignore[assignment]
    return line, reg


def fenced(responder):  # type: ignore[no-untyped-def]
    """Answer the line's fence (Mercury test channel, whose OK reply is the request itself) and pass every
    other request to ``responder``; ``fenced.fences`` counts them."""
    def respond(req: bytes) -> list[tuple[float, bytes]]:
        if req[1:2] == b"\x00" and len(req) == 4:
            respond.fences += 1  # type: ignore[attr-defined]
            return [(0, req)]
        return responder(req)  # type: ignore[no-any-return]
    respond.fences = 0  # type: ignore[attr-defined]
    return respond


async def ask(line: Line, req: m.Request = U1_REQ, *, waiting_time: float = 0.5, pause: float = 0.0):
    return await line.exchange(req.encode(), m.ReplyFramer(req), waiting_time=waiting_time, pause=pause,
                               meter="m1")


async def test_reply_split_byte_by_byte_completes_on_known_length() -> None:
    link = FakeLink(lambda req: bytewise(U1_REPLY))
    line, _ = make_line(link)
    reply = await ask(line)
    assert reply.data == U1_REPLY[1:-2]
    assert m.decode_aux(0x11, reply.data) == pytest.approx(241.28)
    assert line.state.exchanges == 1 and line.state.connected


async def test_silence_is_a_timeout_with_the_partial_reply() -> None:
    link = FakeLink(lambda req: [(0, U1_REPLY[:3])])
    line, reg = make_line(link)
    with pytest.raises(ReplyTimeout) as ei:
        await ask(line, waiting_time=0.1)
    assert ei.value.partial == U1_REPLY[:3]
    assert "00 00 40" in str(ei.value)
    assert reg.counter("pollerd_reply_timeouts_total", "", ("meter",)).get(meter="m1") == 1


async def test_corrupt_frame_is_counted_and_the_line_moves_on() -> None:
    bad = bytearray(U1_REPLY)
    bad[2] ^= 0x01
    replies = [bytes(bad), U1_REPLY]
    responder = fenced(lambda req: [(0, replies.pop(0))])
    link = FakeLink(responder)
    line, reg = make_line(link)
    with pytest.raises(CrcError) as ei:
        await ask(line)
    assert bad.hex(" ") in str(ei.value)
    assert reg.counter("pollerd_frame_errors_total", "", ("meter", "kind")).get(meter="m1", kind="crc") == 1
    reply = await ask(line)  # the next exchange is clean, after a fence: the bad reply's shape was in doubt
    assert reply.data == U1_REPLY[1:-2]
    assert responder.fences == 1


async def test_late_bytes_of_a_previous_reply_are_dropped_before_the_next_request() -> None:
    # The first reply arrives after the timeout; its bytes must not be taken as the second reply.
    plans = [[(0.15, U1_REPLY)], [(0.0, U1_REPLY)]]
    link = FakeLink(fenced(lambda req: plans.pop(0)))
    line, reg = make_line(link)
    with pytest.raises(ReplyTimeout):
        await ask(line, waiting_time=0.05)
    await asyncio.sleep(0.15)
    reply = await ask(line)
    assert reply.data == U1_REPLY[1:-2]
    assert reg.counter("pollerd_line_stale_bytes_total", "", ("line",)).get(line="bus") == len(U1_REPLY)


async def test_pause_time_is_kept_before_each_request() -> None:
    link = FakeLink(lambda req: [(0, U1_REPLY)])
    line, _ = make_line(link)
    for _ in range(3):
        await ask(line, pause=0.05)
    times = [t for t, _ in link.written]
    assert all(b - a >= 0.05 for a, b in itertools.pairwise(times))


async def test_one_exchange_at_a_time() -> None:
    link = FakeLink(lambda req: bytewise(U1_REPLY, 0.002))
    line, _ = make_line(link)
    await asyncio.gather(*(ask(line) for _ in range(10)))
    assert link.overlaps == 0 and len(link.written) == 10


async def test_reconnects_with_backoff_after_open_failures() -> None:
    link = FakeLink(lambda req: [(0, U1_REPLY)], fail_opens=2)
    line, reg = make_line(link)
    with pytest.raises(TransportError):
        await ask(line)
    # Within the backoff window the line fails fast instead of hammering the converter.
    with pytest.raises(TransportError, match="reconnecting with backoff"):
        await ask(line)
    assert link.open_attempts == 1
    for _ in range(40):
        try:
            reply = await ask(line)
            break
        except TransportError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("line never reconnected")
    assert reply.data == U1_REPLY[1:-2]
    assert link.open_attempts == 3
    assert reg.counter("pollerd_line_connect_failures_total", "", ("line",)).get(line="bus") == 2


async def test_lost_link_is_reopened() -> None:
    link = FakeLink(lambda req: [])
    line, _ = make_line(link)
    task = asyncio.ensure_future(ask(line, waiting_time=1.0))
    await asyncio.sleep(0.02)
    link.drop()
    with pytest.raises(TransportError):
        await task
    assert not line.state.connected
    link.responder = lambda req: [(0, U1_REPLY)]
    await asyncio.sleep(0.2)
    reply = await ask(line)
    assert reply.data == U1_REPLY[1:-2] and link.opens == 2


async def test_no_new_exchange_while_stopping() -> None:
    link = FakeLink(lambda req: [(0, U1_REPLY)])
    line, _ = make_line(link)
    line.accepting = False
    with pytest.raises(LineStopping):
        await ask(line)
    assert link.written == []


async def test_echo_of_the_request_is_skipped() -> None:
    req = m.read_energy(0, 0, 0, 0)
    reply = bytes.fromhex("00 30 00 28 C5 FF FF FF FF 04 00 9C 95 FF FF FF FF 44 AB")
    link = FakeLink(lambda r: bytewise(r + reply, 0.0005))
    line, _ = make_line(link)
    framer = m.ReplyFramer(req)
    got = await line.exchange(req.encode(), framer, waiting_time=0.5, pause=0, meter="m1")
    assert framer.echoed
    assert m.decode_energy(got.data) == (3196200, None, 300444, None)


async def test_wrong_address_reply_is_rejected() -> None:
    link = FakeLink(lambda r: [(0, append_crc(bytes.fromhex("07 00 40 5E")))])
    line, reg = make_line(link)
    with pytest.raises(Exception) as ei:
        await ask(line)
    assert ei.value.kind == "address"  # type: ignore[attr-defined]
    assert reg.counter("pollerd_frame_errors_total", "", ("meter", "kind")).get(meter="m1", kind="address") == 1


def test_metric_child_updates_the_same_series() -> None:
    reg = Registry()
    c = reg.counter("x_total", "x", ("line",))
    child = c.child(line="a")
    child.inc()
    child.inc(2)
    c.inc(line="a")
    assert c.get(line="a") == 4
    assert 'x_total{line="a"} 4' in reg.render()
    with pytest.raises(ValueError):
        c.child(meter="a")


async def test_priority_requests_go_before_waiting_scheduled_ones() -> None:
    order: list[str] = []
    calls = [0]

    def reply(req):  # type: ignore[no-untyped-def]
        # The first exchange holds the bus long enough for the others to queue even on a loaded machine
        # (with 10 ms it could finish before "raw" was queued, and "sched0" took the bus first).
        calls[0] += 1
        return [(0.3 if calls[0] == 1 else 0.01, U1_REPLY)]

    link = FakeLink(reply)
    line, _ = make_line(link)

    async def one(tag: str, priority: bool) -> None:
        await line.exchange(U1_REQ.encode(), m.ReplyFramer(U1_REQ), waiting_time=0.5, pause=0, meter=tag,
                            priority=priority)
        order.append(tag)

    first = asyncio.ensure_future(one("running", False))
    await asyncio.sleep(0.001)  # "running" holds the bus now
    queued = [asyncio.ensure_future(one(f"sched{i}", False)) for i in range(3)]
    await asyncio.sleep(0)
    raw = asyncio.ensure_future(one("raw", True))
    await asyncio.gather(first, raw, *queued)
    assert order == ["running", "raw", "sched0", "sched1", "sched2"]


async def test_bus_lock_survives_cancelled_waiters() -> None:
    from pollerd.line import BusLock
    lock = BusLock()
    await lock.acquire()
    waiter = asyncio.ensure_future(lock.acquire())
    other = asyncio.ensure_future(lock.acquire(priority=True))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    lock.release()
    await other  # the live waiter got the bus
    lock.release()
    await asyncio.wait_for(lock.acquire(), 1)  # and it is free again afterwards
    assert lock.waiting == 0


async def test_bus_lock_waiter_cancelled_before_the_holder_releases_stays_cancelled() -> None:
    # Shutdown cancels every meter task at once: the holder's release() runs before the cancelled
    # waiter wakes up and pops its (cancelled) future. The waiter must still end with CancelledError,
    # not ValueError from removing a future that is no longer queued.
    from pollerd.line import BusLock
    lock = BusLock()
    await lock.acquire()
    waiter = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    lock.release()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.wait_for(lock.acquire(), 1)  # the bus is free
    assert lock.waiting == 0


async def test_late_reply_arriving_during_the_pause_is_not_taken_for_the_next_reply() -> None:
    # The first reply (A) comes after its timeout, while the line keeps pause_time before the second
    # request; the second request's own reply (B) must be what the second exchange returns.
    a = append_crc(bytes.fromhex("00 00 40 5E"))
    b = append_crc(bytes.fromhex("00 00 41 5E"))
    first_written = asyncio.Event()

    def plan(req: bytes) -> list[tuple[float, bytes]]:
        if not first_written.is_set():
            first_written.set()
            return [(0.08, a)]
        return [(0.0, b)]

    link = FakeLink(fenced(plan))
    line, reg = make_line(link)
    with pytest.raises(ReplyTimeout):
        await ask(line, waiting_time=0.02)
    reply = await ask(line, pause=0.3)
    assert reply.data == b[1:-2]
    assert reg.counter("pollerd_line_stale_bytes_total", "", ("line",)).get(line="bus") == len(a)
    # The pause started again from the stale bytes: the second request left >= pause after them.
    t_first, t_second = link.written[0][0], link.written[1][0]   # the second write is the fence
    assert t_second - t_first >= 0.08 + 0.3


async def test_peer_that_accepts_and_hangs_up_gets_backoff_and_stays_down_for_health() -> None:
    # A converter whose port is taken accepts the TCP connection and drops it at once. Each connect
    # "succeeds", but the line must not reconnect at every request, nor reset down_since (/health's
    # "line down past 120 s" would never fire).
    link = FakeLink(lambda req: [])
    link.responder = lambda req: (link.drop(), [])[1]  # type: ignore[func-returns-value]
    line, _ = make_line(link)
    with pytest.raises(TransportError):
        await ask(line)
    first_down = line.state.down_since
    assert first_down is not None and not line.state.connected
    with pytest.raises(TransportError, match="reconnecting with backoff"):
        await ask(line)
    assert link.open_attempts == 1
    for _ in range(40):  # wait out the backoff; the next connect also hangs up
        await asyncio.sleep(0.05)
        with pytest.raises(TransportError) as ei:
            await ask(line)
        if "reconnecting with backoff" not in str(ei.value):
            break
    assert link.open_attempts == 2
    assert line.state.down_since == first_down
    # Once the peer answers, the line is healthy again: down_since cleared, failures forgotten.
    link.responder = lambda req: [(0, U1_REPLY)]
    for _ in range(40):
        await asyncio.sleep(0.05)
        try:
            await ask(line)
            break
        except TransportError:
            pass
    assert line.state.connected and line.state.down_since is None
    # A proven link that drops mid-exchange is reopened at the next request, without a backoff.
    drop_once = [True]

    def respond(req: bytes) -> list[tuple[float, bytes]]:
        if drop_once:
            drop_once.pop()
            link.drop()
            return []
        return [(0, U1_REPLY)]

    link.responder = respond
    with pytest.raises(TransportError):
        await ask(line)
    assert (await ask(line)).data == U1_REPLY[1:-2]


async def test_a_stream_of_priority_requests_does_not_starve_a_scheduled_one() -> None:
    from pollerd.line import BusLock
    lock = BusLock()
    await lock.acquire()
    order: list[str] = []
    spawned: list[asyncio.Future[None]] = []  # the loop keeps only weak references to tasks

    async def user(tag: str, priority: bool) -> None:
        await lock.acquire(priority)
        order.append(tag)
        if priority and len(order) < 50:
            # Every raw request queues the next one before it lets go: the high queue is never empty.
            spawned.append(asyncio.ensure_future(user(f"raw{len(order)}", True)))
            await asyncio.sleep(0)
        lock.release()

    sched = asyncio.ensure_future(user("sched", False))
    first = asyncio.ensure_future(user("raw0", True))
    await asyncio.sleep(0)
    lock.release()
    await asyncio.wait_for(sched, 5)
    assert order.index("sched") <= BusLock.PRIORITY_RUN + 1
    assert order[0] == "raw0"  # priority still goes first
    for _ in range(1000):  # let the stream run out
        if not lock.waiting and len(order) >= 50:
            break
        await asyncio.sleep(0)
    assert first.done()


class Shapeless:
    """A Mercury framer without shape or fence: the line's silence rules alone, no fences in between."""

    def __init__(self, req: m.Request) -> None:
        self._f = m.ReplyFramer(req)

    @property
    def pending(self) -> bytes:
        return self._f.pending

    def feed(self, data: bytes) -> m.Reply | None:
        return self._f.feed(data)


async def ask_plain(line: Line, *, waiting_time: float = 0.5) -> m.Reply:
    return await line.exchange(U1_REQ.encode(), Shapeless(U1_REQ), waiting_time=waiting_time, pause=0.0,
                               meter="m1")


async def test_a_tcp_link_silent_for_long_is_reopened_measured_in_time(monkeypatch) -> None:
    # A GSM modem whose session dropped, a converter that hung: the socket stays up and every request times
    # out without a byte. Once nothing came back for SILENT_SECONDS (over SILENT_REQUESTS requests or more)
    # the link is reopened, however few requests that took; a byte back restarts the clock.
    import pollerd.line as line_mod
    monkeypatch.setattr(line_mod, "SILENT_SECONDS", 0.3)
    answers: list[list[tuple[float, bytes]]] = []
    link = FakeLink(lambda req: answers.pop(0) if answers else [])
    line, _ = make_line(link)
    for _ in range(5):  # many requests, but not yet SILENT_SECONDS of silence: a count alone reopens nothing
        with pytest.raises(ReplyTimeout):
            await ask_plain(line, waiting_time=0.02)
    assert link.opens == 1
    answers.append([(0, U1_REPLY[:2])])  # a byte back: the connection carries something
    await asyncio.sleep(0.2)
    with pytest.raises(ReplyTimeout):
        await ask_plain(line, waiting_time=0.02)
    await asyncio.sleep(0.2)
    with pytest.raises(ReplyTimeout):  # 0.2 s since the byte: not yet
        await ask_plain(line, waiting_time=0.02)
    assert link.opens == 1 and not line.dark
    await asyncio.sleep(0.15)
    with pytest.raises(ReplyTimeout):  # the second silent request past SILENT_SECONDS: reopened
        await ask_plain(line, waiting_time=0.02)
    assert not link.connected and not line.state.connected and line.dark
    recoveries = line.recoveries
    answers.append(bytewise(U1_REPLY))
    assert (await ask_plain(line)).data == U1_REPLY[1:-2] and link.opens == 2
    assert line.recoveries == recoveries + 1 and not line.dark


async def test_a_serial_line_silent_for_long_is_not_reopened(monkeypatch) -> None:
    import pollerd.line as line_mod
    monkeypatch.setattr(line_mod, "SILENT_SECONDS", 0.05)
    link = FakeLink(lambda req: [])
    line, _ = make_line(link)
    line.cfg = LineConfig(name="bus", type="serial", device="/dev/null")
    for _ in range(4):
        with pytest.raises(ReplyTimeout):
            await ask(line, waiting_time=0.03)
    assert link.opens == 1 and link.connected


async def test_a_reply_held_back_until_the_next_request_is_never_taken_for_its_reply() -> None:
    # A packetising converter holds the reply to a timed-out read and hands it over right after the next
    # request goes out. Both requests expect replies of one length from one meter (Mercury replies carry no
    # command code), so the line must not send the second before a fence has flushed the first.
    first = append_crc(bytes.fromhex("00 00 40 5E"))    # the reply to the first read: U.L1 = 241.28
    second = append_crc(bytes.fromhex("00 00 41 5E"))
    held: list[bytes] = []
    writes: list[bytes] = []

    def plan(req: bytes) -> list[tuple[float, bytes]]:
        writes.append(req)
        out = [(0.0, h) for h in held]
        held.clear()
        if len(writes) == 1:
            held.append(first)  # swallowed now, delivered after the next request
            return []
        if req[1:2] == b"\x00" and len(req) == 4:  # the fence: stale bytes come first, then its reply
            return out + [(0.01, req)]
        return out + [(0.0, second)]

    link = FakeLink(plan)
    line, reg = make_line(link)
    with pytest.raises(ReplyTimeout):
        await ask(line, waiting_time=0.05)
    # The fence's framer meets the stale reply first (a wrong length for it: refused), the second fence gets
    # its own reply, and only then does the read go out and get ITS reply.
    reply = await ask(line, waiting_time=0.2)
    assert reply.data == second[1:-2]
    assert [w[1] for w in writes] == [0x08, 0x00, 0x00, 0x08]
    assert reg.counter("pollerd_line_fences_total", "", ("line",)).get(line="bus") == 2


async def test_modbus_rtu_reads_of_one_length_are_fenced_after_a_timeout() -> None:
    # Modbus RTU read replies carry no start address: the held-back reply to a read of 2 registers at 0
    # must not become the reply to the next read of 2 registers at 10.
    from pollerd.protocols import modbus as mb
    a, b = mb.Request(1, 3, 0, 2), mb.Request(1, 3, 10, 2)
    a_reply = append_crc(bytes.fromhex("01 03 04 00 00 00 07"))
    b_reply = append_crc(bytes.fromhex("01 03 04 00 00 00 2a"))
    held: list[bytes] = []
    writes: list[bytes] = []

    def plan(req: bytes) -> list[tuple[float, bytes]]:
        writes.append(req)
        out = [(0.0, h) for h in held]
        held.clear()
        if req == mb.encode_rtu(a):
            held.append(a_reply)
            return []
        if req == mb.encode_rtu(b):
            return out + [(0.01, b_reply)]
        return out + [(0.01, append_crc(bytes.fromhex("01 03 02 00 01")))]   # the fence: 1 register

    link = FakeLink(plan)
    line, reg = make_line(link)

    async def read(req: mb.Request) -> mb.Reply:
        frame = mb.encode_rtu(req)
        return await line.exchange(frame, mb.RtuReplyFramer(req, frame), waiting_time=0.05, pause=0.0,
                                   meter="m1")

    with pytest.raises(ReplyTimeout):
        await read(a)
    reply = await read(b)
    assert reply.data == b_reply[3:-2]
    assert writes[-1] == mb.encode_rtu(b) and len(writes) >= 3   # at least one fence in between
    assert reg.counter("pollerd_line_fences_total", "", ("line",)).get(line="bus") >= 1


def test_the_quiet_window_follows_the_line_speed_and_waiting_time() -> None:
    from pollerd.line import quiet_window
    assert quiet_window(1.0, 9600) == pytest.approx(0.25)          # a quarter of waiting_time dominates
    assert quiet_window(0.01, 1200) == pytest.approx(12 * 11 / 1200)  # slow bus: 12 characters dominate
    assert quiet_window(0.0, 0) > 0                                   # a nonsense speed still waits


async def test_a_late_tail_after_a_timeout_is_dropped_once_and_logged_with_hex(caplog) -> None:
    # The reply comes 20 ms after a 200 ms waiting_time: inside the 50 ms quiet window that follows the
    # timeout, so it is dropped there (counted, logged once with its bytes), not left for the next request.
    plans = [[(0.22, U1_REPLY)], [(0.0, U1_REPLY)]]
    link = FakeLink(fenced(lambda req: plans.pop(0)))
    line, reg = make_line(link)
    with caplog.at_level("INFO", logger="pollerd.line"), pytest.raises(ReplyTimeout):
        await ask(line, waiting_time=0.2, pause=0.0)
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and U1_REPLY.hex(" ") in drops[0].getMessage()
    assert reg.counter("pollerd_line_discards_total", "", ("line",)).get(line="bus") == 1
    assert reg.counter("pollerd_line_stale_bytes_total", "", ("line",)).get(line="bus") == len(U1_REPLY)
    assert (await ask(line)).data == U1_REPLY[1:-2]
