"""`pollerd parked`: batches a sink's receiver refused for good (HTTP 400, 422, ...), which the forwarder set
aside and moved past. Each is a /health reason until an operator decides: send it again now (after the
receiver was fixed), or release it (the readings stay in the local store until pruned, undelivered)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import ConfigError, SinkError
from ..text import utc_text
from .common import add_config, add_state_dir, load, state_dir

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config, SinkConfig
    from ..push import PushClient
    from ..store import Store


def configure_parser(p: argparse.ArgumentParser) -> None:
    add_config(p, "the pollerd config file (the sinks' urls and credentials)")
    p.add_argument("--sink", help="only this sink's batches")
    add_state_dir(p)
    act = p.add_mutually_exclusive_group()
    act.add_argument("--retry", type=int, metavar="ID", help="send batch ID again now, through its sink as the "
                     "config file describes it; forgotten once the receiver confirms it")
    act.add_argument("--release", type=int, metavar="ID", help="forget batch ID: its readings are not delivered "
                     "to that sink (they stay in the local store until pruned)")
    p.add_argument("--json", action="store_true", help="JSON lines")


def run(args: argparse.Namespace) -> int:
    from ..daemon import db_path
    from ..store import Store

    cfg = load(args.config)
    db = db_path(cfg, state_dir(args))

    async def main() -> int:
        store = await (Store.open(db) if args.retry or args.release else Store.open_readonly(db))
        try:
            if args.release:
                if not await store.unpark(args.release):
                    raise SinkError(f"no parked batch {args.release} (see `pollerd parked --config FILE`)")
                print(f"batch {args.release} released: it is not delivered; /health no longer counts it")
                return 0
            if args.retry:
                return await _retry(store, cfg, args.retry)
            for b in await store.parked(args.sink):
                if args.json:
                    print(orjson.dumps(b).decode())
                else:
                    what = "event seq" if b.get("kind") == "events" else "seq"
                    print(f"{b['id']:>5}  {b['sink']:<16} {what} {b['first_seq']}..{b['last_seq']}  parked "
                          f"{utc_text(b['ts'])}\n       {b['reason']}")
            return 0
        finally:
            await store.close()

    return asyncio.run(main())


async def _send_once(client: PushClient, send: Callable[[list[Any]], Awaitable[None]], items: list[Any],
                     park_id: int) -> bool:
    """Connect, send one parked batch and close: True when the sink took it, False (said why) when not."""
    from ..push import PermanentSinkError, TransientSinkError

    try:
        await client.connect()
        await send(items)
    except (TransientSinkError, PermanentSinkError) as exc:
        print(f"batch {park_id} not delivered, still parked: {exc}")
        return False
    finally:
        await client.close()
    return True


async def _retry(store: Store, cfg: Config, park_id: int) -> int:
    from ..push import make_client

    batch = next((b for b in await store.parked() if b["id"] == park_id), None)
    if batch is None:
        raise SinkError(f"no parked batch {park_id} (see `pollerd parked --config FILE`)")
    sink = next((s for s in cfg.sinks if s.name == batch["sink"]), None)
    if sink is None:
        raise ConfigError(f"batch {park_id} belongs to sink {batch['sink']!r}, which the config no longer has; "
                          f"release it with --release {park_id}", path=cfg.source)
    first, last = batch["first_seq"], batch["last_seq"]
    if batch.get("kind") == "events":
        return await _retry_events(store, cfg, park_id, sink, first, last)
    rows = [r for seq, r in await store.fetch_after(first - 1, last - first + 1) if seq <= last]
    if not rows:
        raise SinkError(f"batch {park_id}: its readings are gone from the store (removed by the disk quota); "
                        f"release it with --release {park_id}")
    client = make_client(sink, cfg.gateway.name)
    if not await _send_once(client, client.send, rows, park_id):
        return 1
    await store.unpark(park_id)
    missing = last - first + 1 - len(rows)
    print(f"batch {park_id}: {len(rows)} readings delivered to {sink.name}"
          + (f" ({missing} were removed by the disk quota before)" if missing else "") + "; no longer parked")
    return 0


async def _retry_events(store: Store, cfg: Config, park_id: int, sink: SinkConfig, first: int, last: int) -> int:
    from ..push import make_client

    # An event changed since has a later seq (and was sent on its own): what is left in the range is due.
    events = [e for seq, e in await store.fetch_events_after(first - 1, last - first + 1) if seq <= last]
    if not events:
        await store.unpark(park_id)
        print(f"batch {park_id}: its events have all changed since and were sent again; no longer parked")
        return 0
    client = make_client(sink, cfg.gateway.name)
    send = getattr(client, "send_events", None)
    if send is None or not getattr(client, "accepts_events", True):
        raise SinkError(f"batch {park_id}: sink {sink.name!r} no longer takes events; release it with "
                        f"--release {park_id}")
    if not await _send_once(client, send, events, park_id):
        return 1
    await store.unpark(park_id)
    print(f"batch {park_id}: {len(events)} events delivered to {sink.name}; no longer parked")
    return 0
