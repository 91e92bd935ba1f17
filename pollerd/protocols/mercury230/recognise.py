"""Recognising any Mercury 230 request frame: its name and :class:`Request` (for raw frames from the
API, the decode tool and the simulator).
"""

from __future__ import annotations

from pollerd.errors import FrameError
from pollerd.protocols.crc import check_crc

from .clock import read_time
from .frames import (
    CODE_OPEN,
    CODE_READ_ENERGY,
    CODE_READ_MEMORY,
    CODE_READ_PARAM,
    CODE_READ_TIME,
    CODE_WRITE,
    MEMORY_PROFILE,
    PARAM_AUX,
    PARAM_AUX_GROUP,
    PARAM_FAST_INFO,
    PARAM_FIXED,
    PARAM_LAST_PROFILE,
    PARAM_NET_ADDRESS,
    PARAM_RATIOS,
    PARAM_SERIAL,
    PARAM_VARIANT,
    PARAM_VERSION,
    WRITE_CORRECT_TIME,
    WRITE_TIME,
    Request,
    close_channel,
    open_channel,
    test_channel,
)
from .journals import JOURNAL_RECORDS, read_journal
from .params import read_fast_info, read_net_address, read_ratios, read_serial, read_variant, read_version
from .profile import PROFILE_RECORD_LEN, read_last_profile, read_profile
from .values import (
    _AUX_QUANTITIES,
    aux_channel,
    freeze,
    group_channels,
    read_aux,
    read_aux_group,
    read_energy,
    read_fixed,
)


def _strip_crc(frame: bytes) -> bytes:
    """The frame without CRC when its last two bytes are a valid CRC, else the frame as given."""
    return frame[:-2] if len(frame) >= 4 and check_crc(frame) else frame


def describe_request(frame: bytes | bytearray | memoryview) -> tuple[str, Request]:
    """Recognise a request frame (address .. [CRC], CRC optional) and return its name and Request.

    A 3-byte frame whose last two bytes happen to be a valid CRC of the first is read as CRC'd (such a
    request carries no body and is invalid anyway). Raises FrameError for a request it does not know."""
    raw = _strip_crc(bytes(frame))
    if len(raw) < 2:
        raise FrameError(f"request too short: {raw.hex(' ') or '(empty)'}; expected address and command",
                         raw)
    addr, body = raw[0], raw[1:]
    code, n = body[0], len(body)
    p1 = body[1] if n > 1 else -1
    if body == b"\x00":
        return "test_channel", test_channel(addr)
    if code == CODE_OPEN and n == 8 and body[1] in (1, 2):
        return "open_channel", open_channel(addr, body[1], body[2:8])
    if body == b"\x02":
        return "close_channel", close_channel(addr)
    if code == CODE_WRITE and body == b"\x03\x08":
        return "freeze", freeze(addr)
    if code == CODE_WRITE and n == 10 and p1 == WRITE_TIME:
        return "set_time", Request(addr, body, None)
    if code == CODE_WRITE and n == 5 and p1 == WRITE_CORRECT_TIME:
        return "correct_time", Request(addr, body, None)
    if code == CODE_READ_TIME and body == b"\x04\x00":
        return "read_time", read_time(addr)
    if code == CODE_READ_TIME and n == 3 and p1 != 0 and body[2] < JOURNAL_RECORDS:
        return "read_journal", read_journal(addr, body[1], body[2])
    if code == CODE_READ_ENERGY and n == 3 and (body[1] & 0x0F) <= 12 and body[2] <= 0x0F:
        return "read_energy", read_energy(addr, body[1] >> 4, body[1] & 0x0F, body[2])
    if code == CODE_READ_MEMORY and n == 5 and body[4]:
        req = read_profile(addr, body[2] << 8 | body[3], body[4], body[1])
        is_profile = body[1] == MEMORY_PROFILE and body[4] == PROFILE_RECORD_LEN
        return ("read_profile" if is_profile else "read_memory"), req
    if code == CODE_READ_PARAM and n == 2:
        simple = {PARAM_SERIAL: ("read_serial", read_serial), PARAM_FAST_INFO: ("read_fast_info", read_fast_info),
                  PARAM_RATIOS: ("read_ratios", read_ratios), PARAM_VERSION: ("read_version", read_version),
                  PARAM_NET_ADDRESS: ("read_net_address", read_net_address),
                  PARAM_VARIANT: ("read_variant", read_variant),
                  PARAM_LAST_PROFILE: ("read_last_profile", read_last_profile)}.get(p1)
        if simple is not None:
            return simple[0], simple[1](addr)
    if code == CODE_READ_PARAM and n == 3:
        bwri = body[2]
        try:
            # A BWRI is known only when its reply has a layout AND its values a channel name (phase 0 of
            # voltage is neither): checked here, so decoding a reply never meets an unnamed value.
            if p1 == PARAM_AUX and (bwri >> 4) in _AUX_QUANTITIES:
                aux_channel(bwri)
                return "read_aux", read_aux(addr, bwri)
            if p1 == PARAM_AUX_GROUP:
                req = read_aux_group(addr, bwri)
                group_channels(bwri)
                return "read_aux_group", req
            if p1 == PARAM_FIXED:
                req = read_fixed(addr, bwri)
                if bwri != 0xE0:
                    group_channels(bwri)
                return "read_fixed", req
            if p1 == PARAM_VARIANT and bwri == 0:
                return "read_variant", read_variant(addr, long=True)
        except ValueError:
            pass
    raise FrameError(f"unknown Mercury 230 request: {raw.hex(' ')}", raw)
