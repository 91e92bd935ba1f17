"""Helpers for the systemd tests: a datagram socket standing in for systemd's notify socket, and a minimal
config whose meters sit on a TCP line nobody listens on (their cycles fail fast, which is still progress)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "pollerd.service"
ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
needs_analyze = pytest.mark.skipif(ANALYZE is None or not SYSTEM_UNITS.is_dir(),
                                   reason="systemd-analyze (and the system's unit directory) not available")


class NotifyListener:
    """Receives sd_notify datagrams. ``address`` is what goes into $NOTIFY_SOCKET."""

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:  # abstract namespace: "@name" in $NOTIFY_SOCKET
            name = f"pollerd-test-{os.getpid()}-{id(self)}"
            self.sock.bind(b"\0" + name.encode())
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        got = []
        while True:
            try:
                got.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                break
        self.messages.extend(got)
        return got

    def wait_for(self, needle: str, deadline: float = 30.0, *, after: int = 0) -> str:
        """Blocking wait (for subprocess tests) until a message at index >= ``after`` contains ``needle``."""
        end = time.monotonic() + deadline
        while True:
            self.drain()
            for m in self.messages[after:]:
                if needle in m.split("\n") or any(line.startswith(needle) for line in m.split("\n")):
                    return m
            if time.monotonic() > end:
                raise AssertionError(f"no {needle!r} within {deadline}s; got {self.messages!r}")
            time.sleep(0.02)

    def lines(self) -> list[str]:
        return [line for m in self.messages for line in m.split("\n")]

    def close(self) -> None:
        self.sock.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def write_config(path: Path, *, meters: int = 2, lines: int = 1, port: int | None = None,
                 interval: str = "1s", api: bool = False) -> Path:
    port = port or closed_port()
    text = [('[gateway]\nname = "sd-test"\nspread = "1s"\n\n[store]\ncommit_interval = "100ms"\n\n'
             f'[api]\nenabled = {"true" if api else "false"}\nlisten = "127.0.0.1:{closed_port()}"\n')]
    for i in range(lines):
        text.append(f'[[lines]]\nname = "l{i}"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
                    'connect_timeout = "500ms"\nreconnect_min = "200ms"\nreconnect_max = "1s"\n')
    for i in range(meters):
        text.append(f'[[meters]]\nname = "m{i}"\nprotocol = "mercury230"\nline = "l{i % lines}"\n'
                    f'connection_address = {i % 250 + 1}\ninterval_time = "{interval}"\n'
                    'waiting_time = "200ms"\nretries = 0\n')
    path.write_text("\n".join(text))
    return path


def settings(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def exec_paths(text: str) -> list[str]:
    paths = []
    for key, value in settings(text):
        if key.startswith("Exec"):
            # Strip the prefixes systemd allows before the path ("-", "@", "+", "!", ":").
            paths.append(value.split()[0].lstrip("-@+!:"))
    return paths


def make_root(tmp_path: Path, unit_text: str | None, *, stubs: bool = True, root: Path | None = None) -> Path:
    """A root directory with the system's units (for sysinit.target & co), our unit in
    /etc/systemd/system, and -- with ``stubs`` -- an executable at every Exec path.

    Why a root: `systemd-analyze verify` checks that every Exec*= binary exists and is executable, and
    /opt/pollerd/bin/pollerd exists only after scripts/install.sh ran. With --root= the check looks inside
    the root, so the unit is verified unchanged and the binary check stays real (see the negative test)."""
    root = root or tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True, dirs_exist_ok=True)
    if unit_text is None:  # already installed there (scripts/install.sh --prefix)
        unit_text = (root / "etc/systemd/system/pollerd.service").read_text()
    else:
        (root / "etc/systemd/system").mkdir(parents=True)
        (root / "etc/systemd/system/pollerd.service").write_text(unit_text)
    if stubs:
        for p in exec_paths(unit_text):
            stub = root / p.lstrip("/")
            if stub.exists():
                continue
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    return root


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ANALYZE, "verify", "--man=no", f"--root={root}", "pollerd.service"],  # type: ignore[list-item]
                          capture_output=True, text=True, timeout=120, cwd=root)
