"""The status pages in a real browser (Debian's headless Chromium through chromium-driver) against a running
daemon polling simulated Mercury 230 meters over loopback TCP.

One scenario, to keep the browser's start-up cost to one (the whole test takes about 20 s):
the overview lists every meter as ok after a cycle and, without reloading, turns one to failing when its
simulator leaves the bus; the vector diagram's phasors sit at the simulator's angles (off-ideal ones, and a
swapped phase sequence) and power factors, and a current reversed in the simulator shows reversed; the report's totals are the stored archives' sums; a read
token sees no admin controls and gets 403 on admin actions, an admin token polls. Screenshots of every page
go to the test's tmp dir (docs/images/ holds two of them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from browser import chromium, missing
from helpers import free_port

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.sim.mercury230 import Phase, SimBus, SimMeter, serve_tcp

pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=str(missing()))]

ADMIN, READER = "browser-admin-0123456789", "browser-read-0123456789"
TZ = "Europe/Moscow"
PHASES = [Phase(230.0, 1000.0, 200.0), Phase(231.0, 1500.0, -100.0), Phase(229.5, 500.0, 50.0)]


def _meter(name: str, address: int) -> str:
    return (f'[[meters]]\nname = "{name}"\nprotocol = "mercury230"\nline = "bus"\nconnection_address = {address}\n'
            f'interval_time = "1s"\nwaiting_time = "300ms"\ntimezone = "{TZ}"\ndata_polling_length = "1d"\n'
            f'read = ["energy", "instant", "profile", "daily", "events"]\n\n')


def _diff(a: float, b: float) -> float:
    return (a - b + 180.0) % 360.0 - 180.0


async def _until(cond, limit: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{what} not reached within {limit} s")


def _phasors(driver) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    return {g.get_attribute("data-phasor"): float(g.get_attribute("data-angle"))
            for g in driver.find_elements(By.CSS_SELECTOR, "svg.vector [data-phasor]")}


def _full_shot(driver, path: Path) -> None:  # type: ignore[no-untyped-def]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(900, height), 4000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)


async def test_status_pages_in_chromium(tmp_path):
    tz = ZoneInfo(TZ)
    # Counters far from zero, so the backfilled profile and yesterday's archive hold energy (the simulator's
    # counters are clamped at zero going back from its start).
    # m1's phases are swapped (L2 and L3), m2's angles are off the ideal 120/240 (not what a diagram would
    # draw by assumption), m3 is a healthy default.
    angles = {1: (240.0, 120.0, 240.0), 2: (118.6, 241.3, 122.7), 3: (120.0, 240.0, 120.0)}
    sims = [SimMeter(address=a, serial=f"4100000{a}", timezone=tz, phases=list(PHASES), active_tariff=1 + a % 2,
                     energy={1: (1_234_567 + a, 890, 45_678, 12), 2: (765_432, 0, 5_432, 1)}, angles=angles[a])
            for a in (1, 2, 3)]
    bus = SimBus(sims)
    server = await serve_tcp(bus, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        f'[gateway]\nname = "browser-gw"\nspread = "1s"\n\n[store]\ncommit_interval = "100ms"\n\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\ntokens = [{{ token = "{ADMIN}", role = "admin" }}, '
        f'{{ token = "{READER}", role = "read" }}]\n\n'
        f'[[lines]]\nname = "bus"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
        + _meter("m1", 1) + _meter("m2", 2) + _meter("m3", 3))
    daemon = Daemon(load_config(cfg), tmp_path / "state")
    task = asyncio.ensure_future(daemon.run())
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        base = f"http://127.0.0.1:{daemon.api_port}"
        rt = daemon.runtime

        async def all_ok() -> bool:
            return all(ms.status == "ok" for ms in rt.meters.values())
        await _until(all_ok, what="every meter polled")

        with chromium() as driver:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            def go(path: str) -> None:
                driver.get(base + path)

            def login(token: str, path: str = "/") -> None:
                go(path)
                assert "/login" in driver.current_url  # asked for a token, not shown anything
                driver.find_element(By.NAME, "token").send_keys(token)
                driver.find_element(By.CSS_SELECTOR, "form button").click()
                WebDriverWait(driver, 10).until(lambda d: "/login" not in d.current_url)
                assert token not in driver.current_url

            # ---- overview, as a read token
            await asyncio.to_thread(login, READER)
            states = await asyncio.to_thread(lambda: {
                r.get_attribute("data-meter"): r.get_attribute("data-state")
                for r in driver.find_elements(By.CSS_SELECTOR, "tr[data-meter]")})
            assert states == {"m1": "ok", "m2": "ok", "m3": "ok"}
            await asyncio.to_thread(_full_shot, driver, shots / "overview.png")
            assert not await asyncio.to_thread(driver.find_elements, By.CSS_SELECTOR, "[data-action]")

            # m3's simulator leaves the bus: the page turns it to failing by itself, without a reload.
            await asyncio.to_thread(driver.execute_script, "window.__sameDocument = 1")
            sims_by_addr = bus.meters
            sims_by_addr.pop(3)

            def m3_failing(d) -> bool:  # type: ignore[no-untyped-def]
                return bool(d.find_elements(By.CSS_SELECTOR, 'tr[data-meter="m3"][data-state="failing"]'))
            await asyncio.to_thread(WebDriverWait(driver, 25, poll_frequency=0.2).until, m3_failing)
            assert await asyncio.to_thread(driver.execute_script, "return window.__sameDocument") == 1
            assert await asyncio.to_thread(lambda: driver.find_element(
                By.CSS_SELECTOR, 'tr[data-meter="m1"]').get_attribute("data-state")) == "ok"
            await asyncio.to_thread(_full_shot, driver, shots / "overview-failing.png")

            # ---- vector diagram of m2: the simulator's angles and power factors
            await asyncio.to_thread(go, "/meters/m2")
            got = await asyncio.to_thread(_phasors, driver)
            exp = sims[1].expected_instant()
            u = {"L1": 0.0, "L2": -exp["angle.L1-L2"], "L3": -exp["angle.L1-L3"]}
            for ph in ("L1", "L2", "L3"):
                assert _diff(got[f"U.{ph}"], u[ph]) == pytest.approx(0, abs=0.01), ph
                phi = _diff(u[ph], got[f"I.{ph}"])  # the current lags its voltage by phi
                assert math.cos(math.radians(phi)) == pytest.approx(exp[f"PF.L{ph[1]}"], abs=0.002), ph
                assert phi == pytest.approx(math.degrees(math.atan2(exp[f"Q.{ph}"], exp[f"P.{ph}"])), abs=0.1)
                assert abs(phi) < 90
            assert not await asyncio.to_thread(driver.find_elements, By.CSS_SELECTOR, "[data-reversed]")
            # m1 with L2 and L3 swapped: U2 leads U1 by 120° instead of lagging it
            await asyncio.to_thread(go, "/meters/m1")
            swapped = await asyncio.to_thread(_phasors, driver)
            assert swapped["U.L2"] == pytest.approx(120.0, abs=0.01)
            assert swapped["U.L3"] == pytest.approx(-120.0, abs=0.01)

            # The CT of L2 reversed: P and Q change sign; after the next cycle the arrow points backwards.
            sims[1].set_phases([PHASES[0], Phase(231.0, -1500.0, 100.0), PHASES[2]])

            async def reversed_stored() -> bool:
                rows = await daemon.store.latest_readings("m2", "current", since=int(time.time()) - 60, limit=200)
                return any(r.channel == "P.L2" and r.value < 0 for r in rows[:60])
            await _until(reversed_stored, what="the reversed current stored")
            await asyncio.to_thread(go, "/meters/m2")
            got = await asyncio.to_thread(_phasors, driver)
            assert abs(_diff(got["I.L2"], got["U.L2"])) > 90          # reversed
            assert abs(_diff(got["I.L1"], got["U.L1"])) < 90          # the others are not
            assert abs(_diff(got["I.L3"], got["U.L3"])) < 90
            assert _diff(got["U.L2"], got["I.L2"]) == pytest.approx(
                math.degrees(math.atan2(100.0, -1500.0)), abs=0.1)
            assert await asyncio.to_thread(driver.find_elements, By.CSS_SELECTOR, '[data-reversed="I.L2"]')
            await asyncio.to_thread(WebDriverWait(driver, 15).until,  # the chart arrives after the page
                                    lambda d: d.find_elements(By.CSS_SELECTOR, ".chart[data-loaded]"))
            bars = await asyncio.to_thread(driver.find_elements, By.CSS_SELECTOR, "svg.profile .ap rect")
            assert len(bars) >= 40  # a day of 30-minute intervals was backfilled
            heights = await asyncio.to_thread(lambda: [float(b.get_attribute("height")) for b in bars])
            assert max(heights) > 50
            await asyncio.to_thread(_full_shot, driver, shots / "meter.png")

            # ---- a read token: no admin controls, and 403 on the admin actions
            assert not await asyncio.to_thread(driver.find_elements, By.CSS_SELECTOR, "[data-action]")
            status = await asyncio.to_thread(driver.execute_script, """
                const body = new FormData(); body.append("csrf", "guess");
                const r = await fetch("/meters/m2/poll", {method: "POST", body}); return r.status;""")
            assert status == 403
            async with aiohttp.ClientSession() as http, http.post(f"{base}/api/meters/m2/poll",
                                 headers={"Authorization": f"Bearer {READER}"}) as r:
                assert r.status == 403

            # ---- the report: its totals are the sums of the stored daily archives
            yesterday = (dt.datetime.now(tz) - dt.timedelta(days=1)).date().isoformat()
            await asyncio.to_thread(go, f"/reports?meter=m1&meter=m2&from={yesterday}&to={yesterday}")
            rows = await asyncio.to_thread(lambda: [
                (r.get_attribute("data-meter"), r.get_attribute("data-source"), r.get_attribute("data-total"))
                for r in driver.find_elements(By.CSS_SELECTOR, "table.report tr[data-meter]")])
            archived, _n = await daemon.store.query_readings(archive="daily", channel="A+", per_page=1000)
            by_meter = {r.meter: r.value for r in archived}
            assert [(m, s) for m, s, _ in rows] == [("m1", "daily"), ("m2", "daily")]
            assert sum(float(t) for _, _, t in rows) == pytest.approx(by_meter["m1"] + by_meter["m2"])
            assert {m: float(t) for m, _, t in rows} == {m: by_meter[m] for m in ("m1", "m2")}
            await asyncio.to_thread(_full_shot, driver, shots / "report.png")

            # ---- an admin token: the service box, and poll now works
            await asyncio.to_thread(lambda: driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button")
                                    .click())
            await asyncio.to_thread(WebDriverWait(driver, 10).until, lambda d: "/login" in d.current_url)
            await asyncio.to_thread(login, ADMIN, "/meters/m1")
            def poll_now() -> str:
                from selenium.webdriver.support import expected_conditions as ec
                button = driver.find_element(By.CSS_SELECTOR, "[data-action=poll]")
                button.click()
                # The click does not wait for the POST's page: wait for the old one to go, then the result.
                WebDriverWait(driver, 15).until(ec.staleness_of(button))
                return str(WebDriverWait(driver, 15).until(
                    lambda d: d.find_element(By.CSS_SELECTOR, "[data-result]")).text)

            for _ in range(20):  # m1 polls every second: a click may find a cycle running (409), as the API says
                result = await asyncio.to_thread(poll_now)
                if "is running" not in result:
                    break
            assert '"ok": true' in result and '"meter": "m1"' in result
            await asyncio.to_thread(WebDriverWait(driver, 15).until,
                                    lambda d: d.find_elements(By.CSS_SELECTOR, ".chart[data-loaded]"))
            await asyncio.to_thread(_full_shot, driver, shots / "meter-admin.png")
            # Russian, switched on the page
            await asyncio.to_thread(lambda: driver.find_element(By.CSS_SELECTOR, "a.lang").click())
            await asyncio.to_thread(WebDriverWait(driver, 10).until,
                                    lambda d: "Векторная диаграмма" in d.page_source)
            assert '<html lang="ru">' in await asyncio.to_thread(lambda: driver.page_source)
            await asyncio.to_thread(driver.set_window_size, 390, 844)  # a phone
            await asyncio.to_thread(driver.save_screenshot, str(shots / "meter-phone-ru.png"))
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        server.close()
