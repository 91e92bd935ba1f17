"""``pollerd decode mercury230 --request HEX --response HEX [--constant N] [--timezone TZ]``.

Offline decoding of one captured exchange; prints ONE JSON object::

    {"address": 1, "crc_ok": true, "request": "read_energy", "status": null,
     "fields": {...}, "readings": [{"channel", "value", "unit", "archive", "ts"}, ...]}

HEX may hold spaces (or colons); the request may come with or without its CRC. Exit 1 with a message on
stderr for a response with a bad CRC, an incomplete or malformed response, or a request it does not know.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from typing import Any

from pollerd.decode import dumps, hex_argument
from pollerd.errors import FrameError
from pollerd.protocols import mercury230 as m
from pollerd.protocols.crc import check_crc
from pollerd.protocols.mercury230 import (
    ENERGY_ARRAYS,
    JOURNALS,
    PHASES,
    STATUS_TEXT,
    Reply,
    Request,
    aux_channel,
    decode_aux,
    decode_aux_group,
    decode_energy,
    decode_fast_info,
    decode_fixed,
    decode_journal,
    decode_last_profile,
    decode_net_address,
    decode_phase_energy,
    decode_profile_record,
    decode_ratios,
    decode_serial,
    decode_time,
    decode_time_of_day,
    decode_variant,
    decode_version,
    describe_request,
    group_channels,
    length_error,
    profile_energy_wh,
    profile_quality,
    profile_status_flags,
)

__all__ = ["configure_parser", "decode", "decode_reply", "local_ts", "run"]


class DecodeError(Exception):
    """Why a pair cannot be decoded; the message is the one line the user sees."""


def _timezone(text: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r} (expected e.g. Europe/Moscow)") from None


def _constant(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the meter constant must be a positive number of imp/kWh, got {text!r}")
    return value


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Decode one Mercury 230 request/response pair (hex) into JSON."
    p.add_argument("--request", required=True, type=hex_argument, metavar="HEX",
                   help="the request frame, with or without CRC, e.g. '01 05 00 00'")
    p.add_argument("--response", required=True, type=hex_argument, metavar="HEX", help="the response frame")
    p.add_argument("--constant", type=_constant, default=None, metavar="N",
                   help="meter constant A in imp/kWh (from 08 12): needed to turn load-profile impulses into Wh")
    p.add_argument("--timezone", type=_timezone, default=None, metavar="TZ",
                   help="the meter's time zone: profile timestamps become UTC unix seconds")


# ------------------------------------------------------------------------- a reply as fields and readings


def _reading(channel: str, value: float | int, unit: str, archive: str, ts: int | str | None,
             quality: str | None = None) -> dict[str, object]:
    r: dict[str, object] = {"channel": channel, "value": value, "unit": unit, "archive": archive, "ts": ts}
    if quality:
        r["quality"] = quality
    return r


def local_ts(when: _dt.datetime, tz: _dt.tzinfo | None) -> int | str:
    """Naive meter-local time -> UTC unix seconds with ``tz``, else the local ISO string. In the
    repeated hour of a DST fall-back the first occurrence is taken (fold=0)."""
    if tz is None:
        return when.isoformat()
    return int(when.replace(tzinfo=tz).timestamp())


def _iso(when: _dt.datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def decode_reply(request: Request, reply: Reply, *, constant: int | None = None,
                 tz: _dt.tzinfo | None = None) -> dict[str, object]:
    """Turn any reply to a recognised request into ``{"fields": {...}, "readings": [...]}``.

    Readings are ``{"channel", "value", "unit", "archive", "ts"}`` (plus ``"quality"`` when not good).
    ``ts`` is None where the reply carries no time (current values: the caller stamps them), the interval
    start for profile records (UTC unix seconds with ``tz``, meter-local ISO otherwise). A status reply
    gives ``{"status": n, "status_text": ...}`` in fields. Wrong lengths raise FrameError. A password in
    an open-channel request is never echoed (``"password": "***"``)."""
    name, req = describe_request(request.encode())
    if req.reply_len != request.reply_len:  # e.g. a raw request with a caller-given length
        req = request
    body = request.body
    fields: dict[str, object] = {}
    readings: list[dict[str, object]] = []
    if name == "open_channel":
        fields.update(access_level=body[1], password="***")
    elif name == "set_time":
        when, season = decode_time(body[2:10])
        fields.update(time=when.isoformat(), season=season)
    elif name == "correct_time":
        fields["time"] = decode_time_of_day(body[2:5]).isoformat()
    status = reply.status
    if status is not None and (req.reply_len is None or len(reply.data) == 1):
        fields.update(status=status, status_text=STATUS_TEXT.get(status, "unknown status"))
        return {"fields": fields, "readings": readings}
    data = reply.data
    if req.reply_len is None:
        raise length_error(name, 1, data)

    if name == "read_serial":
        serial, made = decode_serial(data)
        fields.update(serial=serial, manufactured=made.isoformat() if made else None)
    elif name == "read_fast_info":
        serial, made, version, const = decode_fast_info(data)
        fields.update(serial=serial, manufactured=made.isoformat() if made else None, version=version,
                      constant=const)
    elif name == "read_version":
        fields["version"] = decode_version(data)
    elif name == "read_ratios":
        fields["ku"], fields["ki"] = decode_ratios(data)
    elif name == "read_variant":
        fields["constant"] = decode_variant(data)
    elif name == "read_net_address":
        fields["network_address"] = decode_net_address(data)
    elif name == "read_time":
        when, season = decode_time(data)
        fields.update(time=when.isoformat(), season=season, season_text="winter" if season == 1 else "summer")
    elif name == "read_energy":
        array, month, tariff = body[1] >> 4, body[1] & 0x0F, body[2]
        archive, meaning = ENERGY_ARRAYS.get(array, ("current", "unknown array"))
        fields.update(array=array, array_meaning=meaning, tariff=tariff)
        if month:
            fields["month"] = month
        suffix = f".T{tariff}" if tariff else ""
        if array == 6:
            for phase, v in zip(PHASES, decode_phase_energy(data)):
                if v is not None:
                    readings.append(_reading(f"A+.{phase}{suffix}", v, "Wh", archive, None))
        else:
            for (ch, unit), v in zip((("A+", "Wh"), ("A-", "Wh"), ("R+", "varh"), ("R-", "varh")),
                                     decode_energy(data)):
                if v is not None:
                    readings.append(_reading(ch + suffix, v, unit, archive, None))
    elif name == "read_aux":
        bwri = body[2]
        ch, unit = aux_channel(bwri)
        value = decode_aux(bwri, data)
        if value is not None:
            readings.append(_reading(ch, value, unit, "current", None))
    elif name in ("read_aux_group", "read_fixed"):
        bwri = body[2]
        if name == "read_fixed" and bwri == 0xE0:
            when, season = decode_time(data)
            fields.update(frozen_at=when.isoformat(), season=season)
        else:
            values = decode_aux_group(bwri, data) if name == "read_aux_group" else decode_fixed(bwri, data)
            channels, unit = group_channels(bwri)
            readings.extend(_reading(ch, v, unit, "current", None)
                            for ch, v in zip(channels, values) if v is not None)
            if name == "read_fixed":
                fields["fixed"] = True
    elif name == "read_last_profile":
        info = decode_last_profile(data)
        # "record_status", not "status": the tool's top-level status is the reply's ack status.
        fields.update(last_record_address=info.address, record_status=info.status,
                      status_flags=sorted(profile_status_flags(info.status)), start=_iso(info.start),
                      period=info.period)
    elif name == "read_profile":
        rec = decode_profile_record(data)
        flags = profile_status_flags(rec.status)
        fields.update(record_address=body[2] << 8 | body[3], record_status=rec.status,
                      status_flags=sorted(flags), start=_iso(rec.start), period=rec.period,
                      impulses={"A+": rec.a_plus, "A-": rec.a_minus, "R+": rec.r_plus, "R-": rec.r_minus})
        if constant is not None:
            fields["constant"] = constant
        if constant is not None and rec.start is not None:
            ts = local_ts(rec.start, tz)
            quality = profile_quality(rec)
            for ch, unit, n in (("A+", "Wh", rec.a_plus), ("A-", "Wh", rec.a_minus), ("R+", "varh", rec.r_plus),
                                ("R-", "varh", rec.r_minus)):
                if n is not None:
                    readings.append(_reading(ch, profile_energy_wh(n, constant), unit, "profile", ts, quality))
    elif name == "read_journal":
        journal, record = body[1], body[2]
        code, text = JOURNALS.get(journal, (f"journal_{journal:02x}", f"journal {journal:#04x}"))
        start, end = decode_journal(data)
        fields.update(journal=journal, record=record, code=code, text=text, start=_iso(start), end=_iso(end))
    else:  # read_memory or a raw request with a caller-given length: bytes only
        if len(data) != req.reply_len:
            raise length_error(name, req.reply_len, data)
        fields["data"] = data.hex(" ")
    return {"fields": fields, "readings": readings}


# ------------------------------------------------------------------------------------ the command line


def decode(request: bytes, response: bytes, *, constant: int | None = None, tz: Any = None) -> dict[str, Any]:
    """The JSON object for one pair; raises DecodeError with a one-line reason."""
    try:
        name, req = m.describe_request(request)
    except FrameError as exc:
        raise DecodeError(f"unknown request: {exc}") from None
    if len(response) < 4:
        raise DecodeError(f"response too short ({len(response)} bytes): {response.hex(' ') or '(empty)'}")
    sent = req.encode()
    # A half-duplex adapter may have captured our own request ahead of the reply: check the reply's CRC.
    crc_ok = check_crc(response) or (response.startswith(sent) and check_crc(response[len(sent):]))
    if not crc_ok:
        raise DecodeError(f"response CRC mismatch: {response.hex(' ')}")
    if check_crc(response) and len(response) not in (req.frame_len, 4):
        raise DecodeError(f"response to {name}: expected {req.frame_len} bytes (or a 4-byte status), got "
                          f"{len(response)}: {response.hex(' ')}")
    framer = m.ReplyFramer(req, max_len=max(64, len(response) + len(request) + 8))
    try:
        reply = framer.feed(response)
    except FrameError as exc:
        raise DecodeError(f"response does not answer {name}: {exc}") from None
    if reply is None:
        raise DecodeError(f"response incomplete for {name}: expected {req.frame_len} bytes, got "
                          f"{len(framer.pending)}: {framer.pending.hex(' ')}")
    if framer.pending:
        raise DecodeError(f"{len(framer.pending)} bytes after the reply to {name}: {framer.pending.hex(' ')}")
    try:
        decoded = decode_reply(req, reply, constant=constant, tz=tz)
    except FrameError as exc:
        raise DecodeError(f"{name}: {exc}") from None
    return {
        "address": reply.address,
        "crc_ok": crc_ok,
        "request": name,
        "status": reply.status,
        "fields": decoded["fields"],
        "readings": decoded["readings"],
    }


def run(args: argparse.Namespace) -> int:
    try:
        out = decode(args.request, args.response, constant=args.constant, tz=args.timezone)
    except DecodeError as exc:
        print(f"pollerd decode mercury230: {exc}", file=sys.stderr)
        return 1
    print(dumps(out))
    return 0
