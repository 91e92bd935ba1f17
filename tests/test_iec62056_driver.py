"""The IEC 62056-21 driver replays every recorded wb-mqtt-serial session byte for byte, and handles a bad
checksum, a NAK, noise, partial blocks, the baud switch and parity stripping against a fake link."""

from __future__ import annotations

import pytest
from iec_helpers import IecLink, ScriptedPeer, make_driver, sessions

from pollerd.protocols import iec62056 as iec

B0_XOR = bytes.fromhex("01 42 30 03 71")
B0_SUM7 = iec.break_command("sum7")


def requests_of(steps) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [data for kind, data in steps if kind == "w"]


def values(result) -> dict[str, tuple[float, str]]:  # type: ignore[no-untyped-def]
    return {r.channel: (r.value, r.unit) for r in result.readings}


async def test_neva_poll_session_replays_byte_for_byte() -> None:
    (steps,) = sessions("TNevaIntegrationTest.Poll")
    peer = ScriptedPeer(steps)
    link = IecLink(peer)
    addresses = [r[4:].split(b"(")[0].decode() for r in requests_of(steps) if r.startswith(b"\x01R1")]
    driver, _ = make_driver(link, address="00000201", options={"iec_profile": "neva", "iec_addresses": addresses})
    result = await driver.poll(1000)
    assert peer.mismatch is None
    assert link.writes() == requests_of(steps) + [B0_XOR]   # our break at the end is the only addition
    assert result.ok, result.error
    assert values(result) == {
        "P": (5.3, "W"), "PF.L1": (0.717, ""), "T.meter": (29.0, "°C"),
        "A.abs": (46240.0, "Wh"), "A.abs.T1": (31140.0, "Wh"), "A.abs.T2": (15100.0, "Wh"),
        "A.abs.T3": (0.0, "Wh"), "A.abs.T4": (0.0, "Wh"),
    }
    assert driver.ctx.state.identity["manufacturer"] == "TPC"


async def test_energomera_ce102m_session_replays_byte_for_byte() -> None:
    (steps,) = sessions("TEnergomeraCe102MIntegrationTest.Poll")
    peer = ScriptedPeer(steps)
    link = IecLink(peer)
    addresses = [r[4:].split(b"(")[0].decode() for r in requests_of(steps) if r.startswith(b"\x01R1")]
    driver, _ = make_driver(link, address="141628345",
                            options={"iec_profile": "energomera", "iec_addresses": addresses})
    result = await driver.poll(1000)
    assert peer.mismatch is None
    assert link.writes() == requests_of(steps) + [B0_SUM7]
    assert result.ok, result.error
    assert values(result) == {
        "A+": (68420.0, "Wh"), "A+.T1": (45540.0, "Wh"), "A+.T2": (22880.0, "Wh"), "A+.T3": (0.0, "Wh"),
        "A+.T4": (0.0, "Wh"), "A+.T5": (0.0, "Wh"), "I.L1": (0.402, "A"), "F": (49.97, "Hz"),
        "U.L1": (237.58, "V"),
    }


async def test_energomera_ce30x_group_session_replays_byte_for_byte() -> None:
    (steps,) = sessions("TEnergomeraIntegrationTest.Poll")
    peer = ScriptedPeer(steps)
    link = IecLink(peer)
    driver, _ = make_driver(link, address="00000211", options={
        "iec_profile": "energomera", "iec_mode": "direct", "iec_addresses": ["400B(7)", "400D(1)", "5003(1)"]})
    result = await driver.poll(1000)
    assert peer.mismatch is None
    assert link.writes() == requests_of(steps)
    assert result.ok, result.error
    # 400B: L1-L2 is an error code (E12) and gives no reading; L3-L1 121.1 is angle.L1-L3 = 238.9
    assert values(result) == {"angle.L2-L3": (118.8, "°"), "angle.L1-L3": (238.9, "°"), "F": (50.01, "Hz")}
    assert driver.ctx.state.identity["serial"] == "009114135064195"


async def test_energomera_serial_mismatch_is_an_identity_event() -> None:
    (steps,) = sessions("TEnergomeraIntegrationTest.Poll")
    driver, _ = make_driver(IecLink(ScriptedPeer(steps)), address="00000211", number_meter="123", options={
        "iec_profile": "energomera", "iec_mode": "direct", "iec_addresses": ["400B(7)", "400D(1)", "5003(1)"]})
    result = await driver.poll(1000)
    assert result.readings == ()
    assert [e.code for e in result.events] == ["identity_mismatch"]
    assert "9114135064195" in (result.error or "")


async def test_neva_prepare_ok_session_then_reads() -> None:
    steps = sessions("TNevaTest.PrepareOk")[0]
    peer = ScriptedPeer(steps)
    link = IecLink(peer)
    driver, _ = make_driver(link, address="00000201", waiting_time=0.05,
                            options={"iec_profile": "neva", "iec_addresses": ["100700FF"]})
    result = await driver.poll(1000)
    assert link.writes()[:len(requests_of(steps))] == requests_of(steps)
    # the recording stops after the password was accepted: our R1 goes unanswered, then the break
    assert link.writes()[len(requests_of(steps)):] == [iec.read_command("100700FF"), B0_XOR]
    assert result.answered and not result.ok and "no complete reply" in (result.error or "")


async def test_neva_wrong_password_answer_07_ends_with_break() -> None:
    steps = sessions("TNevaTest.SendPasswordError")[0]
    peer = ScriptedPeer(steps)
    link = IecLink(peer)
    driver, _ = make_driver(link, address="00000201", options={"iec_profile": "neva"})
    result = await driver.poll(1000)
    assert peer.mismatch is None and link.writes() == requests_of(steps)
    assert "password refused" in (result.error or "") and "07" in (result.error or "")
    assert "00000000" not in (result.error or "")   # the password itself never appears
    assert result.readings == ()


async def test_neva_silent_meter_sign_on_and_break_per_attempt() -> None:
    steps = sessions("TNevaTest.StartSessionError")[0]
    peer = ScriptedPeer(steps)
    link = IecLink(peer)
    driver, reg = make_driver(link, address="00000201", retries=4, waiting_time=0.02,
                              options={"iec_profile": "neva"})
    result = await driver.poll(1000)
    assert peer.mismatch is None and link.writes() == requests_of(steps)   # 5 x (sign-on, B0)
    assert not result.answered and "no complete reply" in (result.error or "")
    assert reg.counter("pollerd_reply_timeouts_total", "", ("meter",)).get(meter="m1") == 5


async def test_neva_bad_bcc_on_password_prompt_is_counted_and_ends_with_break() -> None:
    steps = sessions("TNevaTest.SwitchToProgModeError")[0]
    peer = ScriptedPeer(steps)
    link = IecLink(peer)
    driver, reg = make_driver(link, address="00000201", retries=2, options={"iec_profile": "neva"})
    result = await driver.poll(1000)
    assert peer.mismatch is None and link.writes() == requests_of(steps)
    assert "BCC mismatch: expected 0x60, got 0x61" in (result.error or "")
    assert reg.counter("pollerd_frame_errors_total", "", ("meter", "kind")).get(meter="m1", kind="crc") == 1


def test_every_recorded_session_was_found() -> None:
    # Inside the test, not at import: without the shared vectors (a fresh clone) sessions() skips, and a skip
    # at import time is a collection error that stops the whole suite.
    neva_unit_sessions = (sessions("TNevaTest.PrepareOk") + sessions("TNevaTest.SendPasswordError")
                          + sessions("TNevaTest.StartSessionError") + sessions("TNevaTest.SwitchToProgModeError"))
    assert len(neva_unit_sessions) == 4
    assert all(s for s in neva_unit_sessions)


# --- readout mode against a scripted meter -----------------------------------------------------------------

IDENT = b"/LGZ5\\2ZMD4054459.B40\r\n"
BLOCK = (b"0.0.0(12345678)\r\nC.1.0(41000001)\r\n1.8.0(013925.5*kWh)\r\n1.8.1(  010000.1*kWh)\r\n"
         b"2.8.0(000012.0*)\r\n1.8.0*12(012000.0*kWh)\r\n1.8.0&11(011000.0*kWh)\r\n32.7.0(231.5*V)\r\n"
         b"1-0:31.7.0*255(1.25*A)\r\nF.F(00)\r\n!\r\n")


def readout_meter(blocks: list[bytes], *, corrupt_first: bool = False, nak_first: bool = False):  # type: ignore[no-untyped-def]
    state = {"corrupt": corrupt_first, "nak": nak_first, "next": 0, "sent": []}

    def respond(req: bytes) -> list[tuple[float, bytes]]:
        if req.startswith(b"/?"):
            return [(0.0005, IDENT)]
        if req[:1] == b"\x06" and len(req) > 1:          # option select: first block
            state["next"] = 0
        elif req == b"\x15":                               # NAK: repeat the last block
            state["next"] -= 1
        elif req != b"\x06":
            return []
        i = state["next"]
        state["next"] += 1
        last = i == len(blocks) - 1
        msg = iec.encode_message(b"\x02" + blocks[i] + (b"\x03" if last else b"\x04"))
        if state["corrupt"]:
            state["corrupt"] = False
            msg = msg[:10] + b"\x7f#noise" + msg[17:]
        return [(0.0005, msg[:7]), (0.0005, msg[7:])]
    return respond


async def test_readout_mode_maps_obis_and_keeps_unknown_addresses() -> None:
    link = IecLink(readout_meter([BLOCK]))
    driver, _ = make_driver(link, number_meter="41000001")
    result = await driver.poll(1000)
    assert result.ok, result.error
    assert link.writes() == [b"/?!\r\n", b"\x06050\r\n"]
    got = values(result)
    assert got["A+"] == (13925500.0, "Wh")
    assert got["A+.T1"] == (10000100.0, "Wh")
    assert got["A-"] == (12000.0, "Wh")                       # empty unit after '*': kWh assumed
    assert got["1.8.0*12"] == (12000000.0, "Wh")              # billing periods keep their address
    assert got["1.8.0&11"] == (11000000.0, "Wh")
    assert got["U.L1"] == (231.5, "V") and got["I.L1"] == (1.25, "A")
    assert got["F.F"] == (0.0, "")
    assert "C.1.0" not in got and driver.ctx.state.identity["serial"] == "41000001"
    assert driver.ctx.state.identity["manufacturer"] == "LGZ"


async def test_read_kinds_filter_channels() -> None:
    link = IecLink(readout_meter([BLOCK]))
    driver, _ = make_driver(link, read=("energy",))
    result = await driver.poll(1000)
    assert set(values(result)) == {"A+", "A+.T1", "A-"}


async def test_partial_blocks_are_fetched_with_ack() -> None:
    half = BLOCK.index(b"32.7.0")
    link = IecLink(readout_meter([BLOCK[:half], BLOCK[half:]]))
    driver, _ = make_driver(link)
    result = await driver.poll(1000)
    assert result.ok, result.error
    assert link.writes() == [b"/?!\r\n", b"\x06050\r\n", b"\x06"]
    assert values(result)["U.L1"] == (231.5, "V") and "A+" in values(result)


async def test_noise_in_a_readout_is_counted_and_a_nak_gets_it_repeated() -> None:
    link = IecLink(readout_meter([BLOCK], corrupt_first=True))
    driver, reg = make_driver(link, retries=1)
    result = await driver.poll(1000)
    assert result.ok, result.error
    assert link.writes() == [b"/?!\r\n", b"\x06050\r\n", b"\x15"]
    assert reg.counter("pollerd_frame_errors_total", "", ("meter", "kind")).get(meter="m1", kind="crc") == 1
    assert values(result)["A+"] == (13925500.0, "Wh")


async def test_noise_without_retries_left_is_an_error_and_no_reading() -> None:
    link = IecLink(readout_meter([BLOCK], corrupt_first=True))
    driver, _ = make_driver(link, retries=0)
    result = await driver.poll(1000)
    assert result.readings == () and "BCC mismatch" in (result.error or "")


async def test_meter_nak_to_a_read_is_retried_then_an_error() -> None:
    def respond(req: bytes) -> list[tuple[float, bytes]]:
        if req.startswith(b"/?"):
            return [(0, b"/TPC5NEVAMT324.2307\r\n")]
        if req.startswith(b"\x06"):
            return [(0, iec.command("P0", b"(00000000)"))]
        if req.startswith(b"\x01P1"):
            return [(0, b"\x06")]
        if req.startswith(b"\x01R1"):
            return [(0, b"\x15")]
        return []
    link = IecLink(respond)
    driver, _ = make_driver(link, retries=1, options={"iec_profile": "neva", "iec_addresses": ["100700FF"]})
    result = await driver.poll(1000)
    r1 = iec.read_command("100700FF")
    assert link.writes()[-3:] == [r1, r1, B0_XOR]
    assert "NAK to R1 100700FF" in (result.error or "")


async def test_garbage_before_the_identification_is_a_clear_error() -> None:
    link = IecLink(lambda req: [(0, b"\x00\xff/TPC5X\r\n")] if req.startswith(b"/?") else [])
    driver, reg = make_driver(link)
    result = await driver.poll(1000)
    assert "expected identification" in (result.error or "") and "00 ff" in (result.error or "")
    assert reg.counter("pollerd_frame_errors_total", "", ("meter", "kind")).get(
        meter="m1", kind="garbage") == 1


async def test_serial_baud_switch_happens_after_the_option_select_and_back_after() -> None:
    link = IecLink(readout_meter([BLOCK]), baud=300)
    driver, _ = make_driver(link, serial=True, baudrate=300)
    result = await driver.poll(1000)
    assert result.ok, result.error
    # after the 2nd write (ACK 0 5 0) the port goes to 9600, and back to 300 when the session is over
    assert link.baud_changes == [(2, 9600), (2, 300)]
    assert link.drains >= 1


async def test_fixed_baud_rs485_meter_is_not_switched() -> None:
    link = IecLink(readout_meter([BLOCK]), baud=9600)
    driver, _ = make_driver(link, serial=True, baudrate=9600, options={"iec_baud_switch": False})
    result = await driver.poll(1000)
    assert result.ok and link.baud_changes == []
    assert link.writes()[1] == b"\x06050\r\n"


async def test_parity_strip_mode_adds_and_strips_even_parity() -> None:
    plain = readout_meter([BLOCK])

    def modem(req: bytes) -> list[tuple[float, bytes]]:
        assert req == iec.add_parity(iec.strip_parity(req))
        return [(d, iec.add_parity(c)) for d, c in plain(iec.strip_parity(req))]
    link = IecLink(modem)
    driver, _ = make_driver(link, options={"iec_parity_bit": "strip"})
    result = await driver.poll(1000)
    assert result.ok, result.error
    assert link.writes()[0] == iec.add_parity(b"/?!\r\n") != b"/?!\r\n"
    assert values(result)["A+"] == (13925500.0, "Wh")


async def test_probe_is_a_sign_on_and_a_break() -> None:
    link = IecLink(readout_meter([BLOCK]))
    driver, _ = make_driver(link, address="1")
    assert await driver.probe() is True
    assert link.writes() == [b"/?1!\r\n", B0_XOR]
    dead, _ = make_driver(IecLink(lambda req: []), waiting_time=0.02)
    assert await dead.probe() is False


@pytest.mark.parametrize("raw, key, message", [
    ({"iec_profile": "elster"}, ("iec_profile",), "unknown profile"),
    ({"iec_mode": "fast"}, ("iec_mode",), "expected one of readout"),
    ({"iec_baud_switch": "yes"}, ("iec_baud_switch",), "true or false"),
    ({"iec_parity_bit": "drop"}, ("iec_parity_bit",), "strip"),
    ({"iec_baud": 9601}, ("iec_baud",), "9600"),
    ({"iec_addresses": "1.8.0"}, ("iec_addresses",), "list"),
    ({"iec_addresses": ["1.8.0", "bad (x"]}, ("iec_addresses", 1), "expected an address"),
    ({"iec_mode": "program"}, ("iec_addresses",), "needs iec_addresses"),
])
def test_option_errors_name_the_key(raw, key, message) -> None:  # type: ignore[no-untyped-def]
    from pollerd.drivers import OptionError
    from pollerd.drivers.iec62056 import parse_options
    with pytest.raises(OptionError) as info:
        parse_options(raw, ".")
    assert info.value.key == key and message in info.value.message


def test_address_parser() -> None:
    from pollerd.drivers import OptionError
    from pollerd.drivers.iec62056 import parse_address
    assert parse_address("00000201") == "00000201" and parse_address("") == ""
    for bad in (201, "a b", "x" * 33, "12!"):
        with pytest.raises(OptionError):
            parse_address(bad)


def test_a_comma_in_a_value_is_split_only_for_the_all_tariffs_energy_list() -> None:
    from pollerd.drivers.iec62056 import PROFILES, decode_sets
    # Only the E = 128 ("all tariffs") energy codes are known to pack total,T1..T4 with commas (Neva 0F0880FF).
    # Anywhere else a comma is no known list: splitting it stored the digits before it as the value
    # (1.8.0(0001234,567*kWh) became A+ = 1234000 Wh, plus an invented A+#2 = 567000 Wh).
    sets = iec.parse_data_block(b"1.8.0(0001234,567*kWh)\r\n32.7.0(230,1*V)\r\n!\r\n")
    assert [d for d in decode_sets(sets, PROFILES["generic"]) if isinstance(d.value, float)] == []
    neva = iec.parse_data_block(b"0F0880FF(000046.24,000031.14,000015.10,000000.00,000000.00)")
    got = {d.channel: d.value for d in decode_sets(neva, PROFILES["neva"])}
    assert got == {"A.abs": 46240.0, "A.abs.T1": 31140.0, "A.abs.T2": 15100.0, "A.abs.T3": 0.0, "A.abs.T4": 0.0}


def test_the_meter_time_and_date_are_not_stored_as_numbers() -> None:
    from pollerd.drivers.iec62056 import PROFILES, decode_sets
    # 0.9.1(123456) is 12:34:56 and 0.9.2(1250314) a date: digits, not a quantity. They were stored as "other"
    # readings 123456 and 1250314 (docs/protocols/iec62056.md: dates are not stored).
    sets = iec.parse_data_block(b"0.9.1(123456)\r\n0.9.2(1250314)\r\n1.8.0(0001234.5*kWh)\r\n!\r\n")
    assert {d.channel: d.value for d in decode_sets(sets, PROFILES["generic"])} == {"A+": 1234500.0}


async def test_a_held_back_r1_reply_is_not_taken_for_the_next_address() -> None:
    # Issue 14: a converter holds the reply to an R1 and hands it over right after the next request. The
    # first read of 100700FF times out, its retry gets the held reply, and the meter's reply to the retry
    # (P has changed meanwhile) is held until the read of 2107FFFF goes out. Before: that reply was taken for
    # 2107FFFF's: 100700FF stored twice with two values, 2107FFFF missing. Now the reply's own address
    # refuses it, and 2107FFFF is asked again.
    held: list[bytes] = []
    p_reads = 0

    def respond(req: bytes) -> list[tuple[float, bytes]]:
        nonlocal p_reads
        out = [(0.0, h) for h in held]
        held.clear()
        if req.startswith(b"/?"):
            return out + [(0, b"/TPC5NEVAMT324.2307\r\n")]
        if req.startswith(b"\x06"):
            return out + [(0, iec.command("P0", b"(00000000)"))]
        if req.startswith(b"\x01P1"):
            return out + [(0, b"\x06")]
        if req == iec.read_command("100700FF"):
            p_reads += 1
            held.append(iec.encode_message(b"\x02" + f"100700FF({4.3 + p_reads:07.1f})".encode() + b"\x03"))
            return out
        if req == iec.read_command("2107FFFF"):
            return out + [(0.005, iec.encode_message(b"\x02" + b"2107FFFF(00.717)" + b"\x03"))]
        return out

    link = IecLink(respond)
    driver, reg = make_driver(link, retries=2, waiting_time=0.05,
                              options={"iec_profile": "neva", "iec_addresses": ["100700FF", "2107FFFF"]})
    result = await driver.poll(1000)
    assert result.ok, result.error
    channels = [r.channel for r in result.readings]
    assert sorted(channels) == sorted(set(channels)) and len(channels) == 2   # each address once
    got = values(result)
    assert got[channels[0]][0] == pytest.approx(5.3)     # the first reply to reach us for 100700FF
    assert 0.717 in [v for v, _ in got.values()]
    assert reg.counter("pollerd_frame_errors_total", "", ("meter", "kind")).get(meter="m1", kind="address") == 1


def test_an_r1_reply_for_another_address_is_refused_by_the_framer() -> None:
    from pollerd.errors import AddressMismatch
    reply = iec.encode_message(b"\x02" + b"1.8.0(001234.5*kWh)" + b"\x03")
    assert iec.MessageFramer(address="1.8.0").feed(reply) is not None
    assert iec.MessageFramer(address="1-0:1.8.0*255").feed(reply) is not None   # written more fully
    with pytest.raises(AddressMismatch, match="reply for address 1.8.0, asked for 2.8.0"):
        iec.MessageFramer(address="2.8.0").feed(reply)
    bare = iec.encode_message(b"\x02" + b"(01)" + b"\x03")
    assert iec.MessageFramer(address="2.8.0").feed(bare) is not None   # nothing to compare
    neva = iec.encode_message(b"\x02" + b"2107FFFF(00.717)" + b"\x03")
    with pytest.raises(AddressMismatch):
        iec.MessageFramer(address="100700FF", hex_obis=True).feed(neva)
    assert not iec.same_address("ET0PE", "VOLTA") and iec.same_address("et0pe", "ET0PE")


async def test_an_address_the_meter_naks_costs_only_its_value() -> None:
    # Issue 14 (observation 6): one refused address used to end the session, losing the addresses after it.
    def respond(req: bytes) -> list[tuple[float, bytes]]:
        if req.startswith(b"/?"):
            return [(0, b"/TPC5NEVAMT324.2307\r\n")]
        if req.startswith(b"\x06"):
            return [(0, iec.command("P0", b"(00000000)"))]
        if req.startswith(b"\x01P1"):
            return [(0, b"\x06")]
        if req == iec.read_command("0F0880FF"):
            return [(0, b"\x15")]
        if req == iec.read_command("100700FF"):
            return [(0, iec.encode_message(b"\x02100700FF(0.512)\x03"))]
        return []
    link = IecLink(respond)
    driver, _ = make_driver(link, retries=1,
                            options={"iec_profile": "neva", "iec_addresses": ["0F0880FF", "100700FF"]})
    result = await driver.poll(1000)
    assert result.ok, result.error
    assert "P" in values(result)
    assert link.writes()[-1] == B0_XOR
