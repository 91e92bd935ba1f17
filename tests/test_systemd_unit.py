"""The shipped unit file: systemd-analyze verify and security, the settings the daemon relies on, and the
daemon running under the kernel's W^X switch (what MemoryDenyWriteExecute=yes enforces)."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sd_helpers import NotifyListener, write_config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "pollerd.service"
ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
needs_analyze = pytest.mark.skipif(ANALYZE is None or not SYSTEM_UNITS.is_dir(),
                                   reason="systemd-analyze (and the system's unit directory) not available")


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


def make_root(tmp_path: Path, unit_text: str, *, stubs: bool = True) -> Path:
    """A root directory with the system's units (for sysinit.target & co), our unit in
    /etc/systemd/system, and -- with ``stubs`` -- an executable at every Exec path.

    Why a root: `systemd-analyze verify` checks that every Exec*= binary exists and is executable, and
    /opt/pollerd/bin/pollerd exists only after scripts/install.sh ran. With --root= the check looks inside
    the root, so the unit is verified unchanged and the binary check stays real (see the negative test)."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/pollerd.service").write_text(unit_text)
    if stubs:
        for p in exec_paths(unit_text):
            stub = root / p.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    return root


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ANALYZE, "verify", "--man=no", f"--root={root}", "pollerd.service"],  # type: ignore[list-item]
                          capture_output=True, text=True, timeout=120, cwd=root)


def test_unit_has_what_the_daemon_relies_on():
    s = dict(settings(UNIT.read_text()))
    all_settings = settings(UNIT.read_text())
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["WatchdogSec"] == "60s"
    assert s["Restart"] == "on-failure" and s["RestartPreventExitStatus"] == "78"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["ExecStartPre"].endswith("pollerd check /etc/pollerd/pollerd.toml")
    assert s["ExecStart"].endswith("pollerd run --config /etc/pollerd/pollerd.toml")
    assert s["StateDirectory"] == s["ConfigurationDirectory"] == s["LogsDirectory"] == "pollerd"
    assert s["SupplementaryGroups"] == "dialout" and s["User"] == "pollerd"
    assert {v for k, v in all_settings if k == "DeviceAllow"} == {"char-ttyUSB rw", "char-ttyS rw", "char-ttyACM rw"}
    assert s["DevicePolicy"] == "closed" and s["CapabilityBoundingSet"] == ""
    assert s["MemoryDenyWriteExecute"] == "yes" and s["UMask"] == "0027"
    assert "PrivateUsers" not in s and "IPAddressDeny" not in s  # see the comments in the unit for why
    assert "#LoadCredential=" in UNIT.read_text()


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path):
    res = verify(make_root(tmp_path, UNIT.read_text()))
    assert res.returncode == 0, res.stderr
    assert "pollerd.service" not in res.stderr, res.stderr  # no warnings about our unit either


@needs_analyze
def test_verify_really_checks_the_binaries_and_the_syntax(tmp_path):
    res = verify(make_root(tmp_path / "a", UNIT.read_text(), stubs=False))
    assert res.returncode != 0 and "/opt/pollerd/bin/pollerd" in res.stderr, res.stderr
    broken = UNIT.read_text().replace("Type=notify", "Type=notifyy")
    res = verify(make_root(tmp_path / "b", broken))
    # verify only warns about a bad value (exit 0), which is why the positive test rejects any message
    # naming our unit.
    assert "pollerd.service:" in res.stderr and "notifyy" in res.stderr, res.stderr


@needs_analyze
def test_systemd_analyze_security_exposure_is_at_most_2(tmp_path):
    res = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],  # type: ignore[list-item]
                         capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for pollerd\.service: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 2.0, res.stdout


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def _set_mdwe() -> None:  # runs in the child between fork and exec; the flag survives exec
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        os._exit(97)


def test_daemon_runs_with_write_xor_execute_memory(tmp_path):
    """MemoryDenyWriteExecute=yes kills a process that maps memory writable and executable. The kernel's
    PR_SET_MDWE (Linux >= 6.3) refuses the same mappings, so the daemon -- imports, store, API, meter
    loops -- must reach READY=1 and stop cleanly under it."""
    probe = subprocess.run([sys.executable, "-c",
                            "import mmap\ntry:\n    mmap.mmap(-1, 4096, prot=7)\nexcept OSError:\n    print('refused')"],
                           preexec_fn=_set_mdwe, capture_output=True, text=True, timeout=60)
    if probe.returncode == 97:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert probe.stdout.strip() == "refused", probe  # W^X is really enforced in the child
    cfg = write_config(tmp_path / "p.toml", meters=2, api=True)
    listener = NotifyListener(tmp_path / "n.sock")
    env = dict(os.environ, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="1000000")
    proc = subprocess.Popen([sys.executable, "-m", "pollerd", "run", "--config", str(cfg), "--state-dir",
                             str(tmp_path / "state")], env=env, preexec_fn=_set_mdwe,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        listener.wait_for("READY=1", 60)
        listener.wait_for("WATCHDOG=1", 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
