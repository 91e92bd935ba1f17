"""АС СиОИ HTTP client: log in, upload a document for a form code, poll a job's status. Its errors tell
what certainly did not deliver a document (retried) from what may have (ambiguous, never re-sent).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from pollerd.config.model import SinkConfig
from pollerd.errors import SinkError
from pollerd.push import TransientSinkError
from pollerd.push.http import ssl_option
from pollerd.text import scrub

from .options import SioiOptions

log = logging.getLogger("pollerd.push.sioi")


_BODY_READ = 64 * 1024    # the most of a reply read: a status with a long error list fits, a runaway does not
_SNIPPET = 200
_WS = re.compile(r"\s+")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class Rejected(SinkError):
    """The service refused the document on its content (upload 4xx): not accepted, errors attached."""

    def __init__(self, message: str, errors: list[str]) -> None:
        super().__init__(message)
        self.errors = errors


class Ambiguous(SinkError):
    """The upload went out but its outcome is unknown: the service may hold the document."""


class JobUnknown(SinkError):
    """The status call says the job id is not (or no longer) known."""


def _field(doc: object, path: str) -> object:
    """``doc["a"]["b"]`` for ``"a.b"``; None when any step is missing."""
    for part in path.split("."):
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        else:
            return None
    return doc


def _error_list(value: object) -> list[str]:
    """The service's error list as lines: strings, or objects such as {"code": .., "message": ..}."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append("; ".join(f"{k}: {v}" for k, v in item.items()))
        else:
            out.append(str(item))
    return out


class _NotSent(Exception):
    """The request certainly did not reach the service (no connection)."""


class _NoAnswer(Exception):
    """The request may have reached the service but no (complete) answer came back."""


class SioiClient:
    """The three calls of seed 003 over aiohttp: login, upload, job status. Secrets never reach a message."""

    def __init__(self, sink: SinkConfig, opts: SioiOptions) -> None:
        self._sink = sink
        self._opts = opts
        self._base = sink.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._logged_in = False
        self._secrets: tuple[str, ...] = tuple(s for s in (sink.password.reveal() if sink.password else "",) if s)
        self.requests = 0

    def _scrub(self, text: str) -> str:
        # also the URL-encoded spellings: a form login (auth_format = "form") echoed back shows those
        return scrub(text, (*self._secrets, *((self._token,) if self._token else ())))

    def _ssl(self) -> ssl.SSLContext | bool:
        return ssl_option(self._sink)  # a sioi sink takes no client_cert: verify_tls and ca_file only

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            try:
                ssl_opt = self._ssl()
            except (OSError, ssl.SSLError) as exc:
                raise TransientSinkError(f"cannot load ca_file {self._sink.ca_file!r}: {exc}", kind="tls") from None
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_opt, limit=2),
                # unsafe: a session cookie from a service addressed by IP must be kept too.
                cookie_jar=aiohttp.CookieJar(unsafe=True),
                headers={"User-Agent": "pollerd"})
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        self._token, self._logged_in = None, False
        if session is not None:
            await session.close()

    async def _request(self, method: str, path: str, **kw: Any) -> tuple[int, bytes, str]:
        session = self._open()
        headers = kw.pop("headers", {})
        if self._token is not None:
            headers[self._opts.token_header] = self._opts.token_prefix + self._token
        self.requests += 1
        # The connect phase gets half the time: a connect timeout then says "never sent", while running out
        # of the total time means the request went out and its fate is unknown.
        limit = aiohttp.ClientTimeout(total=self._sink.timeout, connect=self._sink.timeout / 2)
        try:
            async with session.request(method, self._base + path, headers=headers, allow_redirects=False,
                                       timeout=limit, **kw) as resp:
                chunks: list[bytes] = []
                size = 0
                while size < _BODY_READ:
                    chunk = await resp.content.read(_BODY_READ - size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                return resp.status, b"".join(chunks), resp.headers.get("Content-Type", "")
        except asyncio.CancelledError:
            raise
        except _CONNECT_ERRORS as exc:
            raise _NotSent(self._scrub(f"{method} {path}: cannot connect: {exc or type(exc).__name__}")) from None
        except (asyncio.TimeoutError, TimeoutError):
            raise _NoAnswer(f"{method} {path}: no answer within {self._sink.timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _NoAnswer(self._scrub(f"{method} {path}: {type(exc).__name__}: {exc}")) from None

    def _describe(self, status: int, body: bytes, ctype: str) -> str:
        """What a reply said, short: the service's error text, an HTML page's title, or the start of it."""
        doc = _json_or_none(body)
        if isinstance(doc, dict):
            errs = _error_list(_field(doc, self._opts.errors_field)) or _error_list(
                doc.get("message") or doc.get("error"))
            if errs:
                return self._scrub("; ".join(errs))[:_SNIPPET * 2]
        m = _TITLE.search(body)
        if m or b"<html" in body[:512].lower():
            title = _WS.sub(" ", m.group(1).decode("utf-8", "replace")).strip() if m else ""
            return f"an HTML page{': ' + repr(title) if title else ''} ({ctype or 'no content type'})"
        return repr(self._scrub(_WS.sub(" ", body.decode("utf-8", "replace")).strip())[:_SNIPPET])

    def _json(self, status: int, body: bytes, ctype: str, what: str) -> dict[str, Any]:
        doc = _json_or_none(body)
        if not isinstance(doc, dict):
            raise TransientSinkError(f"{what}: HTTP {status} but not a JSON object: "
                                     f"{self._describe(status, body, ctype)}", kind="garbage", status=status)
        return doc

    # -- login ------------------------------------------------------------------------------------------

    async def login(self) -> None:
        o = self._opts
        self._token, self._logged_in = None, False
        creds = {o.login_field: self._sink.username or "",
                 o.password_field: self._sink.password.reveal() if self._sink.password else ""}
        kw: dict[str, Any] = {"json": creds} if o.auth_format == "json" else {"data": creds}
        try:
            status, body, ctype = await self._request("POST", o.auth_path, **kw)
        except (_NotSent, _NoAnswer) as exc:
            raise TransientSinkError(f"login: {exc}", kind="network") from None
        if status in (401, 403):
            raise TransientSinkError(f"login refused (HTTP {status}): {self._describe(status, body, ctype)}; "
                                     "check username/password", kind="auth", status=status)
        if not 200 <= status < 300:
            raise TransientSinkError(f"login: HTTP {status}: {self._describe(status, body, ctype)}",
                                     kind="http", status=status)
        if o.token_field:
            doc = self._json(status, body, ctype, "login")
            token = _field(doc, o.token_field)
            if not isinstance(token, (str, int)) or token == "":
                raise TransientSinkError(f"login: HTTP {status} without {o.token_field!r} in the reply "
                                         f"(fields: {', '.join(map(str, doc))[:200]}); check token_field",
                                         kind="garbage", status=status)
            self._token = str(token)
        self._logged_in = True

    async def ensure_login(self) -> None:
        if not self._logged_in:
            await self.login()

    async def _authed(self, method: str, path: str, make_kw: Callable[[], dict[str, Any]]) -> tuple[int, bytes, str]:
        """One call with the session; a 401 (token or session expired) logs in again and repeats it once."""
        if not self._logged_in:
            await self.login()
        status, body, ctype = await self._request(method, path, **make_kw())
        if status == 401:
            log.info("sink %s: session expired (HTTP 401), logging in again", self._sink.name)
            await self.login()
            status, body, ctype = await self._request(method, path, **make_kw())
            if status == 401:
                raise TransientSinkError(f"{method} {path}: HTTP 401 right after a fresh login: "
                                         f"{self._describe(status, body, ctype)}", kind="auth", status=401)
        return status, body, ctype

    # -- upload -----------------------------------------------------------------------------------------

    async def upload(self, form_code: str, filename: str, document: bytes) -> str:
        """Queue the document; return the job id. Raises TransientSinkError (not delivered), Rejected or
        Ambiguous."""
        o = self._opts

        def form() -> dict[str, Any]:
            data = aiohttp.FormData()
            data.add_field(o.form_field, form_code)
            data.add_field(o.file_field, document, filename=filename, content_type="application/xml")
            return {"data": data}

        try:
            status, body, ctype = await self._authed("POST", o.upload_path, form)
        except _NotSent as exc:
            raise TransientSinkError(f"upload: {exc}", kind="network") from None
        except _NoAnswer as exc:
            raise Ambiguous(f"upload: {exc}") from None
        what = self._describe(status, body, ctype)
        if 200 <= status < 300:
            doc = _json_or_none(body)
            job = _field(doc, o.job_id_field) if isinstance(doc, dict) else None
            if isinstance(job, (str, int)) and not isinstance(job, bool) and str(job):
                return str(job)
            raise Ambiguous(f"upload answered HTTP {status} without a job id ({o.job_id_field!r}): {what}")
        if status in (403, 404, 405, 408, 429, 503) or 300 <= status < 400:
            # Refused before looking at the document (access, path, rate, maintenance): nothing was queued.
            hint = {403: "; the account needs the role «Ответственный за передаваемую информацию» and access "
                         "to the form and object", 404: "; check upload_path", 405: "; check upload_path"}
            raise TransientSinkError(f"upload: HTTP {status}: {what}{hint.get(status, '')}", kind="http",
                                     status=status)
        if 400 <= status < 500:
            doc = _json_or_none(body)
            errors = _error_list(_field(doc, o.errors_field)) if isinstance(doc, dict) else []
            raise Rejected(f"upload refused: HTTP {status}: {what}", [self._scrub(e) for e in errors] or [what])
        raise Ambiguous(f"upload: HTTP {status}: {what}")

    # -- status -----------------------------------------------------------------------------------------

    async def status(self, job_id: str) -> tuple[str, list[str]]:
        o = self._opts
        if "{job_id}" in o.status_path:
            path, params = o.status_path.format(job_id=quote(job_id, safe="")), None
        else:
            path, params = o.status_path, {o.job_id_field: job_id}
        try:
            status, body, ctype = await self._authed("GET", path, lambda: {"params": params} if params else {})
        except (_NotSent, _NoAnswer) as exc:
            raise TransientSinkError(f"job status: {exc}", kind="network") from None
        if status in (404, 410):
            raise JobUnknown(f"job {job_id} unknown to the service (HTTP {status}): "
                             f"{self._describe(status, body, ctype)}")
        if not 200 <= status < 300:
            raise TransientSinkError(f"job status: HTTP {status}: {self._describe(status, body, ctype)}",
                                     kind="http", status=status)
        doc = self._json(status, body, ctype, "job status")
        value = _field(doc, o.status_field)
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise TransientSinkError(f"job status: no {o.status_field!r} in the reply: "
                                     f"{self._describe(status, body, ctype)}", kind="garbage")
        return str(value), [self._scrub(e) for e in _error_list(_field(doc, o.errors_field))]


def _json_or_none(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


# Errors that mean the request never reached the service. aiohttp < 3.10 has no ConnectionTimeoutError: there
# a connect timeout counts as "no answer" (ambiguous), the safe side.
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError, ConnectionRefusedError,
    *((aiohttp.ConnectionTimeoutError,) if hasattr(aiohttp, "ConnectionTimeoutError") else ()))
