#!/usr/bin/env python3
"""Start-up time to READY=1 and RSS at that moment, for a gateway with many meters.

Writes a config of N Mercury 230 meters (default 1000) on L TCP lines (default 50) at 127.0.0.1 ports that
nobody listens on, with the local API enabled, then starts the real daemon (`python -m pollerd run`) with
$NOTIFY_SOCKET pointing at a datagram socket of ours, times exec -> READY=1, and reads VmRSS/VmHWM from
/proc/PID/status the moment READY=1 arrives. Each run gets a fresh state directory (so the store is created
and migrated every time, the slow case). The daemon is stopped with SIGTERM and must exit 0.

    .venv/bin/python scripts/bench_startup.py [--meters 1000] [--lines 50] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_ports(n: int) -> list[int]:
    # All bound at once so the kernel cannot hand out the same port twice (pollerd refuses two lines on one
    # endpoint), then closed: nobody listens there, so connects are refused.
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def write_config(path: Path, meters: int, lines: int) -> None:
    api_port, *ports = free_ports(lines + 1)
    out = [('[gateway]\nname = "bench"\n\n[api]\nenabled = true\n'
            f'listen = "127.0.0.1:{api_port}"\n')]
    for i in range(lines):
        out.append(f'[[lines]]\nname = "conv{i}"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {ports[i]}\n')
    for i in range(meters):
        out.append(f'[[meters]]\nname = "m{i:05d}"\nprotocol = "mercury230"\nline = "conv{i % lines}"\n'
                   f'connection_address = {i // lines % 250 + 1}\ninterval_time = "1m"\n'
                   'read = ["energy", "instant"]\n')
    path.write_text("\n".join(out))


def proc_status(pid: int) -> dict[str, int]:
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0])  # kB
    return vals


def one_run(cfg: Path, work: Path) -> tuple[float, dict[str, int]]:
    sock_path = work / "notify.sock"
    if sock_path.exists():
        sock_path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(1.0)
    state = Path(tempfile.mkdtemp(dir=work))
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path))
    env.pop("WATCHDOG_USEC", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pollerd", "--log-level", "WARNING", "run", "--config", str(cfg),
                             "--state-dir", str(state)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                msg = sock.recv(65536).decode()
            except TimeoutError:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"daemon exited with {proc.returncode} before READY=1:\n{err}") from None
                if time.monotonic() > deadline:
                    raise SystemExit("no READY=1 within 300 s") from None
                continue
            if "READY=1" in msg.split("\n"):
                elapsed = time.perf_counter() - t0
                mem = proc_status(proc.pid)
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        rc = proc.returncode
        if rc != 0:
            raise SystemExit(f"daemon exited with {rc}:\n{err.decode()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    return elapsed, mem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--lines", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = work / "pollerd.toml"
        write_config(cfg, args.meters, args.lines)
        times, rss, hwm = [], [], []
        for i in range(args.runs):
            t, mem = one_run(cfg, work)
            times.append(t)
            rss.append(mem["VmRSS"] / 1024)
            hwm.append(mem["VmHWM"] / 1024)
            print(f"run {i + 1}: READY=1 after {t:.2f} s, RSS {rss[-1]:.1f} MB (peak {hwm[-1]:.1f} MB)")
    print(f"{args.meters} meters on {args.lines} lines, {args.runs} runs, Python {sys.version.split()[0]}: "
          f"time to READY=1 median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
          f"RSS at READY=1 median {statistics.median(rss):.1f} MB (max {max(rss):.1f}), "
          f"peak RSS max {max(hwm):.1f} MB")


if __name__ == "__main__":
    main()
