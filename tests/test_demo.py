"""`pollerd demo`, the README's first command: it collects from every simulated meter, upstream receives
what was stored, and the command it prints to see the readings again works."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_collects_forwards_and_prints_a_working_command(tmp_path):
    state = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "pollerd", "demo", "--seconds", "8", "--state-dir", str(state)],
                         capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for meter in ("tcp-1", "tcp-2", "tcp-3", "rs485-1", "rs485-2", "spodes-1"):
        assert re.search(rf"^  {re.escape(meter)} +ok +polls=[1-9]", out, re.M), out
    m = re.search(r"^store: (\d+) readings; upstream received (\d+) readings", out, re.M)
    assert m and int(m.group(1)) > 0 and m.group(1) == m.group(2), out
    m = re.search(r"^see them again with: +(.+)$", out, re.M)
    assert m, out
    cmd = shlex.split(m.group(1))
    if cmd[0] == "pollerd":  # not installed as a script beside this interpreter: the module is the same thing
        cmd = [sys.executable, "-m", "pollerd", *cmd[1:]]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("\n") == int(re.search(r"^store: (\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    assert str(state) in m.group(1)
