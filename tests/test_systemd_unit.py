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

import pytest
from sd_helpers import UNIT, NotifyListener, make_root, needs_analyze, settings, verify, write_config

ANALYZE = shutil.which("systemd-analyze")


def test_unit_has_what_the_daemon_relies_on():
    s = dict(settings(UNIT.read_text()))
    all_settings = settings(UNIT.read_text())
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["WatchdogSec"] == "60s"
    assert s["Restart"] == "on-failure" and s["RestartPreventExitStatus"] == "78"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # The config is checked by the main process itself: RestartPreventExitStatus=78 does not apply to an
    # ExecStartPre= (systemd/systemd#11868), so a 78 there was restarted every 5 s for ever.
    assert "ExecStartPre" not in s
    assert s["ExecStart"].endswith("pollerd run --config /etc/pollerd/pollerd.toml")
    assert s["StateDirectory"] == s["ConfigurationDirectory"] == s["LogsDirectory"] == "pollerd"
    assert s["SupplementaryGroups"] == "dialout" and s["User"] == "pollerd"
    assert {v for k, v in all_settings if k == "DeviceAllow"} == {"char-ttyUSB rw", "char-ttyS rw",
                                                                  "char-ttyACM rw"}
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
