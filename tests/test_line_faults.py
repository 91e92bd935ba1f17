"""Issue 14, observations 1 and 5: the real daemon behind a fault-injecting proxy in front of the simulators.
Whatever the proxy does to replies, no stored value may differ from what the simulator holds, and the line
must poll again soon after the converter heals."""

from __future__ import annotations

from pathlib import Path

from fault_helpers import config_text, mercury_meter, mercury_truth, meter_toml, run_daemon, stored, wrong_values

from pollerd.sim.faultproxy import Fault, FaultProxy
from pollerd.sim.mercury230 import SimBus, serve_tcp


async def _mercury_under(tmp_path: Path, kinds: list[Fault], *, rate: float, target3: bool, limit: float,
                         polls: int) -> tuple[list[tuple[str, str, float, float | None]], dict[str, int], int]:
    meters = [mercury_meter(a) for a in (1, 2, 3)]
    server = await serve_tcp(SimBus(meters), "127.0.0.1", 0)
    up = server.sockets[0].getsockname()[1]
    target = (lambda req: req[:1] == b"\x03") if target3 else None
    async with FaultProxy(up, kinds=kinds, rate=rate, target=target, protocol="mercury230", delay=0.35,
                          seed=7) as proxy:
        toml = "".join(meter_toml(f"m{a}", "mercury230", a, serial=f"4100000{a}") for a in (1, 2, 3))
        cfg = tmp_path / "p.toml"
        cfg.write_text(config_text(port=proxy.port, meters=toml, state_dir=tmp_path))

        def enough(d) -> bool:  # type: ignore[no-untyped-def]
            st = d.runtime.meters
            return len(st) == 3 and all(s.polls >= polls for s in st.values())

        daemon = await run_daemon(cfg, tmp_path, enough, limit)
        injected = sum(proxy.injected.values())
    server.close()
    rows = stored(tmp_path / "pollerd.db")
    truth = {f"m{m.address}": mercury_truth(m) for m in meters}
    ok = {name: st.readings for name, st in daemon.runtime.meters.items()}
    return wrong_values(rows, truth), ok, injected


async def test_a_late_reply_is_never_taken_for_the_next_request(tmp_path: Path) -> None:
    # Observation 1: meter 3's replies arrive after waiting_time, or are held back and delivered right
    # after the next request. Mercury replies carry no command code: only the line's discipline (silence,
    # then a fence before a same-shaped request) keeps a T1 reply from being stored as T2.
    bad, readings, injected = await _mercury_under(tmp_path, [Fault.DELAY, Fault.LATE], rate=0.25,
                                                   target3=True, limit=20, polls=6)
    assert injected >= 5
    assert bad == [], bad[:10]
    assert readings["m1"] > 0 and readings["m2"] > 0 and readings["m3"] > 0


async def test_after_a_hung_converter_every_meter_polls_again_soon(tmp_path: Path, monkeypatch) -> None:
    # Observation 5: the converter swallows everything (its old connections stay dead after it heals).
    # The meters degrade; the line must still find the converter healthy again within a bounded time, not
    # after the slowest degraded meter's next probe. Scaled down: SILENT_SECONDS 1.5 s, intervals 1 s.
    import time

    import pollerd.line as line_mod
    monkeypatch.setattr(line_mod, "SILENT_SECONDS", 1.5)
    meters = [mercury_meter(a) for a in (1, 2, 3)]
    server = await serve_tcp(SimBus(meters), "127.0.0.1", 0)
    up = server.sockets[0].getsockname()[1]
    async with FaultProxy(up, protocol="mercury230") as proxy:
        toml = "".join(meter_toml(f"m{a}", "mercury230", a, serial=f"4100000{a}", retries=1) for a in (1, 2, 3))
        cfg = tmp_path / "p.toml"
        cfg.write_text(config_text(port=proxy.port, meters=toml, state_dir=tmp_path))
        phase = {"t": 0.0, "healed": 0.0, "ok_at": {}}

        def step(d) -> bool:  # type: ignore[no-untyped-def]
            st = d.runtime.meters
            now = time.monotonic()
            if not phase["t"] and len(st) == 3 and all(s.last_ok for s in st.values()):
                phase["t"] = now
                proxy.outage(True)
            elif phase["t"] and not phase["healed"] and all(s.degraded for s in st.values()) \
                    and now - phase["t"] > 9:
                phase["healed"] = now
                proxy.outage(False)
                phase["polls"] = {n: s.polls for n, s in st.items()}
            elif phase["healed"]:
                for n, s in st.items():
                    if not s.degraded and n not in phase["ok_at"]:
                        phase["ok_at"][n] = now - phase["healed"]
                return len(phase["ok_at"]) == 3
            return False

        await run_daemon(cfg, tmp_path, step, 40)
    server.close()
    assert phase["healed"], "the meters never all degraded"
    assert len(phase["ok_at"]) == 3, phase
    # 1.5 s of silence to drop the dead socket, a 1 s cycle, retries: well within 30 s at field settings.
    assert max(phase["ok_at"].values()) < 6.0, phase["ok_at"]


async def test_healthy_meters_keep_polling_while_the_converter_resets_some_connections(tmp_path: Path) -> None:
    # Observation 5: 15 % of replies end in a TCP reset. Reads are asked again on a fresh connection at
    # once (it carried bytes, so no backoff), so the meters keep delivering, and nothing wrong is stored.
    bad, readings, injected = await _mercury_under(tmp_path, [Fault.RST], rate=0.15, target3=False, limit=15,
                                                   polls=8)
    assert injected >= 5
    assert bad == [], bad[:10]
    assert all(n >= 8 * 20 for n in readings.values()), readings   # >= 20 readings a cycle on average
