"""A Mercury 230 simulator that speaks the protocol byte for byte, for tests, the demo and benchmarks.

Layers, as in the daemon: :class:`SimMeter` is a sans-I/O meter (``handle(frame) -> reply``),
:class:`RequestSplitter` cuts a byte stream into request frames, :class:`SimBus` puts several meters on
one bus with fault injection, and :func:`serve_tcp` / :class:`PtySim` move the bytes.

What each meter reports, and the assumptions where the facts are silent, are described in
:mod:`.meter`.
"""

from __future__ import annotations

from .bus import FAULTS, PtySim, RequestSplitter, SimBus, _paced_send, open_pty, serve_tcp
from .meter import Phase, SimMeter

__all__ = ["FAULTS", "Phase", "PtySim", "RequestSplitter", "SimBus", "SimMeter", "_paced_send", "open_pty",
           "serve_tcp"]
