#!/usr/bin/env python3
"""CPU, memory and schedule lateness of the real daemon polling N simulated Mercury 230 meters over TCP.

A helper process serves the meters (N / --per-line meters behind each loopback TCP "converter") and an
upstream HTTP receiver; `pollerd run` polls them every --interval seconds (energy + instantaneous values,
as a real site would) and forwards every reading. After a warm-up (every meter polled once, sessions open),
the daemon's CPU time is sampled from /proc over the measurement window.

Then, in the same invocation and against the same simulator process, the floor (scripts/_bench_floor.py: a
bare asyncio-streams client, one connection per converter, the same Mercury requests at the same rate, no
pollerd code) is measured the same way. ``pollerd CPU / floor CPU`` is the figure to compare across machines
and runs; absolute CPU moves with the machine and with whatever else it runs.

    python scripts/bench_daemon.py [--meters 1000] [--per-line 20] [--interval 60] [--warmup INTERVAL+10]
                                   [--duration 120] [--commit-interval 1] [--no-floor]
                                   [--diag DIR [--tracemalloc FRAMES]] [--cprofile FILE]
    python scripts/bench_daemon.py --meters 10000 --per-line 50 --interval 300

Prints CPU % of one core, the floor's CPU and the ratio, peak RSS (VmHWM), the scheduler lateness p50/p99 the
daemon reports and the bytes written to the disk per stored reading.
With --diag, also the RSS 10 s after start and every cyclic-GC collection's duration by generation (count, total,
max, p99) with the number of objects the collector still tracks and how many are frozen (DIR/diag.K.json keep
the collections over 5 ms; with --tracemalloc, DIR/heap.K.snap are tracemalloc snapshots, slow at 10 000 meters).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SIM_HOST = r"""
import asyncio, json, sys
from aiohttp import web
from pollerd.sim.mercury230 import SimBus, SimMeter, serve_tcp

async def main(lines, per_line):
    servers, ports = [], []
    for l in range(lines):
        meters = [SimMeter(address=a, serial=f"{30000000 + l * 1000 + a}") for a in range(1, per_line + 1)]
        s = await serve_tcp(SimBus(meters), "127.0.0.1", 0)
        servers.append(s)
        ports.append(s.sockets[0].getsockname()[1])
    received = [0]
    async def ingest(request):
        body = await request.json()
        received[0] += len(body["readings"])
        return web.json_response({"ok": True})
    async def count(request):
        return web.json_response({"received": received[0]})
    app = web.Application()
    app.router.add_post("/ingest", ingest)
    app.router.add_get("/count", count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(json.dumps({"ports": ports, "receiver": site._server.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""

# cProfile with the main thread's CPU clock: the default wall clock charges pollerd for the time send() spends
# waiting while the simulator runs on the other core, and for sleeping in epoll between exchanges.
CPU_PROFILE = r"""
import cProfile, runpy, sys, time
out = sys.argv[1]
sys.argv = ["pollerd", *sys.argv[2:]]
prof = cProfile.Profile(time.thread_time)
prof.enable()
try:
    runpy.run_module("pollerd", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    prof.disable()
    prof.dump_stats(out)
"""

# --diag: the cyclic GC's pauses (gc.callbacks, every collection timed) and, with --tracemalloc N, snapshots of
# the Python heap; written on SIGUSR2 (the benchmark sends one a few seconds after start, one at the start of the
# window and one at its end) as DIR/diag.K.json, DIR/pymalloc.K.txt (sys._debugmallocstats) and DIR/heap.K.snap.
DIAG = r"""
import gc, json, os, runpy, signal, sys, time
out, frames = sys.argv[1], int(sys.argv[2])
sys.argv = ["pollerd", *sys.argv[3:]]
pauses = []
t0 = [0.0]
def timed(phase, info):
    if phase == "start":
        t0[0] = time.perf_counter()
    else:
        pauses.append((time.monotonic(), info["generation"], time.perf_counter() - t0[0], info["collected"]))
gc.callbacks.append(timed)
if frames:
    import tracemalloc
    tracemalloc.start(frames)
k = [0]
def dump(*_):
    k[0] += 1
    gens = {}
    for _t, g, d, _c in pauses:
        s = gens.setdefault(g, [])
        s.append(d)
    summary = {str(g): {"n": len(d), "total_s": sum(d), "max_ms": 1e3 * max(d),
                        "p99_ms": 1e3 * sorted(d)[int(0.99 * (len(d) - 1))]} for g, d in gens.items()}
    with open(f"{out}/diag.{k[0]}.json", "w") as f:
        json.dump({"gc": summary, "gc_counts": gc.get_count(), "objects": len(gc.get_objects()),
                   "frozen": gc.get_freeze_count(),
                   "slow": [p for p in pauses if p[2] > 0.005][-50:]}, f)
    if frames:
        tracemalloc.take_snapshot().dump(f"{out}/heap.{k[0]}.snap")
    # pymalloc's own account (arenas in use and their high-water mark, bytes in blocks, free pools), cheap
    # enough to take from a daemon at full load, unlike tracemalloc.
    err = os.dup(2)
    with open(f"{out}/pymalloc.{k[0]}.txt", "w") as f:
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(err, 2)
            os.close(err)
signal.signal(signal.SIGUSR2, dump)
runpy.run_module("pollerd", run_name="__main__", alter_sys=True)
"""


def diag_dump(pid: int, out: str, k: int) -> dict[str, object]:
    """Ask the --diag wrapper for dump ``k`` and return its GC summary once it is written."""
    os.kill(pid, signal.SIGUSR2)
    path = Path(out) / f"diag.{k}.json"
    for _ in range(600):
        if path.exists():
            try:
                return dict(json.loads(path.read_text()))
            except ValueError:  # still being written
                pass
        time.sleep(0.1)
    return {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread id: the event loop's thread is ``pid`` itself, the rest are aiosqlite's connection
    threads and the default executor."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def status_kb(pid: int, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def write_bytes(pid: int) -> int:
    """Bytes the process (with aiosqlite's thread) caused to be written to the block device: SD-card wear."""
    m = re.search(r"^write_bytes:\s+(\d+)", Path(f"/proc/{pid}/io").read_text(), re.M)
    return int(m.group(1)) if m else 0


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def main() -> None:
    # A SIGTERM to the benchmark must still stop the daemon and the simulators it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--per-line", type=int, default=20)
    ap.add_argument("--interval", type=int, default=60)
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before the window (default: --interval + 10, so every meter was polled once)")
    ap.add_argument("--duration", "--window", dest="window", type=float, default=120.0,
                    help="measurement window in seconds, for the daemon and again for the floor")
    ap.add_argument("--commit-interval", type=float, default=None,
                    help="[store] commit_interval for the daemon (default: pollerd's own)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip the bare-asyncio floor measurement")
    ap.add_argument("--read", default="energy,instant")
    ap.add_argument("--cprofile", metavar="FILE",
                    help="run the daemon under cProfile timed by the main thread's CPU time (pstats to FILE)")
    ap.add_argument("--profile", metavar="FILE",
                    help="also record the daemon with py-spy during the window (collapsed stacks to FILE)")
    ap.add_argument("--diag", metavar="DIR",
                    help="time every cyclic-GC collection in the daemon and write summaries to DIR (on SIGUSR2)")
    ap.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                    help="with --diag: also trace allocations (FRAMES deep) and dump heap snapshots to DIR")
    a = ap.parse_args()
    if a.warmup is None:
        a.warmup = a.interval + 10.0
    lines = -(-a.meters // a.per_line)
    tmp = Path(tempfile.mkdtemp(prefix="pollerd-bench-"))
    sim = subprocess.Popen([sys.executable, "-c", SIM_HOST, str(lines), str(a.per_line)],
                           stdout=subprocess.PIPE, text=True)
    daemon = None
    try:
        info = json.loads(sim.stdout.readline())  # type: ignore[union-attr]
        api_port = free_port()
        reads = ", ".join(f'"{r}"' for r in a.read.split(","))
        parts = [f'[gateway]\nname = "bench"\n\n[api]\nlisten = "127.0.0.1:{api_port}"\n']
        if a.commit_interval is not None:
            parts.append(f'[store]\ncommit_interval = "{a.commit_interval:g}s"\n')
        for li, port in enumerate(info["ports"]):
            parts.append(f'[[lines]]\nname = "conv{li}"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n')
        n = 0
        for li in range(lines):
            for addr in range(1, a.per_line + 1):
                if n == a.meters:
                    break
                n += 1
                parts.append(f'[[meters]]\nname = "m{n}"\nprotocol = "mercury230"\nline = "conv{li}"\n'
                             f'connection_address = {addr}\nnumber_meter = "{30000000 + li * 1000 + addr}"\n'
                             f'interval_time = "{a.interval}s"\nread = [{reads}]\n')
        parts.append(f'[[sinks]]\nname = "up"\ntype = "http"\n'
                     f'url = "http://127.0.0.1:{info["receiver"]}/ingest"\n')
        cfg = tmp / "pollerd.toml"
        cfg.write_text("\n".join(parts))
        prefix = ["-c", CPU_PROFILE, a.cprofile] if a.cprofile else []
        if a.diag:
            if a.cprofile:
                raise SystemExit("--diag and --cprofile do not combine")
            Path(a.diag).mkdir(parents=True, exist_ok=True)
            prefix = ["-c", DIAG, a.diag, str(a.tracemalloc)]
        daemon = subprocess.Popen([sys.executable, *(prefix or ["-m", "pollerd"]), "--log-level", "WARNING", "run",
                                   "--config", str(cfg), "--state-dir", str(tmp)])
        print(f"{a.meters} meters on {lines} TCP lines, every {a.interval} s; warm-up {a.warmup:g} s, "
              f"window {a.window:g} s ...", flush=True)
        if a.diag:
            time.sleep(10.0)
            d = diag_dump(daemon.pid, a.diag, 1)
            print(f"diag 1 (10 s after start): RSS {status_kb(daemon.pid, 'VmRSS') / 1024:.1f} MB, "
                  f"{d.get('objects')} GC-tracked objects", flush=True)
            time.sleep(max(0.0, a.warmup - 10.0))
            diag_dump(daemon.pid, a.diag, 2)
        else:
            time.sleep(a.warmup)
        m0, c0, t0 = scrape(api_port), cpu_seconds(daemon.pid), time.monotonic()
        u0 = cpu_split(daemon.pid)
        th0 = thread_cpu(daemon.pid)
        w0 = write_bytes(daemon.pid)
        if a.profile:
            # The venv's py-spy (the bench extra) even when the venv is not on PATH.
            spy = Path(sys.executable).with_name("py-spy")
            subprocess.run([str(spy) if spy.exists() else "py-spy", "record", "--pid", str(daemon.pid), "--duration", str(int(a.window)),
                            "--format", "raw", "--output", a.profile, "--nonblocking"], check=False,
                           stdout=subprocess.DEVNULL)
            time.sleep(max(0.0, a.window - (time.monotonic() - t0)))
        else:
            time.sleep(a.window)
        m1, c1, t1 = scrape(api_port), cpu_seconds(daemon.pid), time.monotonic()
        u1 = cpu_split(daemon.pid)
        th1 = thread_cpu(daemon.pid)
        w1 = write_bytes(daemon.pid)
        hwm, rss = status_kb(daemon.pid, "VmHWM"), status_kb(daemon.pid, "VmRSS")
        if a.diag:
            d = diag_dump(daemon.pid, a.diag, 3)
            print(f"GC since start: {json.dumps(d.get('gc'))}; {d.get('objects')} tracked objects "
                  f"({d.get('frozen')} frozen)")
        received = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{info['receiver']}/count", timeout=10).read())["received"]

        def total(metrics: dict[str, float], prefix: str) -> float:
            return sum(v for k, v in metrics.items() if k.startswith(prefix))

        polls = total(m1, "pollerd_polls_total") - total(m0, "pollerd_polls_total")
        failed = sum(v for k, v in m1.items() if k.startswith("pollerd_polls_total") and 'outcome="ok"' not in k)
        readings = total(m1, "pollerd_readings_total") - total(m0, "pollerd_readings_total")
        exchanges = (total(m1, "pollerd_line_exchanges_total")
                     - total(m0, "pollerd_line_exchanges_total"))
        late = {q: m1.get(f'pollerd_schedule_lateness_seconds{{quantile="{q}"}}', float("nan"))
                for q in ("0.5", "0.99")}
        print(f"cycles in window: {polls:.0f} ({polls / (t1 - t0) * 60:.0f}/min), not-ok cycles since start: "
              f"{failed:.0f}, readings in window: {readings:.0f}, forwarded upstream so far: {received}")
        cpu = 100 * (c1 - c0) / (t1 - t0)
        print(f"CPU: {cpu:.2f} % of one core ({(c1 - c0) / max(1.0, exchanges) * 1e6:.0f} µs per exchange, "
              f"{exchanges:.0f} exchanges)")
        loop_s = th1.get(daemon.pid, 0.0) - th0.get(daemon.pid, 0.0)
        print(f"  of which the event loop's thread {100 * loop_s / (t1 - t0):.2f} %, other threads (aiosqlite, "
              f"executor) {100 * ((c1 - c0) - loop_s) / (t1 - t0):.2f} %")
        print(f"  user {100 * (u1[0] - u0[0]) / (t1 - t0):.2f} %, system {100 * (u1[1] - u0[1]) / (t1 - t0):.2f} %")
        print(f"RSS: peak {hwm / 1024:.1f} MB, now {rss / 1024:.1f} MB")
        if readings:
            print(f"disk writes: {(w1 - w0) / readings:.0f} bytes per stored reading "
                  f"({(w1 - w0) / (t1 - t0) / 1024:.0f} KiB/s; /proc/PID/io write_bytes, state dir {tmp})")
        print(f"schedule lateness: p50 {late['0.5'] * 1000:.1f} ms, p99 {late['0.99'] * 1000:.1f} ms")
        stop(daemon)
        daemon = None
        if a.floor:
            fcpu, fex = run_floor(a, info["ports"])
            print(f"floor (bare asyncio client, same simulator): CPU {fcpu:.2f} % of one core "
                  f"({fex[0]:.0f} µs per exchange, {fex[1]:.0f} exchanges)")
            print(f"pollerd CPU / floor CPU: {cpu / fcpu:.2f}x" if fcpu > 0 else "floor CPU: 0 (window too short?)")
    finally:
        if daemon is not None:
            stop(daemon)
        sim.terminate()
        sim.wait(timeout=10)


def stop(daemon: subprocess.Popen[bytes]) -> None:
    daemon.send_signal(signal.SIGTERM)
    try:
        rc = daemon.wait(timeout=30)
        print(f"daemon exited with {rc} after SIGTERM")
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def floor_plan(a: argparse.Namespace, ports: list[int]) -> dict[str, object]:
    """The daemon's requests as bytes, built once here so that the floor process runs no pollerd code."""
    from pollerd.config.model import MeterConfig
    from pollerd.drivers.mercury230 import SESSION_IDLE
    from pollerd.protocols import mercury230 as m
    from pollerd.schedule import spread_offset

    d = MeterConfig.__dataclass_fields__
    pause, waiting = d["pause_time"].default, d["waiting_time"].default
    pw = m.password_bytes("111111")
    kinds = a.read.split(",")
    out, n = [], 0
    for port in ports:
        meters = []
        for addr in range(1, a.per_line + 1):
            if n == a.meters:
                break
            n += 1
            cycle: list[m.Request] = []
            if "energy" in kinds:
                cycle += [m.read_energy(addr, 0, 0, t) for t in range(5)]
            if "instant" in kinds:
                cycle += [m.read_aux_group(addr, g) for g in m.INSTANT_GROUPS]
                cycle += [m.read_aux(addr, b) for b in m.INSTANT_SINGLES]
            o = m.open_channel(addr, 1, pw)
            if a.interval >= SESSION_IDLE:  # the daemon reopens a session that idled out, every cycle then
                cycle.insert(0, o)
            meters.append({"offset": spread_offset(f"m{n}", a.interval),
                           "open": [o.encode().hex(), o.frame_len],
                           "cycle": [[r.encode().hex(), r.frame_len] for r in cycle]})
        out.append({"port": port, "meters": meters})
    return {"interval": a.interval, "pause": pause, "waiting": waiting, "lines": out}


def run_floor(a: argparse.Namespace, ports: list[int]) -> tuple[float, tuple[float, float]]:
    """CPU % of one core of the floor over the same window length, and (µs per exchange, exchanges)."""
    here = Path(__file__).resolve().parent
    floor = subprocess.Popen([sys.executable, str(here / "_bench_floor.py")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert floor.stdin is not None and floor.stdout is not None
        floor.stdin.write(json.dumps(floor_plan(a, ports)))
        floor.stdin.close()
        if floor.stdout.readline().strip() != "ready":
            raise SystemExit("the floor client did not start")
        # Sessions are open; a few seconds for the schedule to settle (no cold first cycle as the daemon has).
        time.sleep(5.0)
        floor.send_signal(signal.SIGUSR1)
        s0 = json.loads(floor.stdout.readline())
        c0, t0, u0 = cpu_seconds(floor.pid), time.monotonic(), cpu_split(floor.pid)
        time.sleep(a.window)
        floor.send_signal(signal.SIGUSR1)
        s1 = json.loads(floor.stdout.readline())
        c1, t1, u1 = cpu_seconds(floor.pid), time.monotonic(), cpu_split(floor.pid)
        ex = s1["exchanges"] - s0["exchanges"]
        print(f"floor: user {100 * (u1[0] - u0[0]) / (t1 - t0):.2f} %, system {100 * (u1[1] - u0[1]) / (t1 - t0):.2f} %")
        if s1["errors"]:
            print(f"floor: {s1['errors']} replies timed out")
        if s1["late_p99"] is not None:
            print(f"floor schedule lateness: p50 {s1['late_p50'] * 1000:.1f} ms, p99 {s1['late_p99'] * 1000:.1f} ms")
        return 100 * (c1 - c0) / (t1 - t0), ((c1 - c0) / max(1, ex) * 1e6, ex)
    finally:
        floor.terminate()
        floor.wait(timeout=10)


if __name__ == "__main__":
    main()
