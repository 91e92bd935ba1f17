"""`pollerd sioi`: what the АС СиОИ sink did per period, and the operator's two decisions for a document the
sink will not send on its own (possibly uploaded, lost): send it again, or mark it as present in АС СиОИ."""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

from ..errors import ConfigError
from ..text import utc_text
from .common import add_config, add_state_dir, load, state_dir


def configure_parser(p: argparse.ArgumentParser) -> None:
    add_config(p)
    p.add_argument("--sink", help="the sink's name (default: the only sioi sink)")
    add_state_dir(p)
    act = p.add_mutually_exclusive_group()
    act.add_argument("--retry", metavar="PERIOD", help="send the period's document on the sink's next look, "
                     "even if a document with the same content was sent before")
    act.add_argument("--accept", metavar="PERIOD", help="mark the period's document as loaded (found in АС СиОИ)")
    p.add_argument("--force", action="store_true", help="with --retry: also for a document already loaded "
                   "(after АС СиОИ support deleted it)")
    p.add_argument("--json", action="store_true", help="JSON lines")


def _when(ts: object) -> str:
    return utc_text(ts) if isinstance(ts, (int, float)) else "-"


def run(args: argparse.Namespace) -> int:
    from ..daemon import db_path
    from ..push.sioi import list_records, operator_set
    from ..store import Store

    cfg = load(args.config)
    sinks = [s for s in cfg.sinks if s.type == "sioi" and (args.sink is None or s.name == args.sink)]
    if len(sinks) != 1:
        names = ", ".join(s.name for s in cfg.sinks if s.type == "sioi") or "none"
        raise ConfigError(f"name one sioi sink with --sink (sioi sinks: {names})", path=args.config)
    sink = sinks[0]
    db = db_path(cfg, state_dir(args))

    async def main() -> int:
        store = await (Store.open(db) if args.retry or args.accept else Store.open_readonly(db))
        try:
            if args.retry or args.accept:
                period = args.retry or args.accept
                rec = await operator_set(store, sink, period, "retry" if args.retry else "accept", time.time(),
                                         force=args.force)
                print(f"{sink.name} {period}: {rec['status']} "
                      f"({'the running daemon sends it within a minute' if args.retry else 'no further action'})")
                return 0
            for rec in await list_records(store, sink):
                if args.json:
                    print(orjson.dumps(rec).decode())
                    continue
                errors = "; ".join(rec.get("errors") or [])
                print(f"{rec.get('period'):<10} {rec.get('status')!s:<10} job {rec.get('job_id') or '-':<10} "
                      f"rows {rec.get('rows', '-')!s:<6} sha256 {str(rec.get('hash') or '-')[:12]:<12} "
                      f"updated {_when(rec.get('updated'))}"
                      + (f"\n    {rec['reason']}" if rec.get("reason") else "")
                      + (f"\n    errors: {errors}" if errors else ""))
        finally:
            await store.close()
        return 0

    return asyncio.run(main())
