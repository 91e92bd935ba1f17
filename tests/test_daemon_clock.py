"""The meter loop when the gateway's own wall clock is stepped (NTP at boot, an operator, a bad RTC).

Runs the real meter loop (MeterRunner.loop) on a fake clock: the runner's one sleep hook (wait) advances the
clock instead of waiting, so nothing here depends on real time."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from pollerd.config import load_config
from pollerd.daemon import Daemon, MeterRun
from pollerd.daemon import runner as runner_mod
from pollerd.drivers.base import PollResult
from pollerd.schedule import Schedule
from pollerd.state import MeterState

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc).timestamp()


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeDriver:
    """Records when it was polled; ``on_poll`` may step the clock, ``stop_after`` ends the test."""

    def __init__(self, clock: FakeClock, run: list[MeterRun], stop_after: int, on_poll=None) -> None:  # type: ignore[no-untyped-def]
        self.clock, self.run, self.stop_after, self.on_poll = clock, run, stop_after, on_poll
        self.polls: list[float] = []

    async def poll(self, ts: int) -> PollResult:
        self.polls.append(self.clock())
        if self.on_poll is not None:
            self.on_poll(len(self.polls))
        if len(self.polls) >= self.stop_after:
            self.run[0].stop.set()
        return PollResult(())

    async def probe(self) -> bool:
        return True

    async def close(self) -> None:
        pass


def make_daemon(tmp_path, clock: FakeClock, schedule: str = 'interval_time = "15m"') -> Daemon:  # type: ignore[no-untyped-def]
    path = tmp_path / "pollerd.toml"
    path.write_text('[[lines]]\nname = "A"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 1\n\n'
                    f'[[meters]]\nname = "m"\nprotocol = "mercury230"\nline = "A"\nconnection_address = 1\n'
                    f'{schedule}\n')
    daemon = Daemon(load_config(path), tmp_path / "state", clock=clock)
    waits: list[float] = []
    real_sleep = daemon.runner.sleep

    def fake_sleep(run: MeterRun, delay: float) -> None:
        # The schedule's one sleep, on the fake clock: time passes at once.
        assert len(waits) < 20_000, "the schedule keeps sleeping: it stalls"
        waits.append(delay)
        clock.t += delay
        real_sleep(run, 0)

    daemon.runner.sleep = fake_sleep  # type: ignore[method-assign]
    daemon.waits = waits  # type: ignore[attr-defined]
    return daemon


async def run_loop(daemon: Daemon, drv: FakeDriver, runs: list[MeterRun]) -> None:
    mc = daemon.config.meter("m")
    run = MeterRun(mc, drv, state=MeterState(mc.name, mc.protocol, mc.line, mc.connection_address, 900.0))  # type: ignore[arg-type]
    runs.append(run)
    daemon.runner.start(run, daemon.config.gateway.spread)
    await _until(lambda: not run.scheduled, timeout=10)


async def test_a_clock_stepped_back_does_not_stall_the_meter_until_it_catches_up(tmp_path):
    # A gateway that booted with its clock a year ahead (a bad RTC) is corrected by NTP after the first
    # cycle. The loop used to keep sleeping towards the run it had planned by the wrong clock: a year
    # without a single poll. It must poll again at the next slot of the corrected clock.
    clock = FakeClock(NOW + 365 * 86400)
    daemon, runs = make_daemon(tmp_path, clock), []

    def ntp(n: int) -> None:
        if n == 1:
            clock.t -= 365 * 86400

    drv = FakeDriver(clock, runs, stop_after=3, on_poll=ntp)
    await run_loop(daemon, drv, runs)
    sched = Schedule.from_meter(daemon.config.meter("m"), daemon.config.gateway.spread)
    first_after_step = sched.next_run(drv.polls[0] - 365 * 86400)
    assert drv.polls[1:] == [first_after_step, first_after_step + 900]


async def test_a_clock_stepped_far_forward_does_not_run_a_burst_of_cycles(tmp_path):
    # A gateway without an RTC starts in 1970; NTP then sets it to today. The loop skipped at most 100 000
    # missed slots per cycle and then ran the cycle at once again, still in the past: for a 1-minute meter
    # ~290 back-to-back cycles hogging the bus. After the jump, the meter must run at its next slot.
    clock = FakeClock(0.0)
    daemon, runs = make_daemon(tmp_path, clock, 'interval_time = "1m"'), []

    def ntp(n: int) -> None:
        if n == 1:
            clock.t = NOW

    drv = FakeDriver(clock, runs, stop_after=3, on_poll=ntp)
    await run_loop(daemon, drv, runs)
    sched = Schedule.from_meter(daemon.config.meter("m"), daemon.config.gateway.spread)
    assert drv.polls[1:] == [sched.next_run(NOW), sched.next_run(NOW) + 60]
    assert runs[0].state.skipped >= 100_000  # type: ignore[union-attr]


async def test_a_steady_clock_runs_every_slot_once_across_both_dst_changes(tmp_path, caplog):
    # Daily at 02:30 Berlin: 02:30 does not exist on 2026-03-29 and happens twice on 2026-10-25.
    berlin = dt.timezone(dt.timedelta(hours=1))
    clock = FakeClock(dt.datetime(2026, 3, 27, 12, 0, tzinfo=berlin).timestamp())
    daemon, runs = make_daemon(tmp_path, clock, 'period_type = "daily"\nat = "02:30"\n'
                                                'timezone = "Europe/Berlin"'), []
    drv = FakeDriver(clock, runs, stop_after=3)
    await run_loop(daemon, drv, runs)
    sched = Schedule.from_meter(daemon.config.meter("m"), daemon.config.gateway.spread)
    want = []
    t = dt.datetime(2026, 3, 27, 12, 0, tzinfo=berlin).timestamp()
    for _ in range(3):
        t = sched.next_run(t)
        want.append(t)
    assert drv.polls == want
    assert [dt.datetime.fromtimestamp(p, sched.tz).date().isoformat() for p in drv.polls] == [
        "2026-03-28", "2026-03-29", "2026-03-30"]
    assert "clock went back" not in caplog.text

    clock.t = dt.datetime(2026, 10, 24, 12, 0, tzinfo=berlin).timestamp()
    runs.clear()
    drv2 = FakeDriver(clock, runs, stop_after=3)
    await run_loop(daemon, drv2, runs)
    days = [dt.datetime.fromtimestamp(p, sched.tz).date().isoformat() for p in drv2.polls]
    assert days == ["2026-10-25", "2026-10-26", "2026-10-27"]
    assert "clock went back" not in caplog.text


class RecordingDriver:
    def __init__(self) -> None:
        self.polls: list[float] = []

    async def poll(self, ts: int) -> PollResult:
        self.polls.append(ts)
        return PollResult(())

    async def probe(self) -> bool:
        return True

    async def close(self) -> None:
        pass


async def _until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_sleeping_meter_follows_a_wall_clock_step_in_either_direction(tmp_path, monkeypatch):
    # A meter sleeps on one timer until its slot; the runner's clock watch wakes it when the wall clock moves
    # against the monotonic one, and it plans its sleep again from the clock as it is now.
    monkeypatch.setattr(runner_mod, "CLOCK_RECHECK", 0.02)
    offset = [86400.0]  # a gateway whose clock is a day ahead

    def clock() -> float:
        return time.time() + offset[0]

    path = tmp_path / "pollerd.toml"
    path.write_text('[[lines]]\nname = "A"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 1\n\n'
                    '[[meters]]\nname = "m"\nprotocol = "mercury230"\nline = "A"\nconnection_address = 1\n'
                    'interval_time = "15m"\n')
    daemon = Daemon(load_config(path), tmp_path / "state", clock=clock)
    mc = daemon.config.meter("m")
    drv = RecordingDriver()
    st = MeterState(mc.name, mc.protocol, mc.line, mc.connection_address, 900.0)
    run = MeterRun(mc, drv, state=st)  # type: ignore[arg-type]
    daemon.meters["m"] = run
    daemon.runner.start(run, daemon.config.gateway.spread)
    watch = asyncio.create_task(daemon.runner.watch_clock())
    try:
        await asyncio.sleep(0.05)  # the watch takes the clocks' offset it compares against
        assert st.next_run is not None and st.next_run > time.time() + 86400 - 1
        offset[0] = 0.0  # NTP steps the clock back a day: the meter must not sleep that day away
        await _until(lambda: st.next_run is not None and st.next_run <= time.time() + 900)
        assert drv.polls == []
        due = st.next_run
        assert due is not None
        offset[0] = due - time.time() + 1.0  # and now forward past the slot: it runs at once
        await _until(lambda: len(drv.polls) == 1)
        assert drv.polls[0] >= int(due)
    finally:
        run.stop.set()
        await _until(lambda: not run.scheduled)
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def test_a_sleeping_meter_holds_a_timer_and_no_task_and_stopping_it_ends_the_sleep(tmp_path) -> None:
    # Issue 18: a task and its coroutine per sleeping meter were 1.4 KB each (14 MB at 10 000 meters). Between
    # turns a meter holds only its timer; the turn runs in a task of its own, and a stop ends the sleep.
    clock = FakeClock(time.time())
    daemon = make_daemon(tmp_path, clock)
    del daemon.runner.sleep  # the real timer, not make_daemon's fake clock
    mc = daemon.config.meter("m")
    run = MeterRun(mc, RecordingDriver(), state=MeterState(mc.name, mc.protocol, mc.line,  # type: ignore[arg-type]
                                                            mc.connection_address, 900.0))
    before = asyncio.all_tasks()
    daemon.runner.start(run, daemon.config.gateway.spread)
    assert run.scheduled and run.stop.sleeping and run.task is None
    assert asyncio.all_tasks() == before
    assert run.state is not None and run.state.next_run == run.due > clock.t
    run.stop.set()
    assert not run.scheduled and not run.stop.sleeping


async def test_a_stop_flag_sleep_rings_once_unless_woken_or_set() -> None:
    from pollerd.daemon.runner import StopFlag
    loop = asyncio.get_running_loop()
    rang: list[object] = []
    flag = StopFlag()

    def ring(what: object) -> None:
        flag.rang()
        rang.append(what)

    t0 = loop.time()
    flag.sleep(0.05, ring, "a")  # type: ignore[arg-type]
    assert flag.sleeping
    await _until(lambda: rang == ["a"])
    assert loop.time() - t0 >= 0.04 and not flag.sleeping
    flag.sleep(0.01, ring, "b")  # type: ignore[arg-type]
    assert flag.wake() and not flag.sleeping and not flag.wake()
    flag.sleep(0.01, ring, "c")  # type: ignore[arg-type]
    flag.set()
    await asyncio.sleep(0.05)
    assert rang == ["a"] and flag.is_set() and not flag.sleeping
