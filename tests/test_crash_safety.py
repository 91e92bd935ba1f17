"""Crash safety (issue 6 part 6): SIGKILL the real daemon at random moments while it polls simulated meters
and forwards to an upstream that fails ~30 % of requests; everything committed reaches upstream, and the
upstream's de-duplicated set equals the store's, for readings and for events (each in its latest version).
Then a long outage: the backlog drains in order per meter with the daemon's memory flat. scripts/crash_soak.py runs the same harness for longer."""

from __future__ import annotations

import os
import random

import pytest
from crash_harness import crash_rounds, outage

pytestmark = pytest.mark.slow


async def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path):
    seed = int(os.environ.get("POLLERD_CRASH_SEED", random.SystemRandom().randrange(1 << 32)))
    res = await crash_rounds(tmp_path, rounds=20, seed=seed)
    assert res.stored > 200, f"seed {seed}: too little was polled to prove anything ({res.stored} readings)"
    # The simulated meters' journals (read = [..., "events"]) give events to forward under the same kills.
    assert res.events > 0, f"seed {seed}: no events were stored, the events outbox went untested"
    assert sum(res.faults.values()) > 0


async def test_outage_backlog_drains_in_order_with_flat_memory(tmp_path):
    res = await outage(tmp_path, backlog=200_000)
    # A resource bound, not a timing one: the forwarder holds one batch, never the backlog.
    assert res.rss_peak_outage_kib - res.rss_start_kib < 30 * 1024, res
    assert res.rss_peak_drain_kib - res.rss_start_kib < 30 * 1024, res
