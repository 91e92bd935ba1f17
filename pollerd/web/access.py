"""Who is looking at the status pages: the API's token roles, carried by a cookie.

When tokens are configured the pages ask for one once (a login form) and keep it in an HttpOnly,
SameSite=Strict cookie: script on the page cannot read it, another site cannot send it, and it never
appears in a URL (so not in a proxy log or the browser history). Without tokens the pages are open to
read, and there is no admin: the API refuses its admin endpoints without a token too.

Admin actions are POST forms that carry a CSRF token: an HMAC of the cookie's token under a key that
lives only in this process, so a forged form needs the cookie itself. SameSite=Strict and an Origin
check are the other two layers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "pollerd_token"
OPEN = "open"      # no tokens configured: read access for everyone on the listen address, no admin


class TokenRoles(Protocol):
    """What the API's token check offers the pages (pollerd.api._Auth)."""

    @property
    def configured(self) -> bool: ...

    def role_of(self, given: str) -> str | None: ...


class Access:
    def __init__(self, roles: TokenRoles) -> None:
        self._roles = roles
        self._key = secrets.token_bytes(32)  # new per process: a restart invalidates open forms, not logins

    @property
    def login_enabled(self) -> bool:
        return self._roles.configured

    @staticmethod
    def _cookie_token(request: web.Request) -> str | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            return base64.urlsafe_b64decode(raw.encode("ascii")).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeError):
            return None

    def role(self, request: web.Request) -> str | None:
        """``admin``, ``read``, :data:`OPEN`, or None when tokens are configured and no valid one came."""
        if not self._roles.configured:
            return OPEN
        token = self._cookie_token(request)
        return None if token is None else self._roles.role_of(token)

    def csrf(self, request: web.Request) -> str:
        token = self._cookie_token(request) or ""
        return hmac.new(self._key, token.encode("utf-8"), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: web.Request, given: str | None) -> bool:
        if not same_origin(request):
            return False
        return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"),
                                                         self.csrf(request).encode("ascii"))

    def login(self, request: web.Request, token: str, response: web.StreamResponse) -> str | None:
        """Set the cookie when ``token`` is known; returns its role (None: unknown, nothing set)."""
        role = self._roles.role_of(token)
        if role is not None:
            value = base64.urlsafe_b64encode(token.encode("utf-8")).decode("ascii")
            # No Max-Age: the login ends with the browser session.
            response.set_cookie(COOKIE, value, httponly=True, samesite="Strict", path="/",
                                secure=request.secure)
        return role

    @staticmethod
    def logout(response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE, path="/")


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request came from another site (Origin or Sec-Fetch-Site)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc.lower() == request.host.lower()


def safe_next(target: str | None) -> str:
    """A redirect target on this site only (``/path?query``), never ``//host`` or ``http://...``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(c < " " or c == "\x7f" for c in target):  # a CR/LF would end up in the Location header
        return "/"
    return target
