"""A small seeded run of scripts/fuzz.py per decoder (issue 14): mutated real frames must give no exception
outside pollerd.errors, no non-finite value and no hang. The full run (>= 1 M inputs per decoder) is the
script's; its figures are in the README."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from vectors import VECTORS_ENV, vectors_dir

INPUTS = 20_000


def _fuzz_module() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "fuzz.py"
    spec = importlib.util.spec_from_file_location("pollerd_fuzz_script", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    if not (vectors_dir() / "mbus").is_dir():
        pytest.skip(f"protocol vectors not found at {vectors_dir()} (set {VECTORS_ENV})")
    return _fuzz_module()


@pytest.mark.parametrize("decoder", ["mercury230", "iec62056", "modbus", "mbus", "dlms"])
def test_mutated_real_frames_give_only_declared_errors(fuzz: ModuleType, decoder: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VECTORS_ENV, str(vectors_dir()))
    stats = fuzz.fuzz(decoder, INPUTS, seed=7, cap_ms=250.0)
    assert stats.inputs == INPUTS
    assert not stats.findings, fuzz.report([stats])
    # The mutations must reach the parsers, not only fail the checksum: a fuzzer that never gets past the
    # CRC would pass this test for nothing.
    assert stats.accepted > INPUTS // 5, fuzz.report([stats])
    assert len(stats.declared) >= 3, stats.declared


def test_the_fuzzer_finds_an_undeclared_exception(fuzz: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # Proof that a finding is reported: a decoder bug planted for this test only.
    from pollerd.protocols import modbus
    monkeypatch.setenv(VECTORS_ENV, str(vectors_dir()))
    real = modbus.Reply.registers

    def planted(self):  # type: ignore[no-untyped-def]
        if len(self.data) == 4:
            raise IndexError("planted")
        return real(self)

    monkeypatch.setattr(modbus.Reply, "registers", planted)
    stats = fuzz.fuzz("modbus", 3000, seed=7)
    assert stats.count("exception") > 0 and any("IndexError" in k for k in stats.findings)
