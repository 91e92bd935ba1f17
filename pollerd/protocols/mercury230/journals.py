"""Mercury 230 event journals (04 jj rr): journal numbers, record reads and their start/end stamps.
"""

from __future__ import annotations

import datetime as _dt

from .clock import _bcd_stamp, _to_bcd_stamp
from .frames import CODE_READ_TIME, Request, _need

JOURNALS: dict[int, tuple[str, str]] = {
    # [GRZ] GreezXII/Mercury230Protocol ProtocolEntities.cs `Journals` (also FACTS.md).
    0x01: ("power_off", "meter power off (start) and back on (end)"),
    0x03: ("phase_off.L1", "phase L1 voltage off (start) and back on (end)"),
    0x04: ("phase_off.L2", "phase L2 voltage off (start) and back on (end)"),
    0x05: ("phase_off.L3", "phase L3 voltage off (start) and back on (end)"),
    0x12: ("cover_open", "meter cover opened (start) and closed (end)"),
    0x17: ("phase_current.L1", "phase L1 current on (start) and off (end)"),
    0x18: ("phase_current.L2", "phase L2 current on (start) and off (end)"),
    0x19: ("phase_current.L3", "phase L3 current on (start) and off (end)"),
}
"""Journal number -> (event code, English text). Other journal numbers exist (time correction, resets,
programming...) but no public source in reach gives their numbers; read them raw with read_journal."""

JOURNAL_RECORDS = 10  # records 0..9 per journal


def read_journal(addr: int, journal: int, record: int) -> Request:
    """04 <journal> <record 0..9>: one journal record, 12 bytes."""
    if not 1 <= journal <= 0xFF:
        raise ValueError(f"journal must be 1..255 (04 00 is the clock), got {journal}")
    if not 0 <= record < JOURNAL_RECORDS:
        raise ValueError(f"journal record must be 0..{JOURNAL_RECORDS - 1}, got {record}")
    return Request(addr, bytes((CODE_READ_TIME, journal, record)), 12)


def decode_journal(data: bytes) -> tuple[_dt.datetime | None, _dt.datetime | None]:
    """04 jj rr reply (12 bytes): event start and end, each 6 BCD bytes ss mm hh dd MM yy, naive
    meter-local; an all-zero (or all-FF) stamp is None (empty record / event not ended) [GRZ]."""
    _need(data, 12, "journal record")
    return (_bcd_stamp(data[:6], "smhdMy", data, "journal record"),
            _bcd_stamp(data[6:], "smhdMy", data, "journal record"))


def encode_journal(start: _dt.datetime | None, end: _dt.datetime | None) -> bytes:
    return _to_bcd_stamp(start, "smhdMy") + _to_bcd_stamp(end, "smhdMy")
