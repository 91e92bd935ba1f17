"""Text helpers every layer may use: secrets scrubbed from messages, URLs safe to show, timestamps as printed,
hex typed by a person.

A leaf: imports nothing of pollerd.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["about", "address_text", "parse_hex", "safe_url", "scrub", "utc_text"]


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret value (and its URL-encoded form) replaced by ``***``."""
    for s in secrets:
        if s and len(s) >= 3:
            text = text.replace(s, "***")
            for enc in (quote(s, safe=""), quote_plus(s)):
                if enc != s:
                    text = text.replace(enc, "***")
    return text


def about(name: str, text: str) -> str:
    """``name: text``, naming the meter (line, sink) once: errors raised below the driver often start with
    the name already ("m1: no complete reply ..."), and "m1: poll failed: m1: ..." reads as two meters."""
    return text if text.startswith(f"{name}: ") else f"{name}: {text}"


def address_text(address: int | str) -> str:
    """A meter's bus address as messages show it. An IEC 62056-21 meter addressed point to point has the
    empty address, which would otherwise print as nothing at all ("@ ;")."""
    return "(no address)" if address == "" else str(address)


def safe_url(url: str) -> str:
    """A URL as logs and `pollerd check` may show it: no user info, no query, no fragment (API keys often
    ride in the query). "<invalid url>" when it does not parse."""
    from yarl import URL  # on use: aiohttp's URL type, which commands that never show a URL need not load

    try:
        return str(URL(url).with_user(None).with_password(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<invalid url>"


def utc_text(ts: float) -> str:
    """A unix time as the commands print it: 2024-05-01 12:00:00Z."""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


_HEX_SEPARATORS = str.maketrans("", "", " \t\r\n:-")


def parse_hex(text: str) -> bytes:
    """Bytes written as hex, the one rule for every command, the API and the decode tools: whitespace, ":" and
    "-" between digits are ignored (``"00 08 11"``, ``"00:08:11"``, ``"00-08-11"``), one leading ``0x`` is
    allowed, and what remains must be an even number of hex digits. ValueError otherwise."""
    cleaned = text.translate(_HEX_SEPARATORS)
    if cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"not hex bytes: {text!r}") from None
