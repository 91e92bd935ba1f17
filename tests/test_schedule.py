"""Schedule rules with a fake clock: every instant is passed in, nothing reads the real time."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pollerd.config import MeterConfig
from pollerd.schedule import Schedule, local_to_utc, next_run, spread_offset

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, tz: dt.tzinfo = UTC) -> float:
    """Unix seconds of an unambiguous wall time in ``tz``."""
    return dt.datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp()


def utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, UTC)


def local(t: float, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, tz)


UTC = ZoneInfo("UTC")


def sched(period: str = "daily", *, interval: float = 900.0, at: dt.time = dt.time(0, 0),
          dow: set[int] = frozenset(), dom: set[int] = frozenset(), last: bool = False,
          tz: ZoneInfo = UTC, offset: float = 0.0) -> Schedule:
    return Schedule(period, interval, at, frozenset(dow), frozenset(dom), last, tz, offset)


# --- spread ----------------------------------------------------------------------------------------------------

def test_spread_offset_in_range_and_spread_out() -> None:
    offsets = [spread_offset(f"meter-{i}", 900.0) for i in range(2000)]
    assert all(0.0 <= o < 900.0 for o in offsets)
    buckets = {int(o // 90) for o in offsets}
    assert buckets == set(range(10))  # 2000 names fill every tenth of the window
    assert len(set(offsets)) > 1990


def test_spread_offset_degenerate_windows() -> None:
    assert spread_offset("m", 0.0) == 0.0
    assert spread_offset("m", -5.0) == 0.0
    tiny = 1e-300
    assert 0.0 <= spread_offset("m", tiny) < tiny


def test_spread_offset_is_stable_across_processes() -> None:
    # Different hash seeds in child processes: a hash()-based offset would differ between them.
    code = "from pollerd.schedule import spread_offset; print(repr(spread_offset('feeder-1', 3600.0)))"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = set()
    for seed in ("1", "2", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=root)
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                text=True, timeout=60).stdout.strip())
    assert outs == {repr(spread_offset("feeder-1", 3600.0))}


def test_spread_offset_depends_on_name() -> None:
    assert spread_offset("a", 3600.0) != spread_offset("b", 3600.0)


# --- interval --------------------------------------------------------------------------------------------------

def test_interval_is_epoch_aligned_with_offset() -> None:
    s = sched("interval", interval=900.0, offset=37.0)
    r = next_run(s, ts(2024, 6, 5, 12, 3))
    assert r == ts(2024, 6, 5, 12, 15, 37)
    assert (r - 37.0) % 900.0 == 0


def test_interval_strictly_after() -> None:
    s = sched("interval", interval=900.0, offset=37.0)
    at_run = ts(2024, 6, 5, 12, 15, 37)
    assert next_run(s, at_run) == at_run + 900.0
    assert next_run(s, at_run - 0.001) == at_run


def test_interval_ignores_dst() -> None:
    # Interval schedules count real seconds: across the Berlin spring-forward night runs stay an hour apart.
    s = sched("interval", interval=3600.0, tz=BERLIN)
    t = ts(2024, 3, 30, 23, 30)
    runs = []
    for _ in range(5):
        t = next_run(s, t)
        runs.append(t)
    assert [b - a for a, b in itertools.pairwise(runs)] == [3600.0] * 4


def test_interval_with_weekend_filter_in_meter_zone() -> None:
    s = sched("interval", interval=900.0, dow={6, 7}, tz=BERLIN)
    friday_noon = ts(2024, 6, 7, 12, 0)
    r = next_run(s, friday_noon)
    assert local(r, BERLIN).replace(tzinfo=None) == dt.datetime(2024, 6, 8, 0, 0)
    assert utc(r) == dt.datetime(2024, 6, 7, 22, 0, tzinfo=UTC)
    # Inside the allowed day it keeps the plain grid.
    assert next_run(s, r) == r + 900.0
    # After the last Sunday slot it jumps to the next Saturday.
    sunday_last = ts(2024, 6, 9, 23, 45, tz=BERLIN)
    assert local(next_run(s, sunday_last), BERLIN).date() == dt.date(2024, 6, 15)


def test_interval_with_day_of_month_filter_jumps() -> None:
    s = sched("interval", interval=60.0, dom={1})
    r = next_run(s, ts(2024, 6, 2, 5, 0))
    assert r == ts(2024, 7, 1)


def test_interval_with_last_day_filter() -> None:
    s = sched("interval", interval=3600.0, last=True)
    assert next_run(s, ts(2023, 2, 3)) == ts(2023, 2, 28)
    assert next_run(s, ts(2024, 2, 3)) == ts(2024, 2, 29)


def test_interval_impossible_filter_raises() -> None:
    # A 7-day grid from the epoch (a Thursday, UTC) never lands on a Monday.
    s = sched("interval", interval=7 * 86400.0, dow={1})
    with pytest.raises(ValueError, match="no run within"):
        next_run(s, ts(2024, 1, 1))


# --- daily and DST ---------------------------------------------------------------------------------------------

def test_daily_at_local_time_with_offset() -> None:
    s = sched("daily", at=dt.time(0, 5), tz=BERLIN, offset=42.0)
    r = next_run(s, ts(2024, 6, 5, 12, 0))
    assert local(r, BERLIN).replace(tzinfo=None) == dt.datetime(2024, 6, 6, 0, 5, 42)


def test_daily_offset_can_push_into_next_day() -> None:
    s = sched("daily", at=dt.time(23, 58), offset=300.0)
    # The run "for" June 5 happens at 00:03 on June 6; asked just before it, that is the next one.
    assert next_run(s, ts(2024, 6, 6, 0, 1)) == ts(2024, 6, 6, 0, 3)
    assert next_run(s, ts(2024, 6, 6, 0, 3)) == ts(2024, 6, 7, 0, 3)


def test_berlin_spring_forward_gap_runs_after_the_gap() -> None:
    s = sched("daily", at=dt.time(2, 30), tz=BERLIN)
    r = next_run(s, ts(2024, 3, 30, 12, 0))
    # 02:30 does not exist on 2024-03-31 (02:00 CET -> 03:00 CEST): run at 03:00 CEST, the first instant after.
    assert utc(r) == dt.datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    assert local(r, BERLIN).replace(tzinfo=None) == dt.datetime(2024, 3, 31, 3, 0)
    nxt = next_run(s, r)
    assert local(nxt, BERLIN).replace(tzinfo=None) == dt.datetime(2024, 4, 1, 2, 30)


def test_berlin_fall_back_runs_once_at_first_occurrence() -> None:
    s = sched("daily", at=dt.time(2, 30), tz=BERLIN)
    r = next_run(s, ts(2024, 10, 26, 12, 0))
    # 02:30 happens twice on 2024-10-27: 00:30 UTC (CEST) and 01:30 UTC (CET); only the first counts.
    assert utc(r) == dt.datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    nxt = next_run(s, r)
    assert utc(nxt) == dt.datetime(2024, 10, 28, 1, 30, tzinfo=UTC)


def test_daily_midnight_across_berlin_dst_keeps_wall_time() -> None:
    s = sched("daily", at=dt.time(0, 0), tz=BERLIN)
    t = ts(2024, 3, 29, 12, 0)
    runs = []
    for _ in range(4):
        t = next_run(s, t)
        runs.append(t)
    assert all(local(r, BERLIN).time() == dt.time(0, 0) for r in runs)
    # Mar 30 -> Mar 31 -> Apr 1 -> Apr 2: the night of Mar 31 is an hour short.
    assert [b - a for a, b in itertools.pairwise(runs)] == [86400.0, 82800.0, 86400.0]


def test_new_york_gap_and_overlap() -> None:
    s = sched("daily", at=dt.time(2, 30), tz=NEW_YORK)
    # 2024-03-10 02:00 EST -> 03:00 EDT.
    assert utc(next_run(s, ts(2024, 3, 9, 12, 0))) == dt.datetime(2024, 3, 10, 7, 0, tzinfo=UTC)
    s = sched("daily", at=dt.time(1, 30), tz=NEW_YORK)
    # 2024-11-03 01:30 happens at 05:30 UTC (EDT) and 06:30 UTC (EST).
    r = next_run(s, ts(2024, 11, 2, 12, 0))
    assert utc(r) == dt.datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    assert utc(next_run(s, r)) == dt.datetime(2024, 11, 4, 6, 30, tzinfo=UTC)


def test_gap_at_midnight() -> None:
    # Sao Paulo skipped from 00:00 to 01:00 on 2018-11-04; a midnight run happens at 01:00 local (-02).
    sao_paulo = ZoneInfo("America/Sao_Paulo")
    assert local_to_utc(dt.date(2018, 11, 4), dt.time(0, 0), sao_paulo) == ts(2018, 11, 4, 3, 0)
    s = sched("interval", interval=3600.0, dom={4}, tz=sao_paulo)
    assert next_run(s, ts(2018, 11, 1)) == ts(2018, 11, 4, 3, 0)


# --- weekly and monthly ----------------------------------------------------------------------------------------

def test_weekly_on_selected_days() -> None:
    s = sched("weekly", at=dt.time(6, 0), dow={1, 5})
    wednesday = ts(2024, 6, 5, 12, 0)
    r1 = next_run(s, wednesday)
    r2 = next_run(s, r1)
    assert utc(r1) == dt.datetime(2024, 6, 7, 6, 0, tzinfo=UTC)   # Friday
    assert utc(r2) == dt.datetime(2024, 6, 10, 6, 0, tzinfo=UTC)  # Monday


@pytest.mark.parametrize(("dom", "last", "after", "expected"), [
    ({31}, False, (2024, 4, 1), (2024, 5, 31)),        # April has no 31st: skipped, not moved
    ({29}, False, (2023, 2, 1), (2023, 3, 29)),        # no Feb 29 in 2023
    ({29}, False, (2024, 2, 1), (2024, 2, 29)),        # leap year
    (set(), True, (2023, 2, 1), (2023, 2, 28)),
    (set(), True, (2024, 2, 1), (2024, 2, 29)),
    (set(), True, (2024, 4, 1), (2024, 4, 30)),
    ({30}, True, (2023, 2, 1), (2023, 2, 28)),         # "last" covers February when the 30th cannot
    ({1}, True, (2024, 1, 31, 12), (2024, 2, 1)),
])
def test_monthly_month_ends(dom: set[int], last: bool, after: tuple[int, ...], expected: tuple[int, ...]) -> None:
    s = sched("monthly", at=dt.time(0, 10), dom=dom, last=last)
    assert next_run(s, ts(*after)) == ts(*expected, 0, 10)


def test_monthly_last_and_31_run_once_on_the_same_day() -> None:
    s = sched("monthly", at=dt.time(0, 10), dom={31}, last=True)
    r1 = next_run(s, ts(2024, 1, 30))
    r2 = next_run(s, r1)
    assert (utc(r1).date(), utc(r2).date()) == (dt.date(2024, 1, 31), dt.date(2024, 2, 29))


def test_calendar_filters_are_anded() -> None:
    # The 13th that is a Friday.
    s = sched("monthly", at=dt.time(9, 0), dom={13}, dow={5})
    r = next_run(s, ts(2024, 1, 1))
    assert utc(r) == dt.datetime(2024, 9, 13, 9, 0, tzinfo=UTC)


def test_strictly_after_for_calendar() -> None:
    s = sched("daily", at=dt.time(6, 0))
    run = ts(2024, 6, 5, 6, 0)
    assert next_run(s, run) == ts(2024, 6, 6, 6, 0)
    assert next_run(s, run - 1e-3) == run


# --- construction ----------------------------------------------------------------------------------------------

def test_from_meter_spreads_interval_over_its_period_and_calendar_over_spread() -> None:
    m = MeterConfig(name="feeder-1", protocol="mercury230", line="l", connection_address=1, interval_time=900.0,
                    timezone="Europe/Berlin")
    s = Schedule.from_meter(m, spread=60.0)
    assert s.offset == spread_offset("feeder-1", 900.0)
    assert s.tz == BERLIN and s.period_type == "interval"
    d = MeterConfig(name="feeder-1", protocol="mercury230", line="l", connection_address=1, period_type="monthly",
                    days_of_month=frozenset({1}), last_day_of_month=True, at=dt.time(1, 0))
    s = Schedule.from_meter(d, spread=60.0)
    assert s.offset == spread_offset("feeder-1", 60.0) and 0 <= s.offset < 60.0
    assert s.last_day and s.days_of_month == {1}


def test_bad_schedules_are_rejected() -> None:
    with pytest.raises(ValueError, match="period_type"):
        sched("hourly")
    with pytest.raises(ValueError, match="interval"):
        sched("interval", interval=0.0)


# --- properties ------------------------------------------------------------------------------------------------

ZONES = [ZoneInfo(z) for z in ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                               "Asia/Kathmandu", "America/Sao_Paulo")]

schedules = st.builds(
    Schedule,
    period_type=st.sampled_from(["interval", "daily", "weekly", "monthly"]),
    interval=st.sampled_from([1.0, 60.0, 900.0, 3600.0, 5400.0, 86400.0]),
    at=st.times().map(lambda t: t.replace(microsecond=0)),
    days_of_week=st.frozensets(st.integers(1, 7)),
    days_of_month=st.frozensets(st.integers(1, 31), max_size=4),
    last_day=st.booleans(),
    tz=st.sampled_from(ZONES),
    offset=st.floats(0.0, 600.0),
)
instants = st.floats(ts(2000, 1, 1), ts(2060, 1, 1))


@settings(max_examples=150, deadline=None)
@given(schedules, instants, instants)
def test_next_run_is_strictly_after_first_and_monotonic(s: Schedule, a: float, b: float) -> None:
    a, b = min(a, b), max(a, b)
    ra, rb = next_run(s, a), next_run(s, b)
    assert ra > a and rb > b
    assert ra <= rb
    # Nothing is skipped: from any instant between `a` and its next run, the next run is the same.
    mid = (a + ra) / 2
    if a <= mid < ra:
        assert next_run(s, mid) == ra
