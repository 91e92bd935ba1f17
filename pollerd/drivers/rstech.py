"""RS-Tech (РусТехнология) "universal data collection server" Web API (seed 000) as a cloud source.

One ``[[meters]]`` entry is one account (``url`` = the API root, e.g. ``https://uztgs.uz/api/v1``, ``email``,
``password``). Each station (узел учёта) is a device: its readings are named ``{entry}:{station id}``.

A cycle:

1. sign in once per session (POST auth/sign_in). The reply's token headers (access-token, client, uid,
   token-type, expiry) go with the next request, and **every** reply carries new ones that replace them: the
   old access-token is dead as soon as the server has answered. So one account's requests are strictly
   sequential (a lock), headers are taken from every reply, error replies included, and a 401 means "sign in
   again" (once per request; a refused sign-in is an ``auth`` alarm on /health);
2. the station list (every page: ``page`` .. until ``next_page`` is null, ``per_page`` up to 1000);
3. customers, equipment types and the channel dictionary (channel codes and units per equipment type and
   archive), refreshed once a day or when a station has an equipment type pollerd has not seen;
4. per station and archive in ``read`` (``hourly``, ``daily``, ``monthly``, ``yearly``): channel_data from
   the day of the last stored record minus ``archive_overlap`` (first time: ``data_polling_length`` back)
   to tomorrow; records become readings with that archive name, the server's channel codes and the
   dictionary's units (normalised: м3 -> m³, °С -> °C, кПа -> kPa...). ``nesht`` records become events,
   ``settings`` become the device's metadata (at most once a day). A station whose last communication
   session (``seances_event_time``) has not moved since its last complete read is skipped: it has nothing new;
5. positions (last record time per station and archive) are saved after the readings are committed.

A bad page (HTML error page, truncated JSON, wrong types, missing fields, a page that repeats) fails that
station's archive only: nothing of it is stored, its position stays, the next cycle retries it. No reply
at all, a refused sign-in or several stations failing in a row end the cycle early (the server is in trouble
and each further request would cost the same); what the stations before gave is kept with its positions, and
a station that got no reply is read last in the next cycle. Sign-out on shutdown.

Parsing is sans-I/O (``parse_*`` in :mod:`pollerd.drivers.rstech_api`), the session I/O is :class:`RstechSession`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..errors import CloudAuthError, CloudError, CloudUnreachable, OptionError, StoreError
from ..model import Event, Reading
from ..units import parse_duration
from . import cloud
from .base import CloudDriverContext, PollResult
from .rstech_api import Page as Page
from .rstech_api import Record as Record
from .rstech_api import Station as Station
from .rstech_api import as_int, as_text
from .rstech_api import normalise_unit as normalise_unit
from .rstech_api import parse_page as parse_page
from .rstech_api import parse_record as parse_record
from .rstech_api import parse_station as parse_station

ARCHIVES = ("hourly", "daily", "monthly", "yearly")
MAX_PER_PAGE = 1000
MAX_PAGES = 100_000              # a listing longer than this is a server that never says next_page = null
DICTIONARY_TTL = 86400.0         # customers, equipment types, channel dictionary change rarely
SETTINGS_TTL = 86400.0           # device settings: once a day
ABORT_AFTER = 5                  # this many stations failing in a row: the server is in trouble, stop
TOKEN_HEADERS = ("access-token", "client", "uid", "token-type", "expiry")
SENT_HEADERS = ("access-token", "client", "uid", "token-type")   # expiry is not needed on requests


# -- options ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RstechOptions(cloud.CloudOptions):
    per_page: int = MAX_PER_PAGE
    archive_overlap: float = 86400.0
    stations: frozenset[int] = frozenset()      # empty: every station of the account


def parse_options(raw: Mapping[str, object], base_dir: str) -> RstechOptions:
    kw: dict[str, Any] = cloud.parse_tls_options(raw, base_dir)
    if "per_page" in raw:
        v = raw["per_page"]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_PER_PAGE:
            raise OptionError(f"expected an integer 1..{MAX_PER_PAGE} (the server's limit), got {v!r}",
                              ("per_page",))
        kw["per_page"] = v
    if "archive_overlap" in raw:
        try:
            kw["archive_overlap"] = parse_duration(raw["archive_overlap"])
        except ValueError as exc:
            raise OptionError(str(exc), ("archive_overlap",)) from None
        if kw["archive_overlap"] < 0:
            raise OptionError("must not be negative", ("archive_overlap",))
    if "stations" in raw:
        v = raw["stations"]
        if not isinstance(v, list) or not v:
            raise OptionError(f"expected a list of station ids, got {v!r}", ("stations",))
        for i, sid in enumerate(v):
            if isinstance(sid, bool) or not isinstance(sid, int) or sid < 0:
                raise OptionError(f"expected a station id (an integer), got {sid!r}", ("stations", i))
        kw["stations"] = frozenset(v)
    return RstechOptions(**kw)


# -- the session: strictly sequential requests with rotating tokens ---------------------------------------

class RstechSession:
    def __init__(self, meter: Any, per_page: int) -> None:
        self.meter = meter
        self.base = meter.url.rstrip("/")
        self.per_page = per_page
        self._http: aiohttp.ClientSession | None = None
        self._token: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.requests = 0
        self.sign_ins = 0

    @property
    def signed_in(self) -> bool:
        return bool(self._token)

    def _secrets(self) -> list[str | None]:
        return [self.meter.password.reveal() if self.meter.password else None,
                self._token.get("access-token"), self._token.get("client")]

    def _http_session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = cloud.make_session(self.meter, headers={"Accept": "application/json"})
        return self._http

    def _take_token(self, headers: Mapping[str, str]) -> None:
        if headers.get("access-token"):
            self._token = {k: headers[k] for k in TOKEN_HEADERS if headers.get(k)}

    async def sign_in(self) -> None:
        async with self._lock:
            await self._sign_in()

    async def _sign_in(self) -> None:
        self._token = {}
        secrets = self._secrets()
        self.requests += 1
        reply = await cloud.fetch(self._http_session(), "POST", f"{self.base}/auth/sign_in", what="sign-in",
                                  json={"email": self.meter.email, "password": self.meter.password.reveal()},
                                  secrets=secrets, auth_status=(401, 403))
        if not reply.headers.get("access-token") or not reply.headers.get("client"):
            raise CloudError(f"sign-in: HTTP {reply.status} without the access-token/client headers: "
                             f"{cloud.snippet(reply.body, secrets)}", reply.status)
        self._take_token(reply.headers)
        self.sign_ins += 1

    async def get(self, path: str, params: Mapping[str, object], what: str) -> Any:
        """One authenticated GET returning its JSON document. A 401 signs in again and repeats the request
        once (the token expired, the server restarted, or a reply with the new token was lost)."""
        async with self._lock:
            for attempt in (1, 2):
                if not self._token:
                    await self._sign_in()
                secrets = self._secrets()
                headers = {k: self._token[k] for k in SENT_HEADERS if k in self._token}
                headers["Content-Type"] = "application/json"  # the document insists, even on GET
                self.requests += 1
                try:
                    reply = await cloud.fetch(self._http_session(), "GET", f"{self.base}/{path}",
                                              params={k: str(v) for k, v in params.items()}, headers=headers,
                                              what=what, secrets=secrets, ok=range(100, 600))
                except CloudUnreachable:
                    # the server may have rotated the token without us seeing the reply: start over
                    self._token = {}
                    raise
                self._take_token(reply.headers)
                if reply.status == 401:
                    self._token = {}
                    if attempt == 1:
                        continue
                try:
                    cloud.raise_for(reply, what=what, secrets=secrets)
                    return cloud.decode_json(reply, what=what, secrets=secrets)
                except CloudError:
                    if not reply.headers.get("access-token"):
                        # an error reply without a new token (a proxy's page): whether the server rotated is
                        # unknown, so the next request signs in afresh instead of gambling on a 401
                        self._token = {}
                    raise
        raise AssertionError("unreachable")

    async def pages(self, path: str, params: Mapping[str, object], what: str,
                    parse: Callable[[Any, str], Any] | None = None) -> list[Any]:
        """Every item of a paginated listing, in order (each through ``parse(item, "what page N")`` if
        given); an error on any page fails the whole listing."""
        items: list[Any] = []
        page = 1
        while True:
            label = f"{what} page {page}"
            doc = await self.get(path, {**params, "page": page, "per_page": self.per_page}, label)
            p = parse_page(doc, label, page)
            items.extend(p.items if parse is None else [parse(item, label) for item in p.items])
            if p.next_page is None:
                return items
            if p.next_page > MAX_PAGES:
                raise CloudError(f"{what}: more than {MAX_PAGES} pages")
            page = p.next_page

    async def sign_out(self) -> None:
        async with self._lock:
            if self._token and self._http is not None and not self._http.closed:
                headers = {k: self._token[k] for k in SENT_HEADERS if k in self._token}
                self._token = {}
                self.requests += 1
                await cloud.fetch(self._http, "DELETE", f"{self.base}/auth/sign_out", headers=headers,
                                  what="sign-out", secrets=[headers.get("access-token"), headers.get("client")])

    async def close(self) -> None:
        try:
            await self.sign_out()
        finally:
            if self._http is not None:
                await self._http.close()
                self._http = None


# -- the driver -------------------------------------------------------------------------------------------

@dataclass
class _Dictionaries:
    at: float = -math.inf
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    types: dict[int, dict[str, Any]] = field(default_factory=dict)
    # (equipment type, archive, channel code) -> (unit, channel name)
    channels: dict[tuple[int, str, str], tuple[str, str]] = field(default_factory=dict)
    _folded: dict[tuple[int, str, str], tuple[str, str]] | None = None   # built on first use

    def channel(self, tid: int, kind: str, code: str) -> tuple[str, str]:
        """(unit, channel name) of a record's channel code; ("", "") when the dictionary does not list it.
        Seed 000 spells the same channel "VNakwork" in a record (§3.3) and "Vnakwork" in the dictionary
        (§3.4.2), so a code the dictionary lacks is matched without regard to case, if that is unambiguous."""
        hit = self.channels.get((tid, kind, code))
        if hit is not None:
            return hit
        if self._folded is None:
            folded: dict[tuple[int, str, str], set[tuple[str, str]]] = {}
            for (t, k, c), v in self.channels.items():
                folded.setdefault((t, k, c.casefold()), set()).add(v)
            self._folded = {key: next(iter(vs)) for key, vs in folded.items() if len(vs) == 1}
        return self._folded.get((tid, kind, code.casefold()), ("", ""))


class RstechDriver:
    def __init__(self, ctx: CloudDriverContext) -> None:
        self.ctx = ctx
        m = ctx.meter
        self.opts: RstechOptions = m.options if isinstance(m.options, RstechOptions) else RstechOptions()
        self.session = RstechSession(m, self.opts.per_page)
        self.tz = zoneinfo.ZoneInfo(m.timezone)
        self.state_key = f"rstech.positions:{m.name}"
        self._dicts = _Dictionaries()
        self._positions: dict[str, dict[str, int]] | None = None   # cache when there is no store (one-shot)
        self._settings_at: dict[int, float] = {}
        self._devices: dict[str, dict[str, object]] = {}
        self._silent: set[int] = set()    # stations whose last read got no reply: read last next cycle

    # -- Driver protocol -------------------------------------------------------------------------------------

    async def poll(self, ts: int) -> PollResult:
        try:
            return await self._poll(ts)
        except CloudAuthError as exc:
            cloud.raise_alarm(self.ctx.state, "auth", str(exc))
            return PollResult((), (), False, str(exc))
        except CloudError as exc:
            return PollResult((), (), False, str(exc))
        except StoreError as exc:  # positions unreadable: reading blind would re-fetch data_polling_length
            return PollResult((), (), False, f"cannot read the stored archive positions: {exc}")

    async def probe(self) -> bool:
        try:
            await self.session.sign_in()
        except CloudAuthError as exc:
            cloud.raise_alarm(self.ctx.state, "auth", str(exc))
            return False
        except CloudError as exc:
            self.ctx.state.last_error = str(exc)
            return False
        cloud.clear_alarm(self.ctx.state, "auth")
        return True

    async def close(self) -> None:
        try:
            await self.session.close()
        except CloudError as exc:  # best effort: the token expires on its own in two weeks
            self.ctx.log.info("%s: sign-out failed: %s", self.ctx.meter.name, exc)

    # -- one cycle -------------------------------------------------------------------------------------------

    async def _load_positions(self) -> dict[str, dict[str, int]]:
        store = self.ctx.store
        if store is None:
            return {k: dict(v) for k, v in (self._positions or {}).items()}
        # read back each cycle: what is in the store is what was committed, whatever happened since
        doc = await store.get_state(self.state_key)
        return {str(k): dict(v) for k, v in doc.items()} if isinstance(doc, dict) else {}

    async def _poll(self, ts: int) -> PollResult:
        name = self.ctx.meter.name
        positions = await self._load_positions()
        raw = await self.session.pages("stations", {}, "stations")
        cloud.clear_alarm(self.ctx.state, "auth")
        stations = [parse_station(item, "stations") for item in raw]
        if self.opts.stations:
            stations = [s for s in stations if s.id in self.opts.stations]
        now = self.ctx.clock()
        types = {s.equipment_type_id for s in stations if s.equipment_type_id is not None}
        if now - self._dicts.at > DICTIONARY_TTL or not types <= set(self._dicts.types):
            await self._refresh_dictionaries(types, now)

        kinds = [k for k in self.ctx.meter.read if k in ARCHIVES or k == "nesht"]
        # A station that got no reply last cycle goes last (stable order otherwise): one station whose
        # archive query never finishes must not keep the stations after it from ever being read.
        stations.sort(key=lambda s: s.id in self._silent)
        readings: list[Reading] = []
        events: list[Event] = []
        errors: list[str] = []
        failed_in_a_row = 0
        aborted = ""
        skipped = 0
        for i, st in enumerate(stations):
            device = cloud.device_name(name, st.id)
            pos = positions.setdefault(str(st.id), {})
            self._devices[str(st.id)] = self._metadata(st)
            if st.last_session is not None and pos.get("seen") == st.last_session and \
                    all(k in pos for k in kinds):
                skipped += 1
                continue
            try:
                ok = await self._station(st, device, kinds, pos, now, readings, events, errors)
            except (CloudUnreachable, CloudAuthError) as exc:
                # No reply (or the sign-in refused): every further request would wait out the same timeout,
                # so the cycle ends here. What the stations before this one gave is complete and is kept,
                # with their positions; this station's finished archives too.
                if isinstance(exc, CloudAuthError):
                    cloud.raise_alarm(self.ctx.state, "auth", str(exc))
                else:
                    self._silent.add(st.id)
                errors.append(str(exc))
                if i + 1 < len(stations):
                    aborted = f"no reply, {len(stations) - i - 1} station(s) left for the next cycle; "
                break
            self._silent.discard(st.id)
            if ok:
                failed_in_a_row = 0
                if st.last_session is not None:
                    pos["seen"] = st.last_session
            else:
                failed_in_a_row += 1
                if failed_in_a_row >= ABORT_AFTER and i + 1 < len(stations):
                    aborted = f"{ABORT_AFTER} stations failed in a row, {len(stations) - i - 1} station(s) left " \
                              f"for the next cycle; "
                    break
        if skipped:
            self.ctx.log.debug("%s: %d station(s) skipped: no communication session since their last read", name,
                               skipped)
        known = {str(s.id) for s in stations}
        self._silent &= {s.id for s in stations}
        self._devices = {k: v for k, v in self._devices.items() if k in known}
        cloud.set_devices(self.ctx.state, self._devices)
        positions = {k: v for k, v in positions.items() if k in known}
        if self.ctx.store is None:
            self._positions = positions
        error = None
        if errors:
            error = aborted + f"{len(errors)} failed request(s): " + "; ".join(errors[:3]) + \
                (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
        return PollResult(tuple(readings), tuple(events), True, error, ((self.state_key, positions),))

    async def _station(self, st: Station, device: str, kinds: list[str], pos: dict[str, int], now: float,
                       readings: list[Reading], events: list[Event], errors: list[str]) -> bool:
        """One station's archives (and settings); False when any of them failed. Raises CloudUnreachable /
        CloudAuthError, which end the cycle."""
        ok = True
        for kind in kinds:
            try:
                recs = await self._archive(st, kind, pos.get(kind), now)
            except (CloudUnreachable, CloudAuthError):
                raise
            except CloudError as exc:
                errors.append(str(exc))  # names the station, archive and page
                ok = False
                continue
            last = pos.get(kind)
            # Everything in the window goes to the store, the overlap too: a record the server got late
            # (a station that called in after a gap) has an older time than the saved position, and the
            # natural key drops what is already stored.
            if kind == "nesht":
                events.extend(self._events(device, st, recs))
            else:
                readings.extend(self._readings(device, st, kind, recs))
            newest = max((r.event_time for r in recs), default=None)
            if newest is not None and (last is None or newest > last):
                pos[kind] = newest
            elif last is None:
                # nothing in the window yet: remember where we looked so the next cycle starts there
                pos[kind] = int(now - self.ctx.meter.data_polling_length)
        if "settings" in self.ctx.meter.read and now - self._settings_at.get(st.id, -math.inf) > SETTINGS_TTL:
            try:
                await self._settings(st)
                self._settings_at[st.id] = now
            except (CloudUnreachable, CloudAuthError):
                raise
            except CloudError as exc:
                errors.append(str(exc))
                ok = False
        return ok

    def _metadata(self, st: Station) -> dict[str, object]:
        d: dict[str, object] = {"name": st.name, "model": st.brand, "equipment_id": st.equipment_id,
                                "equipment_type_id": st.equipment_type_id, "last_session": st.last_session}
        t = self._dicts.types.get(st.equipment_type_id or -1)
        if t:
            d["equipment_type"] = t.get("name")
            d["resource"] = t.get("resource_name")
        c = self._dicts.customers.get(st.customer_id or -1)
        if c:
            d["customer"] = c.get("name")
            d["customer_inn"] = c.get("inn")
        old = self._devices.get(str(st.id), {})
        if "settings" in old:
            d["settings"] = old["settings"]
        return d

    async def _refresh_dictionaries(self, types: Iterable[int], now: float) -> None:
        d = _Dictionaries(at=now)
        for item in await self.session.pages("customers", {}, "customers"):
            if isinstance(item, dict) and "id" in item:
                d.customers[as_int(item["id"], "customers: id")] = item
        for item in await self.session.pages("equipment_types", {}, "equipment types"):
            if isinstance(item, dict) and "id" in item:
                d.types[as_int(item["id"], "equipment types: id")] = item
        for tid in sorted(set(types) | set(d.types)):
            what = f"channels of equipment type {tid}"
            for item in await self.session.pages("channel_archive_types", {"equipment_type_id": tid}, what):
                if not isinstance(item, dict) or "channel_varname" not in item:
                    raise CloudError(f"{what}: an entry without 'channel_varname': {str(item)[:80]}")
                key = (tid, as_text(item.get("archive_type_varname")), as_text(item["channel_varname"]))
                d.channels[key] = (normalise_unit(item.get("unit_name")), as_text(item.get("channel_name")))
            d.types.setdefault(tid, {})
        self._dicts = d

    def _window(self, last: int | None, now: float) -> tuple[str, str]:
        m = self.ctx.meter
        start = now - m.data_polling_length if last is None else max(last - self.opts.archive_overlap,
                                                                     now - m.data_polling_length)
        def day(t: float) -> _dt.date:
            return _dt.datetime.fromtimestamp(t, self.tz).date()

        # fp_end is a date: tomorrow covers today whether the server reads it as inclusive or exclusive
        return day(start).isoformat(), (day(now) + _dt.timedelta(days=1)).isoformat()

    async def _archive(self, st: Station, kind: str, last: int | None, now: float) -> list[Record]:
        fp_start, fp_end = self._window(last, now)
        what = f"station {st.id} {kind}"
        items = await self.session.pages("channel_data", {
            "archive_type": kind, "station_id": st.id, "equipment_id": st.equipment_id,
            "fp_start": fp_start, "fp_end": fp_end}, what, parse_record)
        # A repeating server is caught by the page numbers (pages()). Here: the same record twice (pages
        # overlapping while the server inserts) is kept once; two different records at one time (two nesht
        # events in one second) are both kept. Failing on either stopped that archive for good.
        out: list[Record] = []
        seen: set[tuple[int, tuple[tuple[str, float | None], ...]]] = set()
        for r in items:
            if (r.event_time, r.values) not in seen:
                seen.add((r.event_time, r.values))
                out.append(r)
        return out

    def _readings(self, device: str, st: Station, kind: str, recs: Iterable[Record]) -> list[Reading]:
        tid = st.equipment_type_id if st.equipment_type_id is not None else -1
        out = []
        for r in recs:
            for code, v in r.values:
                if v is None:
                    continue
                unit = self._dicts.channel(tid, kind, code)[0]
                out.append(Reading(device, code, kind, r.event_time, v, unit))
        return out

    def _events(self, device: str, st: Station, recs: Iterable[Record]) -> list[Event]:
        tid = st.equipment_type_id if st.equipment_type_id is not None else -1
        out = []
        for r in recs:
            for code, v in r.values:
                unit, title = self._dicts.channel(tid, "nesht", code)
                text = f"{title or code}: {'' if v is None else f'{v:g}'}{(' ' + unit) if unit else ''}".strip()
                out.append(Event(device, f"nesht.{code}", r.event_time, None, text))
        return out

    async def _settings(self, st: Station) -> None:
        what = f"station {st.id} settings"
        items = await self.session.pages("channel_data", {"archive_type": "settings", "station_id": st.id,
                                                          "equipment_id": st.equipment_id}, what)
        settings: dict[str, object] = {}
        for item in items:
            if not isinstance(item, dict) or "channel_name" not in item:
                raise CloudError(f"{what}: an entry without 'channel_name': {str(item)[:80]}")
            unit = normalise_unit(item.get("unit_name"))
            value = item.get("channel_data_value")
            settings[as_text(item["channel_name"])] = f"{as_text(value)} {unit}".strip() if unit else value
        self._devices.setdefault(str(st.id), {})["settings"] = settings
