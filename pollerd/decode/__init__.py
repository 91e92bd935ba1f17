"""`pollerd decode PROTOCOL ...`: offline decoding of captured frames, one module per protocol.

Which module serves a protocol is declared in the protocol catalog (ProtocolSpec.decoder); the command runs it
through :func:`run_guarded`.

The output is strict JSON (:func:`dumps`: no NaN or Infinity, which most JSON parsers refuse); a value a
meter sent that pollerd would not store carries an ``"invalid"`` reason beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from pollerd.errors import PollerdError
from pollerd.text import parse_hex

# Exit status for a decoder fault (sysexits EX_SOFTWARE): distinct from 1, "the frame is not valid".
EXIT_INTERNAL = 70


def hex_argument(text: str) -> bytes:
    """argparse ``type=`` for a frame typed as hex (pollerd.text.parse_hex's rule); argparse prints the message."""
    try:
        return parse_hex(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def dumps(obj: Any) -> str:
    """Strict JSON: raises ValueError for a non-finite float rather than printing NaN (not JSON)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def run_guarded(protocol: str, run: Callable[[], int]) -> int:
    """Run one decode tool. Bad input is the tool's own one-line error (exit 1); should a decoder still
    raise on some input, the user gets one line naming the fault, never a traceback."""
    try:
        return int(run())
    except PollerdError as exc:
        print(f"pollerd decode {protocol}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a decoder bug: report it in one line (scripts/fuzz.py hunts these down)
        print(f"pollerd decode {protocol}: internal error, this input could not be decoded "
              f"({type(exc).__name__}: {exc}); please report it with the hex", file=sys.stderr)
        return EXIT_INTERNAL
