"""The `pollerd` command: the argument parser and the dispatch to one module per command group."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import AlreadyRunning, ConfigError, PollerdError
from . import check, demo, parked, poll, readings, run, scan, sioi, tools, webmeters
from .common import EX_CONFIG

Configure = Callable[[argparse.ArgumentParser], None]
Command = Callable[[argparse.Namespace], int]


def _no_arguments(p: argparse.ArgumentParser) -> None:
    return None


# (name, help, configure, run), in the order `pollerd --help` lists them.
COMMANDS: tuple[tuple[str, str, Configure, Command], ...] = (
    ("version", "print versions and whether the C CRC extension is in use", _no_arguments, check.run_version),
    ("check", "validate a config file and print a summary", check.configure_check, check.run_check),
    ("run", "run the daemon (what systemd starts)", run.configure_parser, run.run),
    ("poll", "poll one meter once now and print its readings (commissioning)", poll.configure_poll,
     poll.run_poll),
    ("raw", "send one HEX frame to a meter (CRC appended when missing) and print the reply", poll.configure_raw,
     poll.run_raw),
    ("scan", "find M-Bus meters on a line (primary and secondary addresses) and print config snippets",
     scan.configure_parser, scan.run),
    ("readings", "print stored readings", readings.configure_parser, readings.run),
    ("sim", "run meter simulators", tools.configure_sim, tools.run_sim),
    ("decode", "decode captured frames (hex) and print JSON", tools.configure_decode, tools.run_decode),
    ("sioi", "АС СиОИ document sink: per-period status; --retry / --accept a period", sioi.configure_parser,
     sioi.run),
    ("parked", "batches a sink's receiver refused for good: list; --retry / --release one",
     parked.configure_parser, parked.run),
    ("webmeters-key", "get a WebMeters api key by SMS (apiSendKeyRequest, apiGetKey) and print it for the config",
     webmeters.configure_parser, webmeters.run),
    ("demo", "simulated meters + the daemon + a local receiver, end to end", demo.configure_parser, demo.run),
)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


class _Parser(argparse.ArgumentParser):
    """A command's parser refuses an option it does not know itself, with its own usage line: argparse would
    hand the leftover to the top-level parser, whose usage says nothing about the command that was typed."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]  # typeshed overloads it
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        ns, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return ns, extra


def _add_log_level(p: argparse.ArgumentParser, default: str | None) -> None:
    # Before or after the command: each command's parser takes it too, and SUPPRESS leaves the top-level
    # value alone unless it is given there.
    p.add_argument("--log-level", type=_log_level, default=argparse.SUPPRESS if default is None else default,
                   metavar="LEVEL", help=f"{', '.join(LOG_LEVELS)} (default INFO; any letter case)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    p = argparse.ArgumentParser(prog="pollerd", description="Metering gateway daemon")
    p.add_argument("--version", action="version", version=f"pollerd {__version__}",
                   help="print the version and exit (`pollerd version` adds the libraries)")
    _add_log_level(p, "INFO")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, text, configure, command in COMMANDS:
        if name == "decode" and not tools.has_decoders():
            continue
        s = sub.add_parser(name, help=text, description=text)
        configure(s)
        _add_log_level(s, None)
        s.set_defaults(func=command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # Exit 2, as for any other usage error: a script that runs `pollerd` with nothing to do made a
        # mistake and must not take the help text for success. The help goes to stderr with it.
        parser.print_help(sys.stderr)
        return 2
    # journald with METER=/LINE=/SINK= fields under systemd, stderr otherwise; repeats folded (pollerd/logs.py)
    from ..logs import setup_logging
    setup_logging(args.log_level)
    func: Command = args.func
    try:
        return func(args)
    except ConfigError as exc:
        for err in exc.errors:  # the loader found them all; each is one line naming file, line and key
            print(f"pollerd: {err}", file=sys.stderr)
        return EX_CONFIG
    except AlreadyRunning as exc:  # 75, EX_TEMPFAIL: systemd restarts and takes over once the other is gone
        print(f"pollerd: {exc}", file=sys.stderr)
        return exc.exit_code
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
