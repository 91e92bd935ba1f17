"""What several commands share: loading the config file, the state directory, and how a reading is
printed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from ..text import utc_text

if TYPE_CHECKING:  # pragma: no cover - typing only: importing the config at parse time slows `--help`
    from ..config import Config
    from ..model import Reading


EX_CONFIG = 78  # sysexits.h EX_CONFIG: systemd's RestartPreventExitStatus can name it

CONFIG_HELP = "the pollerd config file (TOML), e.g. /etc/pollerd/pollerd.toml"
STATE_DIR_HELP = "the daemon's state directory (default: $STATE_DIRECTORY, else /var/lib/pollerd)"


def add_config(p: argparse.ArgumentParser, what: str = CONFIG_HELP) -> None:
    """--config/-c, the one spelling every command that reads a config file accepts."""
    p.add_argument("--config", "-c", required=True, metavar="FILE", help=what)


def add_state_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", metavar="DIR", help=STATE_DIR_HELP)


def load(path: str) -> Config:
    # Imported when a command runs, not when the parser is built: `pollerd --help` stays quick.
    from ..config import load_config
    return load_config(path)


def state_dir(args: argparse.Namespace) -> Path:
    """--state-dir, else $STATE_DIRECTORY or /var/lib/pollerd (what systemd gives the service)."""
    from ..daemon import default_state_dir
    return Path(args.state_dir) if args.state_dir else default_state_dir()


def reading_line(r: Reading, as_json: bool) -> str:
    if as_json:
        return orjson.dumps(r.as_dict()).decode()
    q = "" if r.quality == "good" else f" [{r.quality}]"
    return f"{r.meter:<16} {r.channel:<12} {r.archive:<8} {utc_text(r.ts)}  {r.value:>14.10g} {r.unit}{q}"
