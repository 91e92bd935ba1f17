"""`pollerd decode PROTOCOL ...`: offline decoding of captured frames, one module per protocol.

Which module serves a protocol is declared in the protocol catalog (ProtocolSpec.decoder).
"""

from __future__ import annotations

import argparse

from pollerd.text import parse_hex


def hex_argument(text: str) -> bytes:
    """argparse ``type=`` for a frame typed as hex (pollerd.text.parse_hex's rule); argparse prints the message."""
    try:
        return parse_hex(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
