"""Shared HTTP plumbing of cloud sources (catalog: ProtocolSpec.cloud_keys): rstech, webmeters, saures.

A cloud source is one ``[[meters]]`` entry for a vendor account that holds many devices. Its driver gets
no line (a :class:`~pollerd.drivers.base.CloudDriverContext`) and talks HTTP(S) to the entry's ``url`` through a session made here:

* :func:`make_session` — an aiohttp ClientSession whose per-request timeout is the entry's ``waiting_time``
  (30 s by default for cloud entries) and whose TLS checking follows the ``verify_tls``/``ca_file`` keys;
* :func:`fetch` / :func:`fetch_json` — one request that either returns a usable body or raises a
  :class:`~pollerd.errors.CloudError` saying what came back instead (status, content type and a short,
  scrubbed snippet: an HTML error page's title, the start of truncated JSON). Nothing is half-parsed;
* :func:`device_name` — ``{entry}:{device id}``, the meter name of one device's readings;
* :func:`set_devices`, :func:`raise_alarm`, :func:`clear_alarm` — what /api/meters and /health show.

Secrets (password, api key, tokens, session ids) are passed to :func:`fetch` as ``secrets`` and are cut out of
every error message, because servers echo request parameters in their error pages.
"""

from __future__ import annotations

import asyncio
import html
import re
import ssl
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .. import __version__
from ..errors import CloudAuthError, CloudError, CloudUnreachable, OptionError
from ..state import MeterState
from ..text import scrub

# A reply bigger than this is not a page of meter data but a runaway (or hostile) server; reading it whole
# would cost the gateway's RAM. rstech's largest page (1000 archive records of ~10 channels) is ~0.5 MB.
MAX_BODY = 16 * 1024 * 1024
SNIPPET = 160
USER_AGENT = f"pollerd/{__version__}"

# Keys every cloud protocol takes besides url and credentials (protocol option parsers add their own).
CLOUD_OPTION_KEYS = frozenset({"verify_tls", "ca_file"})


@dataclass(frozen=True, slots=True)
class CloudOptions:
    verify_tls: bool = True
    ca_file: str | None = None


def parse_tls_options(raw: Mapping[str, object], base_dir: str) -> dict[str, Any]:
    """``verify_tls`` and ``ca_file`` as keyword arguments for a :class:`CloudOptions` (or subclass)."""
    out: dict[str, Any] = {}
    if "verify_tls" in raw:
        if not isinstance(raw["verify_tls"], bool):
            raise OptionError(f"expected true or false, got {raw['verify_tls']!r}", ("verify_tls",))
        out["verify_tls"] = raw["verify_tls"]
    if "ca_file" in raw:
        ca = raw["ca_file"]
        if not isinstance(ca, str) or not ca:
            raise OptionError(f"expected a file path, got {ca!r}", ("ca_file",))
        path = Path(base_dir, ca)
        if not path.is_file():
            raise OptionError(f"CA file {str(path)!r} does not exist", ("ca_file",))
        out["ca_file"] = str(path)
    return out


def parse_options(raw: Mapping[str, object], base_dir: str) -> CloudOptions:
    """The catalog's option parser for cloud protocols that take only the TLS keys."""
    return CloudOptions(**parse_tls_options(raw, base_dir))


def _ssl_of(options: object) -> ssl.SSLContext | bool:
    """TLS for a cloud account: off with verify_tls = false; ``ca_file`` is added to the system CAs (not
    instead of them), as for the push sinks."""
    if not getattr(options, "verify_tls", True):
        return False
    ca = getattr(options, "ca_file", None)
    if not ca:
        return True
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=ca)
    return ctx


def make_session(meter: Any, *, headers: Mapping[str, str] | None = None,
                 cookies: bool = False) -> aiohttp.ClientSession:
    """A session for one cloud account. ``meter`` is its MeterConfig. Cookies are off unless asked for: a
    token-based API must not silently ride on a cookie the server set."""
    timeout = aiohttp.ClientTimeout(total=meter.waiting_time)
    connector = aiohttp.TCPConnector(ssl=_ssl_of(meter.options), limit=4)
    jar: aiohttp.abc.AbstractCookieJar = aiohttp.CookieJar() if cookies else aiohttp.DummyCookieJar()
    return aiohttp.ClientSession(timeout=timeout, connector=connector, cookie_jar=jar,
                                 headers={"User-Agent": USER_AGENT, **(headers or {})})


# -- errors and scrubbing ----------------------------------------------------------------------------------

_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.I | re.S)
_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def snippet(body: bytes, secrets: Iterable[str | None] = (), limit: int = SNIPPET) -> str:
    """A short, one-line, scrubbed excerpt of a reply body for an error message: the title of an HTML page
    (plus the start of its text), else the start of the body."""
    head = body[:4096]
    m = _TITLE.search(head)
    text = head.decode("utf-8", "replace")
    if m:
        title = m.group(1).decode("utf-8", "replace")
        rest = _TAGS.sub(" ", text[m.end():] if m.end() < len(text) else "")
        text = f"{title} | {rest}"
    elif head.lstrip()[:1] == b"<":
        text = _TAGS.sub(" ", text)
    text = _SPACE.sub(" ", html.unescape(text)).strip()
    text = scrub(text, list(secrets))
    if len(text) > limit or len(body) > len(head):
        text = text[:limit].rstrip() + "…"
    return f'"{text}"' if text else "(empty body)"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes
    content_type: str


async def fetch(session: aiohttp.ClientSession, method: str, url: str, *, what: str,
                params: Mapping[str, Any] | None = None, json: Any = None, data: Any = None,
                headers: Mapping[str, str] | None = None, secrets: Iterable[str | None] = (),
                ok: Collection[int] = (), auth_status: Collection[int] = ()) -> Reply:
    """One request. Returns the reply if its status is 2xx or in ``ok`` (the caller handles those, e.g. a
    401 that means "sign in again"). Otherwise raises :class:`CloudAuthError` for a status in
    ``auth_status``, :class:`CloudError` for any other status (with a snippet of the body), and
    :class:`CloudUnreachable` when there was no reply. ``what`` names the request in messages ("stations
    page 3"); the url is not repeated in messages because query strings may hold secrets."""
    hidden = [s for s in secrets if s]
    try:
        async with session.request(method, url, params=params, json=json, data=data, headers=headers,
                                   allow_redirects=False) as resp:
            body = await _read_capped(resp, what, hidden)
            reply = Reply(resp.status, resp.headers, body, resp.content_type or "")
    except CloudError:
        raise
    except (asyncio.TimeoutError, TimeoutError):
        raise CloudUnreachable(f"{what}: no reply within {session.timeout.total:g} s") from None
    except aiohttp.ClientError as exc:
        raise CloudUnreachable(f"{what}: {scrub(_describe(exc), hidden)}") from None
    if reply.status not in ok:
        raise_for(reply, what=what, secrets=hidden, auth_status=auth_status)
    return reply


def raise_for(reply: Reply, *, what: str, secrets: Iterable[str | None] = (),
              auth_status: Collection[int] = ()) -> None:
    """Nothing for a 2xx reply; else the CloudError (CloudAuthError for ``auth_status``) :func:`fetch`
    raises. For callers that take every reply (``ok=range(100, 600)``) to read its headers first, e.g.
    a rotated token."""
    if 200 <= reply.status < 300:
        return
    detail = f"{what}: HTTP {reply.status}"
    if 300 <= reply.status < 400:
        detail += f" redirect to {scrub(reply.headers.get('Location', '?'), secrets)!r}"
    detail += f" ({reply.content_type or 'no content type'}): {snippet(reply.body, secrets)}"
    if reply.status in auth_status:
        raise CloudAuthError(detail, reply.status)
    raise CloudError(detail, reply.status)


async def _read_capped(resp: aiohttp.ClientResponse, what: str, secrets: list[str]) -> bytes:
    if resp.content_length is not None and resp.content_length > MAX_BODY:
        raise CloudError(f"{what}: reply of {resp.content_length} bytes exceeds the {MAX_BODY} byte cap",
                         resp.status)
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        buf += chunk
        if len(buf) > MAX_BODY:
            raise CloudError(f"{what}: reply exceeds the {MAX_BODY} byte cap", resp.status)
    return bytes(buf)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def decode_json(reply: Reply, *, what: str, secrets: Iterable[str | None] = ()) -> Any:
    """The reply's JSON document, or a CloudError naming what came instead (an HTML page, truncated JSON)."""
    ct = reply.content_type.lower()
    if "json" not in ct:
        raise CloudError(f"{what}: expected JSON, got {ct or 'no content type'} (HTTP {reply.status}): "
                         f"{snippet(reply.body, secrets)}", reply.status)
    try:
        return orjson.loads(reply.body)
    except orjson.JSONDecodeError as exc:
        kind = "truncated" if exc.pos >= len(reply.body.rstrip()) else "invalid"
        raise CloudError(f"{what}: {kind} JSON ({len(reply.body)} bytes, {exc.msg} at char {exc.pos}): "
                         f"{snippet(reply.body, secrets)}", reply.status) from None


async def fetch_json(session: aiohttp.ClientSession, method: str, url: str, *, what: str,
                     secrets: Iterable[str | None] = (), **kw: Any) -> tuple[Reply, Any]:
    """:func:`fetch` then :func:`decode_json` (a 2xx reply that is not JSON is an error too)."""
    secrets = list(secrets)
    reply = await fetch(session, method, url, what=what, secrets=secrets, **kw)
    if not 200 <= reply.status < 300:
        return reply, None
    return reply, decode_json(reply, what=what, secrets=secrets)


# -- devices, metadata and health -------------------------------------------------------------------------

_BAD_ID = re.compile(r"[\x00-\x20\x7f]+")


def device_name(entry: str, device: object) -> str:
    """``{entry}:{device id}``: the meter name a cloud account's device's readings carry."""
    if isinstance(device, bool) or not isinstance(device, (int, str)):
        raise CloudError(f"device id {device!r} is not a number or a string")
    text = _BAD_ID.sub("_", str(device).strip())
    if not text:
        raise CloudError("empty device id")
    return f"{entry}:{text}"


def set_devices(state: MeterState, devices: Mapping[str, Mapping[str, object]]) -> None:
    """Publish the account's devices (device id -> metadata) in /api/meters."""
    state.devices = {k: dict(v) for k, v in devices.items()}


def raise_alarm(state: MeterState, kind: str, text: str) -> None:
    """A condition that fails /health until cleared (e.g. ``auth``: the server refuses the credentials)."""
    state.alarms[kind] = text


def clear_alarm(state: MeterState, kind: str) -> None:
    state.alarms.pop(kind, None)
