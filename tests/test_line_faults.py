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
