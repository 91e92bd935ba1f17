"""Config reload (SIGHUP): the running daemon applies the difference between its config and the file's,
against real Mercury simulators over loopback TCP and real HTTP receivers standing in for upstream."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import orjson
import pytest
from aiohttp import web
from helpers import free_port, serve, until

from pollerd.config import load_config
from pollerd.daemon import Daemon, install_signal_handlers
from pollerd.sim.mercury230 import SimBus, SimMeter, serve_tcp

FROZEN = 1_790_000_000.0
ADMIN1 = "admin-one-0123456789"
ADMIN2 = "admin-two-0123456789"


class CountingMeter(SimMeter):
    """Counts open-channel requests: a kept session opens once, a restarted one opens again."""

    opens = 0

    def _open(self, body: bytes, now: float) -> bytes:
        self.opens += 1
        return super()._open(body, now)


def meter(address: int) -> CountingMeter:
    return CountingMeter(address=address, serial=f"4100000{address}", clock=lambda: FROZEN)


class Receiver:
    def __init__(self) -> None:
        self.readings: list[dict] = []  # type: ignore[type-arg]

    async def ingest(self, request: web.Request) -> web.Response:
        self.readings.extend(orjson.loads(await request.read())["readings"])
        return web.json_response({"ok": True})


@pytest.fixture
async def receivers():
    out, runners = [], []
    for _ in range(2):
        rec = Receiver()
        app = web.Application()
        app.router.add_post("/ingest", rec.ingest)
        runner, base = await serve(app)
        rec.url = f"{base}/ingest"
        out.append(rec)
        runners.append(runner)
    yield out
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def sims():
    """Two converters: line A with meters 1, 2, 3; line B with meter 5."""
    a = [meter(1), meter(2), meter(3)]
    b = [meter(5)]
    srv_a = await serve_tcp(SimBus(a), "127.0.0.1", 0)
    srv_b = await serve_tcp(SimBus(b), "127.0.0.1", 0)
    yield ({m.address: m for m in a + b}, srv_a.sockets[0].getsockname()[1], srv_b.sockets[0].getsockname()[1])
    srv_a.close()
    srv_b.close()


def config_text(*, port_a: int, port_b: int, api_port: int, meters: list[tuple[str, str, int]],
                sinks: list[tuple[str, str]], token: str = ADMIN1, line_b_extra: str = "",
                store_path: str | None = None) -> str:
    text = '[gateway]\nname = "gw"\n\n[store]\ncommit_interval = "100ms"\n'
    if store_path:
        text += f'path = "{store_path}"\n'
    text += f'\n[api]\nlisten = "127.0.0.1:{api_port}"\ntokens = [{{ token = "{token}", role = "admin" }}]\n\n'
    text += f'[[lines]]\nname = "A"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port_a}\n\n'
    text += f'[[lines]]\nname = "B"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port_b}\n{line_b_extra}\n'
    for name, line, address in meters:
        text += (f'[[meters]]\nname = "{name}"\nprotocol = "mercury230"\nline = "{line}"\n'
                 f'connection_address = {address}\ninterval_time = "1s"\nwaiting_time = "500ms"\n'
                 f'read = ["energy"]\n\n')
    for name, url in sinks:
        text += (f'[[sinks]]\nname = "{name}"\ntype = "http"\nurl = "{url}"\nretry_min = "100ms"\n'
                 f'retry_max = "500ms"\n\n')
    return text


class Running:
    def __init__(self, daemon: Daemon, task: asyncio.Task[int]) -> None:
        self.daemon, self.task = daemon, task

    def reloads(self, outcome: str) -> float:
        return self.daemon.metrics.counter("pollerd_reloads_total", "", ("outcome",)).get(outcome=outcome)

    async def health(self) -> tuple[int, dict]:  # type: ignore[type-arg]
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.daemon.api_port}/health") as r:
            return r.status, await r.json()


@pytest.fixture
async def start(tmp_path):
    started: list[Running] = []

    async def go(text: str) -> Running:
        path = tmp_path / "pollerd.toml"
        path.write_text(text)
        d = Daemon(load_config(path), tmp_path / "state")
        run = Running(d, asyncio.ensure_future(d.run()))
        started.append(run)
        await until(lambda: d.ready.is_set() or run.task.done(), what="daemon ready")
        assert not run.task.done(), run.task.result()
        return run

    yield go
    for run in started:
        run.daemon.request_stop()
        assert await asyncio.wait_for(run.task, 30) == 0


async def test_reload_applies_the_difference(tmp_path, sims, receivers, start):
    by_addr, port_a, port_b = sims
    up1, up2 = receivers
    api_port = free_port()
    base = dict(port_a=port_a, port_b=port_b, api_port=api_port)
    run = await start(config_text(**base, meters=[("a1", "A", 1), ("a2", "A", 2), ("b5", "B", 5)],
                                  sinks=[("up1", up1.url)]))
    d = run.daemon
    rt = d.runtime
    await until(lambda: all(rt.meters[n].polls >= 2 for n in ("a1", "a2", "b5")), what="first polls")
    await until(lambda: any(r["meter"] == "b5" for r in up1.readings), what="readings upstream")
    keep_driver, keep_run, keep_state = d.meters["a1"].driver, d.meters["a1"], rt.meters["a1"]
    old_b5_driver, old_line_b = d.meters["b5"].driver, d.lines["B"]
    opens_a1, opens_b5 = by_addr[1].opens, by_addr[5].opens
    assert opens_a1 == 1 and opens_b5 == 1  # one session each, kept between cycles

    # a1 unchanged; a2 removed; a3 added; line B changed (so b5 restarts); sink up1 -> up2; a new token.
    (tmp_path / "pollerd.toml").write_text(config_text(
        **base, meters=[("a1", "A", 1), ("a3", "A", 3), ("b5", "B", 5)], sinks=[("up2", up2.url)],
        token=ADMIN2, line_b_extra='reconnect_max = "10s"\n').replace('commit_interval = "100ms"',
                                                                     'commit_interval = "200ms"'))
    assert d.store.commit_interval == 0.1
    loop = asyncio.get_running_loop()
    install_signal_handlers(d)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: run.reloads("ok") == 1, what="reload via SIGHUP")
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    assert d.store.commit_interval == 0.2  # applied live, from the next group commit on
    # Unchanged meter: same driver, schedule and state; no new session.
    assert d.meters["a1"] is keep_run and keep_run.driver is keep_driver and keep_run.scheduled
    assert rt.meters["a1"] is keep_state
    polls = keep_state.polls
    # Added meter polls; changed line restarted with its meter (a new session on the new link).
    await until(lambda: "a3" in rt.meters and rt.meters["a3"].polls >= 2 and rt.meters["a3"].last_ok,
                what="added meter polled")
    await until(lambda: by_addr[5].opens == opens_b5 + 1 and rt.meters["b5"].last_ok, what="b5 reopened")
    assert d.lines["B"] is not old_line_b and d.meters["b5"].driver is not old_b5_driver
    await until(lambda: keep_state.polls >= polls + 2, what="a1 still polled")
    assert by_addr[1].opens == opens_a1
    # Removed meter: gone from the API, its session closed, no more requests.
    assert "a2" not in d.meters and "a2" not in rt.meters
    assert by_addr[2].level == 0  # close channel was sent
    before = by_addr[2].requests
    await until(lambda: keep_state.polls >= polls + 4, what="a1 polled twice more")
    assert by_addr[2].requests == before
    # Sinks: up2 starts from its own cursor (everything), up1 gets nothing new.
    assert set(d.sink_tasks) == {"up2"} and set(rt.sinks) == {"up2"}
    n_up1 = len(up1.readings)
    await until(lambda: any(r["meter"] == "a3" for r in up2.readings), what="up2 receives")
    assert {r["meter"] for r in up2.readings} >= {"a1", "a2", "a3", "b5"}
    assert len(up1.readings) == n_up1
    # Tokens applied live.
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{d.api_port}/api/meters/a1/poll"
        async with http.post(url, headers={"Authorization": f"Bearer {ADMIN1}"}) as r:
            assert r.status == 401
        async with http.post(url, headers={"Authorization": f"Bearer {ADMIN2}"}) as r:
            assert r.status in (200, 409), await r.text()
    assert (await run.health())[1]["warnings"] == []


async def test_invalid_config_keeps_the_running_one(tmp_path, sims, receivers, start):
    by_addr, port_a, port_b = sims
    base = dict(port_a=port_a, port_b=port_b, api_port=free_port(), sinks=[("up1", receivers[0].url)])
    good = config_text(**base, meters=[("a1", "A", 1)])
    run = await start(good)
    d, rt = run.daemon, run.daemon.runtime
    await until(lambda: rt.meters["a1"].polls >= 1, what="first poll")
    drv = d.meters["a1"].driver
    path = tmp_path / "pollerd.toml"
    path.write_text(good.replace("connection_address = 1", "connection_address = 999"))
    assert await d.reload() is False
    assert run.reloads("failed") == 1 and d.meters["a1"].driver is drv
    status, body = await run.health()
    [warning] = body["warnings"]
    assert warning.startswith("reload failed, still running the previous config: ")
    assert f"{path}:" in warning and "meters[0].connection_address" in warning
    polls = rt.meters["a1"].polls
    await until(lambda: rt.meters["a1"].polls >= polls + 2, what="still polling")
    # A store path change is refused: needs a restart.
    path.write_text(config_text(**base, meters=[("a1", "A", 1)], store_path=str(tmp_path / "other.db")))
    assert await d.reload() is False
    assert run.reloads("refused") == 1
    assert "store.path changed" in (await run.health())[1]["warnings"][0]
    # A changed listen address is applied later (restart), and said so; the rest applies.
    new_port = free_port()
    path.write_text(config_text(**{**base, "api_port": new_port}, meters=[("a1", "A", 1), ("a3", "A", 3)]))
    assert await d.reload() is True
    [warning] = (await run.health())[1]["warnings"]
    assert f"127.0.0.1:{new_port}" in warning and "restart" in warning
    await until(lambda: "a3" in rt.meters and rt.meters["a3"].polls >= 1, what="a3 added")
    # Back to the file's own listen address: the warning goes away, the meter a1 never restarted.
    path.write_text(config_text(**base, meters=[("a1", "A", 1)]))
    assert await d.reload() is True
    assert (await run.health())[1]["warnings"] == []
    assert d.meters["a1"].driver is drv and by_addr[1].opens == 1
    assert run.reloads("ok") == 2


async def test_a_meter_whose_driver_cannot_be_built_does_not_stop_the_reload(tmp_path, sims, receivers, start,
                                                                            monkeypatch):
    import pollerd.daemon.wiring as daemon_mod  # build_driver looks make_driver up there
    by_addr, port_a, port_b = sims
    base = dict(port_a=port_a, port_b=port_b, api_port=free_port(), sinks=[("up1", receivers[0].url)])
    run = await start(config_text(**base, meters=[("a1", "A", 1)]))
    d, rt = run.daemon, run.daemon.runtime
    await until(lambda: rt.meters["a1"].polls >= 1, what="first poll")
    real = daemon_mod.make_driver

    def make_driver(ctx):  # type: ignore[no-untyped-def]
        if ctx.meter.name == "a2":
            raise RuntimeError("driver bug")
        return real(ctx)
    monkeypatch.setattr(daemon_mod, "make_driver", make_driver)
    path = tmp_path / "pollerd.toml"
    path.write_text(config_text(**base, meters=[("a1", "A", 1), ("a2", "A", 2), ("a3", "A", 3)]))
    assert await d.reload() is True  # the file is fine; one meter of it could not start
    await until(lambda: "a3" in d.meters and rt.meters["a3"].polls >= 1, what="a3 added")
    assert "a2" not in d.meters and "driver bug" in rt.meters["a2"].alarms["start"]
    status, body = await run.health()
    assert status == 503 and any("a2" in r and "driver bug" in r for r in body["reasons"])
    # Fixed, the next reload starts it; removed from the file, its state goes too.
    monkeypatch.setattr(daemon_mod, "make_driver", real)
    assert await d.reload() is True
    await until(lambda: "a2" in d.meters and rt.meters["a2"].polls >= 1, what="a2 started")
    monkeypatch.setattr(daemon_mod, "make_driver", make_driver)
    path.write_text(config_text(**base, meters=[("a1", "A", 1)]))
    assert await d.reload() is True and set(rt.meters) == {"a1"}
    # A bug outside any one meter: logged, said in /health, and the daemon keeps running.
    monkeypatch.setattr(d, "_apply_api", lambda old, new: 1 / 0)
    assert await d.reload() is False and run.reloads("error") == 1
    assert "ZeroDivisionError" in (await run.health())[1]["warnings"][0]
    polls = rt.meters["a1"].polls
    await until(lambda: rt.meters["a1"].polls >= polls + 2, what="still polling")
    assert not run.task.done()
