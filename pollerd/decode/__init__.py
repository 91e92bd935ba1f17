"""`pollerd decode PROTOCOL ...`: offline decoding of captured frames, one module per protocol.

Each module named here provides ``configure_parser(p: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``; the CLI imports them when it builds its parser.
"""

from __future__ import annotations

TOOLS: dict[str, str] = {
    "mercury230": "pollerd.decode.mercury230",
    "modbus": "pollerd.decode.modbus",
    "mbus": "pollerd.decode.mbus",
    "iec62056": "pollerd.decode.iec62056",
}
