"""The API's write side and its manners: poll now through a real daemon and a simulated Mercury 230, 401 vs
403, and malformed requests that must get a 4xx with a JSON error body, never a 500 or a traceback."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from helpers import free_port

from pollerd.config import LineConfig, load_config
from pollerd.daemon import Daemon
from pollerd.errors import TransportError
from pollerd.line import Line, line_priority
from pollerd.metrics import Registry
from pollerd.sim.mercury230 import SimBus, SimMeter, serve_tcp
from pollerd.state import LineState

ADMIN = "write-admin-0123456789"
READER = "write-read-0123456789"


@pytest.fixture
async def daemon(tmp_path):
    meter = SimMeter(address=1, serial="41000001", clock=lambda: 1_790_000_000.0)
    # 30 ms per reply: a cycle takes long enough for a second request to find it running.
    server = await serve_tcp(SimBus([meter]), "127.0.0.1", 0, latency=0.03)
    port = server.sockets[0].getsockname()[1]
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        f'[store]\ncommit_interval = "50ms"\n\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\ntokens = [{{ token = "{ADMIN}", role = "admin" }}, '
        f'{{ token = "{READER}", role = "read" }}]\n\n'
        f'[[meters]]\nname = "m1"\nprotocol = "mercury230"\nip_address = "127.0.0.1"\nport = {port}\n'
        f'connection_address = 1\ninterval_time = "1d"\nread = ["energy", "instant"]\n')
    d = Daemon(load_config(cfg), tmp_path / "state")
    task = asyncio.ensure_future(d.run())
    await asyncio.wait_for(d.ready.wait(), 20)
    d.base = f"http://127.0.0.1:{d.api_port}"  # type: ignore[attr-defined]
    yield d
    d.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    server.close()


async def test_poll_now_runs_one_cycle_stores_it_and_refuses_a_second_meanwhile(daemon):
    url = f"{daemon.base}/api/meters/m1/poll"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http:
        async def poll() -> tuple[int, dict]:  # type: ignore[type-arg]
            async with http.post(url, headers=admin) as r:
                return r.status, await r.json()

        first = asyncio.ensure_future(poll())
        await asyncio.wait_for(_until(lambda: daemon.meters["m1"].lock.locked()), 20)
        status, body = await poll()
        assert status == 409 and "running" in body["error"]
        status, body = await first
        assert status == 200, body
        assert body["meter"] == "m1" and body["ok"] is True and body["error"] is None
        assert body["readings"] >= 40 and body["duration"] > 0
        # The readings are in the store, as from a scheduled cycle.
        # Tokens are configured, so the data endpoints need one too (read is enough).
        read = {"Authorization": f"Bearer {READER}"}
        async with http.get(f"{daemon.base}/api/readings", params={"meter": "m1", "per_page": "1000"},
                            headers=read) as r:
            assert (await r.json())["total"] == body["readings"]
        async with http.get(f"{daemon.base}/api/meters/m1", headers=read) as r:
            m = (await r.json())["data"]
        assert m["state"] == "ok" and m["last_poll"] == pytest.approx(body["started"], abs=1) and m["polls"] == 1
        assert m["last_error"] is None and m["degraded_reason"] is None
        assert m["identity"]["serial"] == "41000001"
        # Auth: 401 without or with an unknown token (and a challenge), 403 for a read token.
        for headers in ({}, {"Authorization": "Basic YWRtaW46YWRtaW4="}, {"Authorization": "Bearer nope"}):
            async with http.post(url, headers=headers) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
                assert "error" in await r.json()
        async with http.post(url, headers={"Authorization": f"Bearer {READER}"}) as r:
            assert r.status == 403
        async with http.post(f"{daemon.base}/api/meters/nope/poll", headers=admin) as r:
            assert r.status == 404 and "nope" in (await r.json())["error"]


async def _until(cond) -> None:  # type: ignore[no-untyped-def]
    while not cond():
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("method, path, kw, status", [
    ("POST", "/api/meters/m1/raw", {"data": b"{not json"}, 400),
    ("POST", "/api/meters/m1/raw", {"json": {"command": 5}}, 400),
    ("POST", "/api/meters/m1/raw", {"json": ["01 08 00"]}, 400),
    ("POST", "/api/meters/m1/raw", {"json": {"command": "zz"}}, 400),
    ("POST", "/api/meters/m1/raw", {"json": {"command": "02 08 00"}}, 400),   # another address
    ("POST", "/api/meters/m1/raw", {"data": b"\xff\xfe"}, 400),
    ("POST", "/api/meters/m1/raw", {"data": b"[" * 70_000}, 413),
    ("POST", "/api/meters/zz/raw", {"json": {"command": "01 08 00"}}, 404),
    ("GET", "/api/meters/zz", {}, 404),
    ("GET", "/api/readings?per_page=0", {}, 400),
    ("GET", "/api/readings?per_page=1001", {}, 400),
    ("GET", "/api/readings?page=abc", {}, 400),
    ("GET", "/api/readings?page=99999999999999999999999", {}, 400),
    ("GET", "/api/readings?from=yesterday", {}, 400),
    ("GET", "/api/readings?from=nan", {}, 400),
    ("GET", "/api/readings?from=1e400", {}, 400),
    ("GET", "/api/readings?archive=weekly", {}, 400),
    ("GET", "/api/readings?meter=", {}, 400),
    ("GET", "/api/readings?form=1", {}, 400),
    ("GET", "/api/events?channel=A%2B", {}, 400),
    ("GET", "/api/nothing-here", {}, 404),
    ("DELETE", "/health", {}, 405),
    ("PUT", "/api/meters/m1/poll", {}, 405),
])
async def test_malformed_requests_get_a_json_4xx(daemon, caplog, method, path, kw, status):
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http, http.request(method, daemon.base + path, headers=headers, **kw) as r:
        assert r.status == status, await r.text()
        assert r.content_type == "application/json"
        body = await r.json()
        if status == 405:
            assert "GET" in r.headers["Allow"] or "POST" in r.headers["Allow"]
    assert set(body) == {"error"} and body["error"]
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text


async def test_poll_now_priority_goes_before_waiting_scheduled_requests():
    line = Line(LineConfig(name="l", type="tcp", host="127.0.0.1", port=1), LineState("l", "tcp"), Registry())
    order: list[str] = []
    hold = asyncio.Event()

    async def holder() -> None:
        async with line.session("a"):
            await hold.wait()

    async def user(name: str, priority: bool) -> None:
        if priority:
            line_priority.set(True)  # task-local, as the daemon's poll-now task sets it
        async with line.session(name):
            order.append(name)

    t0 = asyncio.ensure_future(holder())
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(user("scheduled", False))]
    await asyncio.sleep(0)
    waiting.append(asyncio.ensure_future(user("poll-now", True)))
    await asyncio.sleep(0)
    hold.set()
    await asyncio.gather(t0, *waiting)
    assert order == ["poll-now", "scheduled"]
    assert line_priority.get() is False  # the setting did not leak out of its task


async def test_line_records_since_when_it_is_down():
    port = free_port()  # nothing listens here
    st = LineState("l", "tcp")
    line = Line(LineConfig(name="l", type="tcp", host="127.0.0.1", port=port, reconnect_min=0.01,
                           reconnect_max=0.02), st, Registry())
    with pytest.raises(TransportError):
        await line._ensure_connected()
    first = st.down_since
    assert first is not None and st.last_error
    await asyncio.sleep(0.05)
    with pytest.raises(TransportError):
        await line._ensure_connected()
    assert st.down_since == first  # counts from the first failure, not the latest
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
    try:
        await asyncio.sleep(0.05)
        await line._ensure_connected()
        assert st.connected and st.down_since is None
    finally:
        await line.link.close()
        server.close()
