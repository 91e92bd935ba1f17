"""WebMeters and SAURES accounts in the running daemon and in `pollerd poll`: readings reach the store, the
Ellis export lands in the state directory, a bad api key is a /health reason, and a hanging account does not
hold up the others."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from fakes_saures import EMAIL, PASSWORD, FakeSaures
from fakes_saures import sample as saures_sample
from fakes_webmeters import KEY, FakeWebmeters
from fakes_webmeters import sample as webmeters_sample
from helpers import free_port

from pollerd.config import load_config
from pollerd.daemon import Daemon


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeWebmeters, FakeSaures]]:
    w, s = webmeters_sample(FakeWebmeters()), saures_sample(FakeSaures())
    await w.start()
    await s.start()
    try:
        yield w, s
    finally:
        await w.stop()
        await s.stop()


class Silent:
    """Accepts connections and never answers: an account whose server hangs."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.writers.append(w)
        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]  # type: ignore[no-any-return]

    async def hang_up(self) -> None:
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()


def config(tmp_path: Path, w: FakeWebmeters, s: FakeSaures, silent_port: int) -> Path:
    p = tmp_path / "pollerd.toml"
    p.write_text(f'''
[gateway]
name = "gw"
[store]
commit_interval = "100ms"
[api]
listen = "127.0.0.1:{free_port()}"

[[meters]]
name = "wm"
protocol = "webmeters"
url = "{w.url}"
api_key = "{KEY}"
read = ["values", "ellis"]
interval_time = "1s"

[[meters]]
name = "sa"
protocol = "saures"
url = "{s.url}"
email = "{EMAIL}"
password = "{PASSWORD}"
interval_time = "1s"
timezone = "Europe/Moscow"

[[meters]]
name = "badkey"
protocol = "webmeters"
url = "{w.url}"
api_key = "{'z' * 40}"
interval_time = "1s"

[[meters]]
name = "hanging"
protocol = "saures"
url = "http://127.0.0.1:{silent_port}"
email = "{EMAIL}"
password = "x"
interval_time = "1s"
waiting_time = "60s"
''', encoding="utf-8")
    return p


async def test_daemon_runs_cloud_accounts_side_by_side(tmp_path: Path, fakes) -> None:  # type: ignore[no-untyped-def]
    w, s = fakes
    silent = Silent()
    port = await silent.start()
    daemon = Daemon(load_config(config(tmp_path, w, s, port), environ={}), tmp_path / "state")
    task = asyncio.ensure_future(daemon.run())
    try:
        for _ in range(600):                       # up to 30 s on a loaded machine
            await asyncio.sleep(0.05)
            assert not task.done()
            st = daemon.runtime.meters
            if all(name in st for name in ("wm", "sa", "badkey")) and st["wm"].polls >= 2 \
                    and st["sa"].polls >= 2 and st["badkey"].polls >= 1:
                break
        else:
            pytest.fail("cloud accounts were not polled")
        # the hanging account is still in its first request: it held up nobody
        assert daemon.runtime.meters["hanging"].polls == 0
        rows, total = await daemon.store.query_readings(meter="sa:AA123-88", channel="A+.T3")
        assert total >= 1 and rows[0].value == 2.7
        rows, total = await daemon.store.query_readings(meter="wm:1001")
        assert {r.channel for r in rows} == {"A+.T1", "A+.T2"}
        assert list((tmp_path / "state" / "webmeters").glob("wm-*.txt"))
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{daemon.api_port}"
            async with http.get(f"{base}/health") as r:
                health = await r.json()
            async with http.get(f"{base}/api/meters/sa") as r:
                sa = await r.json()
        assert any("badkey" in x and "ERR_BAD_APIKEY" in x for x in health["reasons"]), health
        assert "z" * 40 not in json.dumps(health)
        assert "AA123-88" in json.dumps(sa)
    finally:
        await silent.hang_up()                     # the hanging request fails at once; shutdown is quick
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def test_pollerd_poll_prints_every_device(tmp_path: Path, fakes) -> None:  # type: ignore[no-untyped-def]
    w, s = fakes
    cfg = config(tmp_path, w, s, 9)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pollerd", "poll", "--config", str(cfg), "sa", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.decode().splitlines()]
    assert {r["meter"] for r in rows} == {"sa:13-02-26472-AB", "sa:13-04-26051-AB", "sa:227714-4", "sa:227714-3",
                                          "sa:AA123-88", "sa:692083", "sa:G-1", "sa:700001.2", "sa:700001"}
    assert PASSWORD not in out.decode() + err.decode()
