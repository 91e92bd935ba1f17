"""WebMeters cloud (seed 001): an account's devices and their current values over XML-RPC.

One poll cycle walks ``userGetOrgList`` -> ``userGetGroups`` per organisation -> ``deviceGetValues`` per group
and turns each device's ``values`` into ``current`` readings of meter ``{entry}:{device id}`` (``{entry}:{device
id}.{channelNumber}`` for a channel other than 0):

* tariff values ``T1``, ``T2``... of an active-energy unit (кВтч, Вт*ч, МВт*ч) become ``A+.T1``... in Wh;
* every other value keeps its name as its channel, with the unit normalised where pollerd knows it
  (м3 -> m³, л -> m³, Гкал -> Wh, кВт -> W...); an unknown unit is kept as the server spells it.

``read = ["ellis"]`` also fetches ``exportEllisFile`` (a text/plain reply, not XML-RPC) and saves it into the
state directory as ``webmeters/{entry}-{YYYY-MM-DD}.txt``, so a monthly entry gives one file per billing run.

The calls are marshalled with the standard library's :mod:`xmlrpc.client` (``dumps``/``loads``) and sent with
aiohttp; the codec half is sans-I/O (:func:`encode_call`, :func:`decode_reply`, :func:`device_readings`).

Fault codes (seed 001): 1 ERR_BAD_APIKEY stops the source until the config is reloaded (a health alarm says
why: every further call would fail the same way), 2 ERR_ITEM_NOT_FOUND and 3 ERR_ACCESS_DENIED fail only the
organisation or group concerned; the rest of the account is still read.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
import os
import re
import xmlrpc.client
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

import aiohttp

from ..errors import CloudAuthError, CloudError, CloudUnreachable
from ..model import Archive, Reading
from ..text import scrub as scrub_text
from . import cloud
from .base import CloudDriverContext, PollResult

DEFAULT_URL = "http://api.webmeters.ru/1.0/"

ERR_BAD_APIKEY = 1
ERR_ITEM_NOT_FOUND = 2
ERR_ACCESS_DENIED = 3
FAULTS = {ERR_BAD_APIKEY: "ERR_BAD_APIKEY (the api key is wrong or revoked)",
          ERR_ITEM_NOT_FOUND: "ERR_ITEM_NOT_FOUND (the object does not exist)",
          ERR_ACCESS_DENIED: "ERR_ACCESS_DENIED (the key may not read this object)"}

# unit as the server spells it (lower case, spaces and separators dropped) -> (pollerd unit, factor)
_ENERGY_UNITS = {"квтч": ("Wh", 1000.0), "втч": ("Wh", 1.0), "мвтч": ("Wh", 1e6), "kwh": ("Wh", 1000.0),
                 "wh": ("Wh", 1.0), "mwh": ("Wh", 1e6)}
_UNITS = {
    **_ENERGY_UNITS,
    "м3": ("m³", 1.0), "м³": ("m³", 1.0), "m3": ("m³", 1.0), "m³": ("m³", 1.0), "куб.м": ("m³", 1.0),
    "л": ("m³", 0.001), "l": ("m³", 0.001),
    # heat: 1 Gcal = 4.1868e9 J (international table calorie) = 1 163 000 Wh
    "гкал": ("Wh", 1_163_000.0), "gcal": ("Wh", 1_163_000.0), "мкал": ("Wh", 1163.0),
    "квт": ("W", 1000.0), "вт": ("W", 1.0), "kw": ("W", 1000.0), "w": ("W", 1.0),
    # A bare "с"/"c" is not taken for °C: in Russian units "с" is the second (GOST 8.417), e.g. an operating
    # time; it is kept as sent.
    "°c": ("°C", 1.0), "°с": ("°C", 1.0), "градс": ("°C", 1.0),
    "в": ("V", 1.0), "v": ("V", 1.0), "а": ("A", 1.0), "a": ("A", 1.0),
    "м3/ч": ("m³/h", 1.0), "m3/h": ("m³/h", 1.0), "т": ("t", 1.0),
}
_TARIFF = re.compile(r"[TТ](\d{1,2})")   # Latin or Cyrillic T


def _unit_key(units: str) -> str:
    return re.sub(r"[\s*·.⋅]", "", units.strip().lower().replace("^", "")).replace("куб", "куб.")


def normalise_unit(units: str) -> tuple[str, float]:
    """(pollerd unit, factor to multiply the value by). Unknown units are kept verbatim."""
    key = _unit_key(units)
    if key in _UNITS:
        return _UNITS[key]
    return units.strip(), 1.0


# -- codec (sans-I/O) ----------------------------------------------------------------------------------

# What pollerd sends as XML-RPC parameters: the api key, phone, codes and ids (no structs or arrays).
Param = str | int


def encode_call(method: str, *params: Param) -> bytes:
    return xmlrpc.client.dumps(tuple(params), methodname=method, encoding="utf-8", allow_none=False).encode()


@dataclass(frozen=True, slots=True)
class Fault:
    code: int
    text: str

    def describe(self) -> str:
        known = FAULTS.get(self.code)
        return f"error {self.code} {known}" if known else f"error {self.code}: {self.text}"


def decode_reply(body: bytes, *, what: str = "reply", scrub: Iterable[str] = ()) -> Any:
    """The value of an XML-RPC methodResponse, or a :class:`Fault`. Anything else raises CloudError with a
    short snippet of what came instead (secrets in ``scrub`` masked)."""
    try:
        params, _ = xmlrpc.client.loads(body, use_builtin_types=True)
    except xmlrpc.client.Fault as f:
        code = f.faultCode if isinstance(f.faultCode, int) and not isinstance(f.faultCode, bool) else -1
        return Fault(code, scrub_text(str(f.faultString), scrub))
    except (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError, KeyError, IndexError) as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CloudError(f"{what}: not an XML-RPC reply ({why}): {cloud.snippet(body, scrub)}") from None
    if len(params) != 1:
        raise CloudError(f"{what}: XML-RPC reply carries {len(params)} values, expected 1")
    return params[0]


def _number(v: object) -> float | None:
    """A value as the server sends it (double, int or a decimal string, comma or point); None when the device
    has no value yet (empty). Anything else is a malformed reply."""
    if isinstance(v, bool):
        raise ValueError(f"boolean {v!r} where a number was expected")
    if isinstance(v, (int, float)):
        f = float(v)
    elif isinstance(v, str):
        s = v.strip().replace(",", ".").replace("\u00a0", "").replace(" ", "")
        if not s:
            return None
        f = float(s)  # ValueError names the text
    elif v is None:
        return None
    else:
        raise ValueError(f"{type(v).__name__} where a number was expected")
    if not math.isfinite(f):
        raise ValueError(f"{v!r} is not a finite number")
    return f


def _records(value: object, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise CloudError(f"{what}: expected an array of structs, got {type(value).__name__}")
    return value


def _id(rec: dict[str, Any], what: str, key: str = "id") -> int | str:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, str)) or v == "":
        raise CloudError(f"{what}: missing or invalid {key!r} ({v!r})")
    return v


def device_id(dev: dict[str, Any]) -> str:
    """The device part of the meter name: ``{id}``, or ``{id}.{channelNumber}`` for a channel other than 0.
    Each record names itself (not "split only if the id repeats"), so a name never changes with what else
    the account lists that cycle."""
    base = str(_id(dev, "device")).strip()
    ch = dev.get("channelNumber")
    if ch in (None, "", 0, "0"):
        return base
    if isinstance(ch, bool) or not isinstance(ch, (int, str)):
        raise CloudError(f"device {base!r}: channelNumber is {type(ch).__name__}")
    return f"{base}.{str(ch).strip()}"


def device_readings(meter: str, dev: dict[str, Any], ts: int) -> list[Reading]:
    """Readings of one ``deviceGetValues`` element; raises CloudError on a malformed element."""
    values = dev.get("values")
    if values is None:
        return []
    if not isinstance(values, list):
        raise CloudError(f"device {dev.get('id')!r}: 'values' is {type(values).__name__}, expected an array")
    out = []
    for i, v in enumerate(values):
        if not isinstance(v, dict):
            raise CloudError(f"device {dev.get('id')!r}: values[{i}] is {type(v).__name__}, expected a struct")
        name, units = v.get("name"), v.get("units", "")
        if not isinstance(name, str) or not name.strip():
            raise CloudError(f"device {dev.get('id')!r}: values[{i}] has no name")
        if units is None:
            units = ""
        if not isinstance(units, str):
            raise CloudError(f"device {dev.get('id')!r}: values[{i}].units is {type(units).__name__}")
        try:
            number = _number(v.get("value"))
        except ValueError as exc:
            raise CloudError(f"device {dev.get('id')!r}: value {name!r}: {exc}") from None
        if number is None:
            continue
        unit, factor = normalise_unit(units)
        name = name.strip()
        m = _TARIFF.fullmatch(name)
        channel = f"A+.T{int(m.group(1))}" if m and _unit_key(units) in _ENERGY_UNITS else name
        out.append(Reading(meter, channel, Archive.CURRENT.value, ts, number * factor, unit))
    return out


def ellis_path(state_dir: Path, entry: str, ts: int, tz: str) -> Path:
    day = _dt.datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(tz)).date().isoformat()
    safe = re.sub(r"[^\w.-]", "_", entry)
    return state_dir / "webmeters" / f"{safe}-{day}.txt"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


# -- driver --------------------------------------------------------------------------------------------

_XML = {"Content-Type": "text/xml"}


class WebmetersDriver:
    def __init__(self, ctx: CloudDriverContext) -> None:
        self.ctx = ctx
        self.mc = ctx.meter
        self.url = self.mc.url or DEFAULT_URL
        self._key = self.mc.api_key.reveal() if self.mc.api_key else ""
        self._session: aiohttp.ClientSession | None = None
        self.stopped: str | None = None   # why the source is stopped (fault 1), until the config changes
        self.requests = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = cloud.make_session(self.mc)
        return self._session

    async def _post(self, method: str, body: bytes) -> cloud.Reply:
        self.requests += 1
        return await cloud.fetch(self._http(), "POST", self.url, what=method, data=body, headers=_XML,
                                 secrets=(self._key,))

    async def _call(self, method: str, *params: Param) -> Any:
        reply = await self._post(method, encode_call(method, self._key, *params))
        _expect_xml(method, reply, (self._key,))
        return _value(method, decode_reply(reply.body, what=method, scrub=(self._key,)))

    def _stop(self, exc: CloudAuthError) -> PollResult:
        why = (f"webmeters rejected the api key ({exc}); the source is stopped: get a new key with "
               "`pollerd webmeters-key` and reload")
        self.stopped = why
        cloud.raise_alarm(self.ctx.state, "auth", why)
        self.ctx.log.error("%s: %s", self.mc.name, why)
        return PollResult((), (), False, why)

    async def poll(self, ts: int) -> PollResult:
        if self.stopped:
            return PollResult((), (), False, self.stopped)
        readings: list[Reading] = []
        errors: list[str] = []
        answered = False
        try:
            if "values" in self.mc.read:
                answered = await self._values(ts, readings, errors)
            if "ellis" in self.mc.read:
                try:
                    await self._ellis(ts)
                    answered = True
                except (CloudAuthError, CloudUnreachable):
                    raise
                except CloudError as exc:
                    errors.append(f"exportEllisFile: {exc}")
        except CloudAuthError as exc:
            return self._stop(exc)
        except CloudError as exc:
            errors.append(str(exc))
        return PollResult(tuple(readings), (), answered, "; ".join(errors) or None)

    async def _values(self, ts: int, readings: list[Reading], errors: list[str]) -> bool:
        orgs = _records(await self._call("userGetOrgList"), "userGetOrgList")
        for org in orgs:  # the whole list first: nothing from a bad page
            _id(org, "userGetOrgList")
        devices: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        try:
            await self._walk(orgs, ts, devices, errors)
        except CloudUnreachable as exc:
            # The server went away mid-walk: keep the groups already read, the next cycle reads all again.
            errors.append(str(exc))
        info: dict[str, dict[str, object]] = {}
        for device, (d, where) in sorted(devices.items()):
            readings.extend(device_readings(cloud.device_name(self.mc.name, device), d, ts))
            info[device] = {"type": d.get("deviceType"), "channel": d.get("channelNumber"), "flat": d.get("flat"),
                            **where}
        cloud.set_devices(self.ctx.state, info)
        cloud.clear_alarm(self.ctx.state, "auth")
        return True

    async def _walk(self, orgs: list[dict[str, Any]], ts: int,
                    devices: dict[str, tuple[dict[str, Any], dict[str, Any]]], errors: list[str]) -> None:
        for org in orgs:
            org_id = org["id"]
            try:
                groups = _records(await self._call("userGetGroups", _as_int(org_id)), f"org {org_id} groups")
                for g in groups:  # the whole list first: nothing from a bad page
                    _id(g, f"org {org_id} groups")
            except (CloudAuthError, CloudUnreachable):
                raise  # every further call would fail or wait out the same timeout
            except CloudError as exc:
                errors.append(f"org {org_id}: {exc}")
                continue
            for g in groups:
                gid = g["id"]
                try:
                    # A group's whole reply is checked before any of it is kept: nothing from a bad page.
                    page = _records(await self._call("deviceGetValues", _as_int(gid)), f"group {gid} devices")
                    keyed = [(device_id(d), d) for d in page]
                    for _, d in keyed:
                        device_readings("-", d, ts)
                except (CloudAuthError, CloudUnreachable):
                    raise
                except CloudError as exc:
                    errors.append(f"org {org_id} group {gid}: {exc}")
                    continue
                for k, d in keyed:
                    # Parent groups may list their children's devices again.
                    devices.setdefault(k, (d, {"org": org.get("name"), "group": g.get("name")}))

    async def _ellis(self, ts: int) -> None:
        reply = await self._post("exportEllisFile", encode_call("exportEllisFile", self._key))
        # Success is a plain-text file, not XML-RPC (seed 001); a failure is an ordinary XML-RPC fault.
        ct = reply.content_type.lower()
        if ct in ("text/xml", "application/xml") or reply.body.lstrip().startswith(b"<?xml"):
            _value("exportEllisFile", decode_reply(reply.body, what="exportEllisFile", scrub=(self._key,)))
            raise CloudError("expected a text/plain file, got an XML-RPC value")
        if ct != "text/plain":
            raise CloudError(f"expected a text/plain file, got {ct or 'no content type'}: "
                             f"{cloud.snippet(reply.body, (self._key,))}")
        state_dir = self.ctx.state_dir if self.ctx.state_dir is not None else Path.cwd()
        path = ellis_path(state_dir, self.mc.name, ts, self.mc.timezone)
        try:
            await asyncio.to_thread(_write_atomic, path, reply.body)
        except OSError as exc:
            raise CloudError(f"cannot save the export to {str(path)!r}: {exc}") from None
        self.ctx.state.identity["ellis_file"] = str(path)
        cloud.clear_alarm(self.ctx.state, "auth")
        self.ctx.log.info("%s: saved the Ellis export (%d bytes) to %s", self.mc.name, len(reply.body), path)

    async def probe(self) -> bool:
        if self.stopped:
            return False
        try:
            _records(await self._call("userGetOrgList"), "userGetOrgList")
            return True
        except CloudError:
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _expect_xml(method: str, reply: cloud.Reply, secrets: tuple[str, ...]) -> None:
    """An HTML error page from a proxy in front of the API is not worth feeding to the XML parser."""
    ct = reply.content_type.lower()
    if ct and "xml" not in ct:
        raise CloudError(f"{method}: expected an XML-RPC reply (text/xml), got {ct} (HTTP {reply.status}): "
                         f"{cloud.snippet(reply.body, secrets)}")


def _value(method: str, value: Any) -> Any:
    if isinstance(value, Fault):
        if value.code == ERR_BAD_APIKEY:
            raise CloudAuthError(f"{method}: {value.describe()}")
        raise CloudError(f"{method}: {value.describe()}")
    return value


def _as_int(v: int | str) -> int | str:
    """Ids are ints in seed 001's signatures; a server sending them as digit strings gets ints back."""
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return v


# -- `pollerd webmeters-key` ---------------------------------------------------------------------------

PHONE = re.compile(r"\d{10}")


async def request_key(url: str, phone: str, ask_code: Callable[[], Awaitable[str]], *,
                      waiting_time: float = 30.0) -> str:
    """apiSendKeyRequest(phone) -> request id; ask the user for the SMS code; apiGetKey -> the api key."""
    from ..config.model import MeterConfig
    if not PHONE.fullmatch(phone):
        raise CloudError("the phone number must be 10 digits without the country code, e.g. 9181234567")
    mc = MeterConfig(name="webmeters-key", protocol="webmeters", line="", connection_address=0, url=url,
                     waiting_time=waiting_time)
    async with cloud.make_session(mc) as session:
        async def call(method: str, *params: Param, secrets: tuple[str, ...] = ()) -> str:
            reply = await cloud.fetch(session, "POST", url, what=method, data=encode_call(method, *params),
                                      headers=_XML, secrets=secrets)
            _expect_xml(method, reply, secrets)
            value = _value(method, decode_reply(reply.body, what=method, scrub=secrets))
            if not isinstance(value, str) or not value:
                raise CloudError(f"{method}: expected a string, got {type(value).__name__}")
            return value

        request_id = await call("apiSendKeyRequest", phone)
        code = (await ask_code()).strip()
        if not code:
            raise CloudError("no SMS code given")
        return await call("apiGetKey", request_id, code, secrets=(request_id, code))
