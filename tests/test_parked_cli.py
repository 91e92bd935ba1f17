"""`pollerd parked`: list the batches a receiver refused for good, send one again after the receiver was fixed,
or release one; against a real store and a local HTTP receiver."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from helpers import serve

from pollerd.commands import cli
from pollerd.model import Reading
from pollerd.store import Store


class Receiver:
    def __init__(self) -> None:
        self.status = 422
        self.got: list[dict] = []  # type: ignore[type-arg]
        self.events: list[dict] = []  # type: ignore[type-arg]

    async def ingest(self, request: web.Request) -> web.Response:
        if self.status != 200:
            return web.Response(status=self.status, text="unknown meter m1")
        body = orjson.loads(await request.read())
        self.got.extend(body.get("readings", []))
        self.events.extend(body.get("events", []))
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver():
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/ingest", rec.ingest)
    runner, base = await serve(app, shutdown_timeout=0.5)
    rec.url = f"{base}/ingest"  # type: ignore[attr-defined]
    yield rec
    await runner.cleanup()


def readings(n: int) -> list[Reading]:
    return [Reading("m1", "A+", "profile", 1_700_000_000 + 1800 * i, 10.0 + i, "Wh") for i in range(n)]


async def pollerd(*args: str) -> int:
    return await asyncio.to_thread(cli.main, list(args))


async def test_list_retry_and_release(tmp_path: Path, receiver: Receiver, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "pollerd.toml"
    cfg.write_text(f'[gateway]\nname = "gw"\n\n[[sinks]]\nname = "up"\ntype = "http"\nurl = "{receiver.url}"\n'
                   f'token = "secret-token-123"\n', encoding="utf-8")
    store = await Store.open(tmp_path / "pollerd.db", commit_interval=0.01)
    await store.write(readings(6))
    await store.flush()
    await store.park("up", 1, 3, "sink 'up': HTTP 422, expected 2xx; body: 'unknown meter m1'", advance=True)
    await store.park("up", 4, 6, "sink 'up': HTTP 422 again", advance=True)
    await store.close()
    base = ["parked", "--config", str(cfg), "--state-dir", str(tmp_path)]

    assert await pollerd(*base) == 0
    out = capsys.readouterr().out
    assert "    1  up               seq 1..3" in out and "unknown meter m1" in out and "    2  up" in out
    # The receiver still refuses: the batch stays parked, nothing else happens.
    assert await pollerd(*base, "--retry", "1") == 1
    out = capsys.readouterr().out
    assert "not delivered, still parked" in out and "HTTP 422" in out and receiver.got == []
    assert "secret-token-123" not in out
    # Fixed: delivered in order, then forgotten.
    receiver.status = 200
    assert await pollerd(*base, "--retry", "1") == 0
    assert "3 readings delivered to up" in capsys.readouterr().out
    assert [r["value"] for r in receiver.got] == [10.0, 11.0, 12.0]
    assert await pollerd(*base, "--release", "2") == 0
    assert await pollerd(*base, "--json") == 0
    assert capsys.readouterr().out.endswith("no longer counts it\n")  # nothing listed after the release line
    assert await pollerd(*base, "--release", "2") == 1
    err = capsys.readouterr().err
    assert "no parked batch 2" in err and "secret-token-123" not in err


async def test_retry_of_a_parked_event_batch(tmp_path: Path, receiver: Receiver, capsys) -> None:  # type: ignore[no-untyped-def]
    from pollerd.model import Event
    cfg = tmp_path / "pollerd.toml"
    cfg.write_text(f'[gateway]\nname = "gw"\n\n[[sinks]]\nname = "up"\ntype = "http"\nurl = "{receiver.url}"\n',
                   encoding="utf-8")
    store = await Store.open(tmp_path / "pollerd.db", commit_interval=0.01)
    await store.write([], [Event("m1", "power_off", 1_700_000_000 + i, None, "") for i in range(3)])
    await store.flush()
    await store.park("up", 1, 3, "sink 'up': HTTP 422", advance=True, kind="events")
    await store.close()
    base = ["parked", "--config", str(cfg), "--state-dir", str(tmp_path)]
    assert await pollerd(*base) == 0
    assert "    1  up               event seq 1..3" in capsys.readouterr().out
    receiver.status = 200
    assert await pollerd(*base, "--retry", "1") == 0
    assert "3 events delivered to up" in capsys.readouterr().out
    assert [e["ts_start"] for e in receiver.events] == [1_700_000_000, 1_700_000_001, 1_700_000_002]
    assert receiver.got == []
