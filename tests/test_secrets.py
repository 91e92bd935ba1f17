"""Secrets stay secret: a whole session at DEBUG (daemon, Mercury simulator with a distinctive password, API
tokens, HTTP sinks with a bearer token and a basic-auth password), every API endpoint including failed auth
and raw frames, a reload with a broken secret, `pollerd check` and config errors around secret keys; then
every log line, reply and output is searched for the secrets in plain, hex and base64 forms."""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
import sys

import aiohttp
import pytest
from aiohttp import web
from helpers import free_port, serve

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.errors import ConfigError
from pollerd.sim.mercury230 import SimBus, SimMeter, serve_tcp

METER_PW = "918273"            # Mercury digits: on the wire as 09 01 08 02 07 03
WRONG_PW = "564738"            # configured for a meter that refuses it: still a secret
ADMIN = "ADMIN-tok-5ecret-7f3a9c41"
READER = "READ-tok-5ecret-1b2c3d4e"
SINK_TOKEN = "SINK-bearer-5ecret-9e8d7c"
SINK_USER = "gw-uploader"
SINK_PW = "BASIC-pw-5ecret-c0ffee"
SECRETS = [METER_PW, WRONG_PW, ADMIN, READER, SINK_TOKEN, SINK_PW]


def forms(secret: str) -> set[str]:
    """The secret as text, its bytes in hex (spaced, unspaced, either case), Mercury digit bytes in hex,
    and base64 (how basic auth carries it)."""
    out = {secret, secret.encode().hex(), secret.encode().hex(" ")}
    if secret.isdigit():
        digits = bytes(int(c) for c in secret)
        out |= {digits.hex(), digits.hex(" "), digits.hex(":"), repr(digits)[2:-1]}
    out |= {base64.b64encode(secret.encode()).decode(), base64.b64encode(f"{SINK_USER}:{secret}".encode()).decode()}
    return out | {f.upper() for f in out}


def find_secrets(where: str, text: str) -> list[str]:
    return [f"{where}: {s!r} as {f!r}" for s in SECRETS for f in forms(s) if f in text]


class Upstream:
    def __init__(self) -> None:
        self.auth: set[str] = set()
        self.rows = 0

    async def ingest(self, request: web.Request) -> web.Response:
        self.auth.add(request.headers.get("Authorization", ""))
        self.rows += len((await request.json())["readings"])
        return web.json_response({"ok": True})


def config_text(sim_port: int, api_port: int, sink_url: str, *, meter_pw: str = METER_PW) -> str:
    return (
        f'[gateway]\nname = "gw"\n\n[store]\ncommit_interval = "100ms"\n\n'
        f'[api]\nlisten = "127.0.0.1:{api_port}"\n'
        f'tokens = [{{ token = "{ADMIN}", role = "admin" }}, {{ token = "{READER}", role = "read" }}]\n\n'
        f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {sim_port}\n\n'
        f'[[meters]]\nname = "m1"\nprotocol = "mercury230"\nline = "conv"\nconnection_address = 1\n'
        f'password = "{meter_pw}"\ninterval_time = "1s"\nwaiting_time = "500ms"\nread = ["energy"]\n\n'
        f'[[meters]]\nname = "m2"\nprotocol = "mercury230"\nline = "conv"\nconnection_address = 2\n'
        f'password = "{WRONG_PW}"\ninterval_time = "1s"\nwaiting_time = "500ms"\nread = ["energy"]\n\n'
        f'[[sinks]]\nname = "bearer"\ntype = "http"\nurl = "{sink_url}"\ntoken = "{SINK_TOKEN}"\n'
        f'retry_min = "100ms"\nretry_max = "500ms"\n\n'
        f'[[sinks]]\nname = "basic"\ntype = "http"\nurl = "{sink_url}"\nusername = "{SINK_USER}"\n'
        f'password = "{SINK_PW}"\nretry_min = "100ms"\nretry_max = "500ms"\n')


async def test_no_secret_in_logs_replies_or_outputs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    outputs: list[tuple[str, str]] = []
    meters = [SimMeter(address=1, serial="41000001", clock=lambda: 1_790_000_000.0, passwords={1: METER_PW}),
              SimMeter(address=2, serial="41000002", clock=lambda: 1_790_000_000.0)]
    sim = await serve_tcp(SimBus(meters), "127.0.0.1", 0)
    up = Upstream()
    app = web.Application()
    app.router.add_post("/ingest", up.ingest)
    runner, base = await serve(app)
    sink_url = f"{base}/ingest"
    path = tmp_path / "pollerd.toml"
    path.write_text(config_text(sim.sockets[0].getsockname()[1], free_port(), sink_url))
    daemon = Daemon(load_config(path), tmp_path / "state")
    task = asyncio.ensure_future(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        base = f"http://127.0.0.1:{daemon.api_port}"
        rt = daemon.runtime
        for _ in range(600):
            if rt.meters["m1"].polls >= 2 and rt.meters["m2"].failures >= 1 and up.rows and len(up.auth) == 2:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("session did not get going")
        # The secrets did reach the places they are meant for (so the search below is not vacuous).
        assert rt.meters["m1"].last_ok and meters[0].level == 1
        assert f"Bearer {SINK_TOKEN}" in up.auth
        assert "Basic " + base64.b64encode(f"{SINK_USER}:{SINK_PW}".encode()).decode() in up.auth
        admin, reader = {"Authorization": f"Bearer {ADMIN}"}, {"Authorization": f"Bearer {READER}"}
        calls = [
            ("GET", "/health", {}), ("GET", "/metrics", {}), ("GET", "/api/meters", {}),
            ("GET", "/api/meters/m1", {}), ("GET", "/api/meters/m2", {}), ("GET", "/api/readings", {}),
            ("GET", "/api/events", {}), ("GET", "/api/openapi.json", {}),
            ("GET", "/api/readings?meter=m1&per_page=1000", {"headers": admin}),
            ("POST", "/api/meters/m1/poll", {"headers": admin}),
            ("POST", "/api/meters/m2/poll", {"headers": admin}),
            ("POST", "/api/meters/m1/poll", {"headers": reader}),
            ("POST", "/api/meters/m1/poll", {"headers": {"Authorization": "Bearer wrong-token-0000000000"}}),
            ("POST", "/api/meters/m1/poll", {}),
            # open channel with the password, as an operator would type it: the reply masks it
            ("POST", "/api/meters/m1/raw", {"headers": admin, "json": {"command": "01 01 01 09 01 08 02 07 03"}}),
            ("POST", "/api/meters/m1/raw", {"headers": admin, "json": {"command": "01 08 00"}}),
            ("POST", "/api/meters/m1/raw", {"headers": admin, "json": {"command": "01 01 01 09 01 08 02 07"}}),
            ("POST", "/api/meters/m1/raw", {"headers": reader, "json": {"command": "01 08 00"}}),
            ("POST", "/api/meters/m1/raw", {"headers": admin, "data": b"{broken " + ADMIN.encode()}),
            ("GET", "/api/sinks", {}),   # the two sinks' state (bearer and basic auth)
        ]
        async with aiohttp.ClientSession() as http:
            for method, p, kw in calls:
                async with http.request(method, base + p, **kw) as r:
                    outputs.append((f"{method} {p} -> {r.status}", f"{dict(r.headers)}\n{await r.text()}"))
        statuses = [o[0].rsplit(" ", 1)[1] for o in outputs]
        assert statuses[9:15] == ["200", "200", "403", "401", "401", "200"], outputs[9:15]
        # A reload whose meter password is malformed is refused; its reason is in /health, shown below.
        path.write_text(config_text(sim.sockets[0].getsockname()[1], daemon.config.api.port, sink_url,
                                    meter_pw=METER_PW + "9"))
        assert await daemon.reload() is False
        async with aiohttp.ClientSession() as http, http.get(base + "/health") as r:
            text = await r.text()
            outputs.append(("health after a failed reload", text))
        assert "password must be exactly 6 digits" in text
        path.write_text(config_text(sim.sockets[0].getsockname()[1], daemon.config.api.port, sink_url))
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        sim.close()
        await runner.cleanup()

    # pollerd check, and config errors around secret keys (through the CLI: exit 78 and its stderr).
    check = subprocess.run([sys.executable, "-m", "pollerd", "check", str(path)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    outputs.append(("pollerd check", check.stdout + check.stderr))
    good = path.read_text()
    broken = {
        "7 digits": good.replace(f'password = "{METER_PW}"', f'password = "{METER_PW}9"'),
        "hex": good.replace(f'password = "{METER_PW}"', f'password = "{METER_PW}zz"\npassword_encoding = "hex"'),
        "short token": good.replace(ADMIN, ADMIN[:12]),
        "typo key": good.replace(f'password = "{METER_PW}"', f'passwrd = "{METER_PW}"'),
        "both auths": good.replace(f'token = "{SINK_TOKEN}"', f'token = "{SINK_TOKEN}"\npassword = "{SINK_PW}"'),
        "two passwords": good.replace(f'password = "{METER_PW}"',
                                      f'password = "{METER_PW}"\npassword_file = "meter-pw.txt"'),
        "not a string": good.replace(f'password = "{SINK_PW}"', f'password = ["{SINK_PW}"]'),
        "toml syntax": good.replace(f'password = "{METER_PW}"', f'password = "{METER_PW}'),
        "missing file": good.replace(f'password = "{METER_PW}"', 'password_file = "missing-meter-pw.secret"'),
    }
    for what, text in broken.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(bad)
        outputs.append((f"ConfigError {what}", str(err.value)))
        run = subprocess.run([sys.executable, "-m", "pollerd", "check", str(bad)], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 78, (what, run.stdout, run.stderr)
        outputs.append((f"pollerd check {what}", run.stdout + run.stderr))

    logs = [(f"log {r.name}", r.getMessage() + (r.exc_text or "")) for r in caplog.records]
    assert len(logs) > 50   # DEBUG really was on
    leaks = [leak for where, text in outputs + logs for leak in find_secrets(where, text)]
    assert leaks == []
    # The raw open-channel reply masked what it echoed.
    raw_open = next(text for where, text in outputs if where.startswith("POST /api/meters/m1/raw -> 200"))
    assert "** ** ** ** ** **" in raw_open
