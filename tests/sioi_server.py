"""A local stand-in for АС СиОИ (seed 003), on 127.0.0.1 with a free port.

What it models: login with login/password returning a token that expires (then 401 until a new login); upload
of an XML collection document for a form code, queued as a job with an id; the job's status ("queued" for
``process_time``, then "loaded", or "failed" with an error list when the document is not well-formed XML, names
another form code, or ``reject_next`` says so); finished jobs forgotten ``retention`` seconds after they
finish (seed 003: at most 2 hours; short in tests). Faults on demand per call: an HTML page, garbage, a hang,
or any HTTP status. Every upload is counted by the SHA-256 of its file, so a test can prove nothing was sent
twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from aiohttp import web

HTML_PAGE = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
             b"<body><h1>nginx</h1></body></html>")


@dataclass
class Upload:
    sha256: str
    form_code: str
    filename: str
    body: bytes
    job_id: str | None = None


@dataclass
class Job:
    id: str
    created: float
    errors: list[str]
    finished: float | None = None


@dataclass
class FakeSioi:
    login: str = "gw@example.org"
    password: str = "S3cret-pass-word"
    forms: tuple[str, ...] = ("F-DAILY",)
    token_ttl: float = 3600.0
    process_time: float = 0.3
    retention: float = 7200.0
    url: str = ""
    # call ("auth", "upload", "status") -> faults to serve on the next calls, in order: "html", "garbage",
    # "hang", "drop" (close the connection), or an int HTTP status.
    faults: dict[str, list[object]] = field(default_factory=dict)
    reject_next: list[list[str]] = field(default_factory=list)   # error lists for the next uploads' jobs
    hold_upload: asyncio.Event | None = None   # hold each upload's reply (after recording it) until set
    upload_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    uploads: list[Upload] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1001))

    # -- plumbing -------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/auth/login", self.auth)
        app.router.add_post("/api/documents/upload", self.upload)
        app.router.add_get("/api/documents/status/{job_id}", self.status)
        return app

    async def _fault(self, call: str, request: web.Request) -> web.StreamResponse | None:
        self.calls[call] = self.calls.get(call, 0) + 1
        queue = self.faults.get(call)
        if not queue:
            return None
        fault = queue.pop(0)
        if fault == "html":
            return web.Response(body=HTML_PAGE, content_type="text/html")
        if fault == "garbage":
            return web.Response(body=b"\x00\x17garbage{{", content_type="application/json")
        if fault == "hang":
            await asyncio.sleep(3600)
        if fault == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        assert isinstance(fault, int)
        return web.json_response({"errors": [f"fault {fault}"]}, status=fault)

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        expires = self.tokens.get(token)
        return expires is not None and expires > time.monotonic()

    def uploads_of(self, sha256: str) -> int:
        return sum(1 for u in self.uploads if u.sha256 == sha256)

    def max_uploads_of_one_document(self) -> int:
        return max((self.uploads_of(u.sha256) for u in self.uploads), default=0)

    # -- the three calls ------------------------------------------------------------------------------------

    async def auth(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault("auth", request)
        if fault is not None:
            return fault
        creds = await request.json()
        if creds.get("login") != self.login or creds.get("password") != self.password:
            return web.json_response({"errors": ["Неверный логин или пароль"]}, status=401)
        token = secrets.token_hex(16)
        self.tokens[token] = time.monotonic() + self.token_ttl
        return web.json_response({"token": token})

    async def upload(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault("upload", request)
        if fault is not None:
            return fault
        if not self._authorised(request):
            return web.json_response({"errors": ["token expired"]}, status=401)
        form = await request.post()
        form_code = str(form.get("formCode", ""))
        file = form.get("file")
        if not isinstance(file, web.FileField):
            return web.json_response({"errors": ["no file"]}, status=400)
        body = file.file.read()
        if form_code not in self.forms:
            return web.json_response({"errors": [f"Форма сбора {form_code!r} не найдена"]}, status=400)
        up = Upload(hashlib.sha256(body).hexdigest(), form_code, file.filename, body)
        self.uploads.append(up)
        errors = self.reject_next.pop(0) if self.reject_next else []
        try:
            ET.fromstring(body)
        except ET.ParseError as exc:
            errors = [f"XML: {exc}"]
        job = Job(str(next(self._ids)), time.monotonic(), errors)
        self.jobs[job.id] = job
        up.job_id = job.id
        self.upload_arrived.set()
        if self.hold_upload is not None:
            await self.hold_upload.wait()
        return web.json_response({"jobId": job.id})

    async def status(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault("status", request)
        if fault is not None:
            return fault
        if not self._authorised(request):
            return web.json_response({"errors": ["token expired"]}, status=401)
        now = time.monotonic()
        job = self.jobs.get(request.match_info["job_id"])
        if job is not None and job.finished is None and now >= job.created + self.process_time:
            job.finished = job.created + self.process_time
        if job is None or (job.finished is not None and now > job.finished + self.retention):
            return web.json_response({"errors": ["Задание не найдено"]}, status=404)
        if job.finished is None:
            return web.json_response({"status": "processing"})
        if job.errors:
            return web.json_response({"status": "failed", "errors": [{"code": "E1", "message": e}
                                                                      for e in job.errors]})
        return web.json_response({"status": "loaded"})


async def start(server: FakeSioi) -> web.AppRunner:
    runner = web.AppRunner(server.app(), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    return runner
