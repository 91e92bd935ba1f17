"""The local API against its own OpenAPI document: schemathesis generates requests (valid and invalid) for
every operation and sends them to a real daemon on 127.0.0.1 polling a simulated Mercury 230; every reply
must be a declared status with a declared content type and body, and never a 5xx."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import schemathesis
from helpers import free_port
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.openapi import document
from pollerd.sim.mercury230 import SimBus, SimMeter, serve_tcp

ADMIN = "openapi-admin-0123456789"
READER = "openapi-read-0123456789"

schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A daemon (and its meter simulator) on its own event loop in a thread: schemathesis calls are blocking."""
    tmp: Path = tmp_path_factory.mktemp("openapi")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        meter = SimMeter(address=1, serial="41000001", clock=lambda: 1_790_000_000.0)
        server = await serve_tcp(SimBus([meter]), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        api_port = free_port()
        cfg = tmp / "p.toml"
        cfg.write_text(
            f'[api]\nlisten = "127.0.0.1:{api_port}"\ntokens = [{{ token = "{ADMIN}", role = "admin" }}, '
            f'{{ token = "{READER}", role = "read" }}]\n\n'
            f'[[meters]]\nname = "m1"\nprotocol = "mercury230"\nip_address = "127.0.0.1"\nport = {port}\n'
            f'connection_address = 1\ninterval_time = "1m"\nread = ["energy"]\n')
        d = Daemon(load_config(cfg), tmp / "state")
        box["daemon"] = d
        task = asyncio.ensure_future(d.run())
        await asyncio.wait([task, asyncio.ensure_future(d.ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        box["url"] = f"http://127.0.0.1:{d.api_port}"
        ready.set()
        try:
            await task
        finally:
            server.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30), "daemon did not start"
    yield box["url"]
    loop.call_soon_threadsafe(box["daemon"].request_stop)  # type: ignore[attr-defined]
    thread.join(30)
    assert not thread.is_alive()
    loop.close()


# positive_data_acceptance is left out on purpose: a schema-valid request may still be refused with a
# documented 4xx (a `from` after `to`, a meter that does not exist), which that check counts as a failure.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_data_rejection, unsupported_method]


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_matches_its_openapi_document(case, live):  # type: ignore[no-untyped-def]
    # Tokens are configured: the data endpoints need one of role read, the write endpoints one of role admin.
    headers = {"Authorization": f"Bearer {ADMIN if case.method.upper() == 'POST' else READER}"}
    case.call_and_validate(base_url=live, headers=headers, checks=CHECKS, timeout=30)
