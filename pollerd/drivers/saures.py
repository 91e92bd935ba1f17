"""SAURES cloud (seed 002): the controllers and meters of an account's flats.

One poll cycle: form login (``/api/auth/login``, e-mail + password -> ``sid``, kept across cycles), the flats
(``/api/company/flats``), then each enabled flat's controllers and meters (``/api/meter/meters/``). The server
answers ``{"status": "ok" | "bad", "errors": [...], "data": {...}}``; an expired session is ``status = "bad"``
with a ``WrongSIDException`` error (or HTTP 401/403): pollerd signs in again once and repeats the request.

What becomes readings (archive ``current``; ``ts`` is the controller's ``readout_dt``, the moment the values
reached the server, in the entry's ``timezone`` — so an unchanged readout is not stored twice — or the poll
time when the server gives none):

* meter ``{entry}:{meter sn}``: type 1 ``V.cold``, 2 ``V.hot``, 3 ``V.gas`` (m³; the server's litres, or m³
  with ``volume_unit = "m3"``), 4 ``leak``, 6 ``valve.command``, 9 ``contact``, 10 ``valve`` (unit ``state``),
  5 ``T`` (°C), 7 ``E.heat`` and 8 ``A+`` (Wh; ``energy_unit = "kWh"`` if the server sends kWh);
  multi-tariff ``vals`` add ``<channel>.T1``...; the meter's ``state`` number is the readings' quality
  (``good`` for 0, else ``state.<n>``; its text is in the device list);
* controller ``{entry}:{controller sn}`` (``read = ["controllers"]``): ``battery`` (%), ``rssi`` (dBm),
  ``last_connection`` (unix seconds, unit ``s``).

A flat whose page is malformed (HTML, truncated JSON, wrong types, missing fields) contributes nothing and is
named in the cycle's error; the other flats are still read.
"""

from __future__ import annotations

import datetime as _dt
import math
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..errors import CloudAuthError, CloudError, CloudUnreachable, OptionError, SessionExpired
from ..model import Archive, Reading
from ..text import scrub as scrub_text
from . import cloud
from .base import CloudDriverContext, PollResult

DEFAULT_URL = "https://lk.saures.ru"
LOGIN = "/api/auth/login"
FLATS = "/api/company/flats"
METERS = "/api/meter/meters/"

# type number -> (channel, unit, factor applied to the server's value)
TYPES: dict[int, tuple[str, str, float]] = {
    1: ("V.cold", "m³", 0.001),        # litres
    2: ("V.hot", "m³", 0.001),
    3: ("V.gas", "m³", 0.001),
    4: ("leak", "state", 1.0),         # 0 dry, 1 leak
    5: ("T", "°C", 1.0),
    6: ("valve.command", "state", 1.0),  # 0 open, 1 close
    7: ("E.heat", "Wh", 1.0),
    8: ("A+", "Wh", 1.0),
    9: ("contact", "state", 1.0),      # 0 deactivated, 1 activated
    10: ("valve", "state", 1.0),       # 0 no module, 1 unknown, 2 open, 3 closed
}
# Seed 002's text gives litres for water and gas and Wh for heat and electricity, but its example values
# (hot water "99.896", electricity "5.0" with tariffs "2.3"/"2.7") read like m³ and kWh. Which the server
# really sends is an entry key, checked once against a meter's display; the default follows the text.
VOLUME_UNITS: dict[str, float] = {"l": 0.001, "m3": 1.0}     # -> m³
ENERGY_UNITS: dict[str, float] = {"Wh": 1.0, "kWh": 1000.0}  # -> Wh


@dataclass(frozen=True, slots=True)
class SauresOptions(cloud.CloudOptions):
    volume_unit: str = "l"
    energy_unit: str = "Wh"

    def factors(self) -> dict[int, float]:
        """Type number -> factor from the server's value to the channel's unit."""
        v, e = VOLUME_UNITS[self.volume_unit], ENERGY_UNITS[self.energy_unit]
        return {1: v, 2: v, 3: v, 7: e, 8: e}


def parse_options(raw: Mapping[str, object], base_dir: str) -> SauresOptions:
    """The catalog's option parser for saures: the TLS keys and the units the server sends values in."""
    kw: dict[str, Any] = cloud.parse_tls_options(raw, base_dir)
    for key, allowed in (("volume_unit", VOLUME_UNITS), ("energy_unit", ENERGY_UNITS)):
        if key in raw:
            if not isinstance(raw[key], str) or raw[key] not in allowed:  # a list or table is not hashable
                raise OptionError(f"expected one of {', '.join(repr(a) for a in allowed)}, got {raw[key]!r}",
                                  (key,))
            kw[key] = raw[key]
    return SauresOptions(**kw)


_TIME_FORMATS = ("%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


# -- parsing (sans-I/O) --------------------------------------------------------------------------------

def envelope(doc: Any, what: str, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """``data`` of a reply, or the error the reply states."""
    if not isinstance(doc, dict):
        raise CloudError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    status = doc.get("status")
    if status == "ok":
        data = doc.get("data")
        if not isinstance(data, dict):
            raise CloudError(f"{what}: 'data' is {type(data).__name__}, expected an object")
        return data
    errors = doc.get("errors")
    names, texts = [], []
    for e in errors if isinstance(errors, list) else [errors]:
        if isinstance(e, dict):
            names.append(str(e.get("name", "")))
            texts.append(f"{e.get('name', '')}: {e.get('msg', '')}".strip(": "))
        elif e is not None:
            names.append(str(e))
            texts.append(str(e))
    text = scrub_text("; ".join(texts) or "no error text", secrets)[:300]
    if status == "bad" and any("wrongsid" in n.lower() for n in names):
        raise SessionExpired(f"{what}: session expired ({text})")
    raise CloudError(f"{what}: status {status!r}: {text}")


def _number(v: object, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise CloudError(f"{what}: expected a number, got {type(v).__name__} {v!r}")
    try:
        f = float(v.strip().replace(",", ".")) if isinstance(v, str) else float(v)
    except ValueError:
        raise CloudError(f"{what}: expected a number, got {v!r}") from None
    if not math.isfinite(f):
        raise CloudError(f"{what}: {v!r} is not a finite number")
    return f


def parse_time(text: object, tz: zoneinfo.ZoneInfo, what: str) -> int | None:
    """The server's local time ("15.09.2017 09:00") as UTC unix seconds; None when absent."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise CloudError(f"{what}: expected a date and time, got {type(text).__name__} {text!r}")
    for fmt in _TIME_FORMATS:
        try:
            local = _dt.datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
        return int(local.replace(tzinfo=tz).timestamp())
    raise CloudError(f"{what}: cannot read the date and time {text!r} (expected DD.MM.YYYY HH:MM)")


def _number_of(obj: Any, key: str, what: str) -> tuple[int, str]:
    """``{"number": n, "name": text}`` members (type, state)."""
    v = obj.get(key)
    if not isinstance(v, dict):
        raise CloudError(f"{what}: '{key}' is {type(v).__name__}, expected an object with number and name")
    n = v.get("number")
    if isinstance(n, str) and n.strip().lstrip("-").isdigit():
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int):
        raise CloudError(f"{what}: '{key}.number' is {n!r}, expected an integer")
    name = v.get("name", "")
    return n, name if isinstance(name, str) else str(name)


@dataclass(frozen=True, slots=True)
class FlatPage:
    readings: tuple[Reading, ...]
    devices: dict[str, dict[str, object]]
    skipped_types: tuple[int, ...] = ()


def parse_meters(entry: str, flat: object, data: dict[str, Any], *, ts: int, tz: zoneinfo.ZoneInfo,
                 controllers: bool, meters: bool, factors: Mapping[int, float] | None = None) -> FlatPage:
    """One flat's ``/api/meter/meters/`` data. Raises CloudError on the first malformed field: a page is
    taken whole or not at all."""
    sensors = data.get("sensors")
    if not isinstance(sensors, list):
        raise CloudError(f"flat {flat}: 'sensors' is {type(sensors).__name__}, expected an array")
    out: list[Reading] = []
    devices: dict[str, dict[str, object]] = {}
    skipped: list[int] = []
    cur = Archive.CURRENT.value
    for i, s in enumerate(sensors):
        where = f"flat {flat} sensors[{i}]"
        if not isinstance(s, dict):
            raise CloudError(f"{where}: expected an object, got {type(s).__name__}")
        sn = s.get("sn")
        if isinstance(sn, bool) or not isinstance(sn, (str, int)) or str(sn).strip() == "":
            raise CloudError(f"{where}: missing controller serial number 'sn'")
        sn = str(sn).strip()
        controller = cloud.device_name(entry, sn)
        at = parse_time(s.get("readout_dt"), tz, f"{where}.readout_dt") or ts
        last = parse_time(s.get("last_connection"), tz, f"{where}.last_connection")
        ctl_quality = "good"
        if "state" in s:
            n, _ = _number_of(s, "state", where)
            ctl_quality = "good" if n == 0 else f"state.{n}"
        if controllers:
            if s.get("bat") not in (None, ""):
                out.append(Reading(controller, "battery", cur, at, _number(s["bat"], f"{where}.bat"), "%",
                                   ctl_quality))
            if s.get("rssi") not in (None, ""):
                out.append(Reading(controller, "rssi", cur, at, _number(s["rssi"], f"{where}.rssi"), "dBm",
                                   ctl_quality))
            if last is not None:
                out.append(Reading(controller, "last_connection", cur, at, float(last), "s", ctl_quality))
        devices[sn] = {"kind": "controller", "flat": flat,
                       **{k: s[k] for k in ("hardware", "firmware", "ssid", "local_ip") if k in s}}
        ms = s.get("meters", [])
        if not isinstance(ms, list):
            raise CloudError(f"{where}: 'meters' is {type(ms).__name__}, expected an array")
        for j, m in enumerate(ms):
            mwhere = f"{where}.meters[{j}]"
            if not isinstance(m, dict):
                raise CloudError(f"{mwhere}: expected an object, got {type(m).__name__}")
            msn = m.get("sn")
            if isinstance(msn, bool) or not isinstance(msn, (str, int, type(None))):
                raise CloudError(f"{mwhere}: 'sn' is {type(msn).__name__}")
            # A meter without a serial number is named by its controller and its place on it.
            dev = str(msn).strip() if msn not in (None, "") else f"{sn}.{j + 1}"
            mtype, tname = _number_of(m, "type", mwhere)
            snum, sname = _number_of(m, "state", mwhere) if "state" in m else (0, "")
            devices[dev] = {"kind": "meter", "type": mtype, "type_name": tname, "controller": sn, "flat": flat,
                            "name": m.get("meter_name") or "", "state": sname}
            if mtype not in TYPES:
                skipped.append(mtype)
                continue
            if not meters:
                continue
            channel, unit, factor = TYPES[mtype]
            factor = (factors or {}).get(mtype, factor)
            quality = "good" if snum == 0 else f"state.{snum}"
            name = cloud.device_name(entry, dev)
            if "value" not in m:
                raise CloudError(f"{mwhere}: missing 'value'")
            if m["value"] not in (None, ""):
                out.append(Reading(name, channel, cur, at, _number(m["value"], f"{mwhere}.value") * factor,
                                   unit, quality))
            vals = m.get("vals")
            vals = [] if vals is None else vals
            if not isinstance(vals, list):
                raise CloudError(f"{mwhere}: 'vals' is {type(vals).__name__}, expected an array")
            for k, v in enumerate(vals):
                if not isinstance(v, dict):
                    raise CloudError(f"{mwhere}.vals[{k}]: expected an object, got {type(v).__name__}")
                tariff = v.get("type")
                if not isinstance(tariff, str) or not tariff.strip():
                    raise CloudError(f"{mwhere}.vals[{k}]: missing tariff 'type'")
                t = tariff.strip().upper()
                suffix = t if t.startswith("T") else f"T{t}"
                out.append(Reading(name, f"{channel}.{suffix}", cur, at,
                                   _number(v.get("value"), f"{mwhere}.vals[{k}].value") * factor, unit, quality))
    return FlatPage(tuple(out), devices, tuple(skipped))


# -- driver --------------------------------------------------------------------------------------------

class SauresDriver:
    def __init__(self, ctx: CloudDriverContext) -> None:
        self.ctx = ctx
        self.mc = ctx.meter
        self.base = (self.mc.url or DEFAULT_URL).rstrip("/")
        self._password = self.mc.password.reveal() if self.mc.password else ""
        self._session: aiohttp.ClientSession | None = None
        self._sid: str | None = None
        opts = self.mc.options if isinstance(self.mc.options, SauresOptions) else SauresOptions()
        self._factors = opts.factors()
        self.logins = 0
        self.requests = 0

    @property
    def _secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self._password, self._sid) if s)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = cloud.make_session(self.mc)
        return self._session

    async def _login(self) -> str:
        self._sid = None
        self.logins += 1
        self.requests += 1
        what = "login"
        _, doc = await cloud.fetch_json(self._http(), "POST", self.base + LOGIN, what=what,
                                        data={"email": self.mc.email or "", "password": self._password},
                                        secrets=self._secrets, auth_status=(401, 403))
        try:
            data = envelope(doc, what, self._secrets)
        except SessionExpired as exc:
            raise CloudAuthError(str(exc)) from None
        except CloudError as exc:
            # A "bad" login is the server refusing these credentials: an auth problem, not a glitch.
            raise CloudAuthError(f"sign-in refused: {exc}") from None
        sid = data.get("sid")
        if not isinstance(sid, str) or not sid:
            raise CloudError(f"{what}: the reply carries no session id")
        self._sid = sid
        cloud.clear_alarm(self.ctx.state, "auth")
        return sid

    async def _get(self, path: str, what: str, **params: object) -> dict[str, Any]:
        """GET with the session id; signs in when there is none and once more when it has expired."""
        for attempt in (1, 2):
            sid = self._sid or await self._login()
            self.requests += 1
            reply, doc = await cloud.fetch_json(self._http(), "GET", self.base + path, what=what,
                                                params={"sid": sid, **params}, secrets=self._secrets,
                                                ok=(401, 403))
            try:
                if reply.status in (401, 403):
                    raise SessionExpired(f"{what}: HTTP {reply.status}")
                return envelope(doc, what, self._secrets)
            except SessionExpired:
                self._sid = None
                if attempt == 2:
                    raise CloudAuthError(f"{what}: the session expired again right after signing in") from None
                self.ctx.log.info("%s: session expired; signing in again", self.mc.name)
        raise AssertionError("unreachable")

    async def poll(self, ts: int) -> PollResult:
        tz = zoneinfo.ZoneInfo(self.mc.timezone)
        readings: list[Reading] = []
        devices: dict[str, dict[str, object]] = {}
        errors: list[str] = []
        keys: set[tuple[str, str, int]] = set()
        try:
            data = await self._get(FLATS, "flats")
            flats = data.get("flats")
            if not isinstance(flats, list):
                raise CloudError(f"flats: 'flats' is {type(flats).__name__}, expected an array")
            for i, flat in enumerate(flats):  # the whole list first: nothing from a bad page
                if not isinstance(flat, dict) or isinstance(flat.get("id"), bool) \
                        or not isinstance(flat.get("id"), (int, str)):
                    raise CloudError(f"flats[{i}]: expected an object with an 'id', got {str(flat)[:80]!r}")
            seen: set[object] = set()
            for flat in flats:
                fid = flat["id"]
                if flat.get("enable") is False or fid in seen:  # a flat listed twice is read once
                    continue
                seen.add(fid)
                try:
                    page = parse_meters(self.mc.name, fid, await self._get(METERS, f"flat {fid}", flat_id=fid),
                                        ts=ts, tz=tz, controllers="controllers" in self.mc.read,
                                        meters="meters" in self.mc.read, factors=self._factors)
                except (CloudAuthError, CloudUnreachable):
                    raise  # every further flat would fail or wait out the same timeout
                except CloudError as exc:
                    errors.append(str(exc))
                    continue
                for r in page.readings:
                    # One meter reported twice (e.g. moved between controllers): the first report wins.
                    if (r.meter, r.channel, r.ts) not in keys:
                        keys.add((r.meter, r.channel, r.ts))
                        readings.append(r)
                devices.update(page.devices)
                if page.skipped_types:
                    self.ctx.log.debug("%s: flat %s: meter types %s have no channel mapping", self.mc.name, fid,
                                       sorted(set(page.skipped_types)))
        except CloudAuthError as exc:
            cloud.raise_alarm(self.ctx.state, "auth", f"saures: {exc}")
            return PollResult((), (), False, str(exc))
        except CloudError as exc:
            return PollResult(tuple(readings), (), bool(readings), "; ".join(errors + [str(exc)]))
        cloud.set_devices(self.ctx.state, devices)
        return PollResult(tuple(readings), (), True, "; ".join(errors) or None)

    async def probe(self) -> bool:
        try:
            await self._get(FLATS, "flats")
            return True
        except CloudError:
            return False

    async def close(self) -> None:
        # Seed 002 documents no logout; the session id simply expires on the server.
        self._sid = None
        if self._session is not None:
            await self._session.close()
