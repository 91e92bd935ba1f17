"""`pollerd scan`: find M-Bus meters on a line: by primary address (SND_NKE -> E5, then REQ_UD2 for the identity) and by
secondary address (selection with wildcards, narrowed digit by digit wherever two slaves collide), and print
config snippets for what was found.

``pollerd scan --config FILE LINE`` builds the :class:`~pollerd.line.Line` from the config and calls::

    found = await scan_line(line)
    print(config_snippet(found, line=line.name))
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import ConfigError, FrameError, ReplyTimeout
from ..line import Line
from ..protocols import mbus as m
from .common import add_config, load

__all__ = ["Found", "config_snippet", "configure_parser", "run", "scan_line"]

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Found:
    primary: int | None          # None when found only by secondary address
    id: str | None               # 8 digits
    manufacturer: str | None
    version: int | None
    medium: int | None
    medium_name: str
    secondary: str | None        # libmbus' 16 hex digits
    collision: bool = False      # several slaves answered this primary address at once

    def as_dict(self) -> dict[str, object]:
        return {"primary": self.primary, "id": self.id, "manufacturer": self.manufacturer,
                "version": self.version, "medium": self.medium, "medium_name": self.medium_name,
                "secondary": self.secondary, "collision": self.collision}


async def scan_line(line: Line, *, primary: Iterable[int] = range(251), secondary: bool = True,
                    waiting_time: float = 0.0, pause: float = 0.0, retries: int = 1,
                    progress: Progress | None = None) -> list[Found]:
    """Scan ``line``; returns every meter found once (a meter found both ways is merged into one entry).
    ``waiting_time`` below the EN 13757-2 floor (330 bit times + 50 ms) is raised to it."""
    # Imported here: the parser imports this module for every command, `pollerd run` included, and the
    # M-Bus driver is otherwise loaded only for a config with M-Bus meters.
    from ..drivers.mbus import response_timeout
    timeout = response_timeout(line.cfg.baudrate or 2400, waiting_time)
    say = progress or (lambda _msg: None)

    async def ask(request: bytes, expect: str) -> m.Frame | str | None:
        """The reply, "collision" for a garbled one, None for silence."""
        for _attempt in range(1 + retries):
            try:
                return await line.exchange(request, m.ReplyFramer(expect), waiting_time=timeout, pause=pause,
                                           meter="scan")
            except ReplyTimeout as exc:
                if exc.partial:
                    return "collision"
            except FrameError:
                return "collision"
        return None

    async def identity(address: int) -> m.Header | None:
        reply = await ask(m.req_ud2(address, True), "data")
        if not isinstance(reply, m.Frame):
            return None
        try:
            return m.decode_telegram(reply).header
        except m.MbusFrameError:
            return None

    found: dict[str, Found] = {}
    anonymous: list[Found] = []

    for address in primary:
        reply = await ask(m.snd_nke(address), "ack")
        if reply is None:
            continue
        if reply == "collision":
            say(f"primary {address}: several slaves answer (collision); use secondary addressing")
            anonymous.append(Found(address, None, None, None, None, "", None, True))
            continue
        header = await identity(address)
        item = _found(address, header)
        say(f"primary {address}: {item.id or '?'} {item.manufacturer or ''} {item.medium_name}")
        if item.secondary:
            found.setdefault(item.secondary, item)
        else:
            anonymous.append(item)

    if secondary:
        async def search(mask: m.SecondaryAddress) -> None:
            reply = await ask(m.select_secondary(mask), "ack")
            if reply is None:
                return
            if reply != "collision":
                header = await identity(m.ADDRESS_SELECTED)
                if header is not None and header.secondary:
                    prior = found.get(header.secondary)
                    if prior is None:
                        item = _found(None, header)
                        found[header.secondary] = item
                        say(f"secondary {header.secondary}: {item.id} {item.manufacturer} {item.medium_name}")
                    return
            # Collision (or an unreadable answer): fix the next wildcard digit, one value at a time.
            pos = mask.text.find("F")
            if pos < 0:
                say(f"secondary {mask}: slaves with identical addresses collide; they cannot be told apart")
                return
            # The id is decimal; manufacturer, version and medium are hex, but F is the wildcard itself:
            # "trying" F would send the same colliding mask again, forever. A slave whose digit here really
            # is F cannot be told from the others by this digit.
            digits = "0123456789" if pos < 8 else "0123456789ABCDE"
            for d in digits:
                await search(mask.with_digit(pos, d))

        await search(m.SecondaryAddress("F" * 16))
    return list(found.values()) + anonymous


def _found(address: int | None, header: m.Header | None) -> Found:
    if header is None:
        return Found(address, None, None, None, None, "", None)
    return Found(address, header.id, header.manufacturer, header.version, header.medium, header.medium_name,
                 header.secondary)


def config_snippet(found: Iterable[Found], *, line: str, protocol: str = "mbus") -> str:
    """TOML ``[[meters]]`` tables for ``found``: the primary address when it is unique and not 0 (0 is the
    factory default every new meter shares), the secondary address otherwise."""
    items: list[Found] = []
    for f in found:  # one table per meter: merge a meter found both by primary and by secondary address
        twin = next((i for i, g in enumerate(items) if f.secondary and g.secondary == f.secondary), None)
        if twin is None:
            items.append(f)
        elif items[twin].primary is None:
            items[twin] = f
    out: list[str] = []
    for f in items:
        if f.collision or f.id is None:
            out.append(f"# primary {f.primary}: {'several meters collide' if f.collision else 'no identity'}; "
                       "scan by secondary address\n")
            continue
        unique_primary = f.primary not in (None, 0) and sum(1 for g in items if g.primary == f.primary) == 1
        unique_id = len({g.secondary for g in items if g.id == f.id}) == 1
        addr = str(f.primary) if unique_primary else f'"{f.id if unique_id else f.secondary}"'
        out.append(
            f"# {f.manufacturer} {f.medium_name}, version {f.version}, secondary address {f.secondary}\n"
            f"[[meters]]\nname = \"mbus-{f.id}\"\nprotocol = \"{protocol}\"\nline = \"{line}\"\n"
            f"connection_address = {addr}\nnumber_meter = \"{f.id}\"\n")
    return "\n".join(out)


# -- the command ----------------------------------------------------------------------------------------

def _address_range(text: str) -> range:
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FROM-TO like 0-250, got {text!r}") from None
    if not 0 <= a <= b <= 250:
        raise argparse.ArgumentTypeError(f"primary addresses are 0..250, got {text!r}")
    return range(a, b + 1)


def configure_parser(p: argparse.ArgumentParser) -> None:
    add_config(p)
    p.add_argument("line", help="the line's name in the config")
    p.add_argument("--primary-only", action="store_true", help="skip the secondary-address search")
    p.add_argument("--primary", type=_address_range, default=range(251), metavar="FROM-TO",
                   help="primary addresses to try (default 0-250; an empty range skips them)")


def run(args: argparse.Namespace) -> int:
    from ..daemon import build_lines
    from ..metrics import Registry
    from ..state import Runtime
    cfg = load(args.config)
    names = [ln.name for ln in cfg.lines]
    if args.line not in names:
        raise ConfigError(f"no line named {args.line!r} (lines: {', '.join(names) or 'none'})", path=args.config)

    async def main() -> int:
        line = build_lines(cfg, Runtime(cfg.gateway.name), Registry(), one_shot=True)[args.line]
        # Collisions are expected while narrowing secondary addresses; they are not bus faults to warn about.
        logging.getLogger("pollerd.line").setLevel(logging.ERROR)
        try:
            found = await scan_line(line, primary=args.primary, secondary=not args.primary_only,
                                    progress=lambda msg: print(f"# {msg}", file=sys.stderr))
        finally:
            await line.close()
        print(config_snippet(found, line=line.name))
        return 0 if found else 1

    return asyncio.run(main())
