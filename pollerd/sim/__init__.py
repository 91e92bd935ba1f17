"""Meter simulators that speak the real protocols over TCP and a pty: for tests, the demo and benchmarks.

``TOOLS`` maps a protocol to the module behind `pollerd sim PROTOCOL`; each provides
``configure_parser(p: argparse.ArgumentParser) -> None`` and ``async main(args) -> int``.
"""

from __future__ import annotations

TOOLS: dict[str, tuple[str, str]] = {
    "mercury230": ("pollerd.sim.cli", "Mercury 230 meters on TCP or a pty"),
    "mbus": ("pollerd.sim.mbus", "wired M-Bus heat and water meters on TCP or a pty"),
    "iec62056": ("pollerd.sim.iec62056", "IEC 62056-21 mode C meters (generic, Neva, Energomera) on TCP or a pty"),
}
