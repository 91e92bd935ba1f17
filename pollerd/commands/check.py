"""`pollerd check` (is this config valid, and what does it describe) and `pollerd version` (what this
install runs on)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson

from .. import __version__
from ..errors import ConfigError
from .common import CONFIG_HELP, EX_CONFIG, load

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config, Secret


# What the shipped example (config/pollerd.example.toml) holds where a site's own value belongs.
PLACEHOLDER = "CHANGE-ME"


def configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", metavar="FILE", help=CONFIG_HELP + " (or --config FILE)")
    p.add_argument("--config", "-c", metavar="FILE", help="the same as FILE, the spelling every other command "
                   "takes")


def _example_host(url: str) -> bool:
    # example.com/.net/.org and the .example TLD are reserved for documentation (RFC 2606); the shipped
    # config also uses example.ru. No real upstream lives under a domain label "example".
    host = (urlsplit(url).hostname or "").lower()
    return "example" in host.split(".")


def placeholders(cfg: Config) -> list[str]:
    """Values left as the example has them: a `pollerd check` that says OK about them would send the
    commissioning engineer off with a gateway that cannot authenticate or delivers to nowhere."""
    found: list[str] = []

    def secret(where: str, value: Secret | None) -> None:
        if value is not None and PLACEHOLDER in value.reveal():
            found.append(f"{where} is still the placeholder {PLACEHOLDER}")

    for i, tok in enumerate(cfg.api.tokens):
        secret(f"api.tokens[{i}].token", tok.token)
    for m in cfg.meters:
        secret(f"meter {m.name}: password", m.password)
        secret(f"meter {m.name}: api_key", m.api_key)
    for s in cfg.sinks:
        secret(f"sink {s.name}: token", s.token)
        secret(f"sink {s.name}: password", s.password)
        if _example_host(s.url):
            found.append(f"sink {s.name}: url {s.url} is an example address")
    return found


def run_check(args: argparse.Namespace) -> int:
    from .summary import summary
    if args.file and args.config and args.file != args.config:
        raise ConfigError(f"two config files given ({args.file} and --config {args.config}); check one at a time")
    path = args.file or args.config
    if not path:
        print("pollerd check: error: name the config file: pollerd check FILE (or --config FILE)",
              file=sys.stderr)
        return 2
    try:
        cfg = load(path)
    except ConfigError as exc:
        # Every problem the loader found, one line each, so one edit fixes them all.
        for err in exc.errors:
            print(err, file=sys.stderr)
        if len(exc.errors) > 1:  # one error is its own line; a count says the list is complete
            print(f"{path}: {len(exc.errors)} errors", file=sys.stderr)
        return EX_CONFIG
    print(summary(cfg))
    warnings = [f"warning: {w}" for w in placeholders(cfg)]
    enabled = [m for m in cfg.meters if m.enabled]
    if not enabled:
        warnings.append("warning: no enabled meters: the daemon would poll nothing")
    if enabled and not cfg.sinks:
        warnings.append("warning: no sinks: readings stay on this gateway (the local API and `pollerd readings` "
                        "only)")
    for w in warnings:
        print(w)
    n = len(warnings)
    print(f"{path}: OK" + (f" with {n} warning{'s' if n != 1 else ''}" if n else ""))
    return 0


def run_version(args: argparse.Namespace) -> int:
    import aiohttp
    import aiosqlite

    from ..protocols.crc import crc_extension_in_use
    try:
        import serial_asyncio_fast as sa
        serial_name = f"pyserial-asyncio-fast {getattr(sa, '__version__', '?')}"
    except ImportError:  # pragma: no cover
        serial_name = "pyserial-asyncio"
    print(f"pollerd {__version__}")
    print(f"python {sys.version.split()[0]}")
    print(f"crcmod C extension: {'in use' if crc_extension_in_use() else 'NOT in use (pure Python, slower)'}")
    print(f"aiohttp {aiohttp.__version__}, aiosqlite {aiosqlite.__version__}, {serial_name}, "
          f"orjson {orjson.__version__}")
    return 0
