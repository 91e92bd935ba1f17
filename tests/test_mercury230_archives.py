"""Mercury 230 driver against the simulator: load profile (backfill, resume, no holes), energy archives,
fixed values, journals, clock drift and transformer ratios, with a real store in between."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest

from pollerd.config import load_config
from pollerd.daemon import build_driver, build_lines
from pollerd.metrics import Registry
from pollerd.sim.mercury230 import Phase, SimBus, SimMeter, serve_tcp
from pollerd.state import Runtime
from pollerd.store import Store

MSK = ZoneInfo("Europe/Moscow")
T0 = 1_790_001_000.0  # 2026-09-21 ~13:50 UTC


class Rig:
    """One simulated meter on a TCP converter, a driver for it and a store, advanced by a shared clock."""

    def __init__(self, tmp_path, read: str, extra: str = "", dpl: str = "1d", zone: str = "Europe/Moscow",
                 *, t0: float = T0, **sim_kw: object) -> None:
        # The meter has been running for three days before the test looks at it, so its profile, archives
        # and counters hold real, non-zero history.
        self.now = [t0 - 3 * 86400]
        self.meter = SimMeter(address=5, serial="41000005", clock=lambda: self.now[0], timezone=ZoneInfo(zone),
                              energy={1: (5_000_000, 1_000, 700_000, 2_000)}, **sim_kw)  # type: ignore[arg-type]
        self.now[0] = t0
        self.tmp_path = tmp_path
        self.read = read
        self.extra = extra
        self.dpl = dpl
        self.zone = zone

    async def __aenter__(self) -> Rig:
        self.bus = SimBus([self.meter])
        self.server = await serve_tcp(self.bus, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        p = self.tmp_path / "p.toml"
        p.write_text(f'[[meters]]\nname = "m"\nprotocol = "mercury230"\nip_address = "127.0.0.1"\n'
                     f'port = {port}\nconnection_address = 5\ntimezone = "{self.zone}"\n'
                     f'data_polling_length = "{self.dpl}"\nread = {self.read}\n{self.extra}')
        self.cfg = load_config(p)
        self.store = await Store.open(self.tmp_path / "db.sqlite", commit_interval=0.01)
        self.new_driver()
        return self

    def new_driver(self) -> None:
        self.runtime, metrics = Runtime("t"), Registry()
        mc = self.cfg.meter("m")
        self.line = build_lines(self.cfg, self.runtime, metrics)[mc.line]
        self.driver = build_driver(mc, self.line, self.runtime, metrics, clock=lambda: self.now[0],
                                   store=self.store)

    async def cycle(self):  # type: ignore[no-untyped-def]
        """What the daemon does: poll, commit the readings, then the driver state."""
        result = await self.driver.poll(int(self.now[0]))
        assert result.answered, result.error
        await self.store.write(result.readings, result.events)
        for key, value in result.state:
            await self.store.set_state(key, value)
        return result

    async def __aexit__(self, *exc: object) -> None:
        await self.line.close()
        self.server.close()
        await self.store.close()


def profile_of(result, channel: str = "A+") -> dict[int, float]:  # type: ignore[no-untyped-def]
    return {r.ts: r.value for r in result.readings if r.archive == "profile" and r.channel == channel}


async def test_profile_backfills_resumes_and_leaves_no_holes(tmp_path):
    async with Rig(tmp_path, '["profile"]') as rig:
        first = await rig.cycle()
        assert first.ok, first.error
        got = profile_of(first)
        want = {start: a_plus for start, a_plus, *_ in
                rig.meter.expected_profile(T0 - 86400, T0) if start + 1800 <= T0}
        # one day back at 30 min, the interval still running is left for later
        assert len(got) == 48 and got == pytest.approx(want)
        assert all(v > 0 for v in got.values()), got
        assert {(r.channel, r.unit) for r in first.readings} == {("A+", "Wh"), ("A-", "Wh"), ("R+", "varh"), ("R-", "varh")}

        rig.now[0] += 2 * 3600  # four intervals later
        second = await rig.cycle()
        new = profile_of(second)
        assert len(new) == 4 and min(new) == max(got) + 1800  # exactly the new ones, no hole, no re-read

        rig.now[0] += 3600
        rig.new_driver()  # a restart: the position comes back from the store
        third = await rig.cycle()
        assert sorted(profile_of(third)) == [max(new) + 1800, max(new) + 3600]
        rows, total = await rig.store.query_readings(archive="profile", channel="A+", per_page=1000)
        stamps = sorted(r.ts for r in rows)
        assert total == 54 and all(b - a == 1800 for a, b in itertools.pairwise(stamps))


async def test_energy_archives_once_per_completed_period(tmp_path):
    async with Rig(tmp_path, '["daily", "monthly", "yearly"]') as rig:
        first = await rig.cycle()
        daily = {r.channel: r for r in first.readings if r.archive == "daily"}
        yesterday = dt.datetime.fromtimestamp(T0, MSK).date() - dt.timedelta(days=1)
        midnight = int(dt.datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=MSK).timestamp())
        assert daily["A+"].ts == midnight
        assert daily["A+"].value == rig.meter.expected_archive(5, 0, 0)[0]
        assert daily["A+.T1"].value == rig.meter.expected_archive(5, 0, 1)[0]
        months = sorted({r.ts for r in first.readings if r.archive == "monthly"})
        assert months  # at least last month (data_polling_length is one day: one month back)
        yearly = [r for r in first.readings if r.archive == "yearly" and r.channel == "A+"]
        assert len(yearly) == 1 and yearly[0].value == rig.meter.expected_archive(2, 0, 0)[0]
        # the same day again: nothing is read twice
        rig.now[0] += 600
        again = await rig.cycle()
        assert not [r for r in again.readings if r.archive in ("daily", "monthly", "yearly")]


@pytest.mark.parametrize("dpl, want", [("1d", ["2026-08"]), ("51d", ["2026-08"]), ("52d", ["2026-07", "2026-08"]),
                                       ("83d", ["2026-06", "2026-07", "2026-08"])])
async def test_monthly_backfill_takes_every_month_reaching_into_the_window(tmp_path, dpl, want):
    # T0 is 2026-09-21 17:30 Moscow time. 51 days back is Aug 1 17:30: July is over before the window; 52 days
    # back is Jul 31 17:30: July's last day is in it, so July's energy is read (it used to need the whole
    # month inside). The newest complete month is always read.
    async with Rig(tmp_path, '["monthly"]', dpl=dpl) as rig:
        result = await rig.cycle()
        got = sorted(dt.datetime.fromtimestamp(r.ts, MSK).strftime("%Y-%m") for r in result.readings
                     if r.channel == "A+")
        assert got == want


async def test_fixed_values_are_one_snapshot_stamped_with_the_freeze_time(tmp_path):
    async with Rig(tmp_path, '["fixed"]') as rig:
        result = await rig.cycle()
        frozen = rig.meter.expected_fixed()
        local, season = frozen["frozen_at"]
        stamp = int(local.replace(tzinfo=MSK).timestamp())
        got = {r.channel: r for r in result.readings}
        assert {r.ts for r in result.readings} == {stamp}
        for channel in ("P", "P.L2", "U.L1", "I.L3", "PF", "F", "angle.L1-L2"):
            assert got[channel].value == pytest.approx(frozen[channel])


async def test_journals_become_events_once(tmp_path):
    local = dt.datetime.fromtimestamp(T0 - 7200, MSK).replace(tzinfo=None, microsecond=0)
    journals = {1: [(local, local + dt.timedelta(minutes=5))]}
    async with Rig(tmp_path, '["events"]', journals=journals) as rig:
        await rig.cycle()
        events, total = await rig.store.query_events()
        assert total == 1 and events[0].code == "power_off"
        assert events[0].ts_start == int(T0 - 7200) and events[0].ts_end == int(T0 - 7200 + 300)
        rig.now[0] += 7200  # past journal_interval: read again, nothing new stored
        await rig.cycle()
        assert (await rig.store.query_events())[1] == 1


async def test_clock_drift_is_stored_and_a_large_one_raises_an_alarm(tmp_path):
    async with Rig(tmp_path, '["clock"]', clock_drift=-95.0) as rig:
        result = await rig.cycle()
        drift = [r for r in result.readings if r.channel == "clock.drift"]
        assert len(drift) == 1 and drift[0].value == pytest.approx(-95, abs=1) and drift[0].unit == "s"
        assert "clock" in rig.runtime.meters["m"].alarms
        assert [e.code for e in result.events] == ["clock_drift"]


async def test_a_record_the_meter_started_mid_interval_is_partial(tmp_path):
    # After a power cut the meter opens a record at the minute power returned (17:07 instead of 17:00).
    async with Rig(tmp_path, '["profile"]') as rig:
        start = int(T0) - 1800
        address, real = rig.meter.profile_address_of(start), rig.meter.profile_record

        def profile_record(addr, now=None):  # type: ignore[no-untyped-def]
            rec = real(addr, now)
            if addr == address and rec is not None and rec.start is not None:
                rec = dataclasses.replace(rec, start=rec.start.replace(minute=rec.start.minute + 7))
            return rec
        rig.meter.profile_record = profile_record  # type: ignore[method-assign]
        result = await rig.cycle()
        quality = {r.ts: r.quality for r in result.readings if r.archive == "profile" and r.channel == "A+"}
        assert quality.pop(start + 420) == "partial" and start not in quality
        assert len(quality) > 40 and set(quality.values()) == {"good"}


CORRECT = "clock_correction = true\n"


def codes(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.code for e in result.events]


@pytest.mark.parametrize("drift", [95.0, -95.0])
async def test_clock_correction_sets_the_meter_clock_once_a_day(tmp_path, drift):
    # T0 is 17:30:00 Moscow time: a slow meter (17:28:25) is moved forward over the half-hour boundary,
    # a fast one (17:31:35) back within its interval.
    async with Rig(tmp_path, '["clock"]', CORRECT, clock_drift=drift) as rig:
        result = await rig.cycle()
        assert [r.value for r in result.readings if r.channel == "clock.drift"] == [drift]
        assert rig.meter.corrections == [(T0, -drift)]
        assert codes(result) == ["clock_corrected"] and "now +0 s off" in result.events[0].text
        assert "clock" not in rig.runtime.meters["m"].alarms
        # The clock drifts off again the same day: no second request, an alarm until tomorrow.
        rig.meter.clock_drift += 100
        rig.now[0] += 3600
        rig.new_driver()  # a restart in between: the spent correction is remembered in the store
        result = await rig.cycle()
        assert rig.meter.correction_requests == 1 and codes(result) == []
        assert "tomorrow" in rig.runtime.meters["m"].alarms["clock"]
        rig.now[0] += 86400
        result = await rig.cycle()
        assert rig.meter.correction_requests == 2 and codes(result) == ["clock_corrected"]
        assert rig.meter.corrections[-1] == (rig.now[0], -100.0)
        assert "clock" not in rig.runtime.meters["m"].alarms


async def test_clock_correction_waits_for_the_same_date_and_profile_interval(tmp_path):
    async with Rig(tmp_path, '["clock"]', CORRECT, clock_drift=95.0) as rig:
        # 23:59:00 at the gateway, 00:00:35 on the meter: the command carries no date.
        rig.now[0] = T0 + 6 * 3600 + 29 * 60
        await rig.cycle()
        assert rig.meter.correction_requests == 0
        assert "different dates" in rig.runtime.meters["m"].alarms["clock"]
        # 17:59:00 at the gateway, 18:00:35 on the meter: a fast meter is not set back into a closed interval.
        rig.now[0] = T0 + 86400 + 29 * 60
        await rig.cycle()
        assert rig.meter.correction_requests == 0
        assert "30-minute profile interval" in rig.runtime.meters["m"].alarms["clock"]
        rig.now[0] += 120  # 18:01:00 / 18:02:35: same interval, corrected
        result = await rig.cycle()
        assert rig.meter.corrections == [(rig.now[0], -95.0)] and codes(result) == ["clock_corrected"]


async def test_a_correction_whose_reply_is_lost_is_not_sent_again(tmp_path):
    async with Rig(tmp_path, '["clock"]', CORRECT + 'waiting_time = "300ms"\n', clock_drift=-95.0) as rig:
        real = rig.meter._correct

        def correct_then_lose_the_reply(param, now):  # type: ignore[no-untyped-def]
            reply = real(param, now)
            rig.bus.inject("silence")  # applied to this reply: the meter corrected, the answer is lost
            return reply
        rig.meter._correct = correct_then_lose_the_reply  # type: ignore[method-assign]
        result = await rig.cycle()
        # A retry would have met status 4 and been reported as a refusal; one request, and an honest alarm.
        assert rig.meter.correction_requests == 1 and rig.meter.corrections == [(T0, 95.0)]
        assert "no clear answer" in rig.runtime.meters["m"].alarms["clock"] and codes(result) == []
        rig.now[0] += 60
        result = await rig.cycle()  # the clock read shows it took
        assert [r.value for r in result.readings if r.channel == "clock.drift"] == [0.0]
        assert "clock" not in rig.runtime.meters["m"].alarms and rig.meter.correction_requests == 1


async def test_clock_correction_refused_or_too_large_is_an_alarm_not_a_loop(tmp_path):
    async with Rig(tmp_path, '["clock", "energy"]', CORRECT, clock_drift=95.0, correction_limit=60) as rig:
        result = await rig.cycle()  # the meter answers status 1: one request, an event, the cycle goes on
        assert result.ok and any(r.channel == "A+" for r in result.readings)
        assert codes(result) == ["clock_correction_refused"] and rig.meter.correction_requests == 1
        assert "refused" in rig.runtime.meters["m"].alarms["clock"]
        rig.now[0] += 600
        await rig.cycle()
        assert rig.meter.correction_requests == 1
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    async with Rig(tmp_path / "b", '["clock"]', CORRECT, clock_drift=95.0) as rig:
        rig.meter.corrected_on = rig.meter.meter_time(rig.now[0])[0].date()  # someone corrected it today
        result = await rig.cycle()
        assert codes(result) == ["clock_correction_refused"] and "once a day" in result.events[0].text
    async with Rig(tmp_path / "c", '["clock"]', CORRECT, clock_drift=235.0) as rig:
        result = await rig.cycle()  # beyond max_clock_correction (230 s): never corrected automatically
        assert codes(result) == ["clock_drift_too_large"] and rig.meter.correction_requests == 0
        assert "set it by hand" in rig.runtime.meters["m"].alarms["clock"]


async def test_max_clock_correction_beyond_the_meter_limit_is_a_config_error(tmp_path):
    from pollerd.errors import ConfigError
    with pytest.raises(ConfigError, match="max_clock_correction.*at most 240 s"):
        async with Rig(tmp_path, '["clock"]', CORRECT + 'max_clock_correction = "5m"\n'):
            pass
    with pytest.raises(ConfigError, match='clock_correction.*add "clock" to read'):
        async with Rig(tmp_path, '["energy"]', CORRECT):
            pass


async def test_transformer_ratios_give_primary_values(tmp_path):
    async with Rig(tmp_path, '["instant", "energy"]', 'tn1 = 10000\ntn2 = 100\ntt = 40\n') as rig:
        result = await rig.cycle()
        got = {r.channel: r.value for r in result.readings}
        inst = rig.meter.expected_instant()
        assert got["U.L1"] == pytest.approx(inst["U.L1"] * 100)
        assert got["I.L1"] == pytest.approx(inst["I.L1"] * 40)
        assert got["P"] == pytest.approx(inst["P"] * 4000)
        assert got["A+"] == pytest.approx(rig.meter.expected_energy(0)[0] * 4000)
        assert got["F"] == pytest.approx(inst["F"]) and got["PF"] == pytest.approx(inst["PF"])


async def test_a_backfill_longer_than_the_profile_memory_starts_at_its_oldest_record(tmp_path):
    # 31 days at 10 minutes is 4465 records, more than the 4096 addresses memory 3 has (0x10 apart, 16-bit).
    # Counting back 4464 records from the newest wraps past it: the walk used to start 368 records back,
    # meet the newest soon and stop, leaving 3700 intervals the meter holds unread.
    async with Rig(tmp_path, '["profile"]', "profile_records_per_cycle = 3\n", dpl="31d",
                   profile_period=10, profile_days=28) as rig:
        complete = sorted(start for start, *_ in rig.meter.expected_profile(T0 - 31 * 86400, T0)
                          if start + 600 <= T0)
        oldest = complete[-4095:]  # the meter holds the newest 4096 records, the running one is not read
        assert sorted(profile_of(await rig.cycle())) == oldest[:3]
        assert sorted(profile_of(await rig.cycle())) == oldest[3:6]  # continued over cycles, no hole


@pytest.mark.parametrize("gateway, drift", [((2026, 10, 1, 0, 0, 30), -95.0), ((2026, 9, 30, 23, 59, 30), 95.0)])
async def test_archives_follow_the_meter_calendar_around_midnight(tmp_path, gateway, drift):
    # The meter keeps its arrays by its own clock. A slow meter at 00:00:30 is still on September 30: its
    # "yesterday" is the 29th and September is still growing. A fast one at 23:59:30 already has the 30th as
    # "yesterday". Labelling by the gateway's date stored one day's energy under another day, and a month
    # that was not over.
    async with Rig(tmp_path, '["daily", "monthly"]', clock_drift=drift) as rig:
        rig.now[0] = dt.datetime(*gateway, tzinfo=MSK).timestamp()
        meter_day = rig.meter.meter_time()[0].date()
        result = await rig.cycle()
        daily = {r.channel: r for r in result.readings if r.archive == "daily"}
        yesterday = meter_day - dt.timedelta(days=1)
        assert daily["A+"].ts == int(dt.datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=MSK).timestamp())
        assert daily["A+"].value == rig.meter.expected_archive(5, 0, 0)[0]
        months = {r.ts for r in result.readings if r.archive == "monthly"}
        last_month = (meter_day.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
        assert max(months) == int(dt.datetime(last_month.year, last_month.month, 1, tzinfo=MSK).timestamp())


async def test_clock_correction_waits_while_meter_and_gateway_are_on_different_sides_of_a_dst_change(tmp_path):
    # Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC. At 02:59:00 CEST a meter 95 s fast
    # already reads 02:00:35 CET. The correction carries a time of day only: "02:59:00" would move that
    # meter almost an hour forward, not 95 s back. It waits until both are on the same side.
    berlin = ZoneInfo("Europe/Berlin")
    async with Rig(tmp_path, '["clock"]', CORRECT, zone="Europe/Berlin", clock_drift=95.0) as rig:
        rig.now[0] = dt.datetime(2026, 10, 25, 2, 59, 0, tzinfo=berlin).timestamp()
        result = await rig.cycle()
        assert [r.value for r in result.readings if r.channel == "clock.drift"] == [95.0]
        assert rig.meter.correction_requests == 0 and codes(result) == []
        assert "waits" in rig.runtime.meters["m"].alarms["clock"]
        rig.now[0] += 180  # 02:02:00 CET at the gateway, 02:03:35 on the meter: corrected by 95 s
        result = await rig.cycle()
        assert rig.meter.corrections == [(rig.now[0], -95.0)] and codes(result) == ["clock_corrected"]


# Europe/Berlin falls back on 2026-10-25 at 01:00 UTC: 02:00-03:00 local happens twice.
BERLIN_FALL_BACK = dt.datetime(2026, 10, 25, 1, 0, tzinfo=dt.timezone.utc).timestamp()


@pytest.mark.parametrize("hours_between", [0, 0.5, 1, 1.5])
async def test_profile_records_of_the_repeated_hour_keep_both_hours(tmp_path, hours_between):
    # The meter's records carry local wall time without a season byte: 02:00 and 02:30 come twice. Both
    # hours are energy that was used; stamping the second pair like the first lost it to the store's
    # (meter, channel, archive, ts) uniqueness. The repeated hour may be split over two cycles.
    first_cycle = BERLIN_FALL_BACK - 1800 + hours_between * 3600  # the first cycle ends mid-overlap or so
    async with Rig(tmp_path, '["profile"]', t0=first_cycle + 60, zone="Europe/Berlin") as rig:
        await rig.cycle()
        rig.new_driver()  # a restart in between: where the profile stands comes back from the store
        rig.now[0] = BERLIN_FALL_BACK + 3 * 3600 + 60
        await rig.cycle()
        rows, total = await rig.store.query_readings(archive="profile", channel="A+", per_page=1000)
        stamps = sorted(r.ts for r in rows)
        want = {start: a for start, a, *_ in rig.meter.expected_profile(BERLIN_FALL_BACK - 7200,
                                                                        BERLIN_FALL_BACK + 3 * 3600)}
        assert {r.ts: r.value for r in rows if r.ts in want} == pytest.approx(want)
        assert all(b - a == 1800 for a, b in itertools.pairwise(stamps)), stamps


MSK_MONTH_TURN = dt.datetime(2026, 10, 1, 0, 0, 20, tzinfo=MSK).timestamp()


def _archive_of(rows, archive: str) -> dict[tuple[int, str], float]:  # type: ignore[no-untyped-def]
    return {(r.ts, r.channel): r.value for r in rows if r.archive == archive}


async def test_archives_follow_the_meter_calendar_not_the_gateway_one_around_midnight(tmp_path):
    # The arrays are the meter's "yesterday" and "month N". Read by the gateway's date at 00:00:20 from a
    # meter 40 s slow, array 5 (the day before yesterday) was stamped yesterday and month 9 (still growing)
    # was stored as the complete September; both were marked done, so the real values were never read.
    async with Rig(tmp_path, '["daily", "monthly"]', t0=MSK_MONTH_TURN, clock_drift=-40.0) as rig:
        rig.meter.set_phases([Phase(230.0, 3000.0, 0.0)] * 3, now=MSK_MONTH_TURN - 36 * 3600)  # more load
        await rig.cycle()
        rig.now[0] += 600
        await rig.cycle()
        rows, _ = await rig.store.query_readings(per_page=1000)
        daily, monthly = _archive_of(rows, "daily"), _archive_of(rows, "monthly")
        sep30 = int(dt.datetime(2026, 9, 30, tzinfo=MSK).timestamp())
        sep1 = int(dt.datetime(2026, 9, 1, tzinfo=MSK).timestamp())
        assert daily[(sep30, "A+")] == rig.meter.expected_archive(5, 0, 0)[0]
        assert monthly[(sep1, "A+")] == rig.meter.expected_archive(3, 9, 0)[0]
        sep29 = sep30 - 86400  # read in the first cycle: the meter's yesterday then, stamped as such
        assert daily[(sep29, "A+")] == rig.meter.expected_archive(5, 0, 0, now=MSK_MONTH_TURN)[0]
        assert daily[(sep29, "A+")] != daily[(sep30, "A+")]


async def test_archives_read_while_the_meter_day_turns_are_read_again(tmp_path):
    # The meter passes midnight between the tariff reads of array 5: T0 is one day, T1 the next. Such a
    # mix is not stored; the next cycle reads the day again, whole.
    async with Rig(tmp_path, '["daily"]', t0=MSK_MONTH_TURN, clock_drift=-40.0) as rig:
        rig.meter.set_phases([Phase(230.0, 3000.0, 0.0)] * 3, now=MSK_MONTH_TURN - 36 * 3600)
        energy = rig.meter._energy

        def turning(body: bytes, now: float) -> bytes:
            reply = energy(body, now)
            if body[1] >> 4 == 5 and body[2] == 0 and rig.now[0] == MSK_MONTH_TURN:
                rig.now[0] += 60  # 00:00:40 on the meter
            return reply

        rig.meter._energy = turning  # type: ignore[method-assign]
        await rig.cycle()
        rig.now[0] = MSK_MONTH_TURN + 600
        await rig.cycle()
        rows, _ = await rig.store.query_readings(per_page=1000)
        daily = _archive_of(rows, "daily")
        assert {ts for ts, _ in daily} == {int(dt.datetime(2026, 9, 30, tzinfo=MSK).timestamp())}
        for ts, _ in daily:
            assert daily[(ts, "A+")] == daily[(ts, "A+.T1")]  # one tariff in use: the total is T1


async def test_a_failed_store_write_leaves_no_hole_in_profile_or_archives(tmp_path):
    # The daemon writes a cycle's readings, then its driver state; when the readings write fails (disk full,
    # a lock held past busy_timeout) neither is stored. The driver must then read the same records again, not
    # go on from a position it only held in memory: that skipped the lost intervals and days for good.
    async with Rig(tmp_path, '["profile", "daily"]') as rig:
        lost = await rig.driver.poll(int(rig.now[0]))  # polled, but the store refused the write
        assert len(profile_of(lost)) == 48 and [r for r in lost.readings if r.archive == "daily"]
        rig.now[0] += 60  # the next cycle
        second = await rig.cycle()
        assert profile_of(second) == profile_of(lost)
        assert [r for r in second.readings if r.archive == "daily"]
