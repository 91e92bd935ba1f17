"""`pollerd decode PROTOCOL ...`: offline decoding of captured frames, one module per protocol.

Each module named here provides ``configure_parser(p: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``; the CLI imports them when it builds its parser and runs them
through :func:`run_tool`.

The output is strict JSON (:func:`dumps`: no NaN or Infinity, which most JSON parsers refuse); a value a
meter sent that is not a finite number is shown as ``null`` with an ``"invalid"`` reason beside it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from pollerd.errors import PollerdError

TOOLS: dict[str, str] = {
    "mercury230": "pollerd.decode.mercury230",
    "modbus": "pollerd.decode.modbus",
    "mbus": "pollerd.decode.mbus",
    "iec62056": "pollerd.decode.iec62056",
}

# Exit status for a decoder fault (sysexits EX_SOFTWARE): distinct from 1, "the frame is not valid".
EXIT_INTERNAL = 70


def dumps(obj: Any) -> str:
    """Strict JSON: raises ValueError for a non-finite float rather than printing NaN (not JSON)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def run_tool(protocol: str, args: argparse.Namespace) -> int:
    """Run one decode tool. Bad input is the tool's own one-line error (exit 1); should a decoder still
    raise on some input, the user gets one line naming the fault and the input, never a traceback."""
    tool = importlib.import_module(TOOLS[protocol])
    try:
        return int(tool.run(args))
    except PollerdError as exc:
        print(f"pollerd decode {protocol}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a decoder bug: report it in one line (the fuzz script hunts these down)
        print(f"pollerd decode {protocol}: internal error, this input could not be decoded "
              f"({type(exc).__name__}: {exc}); please report it with the hex", file=sys.stderr)
        return EXIT_INTERNAL
