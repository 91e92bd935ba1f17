"""A driver bug in probe() or close() must not take the daemon down (review fixes).

The poll path already contains driver bugs (an exception becomes a failed cycle); these tests pin the same for the
degraded-meter probe (scheduled and poll-now) and for closing a session on reload and shutdown."""

from __future__ import annotations

import asyncio

import pytest
from helpers import free_port, until

from pollerd.config import load_config
from pollerd.daemon import Daemon


def config_text(meters: list[str], port: int) -> str:
    # Nothing listens on the line's port: the meters fail, which is all these tests need.
    text = (f'[gateway]\nname = "gw"\n\n[store]\ncommit_interval = "100ms"\n\n'
            f'[[lines]]\nname = "A"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n')
    for name in meters:
        text += (f'[[meters]]\nname = "{name}"\nprotocol = "mercury230"\nline = "A"\nconnection_address = {name[1:]}\n'
                 f'interval_time = "1h"\nwaiting_time = "500ms"\nread = ["energy"]\n\n')
    return text


@pytest.fixture
async def daemon(tmp_path):
    path = tmp_path / "pollerd.toml"
    port = free_port()
    path.write_text(config_text(["m1", "m2"], port))
    d = Daemon(load_config(path), tmp_path / "state")
    task = asyncio.ensure_future(d.run())
    await until(lambda: d.ready.is_set() or task.done(), what="daemon ready")
    assert not task.done(), task.result()
    yield d, task, path, port
    d.request_stop()
    assert await asyncio.wait_for(task, 30) == 0


async def test_probe_that_raises_is_a_failed_cycle_not_a_crash(daemon):
    d, task, _, _ = daemon
    run = d.meters["m1"]
    st = run.state
    st.degraded = True

    async def broken_probe() -> bool:
        raise RuntimeError("driver bug in probe")

    run.driver.probe = broken_probe  # type: ignore[method-assign]
    reply = await d.poll_now("m1")
    assert reply["ok"] is False and reply["answered"] is False
    assert "internal error" in str(reply["error"]) and "RuntimeError" in str(reply["error"])
    assert st.polls == 1 and st.failures == 1
    await asyncio.sleep(0.2)  # a crashed poll-now task would have torn the TaskGroup down by now
    assert not task.done()
    assert d.meters["m2"].scheduled  # its schedule goes on (sleeping on its timer, or in a turn)


async def test_close_that_raises_does_not_break_reload_or_shutdown(daemon):
    d, task, path, port = daemon
    for name in ("m1", "m2"):
        async def broken_close() -> None:
            raise OSError("driver bug in close")
        d.meters[name].driver.close = broken_close  # type: ignore[method-assign]
    path.write_text(config_text(["m2", "m3"], port))  # m1 removed: its session is closed
    assert await d.reload() is True
    assert sorted(d.meters) == ["m2", "m3"]
    assert not task.done()
    # Shutdown (the fixture) closes m2 with the same broken close and must still return 0.


async def test_second_poll_now_while_one_is_starting_is_refused(daemon):
    """Two requests in the same instant: the second gets MeterBusy (the API's 409), not a wait behind the first."""
    d, task, _, _ = daemon
    from pollerd.errors import MeterBusy
    first, second = await asyncio.gather(d.poll_now("m1"), d.poll_now("m1"), return_exceptions=True)
    assert isinstance(first, dict) and first["meter"] == "m1", first
    assert isinstance(second, MeterBusy), second
    assert d.meters["m1"].state.polls == 1
    assert not d.meters["m1"].lock.locked()
    # The lock is free again: the next request runs.
    third = await d.poll_now("m1")
    assert third["meter"] == "m1" and d.meters["m1"].state.polls == 2
    assert not task.done()


async def test_shutdown_waits_for_a_running_poll_now_before_closing_the_session(daemon):
    """A poll-now cycle in flight at shutdown finishes before the driver's session is closed (a cloud driver
    would otherwise lose its HTTP session mid-request)."""
    d, task, _, _ = daemon
    drv = d.meters["m1"].driver
    release = asyncio.Event()
    seen: list[str] = []
    real_close = drv.close

    async def slow_poll(ts):  # type: ignore[no-untyped-def]
        from pollerd.drivers.base import PollResult
        seen.append("poll started")
        await release.wait()
        seen.append("poll done")
        return PollResult((), (), True, None)

    async def close():  # type: ignore[no-untyped-def]
        seen.append("close")
        await real_close()

    drv.poll, drv.close = slow_poll, close  # type: ignore[method-assign]
    poll = asyncio.ensure_future(d.poll_now("m1"))
    await until(lambda: seen == ["poll started"], what="poll-now running")
    d.request_stop()
    await asyncio.sleep(0.3)
    assert "close" not in seen       # shutdown is waiting for the cycle
    release.set()
    assert (await asyncio.wait_for(poll, 10))["ok"] is True
    await until(lambda: "close" in seen, what="session closed")
    assert seen.index("poll done") < seen.index("close")


async def test_a_missing_serial_device_shows_at_start_not_at_the_first_daily_cycle(tmp_path):
    # The only meter polls once a day at 23:59: before, /health knew nothing of the missing adapter until then.
    path = tmp_path / "pollerd.toml"
    path.write_text(f'[[lines]]\nname = "usb0"\ntype = "serial"\ndevice = "{tmp_path}/ttyUSB-missing"\n\n'
                    '[[meters]]\nname = "m1"\nprotocol = "mercury230"\nline = "usb0"\nconnection_address = 1\n'
                    'period_type = "daily"\nat = "23:59"\n')
    d = Daemon(load_config(path), tmp_path / "state")
    task = asyncio.ensure_future(d.run())
    try:
        await until(lambda: ("usb0" in d.runtime.lines and bool(d.runtime.lines["usb0"].last_error)) or task.done(),
                    what="the line's first try")
        assert not task.done()
        line = d.runtime.lines["usb0"]
        assert "ttyUSB-missing" in line.last_error and not line.connected and line.down_since is not None
        assert d.runtime.meters["m1"].polls == 0  # nobody polled: the probe is not a cycle
    finally:
        d.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


def test_the_degraded_gauge_exists_only_for_meters_that_were_degraded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Issue 18: a 0 per healthy meter was 1.5 MB of labels and floats at 10,000 meters. A meter gets the gauge
    # when it degrades (1), keeps it at 0 once it recovers, and loses it when it leaves the config.
    from fakes import idle_daemon_with_meter

    from pollerd.daemon.runner import DEGRADED_AFTER
    from pollerd.drivers.base import PollResult
    d, mc, st = idle_daemon_with_meter(tmp_path)
    gauge = 'pollerd_meter_degraded{meter="a"}'
    d.runner._record(mc, st, PollResult(()), 100.0)  # type: ignore[arg-type]
    assert gauge not in d.metrics.render()
    for i in range(DEGRADED_AFTER):
        d.runner._record(mc, st, PollResult((), answered=False, error="no answer"), 160.0 + i)  # type: ignore[arg-type]
    assert st.degraded and f"{gauge} 1" in d.metrics.render()
    d.runner._record(mc, st, PollResult(()), 300.0)  # type: ignore[arg-type]
    assert not st.degraded and f"{gauge} 0" in d.metrics.render()
    d.runner.forget("a")
    assert gauge not in d.metrics.render()
