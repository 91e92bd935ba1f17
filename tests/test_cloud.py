"""Cloud-source plumbing (pollerd/drivers/cloud.py, daemon and CLI without a line): the fetch helpers turn
what a misbehaving server sends into clear, scrubbed errors, and a line-less meter runs in the daemon and in
`pollerd poll`. The driver used for the daemon/CLI part is a small test driver registered for the test only."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from helpers import serve

from pollerd.catalog import CATALOG, CLOUD_WAITING_TIME, Protocol, ProtocolSpec, Ref
from pollerd.commands import cli
from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.drivers import cloud
from pollerd.drivers.base import CloudDriverContext, PollResult
from pollerd.errors import CloudAuthError, CloudError, CloudUnreachable
from pollerd.model import Reading
from pollerd.store import Store

SECRET = "S3cr3t-Pa$$"


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    return await serve(app, shutdown_timeout=0.5)


@pytest.fixture
async def server():
    """Routes that misbehave the ways vendor servers do."""
    async def good(request: web.Request) -> web.Response:
        return web.json_response({"data": [1, 2, 3]})

    async def html500(request: web.Request) -> web.Response:
        page = (f"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1>"
                f"<p>upstream failed for password={SECRET}</p></body></html>")
        return web.Response(status=502, text=page, content_type="text/html")

    async def html200(request: web.Request) -> web.Response:
        return web.Response(text="<!DOCTYPE html><html><title>Maintenance</title>back soon</html>",
                            content_type="text/html")

    async def truncated(request: web.Request) -> web.Response:
        return web.Response(body=b'{"data": [{"id": 1}, {"id"', content_type="application/json")

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b'{"data": nope}', content_type="application/json")

    async def denied(request: web.Request) -> web.Response:
        return web.json_response({"errors": [f"Invalid login for {SECRET}"]}, status=401)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b" " * 1024)
        await resp.write_eof()
        return resp

    app = web.Application()
    for path, h in [("/good", good), ("/html500", html500), ("/html200", html200), ("/truncated", truncated),
                    ("/garbage", garbage), ("/denied", denied), ("/slow", slow), ("/huge", huge)]:
        app.router.add_get(path, h)
    runner, url = await _serve(app)
    yield url
    await runner.cleanup()


class _Meter:
    waiting_time = 1.0
    options = None


async def _get(url: str, **kw: Any) -> Any:
    async with cloud.make_session(_Meter()) as s:
        return (await cloud.fetch_json(s, "GET", url, what="test page", secrets=[SECRET], **kw))[1]


async def test_fetch_json_returns_the_document(server: str) -> None:
    assert await _get(server + "/good") == {"data": [1, 2, 3]}


async def test_ca_file_is_trusted_in_addition_to_the_system_cas(tmp_path: Path) -> None:
    import ssl

    from tls_helpers import make_pki
    pki = make_pki(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    async def good(request: web.Request) -> web.Response:
        return web.json_response({"ok": 1})
    app = web.Application()
    app.router.add_get("/good", good)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/good"
    try:
        with_ca = cloud.CloudOptions(ca_file=str(pki.ca))
        client_ctx = cloud._ssl_of(with_ca)
        assert isinstance(client_ctx, ssl.SSLContext)
        system = ssl.create_default_context().cert_store_stats()["x509_ca"]
        assert client_ctx.cert_store_stats()["x509_ca"] == system + 1  # added, not instead
        for options, ok in ((with_ca, True), (None, False), (cloud.CloudOptions(verify_tls=False), True)):
            meter = _Meter()
            meter.options = options  # type: ignore[assignment]
            async with cloud.make_session(meter) as s:
                if ok:
                    assert (await cloud.fetch_json(s, "GET", url, what="t", secrets=[]))[1] == {"ok": 1}
                else:
                    with pytest.raises(CloudError, match="CERTIFICATE_VERIFY_FAILED"):
                        await cloud.fetch_json(s, "GET", url, what="t", secrets=[])
    finally:
        await runner.cleanup()


async def test_html_error_page_is_a_clear_scrubbed_error(server: str) -> None:
    with pytest.raises(CloudError) as ei:
        await _get(server + "/html500")
    msg = str(ei.value)
    assert ei.value.status == 502 and "test page: HTTP 502 (text/html)" in msg
    assert "502 Bad Gateway" in msg and "upstream failed" in msg
    assert SECRET not in msg and "***" in msg and "<h1>" not in msg


async def test_html_with_status_200_is_not_json(server: str) -> None:
    with pytest.raises(CloudError, match=r'expected JSON, got text/html \(HTTP 200\): "Maintenance'):
        await _get(server + "/html200")


async def test_truncated_and_invalid_json_are_named(server: str) -> None:
    with pytest.raises(CloudError, match=r"test page: truncated JSON \(26 bytes"):
        await _get(server + "/truncated")
    with pytest.raises(CloudError, match=r"test page: invalid JSON"):
        await _get(server + "/garbage")


async def test_auth_status_raises_auth_error_or_is_returned_when_ok(server: str) -> None:
    with pytest.raises(CloudAuthError) as ei:
        await _get(server + "/denied", auth_status=(401,))
    assert ei.value.status == 401 and SECRET not in str(ei.value)
    async with cloud.make_session(_Meter()) as s:
        reply, doc = await cloud.fetch_json(s, "GET", server + "/denied", what="x", ok=(401,))
    assert reply.status == 401 and doc is None


async def test_no_reply_is_unreachable(server: str) -> None:
    with pytest.raises(CloudUnreachable, match="test page: no reply within 1 s"):
        await _get(server + "/slow")
    sock_port = server.rsplit(":", 1)[1]
    with pytest.raises(CloudUnreachable, match="test page: .*"):
        # a port nobody listens on: bind, note the port, close
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        assert str(port) != sock_port
        await _get(f"http://127.0.0.1:{port}/x")


async def test_body_cap(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cloud, "MAX_BODY", 10_000)
    with pytest.raises(CloudError, match="exceeds the 10000 byte cap"):
        await _get(server + "/huge")


def test_scrub_removes_plain_and_url_encoded_secrets() -> None:
    text = f"a {SECRET} b S3cr3t-Pa%24%24 c"
    assert cloud.scrub(text, [SECRET, None, ""]) == "a *** b *** c"


def test_device_name() -> None:
    assert cloud.device_name("acct", 12) == "acct:12"
    assert cloud.device_name("acct", " a b\n") == "acct:a_b"
    for bad in ("", "  ", None, 1.5, True):
        with pytest.raises(CloudError):
            cloud.device_name("acct", bad)


# -- a line-less meter in the daemon and the CLI -----------------------------------------------------------

class _TestCloudDriver:
    """Two devices per account; `password = "wrong"` behaves like a refused sign-in."""

    def __init__(self, ctx: CloudDriverContext) -> None:
        assert isinstance(ctx, CloudDriverContext)  # the daemon and the CLI give a cloud source no line
        self.ctx = ctx

    async def poll(self, ts: int) -> PollResult:
        m = self.ctx.meter
        if m.password.reveal() == "wrong":
            cloud.raise_alarm(self.ctx.state, "auth", "sign-in refused")
            return PollResult((), (), False, "sign-in refused")
        cloud.clear_alarm(self.ctx.state, "auth")
        cloud.set_devices(self.ctx.state, {"7": {"name": "boiler"}, "8": {"name": "flat"}})
        return PollResult(tuple(Reading(cloud.device_name(m.name, d), "V", "hourly", ts - ts % 3600, 1.5, "m³")
                                for d in (7, 8)))

    async def probe(self) -> bool:
        return self.ctx.meter.password.reveal() != "wrong"

    async def close(self) -> None:
        pass


@pytest.fixture
def testcloud(monkeypatch: pytest.MonkeyPatch) -> None:
    # The `pollerd poll` command below reads the process-wide catalog: this test adds its protocol there.
    spec = ProtocolSpec(Protocol.SAURES, read_kinds=("hourly",), default_read=("hourly",),
                        driver=Ref(__name__, "_TestCloudDriver"), cloud_keys=("email", "password"),
                        waiting_time=CLOUD_WAITING_TIME)
    monkeypatch.setitem(CATALOG, "testcloud", spec)  # type: ignore[index]


def _config(tmp_path: Path, *, accounts: dict[str, str], api: bool = False) -> Path:
    text = f'[gateway]\nname = "gw"\nspread = "1s"\n\n[store]\ncommit_interval = "100ms"\n\n' \
           f'[api]\nenabled = {str(api).lower()}\n\n'
    for name, pw in accounts.items():
        text += f'[[meters]]\nname = "{name}"\nprotocol = "testcloud"\nurl = "http://127.0.0.1:9/api"\n' \
                f'email = "ops@example.org"\npassword = "{pw}"\ninterval_time = "1s"\n\n'
    p = tmp_path / "pollerd.toml"
    p.write_text(text)
    return p


def test_cloud_entry_defaults_to_a_longer_waiting_time(tmp_path: Path, testcloud: None) -> None:
    cfg = load_config(_config(tmp_path, accounts={"a": "pw"}), environ={})
    assert cfg.meters[0].waiting_time == CLOUD_WAITING_TIME
    p = tmp_path / "pollerd.toml"
    p.write_text(p.read_text() + 'waiting_time = "5s"\n')
    assert load_config(p, environ={}).meters[0].waiting_time == 5.0


async def test_daemon_runs_line_less_meters_and_health_shows_a_refused_account(tmp_path: Path,
                                                                              testcloud: None) -> None:
    cfg = load_config(_config(tmp_path, accounts={"good": "pw", "bad": "wrong"}, api=True), environ={})
    cfg = dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, port=0))  # a free port
    daemon = Daemon(cfg, tmp_path / "state")
    task = asyncio.ensure_future(daemon.run())
    try:
        meters: dict[str, Any] = {}
        health: dict[str, Any] = {}
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                await asyncio.sleep(0.05)
                if task.done() or daemon.api_port is None:
                    continue
                base = f"http://127.0.0.1:{daemon.api_port}"
                async with http.get(base + "/api/meters") as r:
                    meters = {m["name"]: m for m in orjson.loads(await r.read())["data"]} \
                        if r.status == 200 else {}
                async with http.get(base + "/health") as r:
                    health = orjson.loads(await r.read())
                if meters.get("good", {}).get("readings", 0) >= 2 and meters.get("bad", {}).get("polls", 0):
                    break
            else:
                pytest.fail(f"no cycle of both accounts: {meters}")
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
    assert meters["good"]["line"] == "" and set(meters["good"]["devices"]) == {"7", "8"}
    assert meters["bad"]["alarms"] == {"auth": "sign-in refused"}
    assert "meter bad auth: sign-in refused" in health["reasons"]
    assert not any("line" in r for r in health["reasons"])
    async with await Store.open_readonly(tmp_path / "state" / "pollerd.db") as store:
        rows, _ = await store.query_readings(meter="good:7")
        assert rows and rows[0].value == 1.5 and rows[0].archive == "hourly"


def test_poll_command_prints_every_device_of_a_cloud_entry(tmp_path: Path, testcloud: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, accounts={"acct": "pw", "bad": "wrong"})
    assert cli.main(["poll", "--config", str(path), "acct", "--json"]) == 0
    out = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["meter"] for r in out) == ["acct:7", "acct:8"]
    assert cli.main(["poll", "--config", str(path), "bad", "--json"]) == 1
    assert "bad: sign-in refused" in capsys.readouterr().err
    assert cli.main(["raw", "--config", str(path), "acct", "01 02"]) == 1
    assert "cloud source" in capsys.readouterr().err
