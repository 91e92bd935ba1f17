"""A local WebMeters API (seed 001) for tests: XML-RPC over HTTP on 127.0.0.1, built on the standard library's
marshalling, with the document's fault codes and a few ways to misbehave."""

from __future__ import annotations

import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from helpers import serve

KEY = "k" * 20 + "0123456789abcdefghij"   # 40 characters, like a real key
PHONE = "9181234567"
SMS = "4321"


@dataclass
class FakeWebmeters:
    api_key: str = KEY
    orgs: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[int, list[dict[str, Any]]] = field(default_factory=dict)     # org id -> groups
    devices: dict[int, list[dict[str, Any]]] = field(default_factory=dict)    # group id -> devices
    ellis: bytes = "Л/С;Счётчик;Показание\r\n12345;1001;123.5\r\n".encode("cp1251")
    denied_groups: set[int] = field(default_factory=set)    # fault 3
    missing_groups: set[int] = field(default_factory=set)   # fault 2
    # method name, or "method id" for one group/org -> "html" | "truncated" | "garbage" | "http500" |
    # "hangup": those replies misbehave
    broken: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    key_requests: dict[str, str] = field(default_factory=dict)   # request id -> phone

    def __post_init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/1.0/", self.handle)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        self.runner, base = await serve(self.app)
        self.url = f"{base}/1.0/"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- XML-RPC ---------------------------------------------------------------------------------------

    @staticmethod
    def fault(code: int, text: str) -> web.Response:
        return web.Response(body=xmlrpc.client.dumps(xmlrpc.client.Fault(code, text), methodresponse=True),
                            content_type="text/xml")

    @staticmethod
    def ok(value: Any) -> web.Response:
        return web.Response(body=xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True),
                            content_type="text/xml")

    async def handle(self, request: web.Request) -> web.Response:
        params, method = xmlrpc.client.loads(await request.read())
        self.calls.append(method)
        mode = self.broken.get(method) or (self.broken.get(f"{method} {params[1]}") if len(params) > 1 else None)
        if mode == "hangup":
            assert request.transport is not None
            request.transport.close()  # no reply at all: the server went away mid-walk
            return web.Response()
        if mode == "html":
            return web.Response(text=f"<html><head><title>502 Bad Gateway</title></head><body>nginx "
                                     f"{params[0] if params else ''}</body></html>", content_type="text/html")
        if mode == "http500":
            return web.Response(status=500, text="Internal Server Error", content_type="text/plain")
        if mode == "truncated":
            whole = xmlrpc.client.dumps((self._dispatch(method, params),), methodresponse=True).encode()
            return web.Response(body=whole[: len(whole) // 2], content_type="text/xml")
        if mode == "garbage":
            return self.ok("not an array")
        if method in ("apiSendKeyRequest", "apiGetKey"):
            return self._key_flow(method, params)
        if not params or params[0] != self.api_key:
            # Real servers echo what they were given; the driver must scrub it.
            return self.fault(1, f"Bad apiKey {params[0] if params else ''}")
        if method == "exportEllisFile":
            return web.Response(body=self.ellis, content_type="text/plain", charset="windows-1251")
        return self._reply(method, params)

    def _reply(self, method: str, params: tuple[Any, ...]) -> web.Response:
        if method == "deviceGetValues":
            gid = params[1]
            if gid in self.denied_groups:
                return self.fault(3, "Access denied")
            if gid in self.missing_groups or not any(gid == g["id"] for gs in self.groups.values() for g in gs):
                return self.fault(2, "Item not found")
        if method == "userGetGroups" and params[1] not in self.groups:
            return self.fault(2, "Item not found")
        return self.ok(self._dispatch(method, params))

    def _dispatch(self, method: str, params: tuple[Any, ...]) -> Any:
        if method == "userGetOrgList":
            return self.orgs
        if method == "userGetGroups":
            return self.groups.get(params[1], [])
        if method == "deviceGetValues":
            return self.devices.get(params[1], [])
        return ""

    def _key_flow(self, method: str, params: tuple[Any, ...]) -> web.Response:
        if method == "apiSendKeyRequest":
            if params != (PHONE,):
                return self.fault(2, "Phone not found")
            rid = "r" * 40
            self.key_requests[rid] = params[0]
            return self.ok(rid)
        rid, code = params
        if rid not in self.key_requests or code != SMS:
            return self.fault(3, "Wrong SMS code")
        return self.ok(self.api_key)


def sample(fake: FakeWebmeters) -> FakeWebmeters:
    """Two organisations: an electricity group with a two-tariff meter and a two-channel pulse counter, a
    child group listing the same meter again, and a water group; ids as ints and as digit strings."""
    fake.orgs = [{"id": 1, "inn": "7701234567", "name": "ТСЖ Ромашка"}, {"id": "2", "inn": "", "name": "УК"}]
    fake.groups = {1: [{"id": 10, "parentId": 0, "name": "Дом 1"}, {"id": 11, "parentId": 10, "name": "Подъезд 1"}],
                   2: [{"id": 20, "parentId": 0, "name": "Вода"}]}
    elec = {"id": 1001, "deviceType": "Меркурий 200", "channelNumber": 0, "flat": "12",
            "values": [{"name": "T1", "value": 1234.5, "units": "кВтч"},
                       {"name": "T2", "value": "567,25", "units": "кВт*ч"}]}
    pulse = [{"id": 1002, "deviceType": "Пульсар", "channelNumber": ch, "flat": "14",
              "values": [{"name": "V", "value": 10.0 * ch, "units": "м3"}]} for ch in (1, 2)]
    fake.devices = {10: [elec, *pulse], 11: [elec],
                    20: [{"id": "2001", "deviceType": "ВСХ", "channelNumber": 0, "flat": "",
                          "values": [{"name": "Показание", "value": "1500", "units": "л"},
                                     {"name": "Т", "value": "", "units": "°C"}]}]}
    return fake
