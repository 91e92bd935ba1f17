"""scripts/install.sh: shell syntax of the whole script (the venv path included), and two runs into a
prefix -- idempotent, a user's config never overwritten, the unit file installed and valid in that root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sd_helpers import ROOT, UNIT, make_root, needs_analyze, verify

from pollerd.config import load_config

SCRIPT = ROOT / "scripts" / "install.sh"
EXAMPLE = ROOT / "config" / "pollerd.example.toml"
TEMPLATE = ROOT / "config" / "sioi-template.xml"


def run_install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def tree(root: Path) -> dict[str, tuple[int, bytes | str]]:
    out: dict[str, tuple[int, bytes | str]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = (0, os.readlink(p))
        elif p.is_file():
            out[rel] = (p.stat().st_mode & 0o7777, p.read_bytes())
        else:
            out[rel] = (p.stat().st_mode & 0o7777, "dir")
    return out


def test_install_script_is_valid_shell():
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert os.access(SCRIPT, os.X_OK)


def test_install_into_a_prefix_twice_keeps_the_users_config(tmp_path):
    prefix = tmp_path / "p"
    first = run_install("--prefix", str(prefix), "--no-venv")
    assert first.returncode == 0, first.stderr
    unit = prefix / "etc/systemd/system/pollerd.service"
    cfg = prefix / "etc/pollerd/pollerd.toml"
    assert unit.read_text() == UNIT.read_text()
    assert cfg.read_text() == EXAMPLE.read_text()
    assert cfg.stat().st_mode & 0o777 == 0o640  # the group (pollerd) reads it, nobody else
    assert (prefix / "etc/pollerd").stat().st_mode & 0o777 == 0o750
    assert (prefix / "etc/pollerd/credentials").stat().st_mode & 0o777 == 0o700
    assert os.readlink(prefix / "usr/local/bin/pollerd") == "/opt/pollerd/bin/pollerd"
    # The installed example passes `pollerd check` as it is (and `pollerd run`'s own check): the files it names are there.
    assert (prefix / "etc/pollerd/sioi-template.xml").read_bytes() == TEMPLATE.read_bytes()
    load_config(cfg)
    assert (prefix / "opt/pollerd/share/doc/pollerd/README.md").is_file()  # the unit's Documentation=
    assert (prefix / "opt/pollerd/share/doc/pollerd/docs/configuration.md").is_file()  # the README links there
    assert (prefix / "opt/pollerd/share/doc/pollerd/docs/protocols/mercury230.md").is_file()
    assert not (prefix / "opt/pollerd/bin").exists()  # --no-venv: no pip, no venv
    before = tree(prefix)

    # Idempotent: a second run changes nothing.
    second = run_install("--prefix", str(prefix), "--no-venv")
    assert second.returncode == 0, second.stderr
    assert tree(prefix) == before
    assert "kept the existing" in second.stdout

    # A user's edits survive an upgrade; the unit file is ours and is brought back to the shipped one.
    cfg.write_text('[gateway]\nname = "mine"\n')
    (prefix / "etc/pollerd/sioi-template.xml").write_text("<mine/>\n")
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    third = run_install("--prefix", str(prefix), "--no-venv")
    assert third.returncode == 0, third.stderr
    assert cfg.read_text() == '[gateway]\nname = "mine"\n'
    assert (prefix / "etc/pollerd/sioi-template.xml").read_text() == "<mine/>\n"
    assert unit.read_text() == UNIT.read_text()


@needs_analyze
def test_installed_unit_verifies_in_the_prefix(tmp_path):
    prefix = tmp_path / "p"
    assert run_install("--prefix", str(prefix), "--no-venv").returncode == 0
    # --no-venv left /opt/pollerd/bin/pollerd out: stand-ins for the Exec binaries, then verify in that root.
    res = verify(make_root(tmp_path, None, root=prefix))
    assert res.returncode == 0 and "pollerd.service" not in res.stderr, res.stderr


def test_install_rejects_bad_usage(tmp_path):
    res = run_install("--bogus")
    assert res.returncode != 0 and "unknown option --bogus" in res.stderr
    res = run_install("--prefix", str(tmp_path / "p"), "--wheel", str(tmp_path / "missing.whl"))
    assert res.returncode != 0 and "no such wheel" in res.stderr
    assert not (tmp_path / "p/etc").exists()  # failed before touching anything


@pytest.mark.skipif(os.environ.get("POLLERD_TEST_INSTALL_VENV") != "1",
                    reason="builds a venv with pip (~20 s, needs the package index); "
                           "set POLLERD_TEST_INSTALL_VENV=1 to run")
def test_install_with_the_real_venv(tmp_path):
    prefix = tmp_path / "p"
    res = run_install("--prefix", str(prefix))
    assert res.returncode == 0, res.stderr
    out = subprocess.run([str(prefix / "opt/pollerd/bin/pollerd"), "check", str(prefix / "etc/pollerd/pollerd.toml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
