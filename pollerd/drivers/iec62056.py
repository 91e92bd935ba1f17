"""IEC 62056-21 mode C driver: generic OBIS readout, Neva MT3xx and Energomera CE102M/CE30x profiles.

A cycle is one session held on the bus (no other meter's request in between)::

    readout : sign-on -> identification -> ACK 0 Z 0 [baud switch] -> data message (EOT blocks: ACK for more)
    program : sign-on -> identification -> ACK 0 Z 1 [baud switch] -> P0 -> P1 password -> ACK
              -> R1 per configured address -> B0
    direct  : sign-on immediately followed by one R1 (GROUP(...) for several addresses), as Energomera
              CE30x accept; no identification, no password, no break

The baud switch happens only on serial lines, after the option select has fully left the UART; over TCP
(transparent converters, modems) the speed is fixed, so the option select asks for ``iec_baud`` (default:
the line's baud rate, 9600 for TCP) and nothing is switched. Byte layouts live in
:mod:`pollerd.protocols.iec62056`; names and units in :mod:`pollerd.protocols.obis`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..errors import (
    FrameError,
    IdentityMismatch,
    LineStopping,
    MeterError,
    OptionError,
    PollerdError,
    ReplyTimeout,
    TransportError,
)
from ..line import Framer
from ..model import Archive, Event, Reading
from ..protocols import iec62056 as iec
from ..protocols import obis
from ..quality import Dropped
from .base import BusDriverContext, PollResult

__all__ = ["Decoded", "IecOptions", "Iec62056Driver", "PROFILES", "Profile", "decode_sets", "parse_address",
           "parse_options"]

R = TypeVar("R")

MODES = ("readout", "program", "direct")
PARITY_BITS = ("keep", "strip")
OPTION_KEYS = frozenset({"iec_profile", "iec_mode", "iec_baud_switch", "iec_addresses", "iec_parity_bit",
                         "iec_baud"})

# A readout's size is unknown up front; allow this many bytes of wire time on top of waiting_time.
READOUT_BYTES = 4096
READOUT_LIMIT = 120.0


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    checksum: str                     # key of iec.CHECKSUMS
    mode: str                         # default mode
    addresses: tuple[str, ...]        # default R1 addresses (program/direct modes)
    password: str | None              # factory default password for P1 (None: send no P1 without one)
    hex_obis: bool = False            # addresses are Neva's 8 hex digits
    wire_units: tuple[tuple[str, str], ...] = ()   # SI unit -> unit the meter means when it sends none


PROFILES: dict[str, Profile] = {
    "generic": Profile("generic", "xor", "readout", (), None),
    # Neva MT3xx: hex OBIS, XOR; addresses of the wb-mqtt-serial session (|A| energy per tariff, P, PF L1, T).
    # Power comes without a unit; W is assumed (wb-mqtt-serial publishes it as a "power" control, in W).
    "neva": Profile("neva", "xor", "program", ("0F0880FF", "100700FF", "2107FFFF", "600900FF"), "00000000",
                    hex_obis=True, wire_units=(("W", "W"), ("var", "var"), ("VA", "VA"))),
    # Energomera CE102M/CE30x: vendor mnemonics, sum & 0x7F checksum, factory password 777777.
    "energomera": Profile("energomera", "sum7", "program", ("ET0PE", "VOLTA", "CURRE", "FREQU"), "777777"),
}

# Energomera mnemonics: name -> (channels of the values in order, unit the meter means).
_ENERGOMERA: dict[str, tuple[tuple[str, ...], str]] = {
    "ET0PE": (("A+", "A+.T1", "A+.T2", "A+.T3", "A+.T4", "A+.T5"), "kWh"),
    "ET0PI": (("A-", "A-.T1", "A-.T2", "A-.T3", "A-.T4", "A-.T5"), "kWh"),
    "ET0QE": (("R+", "R+.T1", "R+.T2", "R+.T3", "R+.T4", "R+.T5"), "kvarh"),
    "ET0QI": (("R-", "R-.T1", "R-.T2", "R-.T3", "R-.T4", "R-.T5"), "kvarh"),
    "VOLTA": (("U.L1", "U.L2", "U.L3"), "V"),
    "CURRE": (("I.L1", "I.L2", "I.L3"), "A"),
    "POWEP": (("P",), "kW"),
    "POWPP": (("P.L1", "P.L2", "P.L3"), "kW"),
    "FREQU": (("F",), "Hz"),
    "COS_f": (("PF.L1", "PF.L2", "PF.L3"), ""),
    # CE30x GROUP addresses seen in the wb-mqtt-serial session: 400B = phase angles L1-L2, L2-L3, L3-L1;
    # 400D = frequency. L3-L1 is reported as angle.L1-L3 = 360 - value, DESIGN.md's name for it.
    "400B": (("angle.L1-L2", "angle.L2-L3", "angle.L1-L3"), "°"),
    "400D": (("F",), "Hz"),
}
_SERIAL_ADDRESSES = {"generic": (96, 1, 0), "neva": (96, 1, 0)}
_ENERGOMERA_SERIAL = "5003"


# ------------------------------------------------------------------------------------------- config hooks


@dataclass(frozen=True, slots=True)
class IecOptions:
    profile: str = "generic"
    mode: str | None = None                  # None: the profile's default
    baud_switch: bool = True
    addresses: tuple[tuple[str, str], ...] = ()   # (address, argument) for R1
    parity_bit: str = "keep"
    baud: int | None = None                  # fixed speed to ask for when not switching


_ENTRY = re.compile(r"([\x21-\x27\x2A-\x7E]+)(?:\(([\x20-\x27\x2A-\x7E]*)\))?")


def parse_address(raw: object) -> str:
    """``connection_address`` of an IEC meter: the device address string of the sign-on (may be empty on a
    point-to-point link)."""
    if not isinstance(raw, str):
        raise OptionError(f"expected a string (e.g. \"00000201\"; leading zeros matter), got {raw!r}")
    try:
        return iec.check_address(raw)
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def parse_options(raw: Mapping[str, object], base_dir: str) -> IecOptions:
    profile = raw.get("iec_profile", "generic")
    if not isinstance(profile, str) or profile not in PROFILES:  # a list or table is not hashable
        raise OptionError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}", ("iec_profile",))
    mode = raw.get("iec_mode")
    if mode is not None and mode not in MODES:
        raise OptionError(f"expected one of {', '.join(MODES)}, got {mode!r}", ("iec_mode",))
    switch = raw.get("iec_baud_switch", True)
    if not isinstance(switch, bool):
        raise OptionError(f"expected true or false, got {switch!r}", ("iec_baud_switch",))
    parity = raw.get("iec_parity_bit", "keep")
    if parity not in PARITY_BITS:
        raise OptionError(f"expected \"keep\" or \"strip\", got {parity!r}", ("iec_parity_bit",))
    given = raw.get("iec_baud")
    baud: int | None = None
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, (int, float)) or given not in iec.BAUD_CHARS.values():
            raise OptionError(f"expected one of {', '.join(str(b) for b in iec.BAUD_CHARS.values())}, "
                              f"got {given!r}", ("iec_baud",))
        baud = int(given)
    entries: list[tuple[str, str]] = []
    addresses = raw.get("iec_addresses", [])
    if not isinstance(addresses, list):
        raise OptionError(f"expected a list of addresses, got {addresses!r}", ("iec_addresses",))
    for i, item in enumerate(addresses):
        m = _ENTRY.fullmatch(item) if isinstance(item, str) else None
        if m is None:
            raise OptionError(f"expected an address like \"1.8.0\", \"100700FF\" or \"400B(7)\", got {item!r}",
                              ("iec_addresses", i))
        entries.append((m.group(1), m.group(2) or ""))
    prof = PROFILES[str(profile)]
    effective = mode or prof.mode
    if effective != "readout" and not entries and not prof.addresses:
        raise OptionError(f"iec_mode {effective!r} with profile {profile!r} needs iec_addresses (what to read)",
                          ("iec_addresses",))
    return IecOptions(str(profile), mode if mode is None else str(mode), switch, tuple(entries), str(parity),
                      baud)


# ------------------------------------------------------------------------------------------------- values


class _Refused(MeterError):
    """Every attempt to read one address was answered with NAK."""


@dataclass(frozen=True, slots=True)
class Decoded:
    channel: str
    address: str
    value: float | str       # str for text values (dates, ids, error codes)
    unit: str


def _wire_unit(profile: Profile, si: str) -> str:
    for unit_si, wire in profile.wire_units:
        if unit_si == si:
            return wire
    return obis.default_unit(si)


def _numeric(text: str, unit: str) -> tuple[float | str, str]:
    v = obis.to_float(text)
    if v is None:
        return text, unit
    value, si = obis.normalize(v, unit)
    if not math.isfinite(value):  # 1e308 kWh is no float in Wh: it stays text (the driver counts the drop)
        return text, unit
    return value, si


def decode_sets(sets: tuple[iec.DataSet, ...], profile: Profile) -> list[Decoded]:
    """Data sets -> named values. Mapped channels get SI units; unknown addresses keep their address as the
    channel name (a second and further value of one address: ``ADDRESS#2``...)."""
    out: list[Decoded] = []
    for ds in sets:
        addr = ds.address
        if profile.name == "energomera" and addr in _ENERGOMERA:
            names, wire = _ENERGOMERA[addr]
            for i, v in enumerate(ds.values):
                if i >= len(names):
                    break
                value, unit = _numeric(v.text, v.unit or wire)
                if names[i] == "angle.L1-L3" and isinstance(value, float):
                    value = round(360.0 - value, 6)
                out.append(Decoded(names[i], addr, value, unit))
            continue
        code = obis.parse_hex(addr) if profile.hex_obis else obis.parse(addr)
        if code is None and profile.hex_obis:
            code = obis.parse(addr)
        if code is not None and code.c == 0 and code.d == 9:
            continue  # 0.9.1 time, 0.9.2 date: digits like 123456 / 1250314, not quantities to store
        values = ds.values
        # Neva packs tariffs in one value: "(total,T1,T2,T3,T4)" for E = 0x80 ("all tariffs"). That is the
        # only comma list known; elsewhere a comma stays in the text (no number is made of part of it).
        all_tariffs = code is not None and code.e == 0x80 and code.d == 8
        if all_tariffs and len(values) == 1 and "," in values[0].text:
            values = tuple(iec.Value(t.strip(), values[0].unit) for t in values[0].text.split(","))
        mapped = None
        for i, v in enumerate(values):
            if all_tariffs:
                assert code is not None
                mapped = obis.channel_of(obis.Obis(code.a, code.b, code.c, code.d, i, code.f))
                channel = mapped[0] if mapped else f"{addr}#{i + 1}"
            else:
                mapped = obis.channel_of(code) if code is not None else None
                base = mapped[0] if mapped else addr
                channel = base if i == 0 else f"{base}#{i + 1}"
            unit = v.unit or (_wire_unit(profile, mapped[1]) if mapped else "")
            value, unit = _numeric(v.text, unit)
            out.append(Decoded(channel, addr, value, unit))
    return out


def serial_of(sets: tuple[iec.DataSet, ...], profile: Profile) -> tuple[str, str] | None:
    """(address, serial number) where the data sets carry the meter's serial number."""
    for ds in sets:
        if not ds.values:
            continue
        if profile.name == "energomera" and ds.address == _ENERGOMERA_SERIAL:
            return ds.address, ds.values[0].text
        code = obis.parse_hex(ds.address) if profile.hex_obis else obis.parse(ds.address)
        want = _SERIAL_ADDRESSES.get(profile.name)
        if code is not None and want and (code.c, code.d, code.e or 0) == want and code.current:
            return ds.address, ds.values[0].text
    return None


# ------------------------------------------------------------------------------------------------- driver

_RETRYABLE = (ReplyTimeout, FrameError)


class Iec62056Driver:
    def __init__(self, ctx: BusDriverContext) -> None:
        self.ctx = ctx
        mc = ctx.meter
        opts = mc.options if isinstance(mc.options, IecOptions) else IecOptions()
        self.opts = opts
        self.profile = PROFILES[opts.profile]
        self.mode = opts.mode or self.profile.mode
        self.addresses = opts.addresses or tuple((a, "") for a in self.profile.addresses)
        self.address = str(mc.connection_address)
        self._password = mc.password.reveal() if mc.password else self.profile.password
        self._strip = opts.parity_bit == "strip"
        self._answered = False
        self._serial = ctx.line.cfg.type == "serial"
        self._home_baud = ctx.line.cfg.baudrate
        if any(v is not None for v in (mc.tn1, mc.tn2, mc.tt)):
            ctx.log.warning("%s: tn1/tn2/tt are not applied yet; values are as the meter reports them",
                            mc.name)

    # -- exchanges -------------------------------------------------------------------------------------

    def _wire(self, request: bytes) -> bytes:
        return iec.add_parity(request) if self._strip else request

    def _framer(self, request: bytes, *, single_byte: bool = False) -> iec.MessageFramer:
        return iec.MessageFramer(self.profile.checksum, request=self._wire(request), strip=self._strip,
                                 single_byte=single_byte)

    async def _x(self, request: bytes, framer: Framer[R], *, waiting: float | None = None, shown: str | None = None,
                 after_write: Callable[[], Awaitable[None]] | None = None) -> R:
        mc = self.ctx.meter
        return await self.ctx.line.exchange(self._wire(request), framer,
                                            waiting_time=waiting or mc.waiting_time, pause=mc.pause_time,
                                            meter=mc.name, shown=shown, after_write=after_write)

    async def _send(self, request: bytes) -> None:
        mc = self.ctx.meter
        await self.ctx.line.send(self._wire(request), pause=mc.pause_time, meter=mc.name)

    async def _break(self) -> None:
        """B0: end the session (best effort; the meter also times out by itself)."""
        try:
            await self._send(iec.break_command(self.profile.checksum))
            await self.ctx.line.link.drain_output()
        except (TransportError, LineStopping):
            pass

    async def _restore_baud(self) -> None:
        link = self.ctx.line.link
        if self._serial and link.connected and link.baudrate not in (None, self._home_baud):
            try:
                await link.drain_output()
            finally:
                link.set_baudrate(self._home_baud)

    async def _sign_on(self, attempts: int) -> iec.Identification:
        req = iec.sign_on(self.address)
        last: PollerdError | None = None
        for _ in range(attempts):
            try:
                return await self._x(req, iec.IdentFramer(self._wire(req), self._strip))
            except _RETRYABLE as exc:
                last = exc
                # A meter left half inside a session ignores sign-ons; a break puts it back to idle.
                await self._break()
        assert last is not None
        raise last

    def _speed(self, ident: iec.Identification) -> tuple[str, int | None]:
        """(baud character for the option select, new port speed or None to keep it)."""
        offered = ident.baud_char if ident.baud_char in iec.BAUD_CHARS else "0"
        if self._serial and self.opts.baud_switch:
            return offered, iec.BAUD_CHARS[offered]
        fixed = self.opts.baud or self._home_baud
        return (iec.baud_char(fixed) or offered), None

    def _switcher(self, baud: int | None) -> Callable[[], Awaitable[None]] | None:
        link = self.ctx.line.link
        if baud is None or link.baudrate in (None, baud):
            return None

        async def switch() -> None:
            # The meter answers at the new speed; switching before the ACK's stop bits are out garbles it.
            await link.drain_output()
            link.set_baudrate(baud)
        return switch

    # -- the cycle -------------------------------------------------------------------------------------

    async def poll(self, ts: int) -> PollResult:
        mc = self.ctx.meter
        sets: list[iec.DataSet] = []
        self._answered = False
        error: str | None = None
        events: list[Event] = []
        try:
            async with self.ctx.line.session(mc.name):
                try:
                    await self._cycle(sets)
                finally:
                    await self._restore_baud()
            self._check_identity(sets)
        except IdentityMismatch as exc:
            events.append(Event(mc.name, "identity_mismatch", ts, None, str(exc)))
            return PollResult((), tuple(events), True, str(exc))
        except LineStopping as exc:
            error = str(exc)
        except (MeterError, ReplyTimeout, FrameError, TransportError) as exc:
            error = str(exc)
        dropped: list[Dropped] = []
        readings = self._readings(ts, tuple(sets), dropped)
        return PollResult(readings, tuple(events), self._answered or bool(readings) or bool(dropped), error,
                          dropped=tuple(dropped))

    async def _cycle(self, sets: list[iec.DataSet]) -> None:
        mc = self.ctx.meter
        attempts = 1 + mc.retries
        if self.mode == "direct":
            await self._direct(sets, attempts)
            return
        ident = await self._sign_on(attempts)
        self._answered = True
        self.ctx.state.identity.update({"manufacturer": ident.manufacturer, "ident": ident.ident})
        z, baud = self._speed(ident)
        if self.mode == "readout":
            await self._readout(z, baud, sets, attempts)
        else:
            await self._program(z, baud, sets, attempts)

    async def _readout(self, z: str, baud: int | None, sets: list[iec.DataSet], attempts: int) -> None:
        mc = self.ctx.meter
        speed = baud or self.opts.baud or (self._home_baud if self._serial else 9600)
        waiting = min(READOUT_LIMIT, mc.waiting_time + READOUT_BYTES * 10.0 / speed)
        req = iec.option_select(z, 0)
        body = bytearray()
        after = self._switcher(baud)
        naks = 0
        while True:
            try:
                msg: iec.Message = await self._x(req, self._framer(req), waiting=waiting,
                                                 after_write=after)
            except FrameError:
                # A bad BCC or noise: NAK asks the meter to repeat the message (IEC 62056-21 6.3.2).
                naks += 1
                if naks >= attempts:
                    raise
                req, after = bytes((iec.NAK,)), None
                continue
            after = None
            if msg.kind != "data":
                raise MeterError(f"{mc.name}: expected the readout data message, got {msg.kind} "
                                 f"[{msg.raw.hex(' ')}]")
            body += msg.body
            if not msg.partial:
                break
            req = bytes((iec.ACK,))  # partial block: ACK asks for the next one
        sets.extend(iec.parse_data_block(bytes(body)))

    async def _program(self, z: str, baud: int | None, sets: list[iec.DataSet], attempts: int) -> None:
        mc = self.ctx.meter
        req = iec.option_select(z, 1)
        try:
            msg: iec.Message = await self._x(req, self._framer(req),
                                             after_write=self._switcher(baud))
        except _RETRYABLE:
            await self._break()
            raise
        if msg.kind != "command" or msg.command != "P0":
            await self._break()
            raise MeterError(f"{mc.name}: expected the P0 password prompt after the option select, got "
                             f"[{msg.raw.hex(' ')}]")
        try:
            if self._password is not None:
                await self._login()
            refused: list[str] = []
            for address, argument in self.addresses:
                try:
                    sets.extend(await self._read(address, argument, attempts))
                except _Refused as exc:
                    # The meter answers the session but NAKs this one address each time: that costs its
                    # value, not the addresses after it.
                    refused.append(str(exc))
                    self.ctx.log.warning("%s: %s; skipping that address this cycle", mc.name, exc)
            if refused and len(refused) == len(self.addresses):
                raise MeterError("; ".join(refused))
        finally:
            await self._break()

    async def _login(self) -> None:
        mc = self.ctx.meter
        assert self._password is not None
        req = iec.password_command(self._password, self.profile.checksum)
        reply: iec.Message = await self._x(req, self._framer(req, single_byte=True),
                                           shown="SOH P1 STX (***) ETX BCC")
        if reply.kind != "ack":
            what = {"nak": "NAK"}.get(reply.kind, f"[{reply.raw.hex(' ')}]")
            raise MeterError(f"{mc.name}: password refused (meter answered {what} to P1; check password and "
                             f"password_encoding)")

    async def _read(self, address: str, argument: str, attempts: int) -> tuple[iec.DataSet, ...]:
        mc = self.ctx.meter
        req = iec.read_command(address, argument, self.profile.checksum)
        body = bytearray()
        last: PollerdError | None = None
        for _ in range(attempts):
            try:
                # The framer refuses a reply for another address: a late reply to an earlier read.
                framer = iec.MessageFramer(self.profile.checksum, request=self._wire(req), strip=self._strip,
                                           address=address, hex_obis=self.profile.hex_obis)
                msg: iec.Message = await self._x(req, framer)
                while msg.kind == "data" and msg.partial:
                    body += msg.body
                    ack = bytes((iec.ACK,))
                    msg = await self._x(ack, self._framer(ack))
            except _RETRYABLE as exc:
                last, body = exc, bytearray()
                continue
            if msg.kind == "nak":  # the meter asks for a repeat
                last = _Refused(f"{mc.name}: NAK to R1 {address}")
                continue
            if msg.kind != "data":
                raise MeterError(f"{mc.name}: unexpected reply to R1 {address}: [{msg.raw.hex(' ')}]")
            body += msg.body
            found = iec.parse_data_block(bytes(body))
            if found and found[0].address == "" and len(found) == 1:
                # Neva answers unknown or refused addresses with a bare "(01)": no value for this address.
                self.ctx.log.info("%s: R1 %s refused: %s", mc.name, address, bytes(body).decode("ascii"))
                return ()
            return found
        assert last is not None
        raise last

    async def _direct(self, sets: list[iec.DataSet], attempts: int) -> None:
        mc = self.ctx.meter
        if len(self.addresses) == 1:
            addr, arg = self.addresses[0]
        else:
            addr, arg = "GROUP", "".join(f"{a}({g})" for a, g in self.addresses)
        req = iec.sign_on(self.address, crlf=False) + iec.read_command(addr, arg, self.profile.checksum)
        last: PollerdError | None = None
        for _ in range(attempts):
            try:
                msg: iec.Message = await self._x(req, self._framer(req))
            except _RETRYABLE as exc:
                last = exc
                continue
            self._answered = True
            if msg.kind != "data":
                raise MeterError(f"{mc.name}: unexpected reply to {addr}: [{msg.raw.hex(' ')}]")
            sets.extend(iec.parse_data_block(msg.body))
            return
        assert last is not None
        raise last

    def _check_identity(self, sets: list[iec.DataSet]) -> None:
        mc, st = self.ctx.meter, self.ctx.state
        found = serial_of(tuple(sets), self.profile)
        if found is None:
            return
        serial = found[1]
        st.identity["serial"] = serial
        if mc.number_meter is not None and _digits(serial) != _digits(mc.number_meter):
            raise IdentityMismatch(
                f"{mc.name}: the meter at address {self.address!r} on line {mc.line} reports serial number "
                f"{serial}, but number_meter is {mc.number_meter}; not polling it")

    def _readings(self, ts: int, sets: tuple[iec.DataSet, ...],
                  dropped: list[Dropped] | None = None) -> tuple[Reading, ...]:
        mc = self.ctx.meter
        out: list[Reading] = []
        found = serial_of(sets, self.profile)
        serial_addr = found[0] if found else None   # an identity, not a measurement
        for d in decode_sets(sets, self.profile):
            if d.address == serial_addr or obis.kind_of(d.channel) not in mc.read:
                continue
            if isinstance(d.value, float):
                out.append(Reading(mc.name, d.channel, Archive.CURRENT.value, ts, d.value, d.unit))
            elif dropped is not None and obis.to_float(d.value) is not None:
                # A finite number that stayed text: beyond float range once scaled to SI units (_numeric).
                dropped.append(Dropped(Reading(mc.name, d.channel, Archive.CURRENT.value, ts, math.inf, d.unit),
                                       "non_finite", f"{d.value} {d.unit} is beyond any float once scaled"))
        return tuple(out)

    async def probe(self) -> bool:
        try:
            async with self.ctx.line.session(self.ctx.meter.name):
                if self.mode == "direct":
                    await self._direct([], 1)
                else:
                    await self._sign_on(1)
                    await self._break()
        except (MeterError, ReplyTimeout, FrameError, TransportError, LineStopping):
            return False
        return True

    async def close(self) -> None:
        return None  # every cycle ends its own session (B0 or the meter's readout end)


def _digits(s: str) -> str:
    return s.strip().lstrip("0")
