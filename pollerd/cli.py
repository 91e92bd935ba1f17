"""The `pollerd` command: run, check, poll, readings, sim, demo, version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from . import __version__
from .errors import ConfigError, PollerdError
from .text import utc_text

EX_CONFIG = 78  # sysexits.h EX_CONFIG: systemd's RestartPreventExitStatus can name it


def _setup_logging(level: str) -> None:
    # journald with METER=/LINE=/SINK= fields under systemd, stderr otherwise; repeats folded (pollerd/logs.py)
    from .logs import setup_logging
    setup_logging(level)


def _load(path: str):  # type: ignore[no-untyped-def]
    from .config import load_config
    return load_config(path)


def _reading_line(r, as_json: bool) -> str:  # type: ignore[no-untyped-def]
    if as_json:
        return orjson.dumps(r.as_dict()).decode()
    q = "" if r.quality == "good" else f" [{r.quality}]"
    return f"{r.meter:<16} {r.channel:<12} {r.archive:<8} {utc_text(r.ts)}  {r.value:>14.10g} {r.unit}{q}"


# -- commands ------------------------------------------------------------------------------------------

def cmd_version(args: argparse.Namespace) -> int:
    import aiohttp
    import aiosqlite

    from .protocols.crc import crc_extension_in_use
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


def cmd_check(args: argparse.Namespace) -> int:
    from .commands.summary import summary
    cfg = _load(args.config)
    print(summary(cfg))
    enabled = [m for m in cfg.meters if m.enabled]
    if not enabled:
        print("warning: no enabled meters: the daemon would poll nothing")
    if enabled and not cfg.sinks:
        print("warning: no sinks: readings stay on this gateway (the local API and `pollerd readings` only)")
    print(f"{args.config}: OK")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon, default_state_dir, install_signal_handlers
    cfg = _load(args.config)
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()

    async def main() -> int:
        d = Daemon(cfg, state_dir)
        install_signal_handlers(d)
        return await d.run()

    return asyncio.run(main())


def cmd_poll(args: argparse.Namespace) -> int:
    from .daemon import build_driver, build_lines
    from .metrics import Registry
    from .state import Runtime
    cfg = _load(args.config)
    try:
        mc = cfg.meter(args.meter)
    except KeyError:
        names = ", ".join(m.name for m in cfg.meters) or "none"
        raise ConfigError(f"no meter named {args.meter!r} (meters: {names})", path=args.config) from None

    async def main() -> int:
        import time
        runtime, metrics = Runtime(cfg.gateway.name), Registry()
        line = None if mc.is_cloud else build_lines(cfg, runtime, metrics)[mc.line]  # cloud: its own url
        drv = build_driver(mc, line, runtime, metrics)
        try:
            result = await drv.poll(int(time.time()))
        finally:
            try:
                await drv.close()  # also when poll raised: a cloud driver holds an HTTP session
            finally:
                if line is not None:
                    await line.close()
        for r in result.readings:
            print(_reading_line(r, args.json))
        for e in result.events:
            print(orjson.dumps(e.as_dict()).decode() if args.json else f"event {e.code}: {e.text}")
        if result.error:
            print(f"{mc.name}: {result.error}", file=sys.stderr)
        return 0 if result.answered else 1

    return asyncio.run(main())


def cmd_raw(args: argparse.Namespace) -> int:
    from .daemon import build_driver, build_lines
    from .metrics import Registry
    from .state import Runtime
    cfg = _load(args.config)
    try:
        mc = cfg.meter(args.meter)
    except KeyError:
        raise ConfigError(f"no meter named {args.meter!r}", path=args.config) from None

    if mc.is_cloud:
        print(f"pollerd: {mc.name} is a {mc.protocol} cloud source; it takes no raw frames", file=sys.stderr)
        return 1

    async def main() -> int:
        runtime, metrics = Runtime(cfg.gateway.name), Registry()
        line = build_lines(cfg, runtime, metrics)[mc.line]
        drv = build_driver(mc, line, runtime, metrics)
        if not hasattr(drv, "raw"):
            print(f"pollerd: {mc.protocol} meters do not take raw frames", file=sys.stderr)
            return 1
        try:
            result = await drv.raw(" ".join(args.hex))
            await drv.close()
        finally:
            await line.close()
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0

    try:
        return asyncio.run(main())
    except ValueError as exc:
        print(f"pollerd: {exc}", file=sys.stderr)
        return 1


def _address_range(text: str) -> range:
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FROM-TO like 0-250, got {text!r}") from None
    if not 0 <= a <= b <= 250:
        raise argparse.ArgumentTypeError(f"primary addresses are 0..250, got {text!r}")
    return range(a, b + 1)


def cmd_scan(args: argparse.Namespace) -> int:
    from .daemon import build_lines
    from .metrics import Registry
    from .scan import config_snippet, scan_line
    from .state import Runtime
    cfg = _load(args.config)
    names = [ln.name for ln in cfg.lines]
    if args.line not in names:
        raise ConfigError(f"no line named {args.line!r} (lines: {', '.join(names) or 'none'})", path=args.config)

    async def main() -> int:
        line = build_lines(cfg, Runtime(cfg.gateway.name), Registry())[args.line]
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


def cmd_readings(args: argparse.Namespace) -> int:
    from .daemon import default_state_dir
    from .store import Store
    db = Path(args.db) if args.db else (Path(args.state_dir) if args.state_dir else default_state_dir()) / "pollerd.db"

    async def main() -> int:
        store = await Store.open_readonly(db)
        try:
            # By key, not by page: the daemon prunes and backfills meanwhile, which shifts pages.
            after = None
            while rows := await store.readings_after(after, meter=args.meter, channel=args.channel,
                                                     archive=args.archive, limit=1000):
                for r in rows:
                    print(_reading_line(r, args.json))
                last = rows[-1]
                after = (last.ts, last.meter, last.channel, str(last.archive))
        finally:
            await store.close()
        return 0

    return asyncio.run(main())


def cmd_sim(args: argparse.Namespace) -> int:
    import importlib

    from .catalog import CATALOG
    tool = CATALOG[args.sim_protocol].simulator
    assert tool is not None  # argparse offered only protocols with a simulator
    return asyncio.run(importlib.import_module(tool.module).main(args))


def cmd_decode(args: argparse.Namespace) -> int:
    import importlib

    from .catalog import CATALOG
    tool = CATALOG[args.decode_protocol].decoder
    assert tool is not None  # argparse offered only protocols with a decode tool
    return int(importlib.import_module(tool.module).run(args))


def cmd_webmeters_key(args: argparse.Namespace) -> int:
    from .drivers.webmeters import request_key

    async def ask_code() -> str:
        if args.code:
            return str(args.code)
        # The prompt goes to stderr so that stdout carries only the config line.
        print(f"An SMS with a one-time code was sent to {args.phone}.", file=sys.stderr)
        sys.stderr.write("SMS code: ")
        sys.stderr.flush()
        return await asyncio.to_thread(sys.stdin.readline)

    key = asyncio.run(request_key(args.url, args.phone, ask_code))
    print("# the webmeters account's api key; better kept in api_key_file or api_key_credential")
    print(f'api_key = "{key}"')
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    return asyncio.run(run_demo(seconds=args.seconds, state_dir=args.state_dir))


# -- parser --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pollerd", description="Metering gateway daemon")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("version", help="print versions and whether the C CRC extension is in use")
    s.set_defaults(func=cmd_version)

    s = sub.add_parser("check", help="validate a config file and print a summary")
    s.add_argument("config")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("run", help="run the daemon (what systemd starts)")
    s.add_argument("--config", "-c", required=True)
    s.add_argument("--state-dir", help="default: $STATE_DIRECTORY or /var/lib/pollerd")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("poll", help="poll one meter once now and print its readings (commissioning)")
    s.add_argument("--config", "-c", required=True)
    s.add_argument("meter")
    s.add_argument("--json", action="store_true", help="JSON lines")
    s.set_defaults(func=cmd_poll)

    s = sub.add_parser("raw", help="send one HEX frame to a meter (CRC appended when missing) and print "
                                   "the reply")
    s.add_argument("--config", "-c", required=True)
    s.add_argument("meter")
    s.add_argument("hex", nargs="+", help='the frame, e.g. "01 08 00" or 010800')
    s.set_defaults(func=cmd_raw)

    s = sub.add_parser("scan", help="find M-Bus meters on a line (primary and secondary addresses) and print "
                                    "config snippets")
    s.add_argument("--config", "-c", required=True)
    s.add_argument("line")
    s.add_argument("--primary-only", action="store_true", help="skip the secondary-address search")
    s.add_argument("--primary", type=_address_range, default=range(251), metavar="FROM-TO",
                   help="primary addresses to try (default 0-250; an empty range skips them)")
    s.set_defaults(func=cmd_scan)

    s = sub.add_parser("readings", help="print stored readings")
    s.add_argument("--state-dir")
    s.add_argument("--db", help="path of the database (default: STATE_DIR/pollerd.db)")
    s.add_argument("--meter")
    s.add_argument("--channel")
    s.add_argument("--archive")
    s.add_argument("--json", action="store_true", help="JSON lines")
    s.set_defaults(func=cmd_readings)

    import importlib

    from .catalog import CATALOG
    s = sub.add_parser("sim", help="run meter simulators")
    simsub = s.add_subparsers(dest="sim_protocol", required=True)
    for proto, spec in CATALOG.items():
        if spec.simulator is not None:
            importlib.import_module(spec.simulator.module).configure_parser(
                simsub.add_parser(str(proto), help=spec.simulator.help))
    s.set_defaults(func=cmd_sim)

    decoders = {str(p): spec.decoder for p, spec in CATALOG.items() if spec.decoder is not None}
    if decoders:
        s = sub.add_parser("decode", help="decode captured frames (hex) and print JSON")
        decsub = s.add_subparsers(dest="decode_protocol", required=True)
        for proto, tool in decoders.items():
            importlib.import_module(tool.module).configure_parser(decsub.add_parser(proto))
        s.set_defaults(func=cmd_decode)

    from . import sioi_cli
    s = sub.add_parser("sioi", help="АС СиОИ document sink: per-period status; --retry / --accept a period")
    sioi_cli.configure_parser(s)
    s.set_defaults(func=sioi_cli.run)

    from . import parked_cli
    s = sub.add_parser("parked", help="batches a sink's receiver refused for good: list; --retry / --release one")
    parked_cli.configure_parser(s)
    s.set_defaults(func=parked_cli.run)

    s = sub.add_parser("webmeters-key", help="get a WebMeters api key by SMS (apiSendKeyRequest, apiGetKey) "
                                             "and print it for the config")
    s.add_argument("--url", default="http://api.webmeters.ru/1.0/", help="API endpoint (default: %(default)s)")
    s.add_argument("--phone", required=True, help="the account's phone number, 10 digits, e.g. 9181234567")
    s.add_argument("--code", help="the SMS code, if already at hand (default: asked for on the terminal)")
    s.set_defaults(func=cmd_webmeters_key)

    s = sub.add_parser("demo", help="simulated meters + the daemon + a local receiver, end to end")
    s.add_argument("--seconds", type=float, default=30.0, help="stop after this long (default 30)")
    s.add_argument("--state-dir", help="default: a new temporary directory")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"pollerd: {exc}", file=sys.stderr)
        return EX_CONFIG
    except PollerdError as exc:
        print(f"pollerd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pollerd readings | head`: the reader went away, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
