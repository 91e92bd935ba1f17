"""A refused request costs only its value (issue 14, observation 6): a Mercury meter that answers status 1 to
one fixed-snapshot read keeps the others; the meter constant is read with the other form of 08 12 when one
is refused."""

from __future__ import annotations

import pytest
from test_mercury230_archives import Rig

from pollerd.protocols import mercury230 as m


def _requests(rig: Rig) -> list[bytes]:
    seen: list[bytes] = []
    dispatch = rig.meter._dispatch

    def spy(body: bytes, now: float) -> bytes:
        seen.append(body)
        return dispatch(body, now)

    rig.meter._dispatch = spy  # type: ignore[method-assign]
    return seen


async def test_a_refused_fixed_read_costs_only_its_values(tmp_path):
    async with Rig(tmp_path, '["fixed"]', refuse_fixed=frozenset({0x08})) as rig:
        seen = _requests(rig)
        result = await rig.cycle()
        assert result.ok, result.error
        frozen = rig.meter.expected_fixed()
        got = {r.channel: r.value for r in result.readings}
        assert not {"S", "S.L1", "S.L2", "S.L3"} & set(got)
        # read after the refused 08 14 08: still there, exactly
        for channel in ("U.L1", "I.L1", "I.L2", "I.L3", "PF", "PF.L3", "F", "angle.L1-L2"):
            assert got[channel] == pytest.approx(frozen[channel]), channel
        assert b"\x08\x14\x08" in seen
        seen.clear()
        result = await rig.cycle()
        assert result.ok and b"\x08\x14\x08" not in seen  # refused once: not asked again every cycle
        assert "I.L1" in {r.channel for r in result.readings}


async def test_a_refused_time_of_freezing_stamps_the_snapshot_with_the_cycle(tmp_path):
    async with Rig(tmp_path, '["fixed"]', refuse_fixed=frozenset({0xE0})) as rig:
        result = await rig.cycle()
        assert result.ok, result.error
        assert {r.ts for r in result.readings} == {int(rig.now[0])}
        assert "P" in {r.channel for r in result.readings}


@pytest.mark.parametrize("forms", [("long",), ("short",), ("short", "long")])
async def test_the_meter_constant_is_read_with_whichever_form_of_08_12_the_meter_knows(tmp_path, forms):
    async with Rig(tmp_path, '["energy", "profile"]', variant_forms=forms, constant=500) as rig:
        seen = _requests(rig)
        result = await rig.cycle()
        assert result.ok, result.error
        assert rig.runtime.meters["m"].identity["constant"] == 500
        assert any(r.archive == "profile" for r in result.readings)
        variant_asks = [b for b in seen if b[:2] == b"\x08\x12"]
        assert variant_asks[0] == b"\x08\x12"  # the old form first: pre-2016 meters know only it
        if forms == ("long",):
            assert variant_asks == [b"\x08\x12", b"\x08\x12\x00"]


async def test_a_meter_without_either_form_still_gives_its_energy(tmp_path):
    async with Rig(tmp_path, '["energy"]', variant_forms=()) as rig:
        result = await rig.cycle()
        assert result.ok, result.error
        assert "constant" not in rig.runtime.meters["m"].identity
        assert {r.channel for r in result.readings} >= {"A+", "A+.T1"}


def test_long_variant_request_and_reply_layout():
    req = m.read_variant(7, long=True)
    assert req.body == b"\x08\x12\x00" and req.reply_len == 12
    assert m.decode_variant(m.encode_variant(250, long=True)) == 250
    assert m.describe_request(req.encode())[1] == req
