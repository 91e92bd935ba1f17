"""Raw frames (seed 004 "Meter data polling"): the CLI and POST /api/meters/{name}/raw with admin tokens."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from helpers import free_port

from pollerd.config import load_config
from pollerd.daemon import Daemon, build_driver, build_lines
from pollerd.metrics import Registry
from pollerd.sim.mercury230 import SimBus, SimMeter, serve_tcp
from pollerd.state import Runtime

ADMIN = "admin-token-0123456789"
READER = "read-token-0123456789"


@pytest.fixture
async def sim():
    meter = SimMeter(address=1, serial="41000001", clock=lambda: 1_790_000_000.0)
    server = await serve_tcp(SimBus([meter]), "127.0.0.1", 0)
    yield meter, server.sockets[0].getsockname()[1]
    server.close()


def config(tmp_path, port: int, api_port: int):  # type: ignore[no-untyped-def]
    p = tmp_path / "p.toml"
    p.write_text(f'[api]\nlisten = "127.0.0.1:{api_port}"\ntokens = [{{ token = "{ADMIN}", role = "admin" }}, '
                 f'{{ token = "{READER}", role = "read" }}]\n\n'
                 f'[[meters]]\nname = "m1"\nprotocol = "mercury230"\nip_address = "127.0.0.1"\nport = {port}\n'
                 f'connection_address = 1\ninterval_time = "1h"\npassword = "111111"\n')
    return load_config(p)


async def test_driver_raw_appends_crc_and_decodes(tmp_path, sim):
    meter, port = sim
    cfg = config(tmp_path, port, free_port())
    runtime, metrics = Runtime("t"), Registry()
    line = build_lines(cfg, runtime, metrics)[cfg.meter("m1").line]
    drv = build_driver(cfg.meter("m1"), line, runtime, metrics)
    try:
        out = await drv.raw("01 05 00 00")            # without CRC
        again = await drv.raw("0105000011d9")          # with CRC, no spaces
    finally:
        await line.close()
    assert out["request"] == "read_energy" and again["response"] == out["response"]
    a_plus = meter.expected_energy(0)[0]
    assert {"channel": "A+", "value": a_plus} .items() <= next(
        r for r in out["decoded"]["readings"] if r["channel"] == "A+").items()
    with pytest.raises(ValueError, match="addressed to 2"):
        await drv.raw("02 05 00 00")
    with pytest.raises(ValueError, match="not a HEX frame"):
        await drv.raw("zz")


async def test_api_raw_needs_an_admin_token_and_jumps_the_queue(tmp_path, sim):
    meter, port = sim
    api_port = free_port()
    daemon = Daemon(config(tmp_path, port, api_port), tmp_path)
    task = asyncio.ensure_future(daemon.run())
    url = f"http://127.0.0.1:{api_port}/api/meters/m1/raw"
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        async with aiohttp.ClientSession() as http:
            body = {"command": "01 08 00"}
            async with http.post(url, json=body) as r:
                assert r.status == 401
            async with http.post(url, json=body, headers={"Authorization": "Bearer wrong-token-000000"}) as r:
                assert r.status == 401
            async with http.post(url, json=body, headers={"Authorization": f"Bearer {READER}"}) as r:
                assert r.status == 403
            admin = {"Authorization": f"Bearer {ADMIN}"}
            async with http.post(url, json=body, headers=admin) as r:
                assert r.status == 200, await r.text()
                reply = await r.json()
            assert reply["decoded"]["fields"]["serial"] == "41000001"
            async with http.post(url, data=b"{not json", headers=admin) as r:
                assert r.status == 400 and "error" in await r.json()
            async with http.post(url.replace("m1", "nope"), json=body, headers=admin) as r:
                assert r.status == 404
            async with http.post(url, data=b"x" * 100_000, headers=admin) as r:
                assert r.status == 413
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
    # the open-channel password never shows in a raw reply
    assert ADMIN not in orjson.dumps(reply).decode()
