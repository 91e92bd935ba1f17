"""The one backoff formula: a capped exponential with jitter, for reconnects (lines) and retries (sinks).

``ceiling = min(hi, lo * 2**attempt)``; the delay is uniform between a floor and that ceiling. The floor is
the one choice a caller makes, and each keeps its reason:

- lines reconnecting to a converter use half jitter, floor = ceiling / 2: the delay keeps growing (a dead
  converter is not hammered) while lines that failed at the same moment de-synchronise;
- sinks retrying a receiver use floor = ``lo`` (retry_min): full jitter over the capped exponential, so many
  gateways behind one head-end spread their retries over the whole window.

A leaf: imports nothing of pollerd.
"""

from __future__ import annotations

__all__ = ["MAX_EXPONENT", "backoff_delay"]

# 2**32 * lo is far past any hi; stops the float growing over a long outage.
MAX_EXPONENT = 32


def backoff_delay(attempt: int, lo: float, hi: float, draw: float, *, floor: float | None = None) -> float:
    """Delay before try ``attempt + 1`` (``attempt`` counts from 0). ``draw`` is a uniform random number in
    [0, 1); ``floor`` defaults to half the ceiling (half jitter), pass ``lo`` for full jitter."""
    lo = max(0.0, lo)
    ceiling = max(lo, min(hi, lo * 2.0 ** min(max(attempt, 0), MAX_EXPONENT)))
    bottom = ceiling / 2 if floor is None else min(max(0.0, floor), ceiling)
    return bottom + draw * (ceiling - bottom)
