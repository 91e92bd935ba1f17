"""A Mercury 230 simulator that speaks the protocol byte for byte, for tests, the demo and benchmarks.

Layers, as in the daemon: :class:`SimMeter` is a sans-I/O meter (``handle(frame) -> reply``),
:class:`RequestSplitter` cuts a byte stream into request frames, :class:`SimBus` puts several meters on
one bus with fault injection, and :func:`serve_tcp` / :class:`PtySim` move the bytes.

Every value a meter reports is predictable: with a fixed ``clock``, :meth:`SimMeter.expected_energy` and
:meth:`SimMeter.expected_instant` give exactly what the codec will decode, so end-to-end tests can
assert exact values upstream.

Assumptions where the facts are silent (no vendor document at hand): a wrong password is answered with
status 1; the idle session timeout defaults to 240 s; the meter answers the universal address 0 with
address 0 in the reply (as the wb-mqtt-serial fixtures show).

Archives. Energy is one piecewise-linear function of time per tariff: the load set at
construction and by :meth:`SimMeter.set_phases` accumulates into the active tariff; before the simulator
started, the starting load is assumed to have run all along (counters clamped at 0 going back). From it
come the counters (05 00), the period arrays (05 1x..5x: counter at the period end minus counter at its
start, floored counters, so "today" is exactly counter(now) - counter(midnight)), arrays 9-13 (counters at
period starts) and the load profile (memory 3, one record per interval, ``profile_days`` deep, the
running interval flagged 0x02 and pointed at by 08 13). Journals are deterministic lists per journal
(:attr:`SimMeter.journals`, records 0.. oldest first, the rest empty). The clock runs ``clock_drift``
seconds ahead of the gateway (plus whatever 03 0C and 03 0D set). 03 08 freezes a snapshot for 08 14.
Time correction (03 0D) is accepted at access level 1, once per meter-local day (status 4 after that),
and only up to ``correction_limit`` seconds (status 1 beyond: an assumption, the real meter's answer to
too large a correction is not documented in reach); :attr:`SimMeter.corrections` records each one.
"""

from __future__ import annotations

from .bus import FAULTS, PtySim, RequestSplitter, SimBus, _paced_send, open_pty, serve_tcp
from .meter import Phase, SimMeter

__all__ = ["FAULTS", "Phase", "PtySim", "RequestSplitter", "SimBus", "SimMeter", "_paced_send", "open_pty",
           "serve_tcp"]
