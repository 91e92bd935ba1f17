"""HTTP(S) push client: one JSON POST per batch.

Body::

    {"gateway": "<name>", "readings": [{"meter", "channel", "archive", "ts", "value", "unit"[, "quality"]}, ...]}

Every reading carries its natural key ``(meter, channel, archive, ts)`` so the receiver can de-duplicate
the re-sends that at-least-once delivery implies.

Secrets (bearer token, basic-auth password, credentials in the URL, sensitive extra headers) never reach an
exception message: the URL is shown without user info and query, and every message is scrubbed of the
secret strings before it is raised, because a receiver may echo the request headers in its error body.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
from collections.abc import Sequence

import aiohttp
import orjson
from yarl import URL

from pollerd.config import SinkConfig
from pollerd.model import Reading
from pollerd.push import PermanentSinkError, TransientSinkError

log = logging.getLogger(__name__)

BODY_SNIPPET = 200          # chars of an error response shown in the exception
_BODY_READ = 1024           # bytes read from an error response; the rest is not worth the memory
_USER_AGENT = "pollerd"
_SENSITIVE_HEADER = re.compile(r"auth|token|key|secret|pass|cookie|session", re.IGNORECASE)
_WS = re.compile(r"\s+")


def _safe_url(url: str) -> str:
    """The URL as it may appear in logs: no user info, no query (API keys often ride there)."""
    try:
        u = URL(url)
        return str(u.with_user(None).with_password(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<invalid url>"


class HttpPushClient:
    """POSTs batches to ``sink.url``. Create, ``await connect()``, ``await send(batch)``..., ``await close()``."""

    def __init__(self, sink: SinkConfig, gateway: str) -> None:
        self._sink = sink
        self._gateway = gateway
        self._session: aiohttp.ClientSession | None = None
        self._where = f"sink {sink.name!r}: POST {_safe_url(sink.url)}"
        self._headers, self._secrets = self._build_headers(sink)

    def __repr__(self) -> str:
        return f"HttpPushClient({self._sink.name!r}, {_safe_url(self._sink.url)!r})"

    @staticmethod
    def _build_headers(sink: SinkConfig) -> tuple[dict[str, str], tuple[str, ...]]:
        headers: dict[str, str] = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
        secrets: list[str] = []
        for name, value in sink.headers:
            headers[name] = value
            if _SENSITIVE_HEADER.search(name) and value:
                secrets.append(value)
        if sink.token is not None:
            token = sink.token.reveal()
            headers["Authorization"] = f"Bearer {token}"
            secrets.append(token)
        elif sink.username is not None:
            password = sink.password.reveal() if sink.password is not None else ""
            creds = base64.b64encode(f"{sink.username}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {creds}"
            secrets.extend((password, creds))
        try:
            url_password = URL(sink.url).password
        except (ValueError, TypeError):
            url_password = None
        if url_password:
            secrets.append(url_password)
        # Longest first so a secret that contains another is replaced whole.
        return headers, tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self._sink.verify_tls:
            return False
        if self._sink.ca_file:
            ctx = ssl.create_default_context()
            ctx.load_verify_locations(cafile=self._sink.ca_file)  # added to the system CAs, not instead
            return ctx
        return True

    async def connect(self) -> None:
        """Prepare the session. Never raises for a sink problem: a bad ca_file must not stop the daemon from
        polling, so the failure is logged here and raised again by ``send`` for the forwarder to retry."""
        try:
            self._open()
        except TransientSinkError as exc:
            log.error("%s", exc)

    def _open(self) -> None:
        if self._session is not None and not self._session.closed:
            return
        try:
            ssl_opt = self._ssl()
        except (OSError, ssl.SSLError) as exc:
            raise TransientSinkError(
                f"sink {self._sink.name!r}: cannot load ca_file {self._sink.ca_file!r}: {exc}", kind="tls"
            ) from None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_opt, limit=2),
            timeout=aiohttp.ClientTimeout(total=self._sink.timeout),
            headers=self._headers,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def encode(self, batch: Sequence[Reading]) -> bytes:
        return orjson.dumps({"gateway": self._gateway, "readings": [r.as_dict() for r in batch]})

    async def send(self, batch: Sequence[Reading]) -> None:
        if not batch:
            return
        self._open()
        assert self._session is not None
        body = self.encode(batch)
        # `from None` below: the original exception (and its traceback) may carry the raw URL.
        try:
            async with self._session.post(self._sink.url, data=body, allow_redirects=False) as resp:
                status = resp.status
                if 200 <= status < 300:
                    return
                snippet = await self._snippet(resp)
                location = resp.headers.get("Location", "")
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            raise TransientSinkError(
                f"{self._where}: no reply within {self._sink.timeout:g} s", kind="timeout"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientSinkError(
                self._scrub(f"{self._where}: {type(exc).__name__}: {exc}"), kind="network"
            ) from None
        msg = f"{self._where}: HTTP {status}, expected 2xx; body: {snippet!r}"
        if 300 <= status < 400:
            # A redirect of a POST is a configuration problem; following it could turn the POST into a GET
            # and get the batch parked. Keep the data and retry until the URL is fixed.
            msg += f"; redirected to {_safe_url(location)!r}, fix the sink url"
            raise TransientSinkError(self._scrub(msg), kind="redirect", status=status)
        if status in (408, 429) or status >= 500 or status < 200:
            raise TransientSinkError(self._scrub(msg), kind="http", status=status)
        raise PermanentSinkError(self._scrub(msg), status=status)

    async def _snippet(self, resp: aiohttp.ClientResponse) -> str:
        try:
            raw = await resp.content.read(_BODY_READ)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return ""
        text = _WS.sub(" ", raw.decode("utf-8", "replace")).strip()
        # Scrub before cutting, so a secret split by the cut cannot survive in part.
        return self._scrub(text)[:BODY_SNIPPET]
