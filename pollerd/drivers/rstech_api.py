"""RS-Tech Web API documents, sans-I/O: pages of a listing, stations, archive records and units, parsed from
the decoded JSON with a CloudError that names what was wrong. The session and the driver are in
:mod:`pollerd.drivers.rstech`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import CloudError


@dataclass(frozen=True, slots=True)
class Page:
    items: tuple[Any, ...]
    next_page: int | None
    total_pages: int | None


@dataclass(frozen=True, slots=True)
class Station:
    id: int
    equipment_id: int
    equipment_type_id: int | None
    name: str
    brand: str
    customer_id: int | None
    last_session: int | None


@dataclass(frozen=True, slots=True)
class Record:
    event_time: int
    values: tuple[tuple[str, float | None], ...]


def as_int(v: object, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, str) and v.strip().isdigit():  # ids sometimes come as strings
            return int(v)
        raise CloudError(f"{what}: expected an integer, got {v!r:.60}")
    return v


def _opt_int(v: object, what: str) -> int | None:
    return None if v is None else as_int(v, what)


def as_text(v: object) -> str:
    return "" if v is None else str(v)


def parse_page(doc: object, what: str, page: int) -> Page:
    """One page of a listing: ``{"data": [...], "total_pages", "current_page", "next_page"}``. A page that
    does not move forward (current_page not the one asked for, next_page not after it) is an error, so a
    server repeating itself cannot keep pollerd looping."""
    if not isinstance(doc, dict):
        raise CloudError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    if "data" not in doc:
        raise CloudError(f"{what}: no 'data' in the reply (keys: {', '.join(sorted(map(str, doc)))[:80]})")
    data = doc["data"]
    if not isinstance(data, list):
        raise CloudError(f"{what}: 'data' is {type(data).__name__}, expected a list")
    nxt = _opt_int(doc.get("next_page"), f"{what}: next_page")
    total = _opt_int(doc.get("total_pages"), f"{what}: total_pages")
    current = _opt_int(doc.get("current_page"), f"{what}: current_page")
    if current is not None and current != page:
        raise CloudError(f"{what}: asked for page {page}, the server sent page {current} (a page that repeats)")
    if nxt is not None and nxt <= page:
        raise CloudError(f"{what}: page {page} says the next page is {nxt} (a page that repeats)")
    if nxt is None and total is not None and page < total and doc.get("next_page", 0) is not None:
        # next_page absent (not null) but more pages announced: follow total_pages
        nxt = page + 1
    return Page(tuple(data), nxt, total)


def parse_station(item: object, what: str) -> Station:
    if not isinstance(item, dict):
        raise CloudError(f"{what}: a station is {type(item).__name__}, expected an object")
    for key in ("id", "equipment_id"):
        if key not in item:
            raise CloudError(f"{what}: a station without '{key}': {str(item)[:80]}")
    return Station(as_int(item["id"], f"{what}: station id"), as_int(item["equipment_id"], f"{what}: equipment_id"),
                   _opt_int(item.get("equipment_type_id"), f"{what}: equipment_type_id"), as_text(item.get("name")),
                   as_text(item.get("equipment_brand_name")), _opt_int(item.get("customer_id"), f"{what}: customer_id"),
                   _opt_int(item.get("seances_event_time"), f"{what}: seances_event_time"))


def parse_record(item: object, what: str) -> Record:
    """``{"event_time": 1612292400, "channel_data": [{"T": 25.19}, {"P": 0.99}]}``; a null value is kept as
    None (no reading), anything but a number is an error (a server sending "twenty" for T is broken)."""
    if not isinstance(item, dict):
        raise CloudError(f"{what}: a record is {type(item).__name__}, expected an object")
    if "event_time" not in item:
        raise CloudError(f"{what}: a record without 'event_time': {str(item)[:80]}")
    t = as_int(item["event_time"], f"{what}: event_time")
    cd = item.get("channel_data")
    if not isinstance(cd, list):
        raise CloudError(f"{what}: record at {t}: 'channel_data' is {type(cd).__name__}, expected a list")
    values: list[tuple[str, float | None]] = []
    for entry in cd:
        if not isinstance(entry, dict):
            raise CloudError(f"{what}: record at {t}: channel entry {entry!r:.60} is not an object")
        for code, v in entry.items():
            if v is None:
                values.append((str(code), None))
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                raise CloudError(f"{what}: record at {t}: channel {code!r} is {v!r:.40}, expected a number")
            elif not math.isfinite(v):
                raise CloudError(f"{what}: record at {t}: channel {code!r} is {v}")
            else:
                values.append((str(code), float(v)))
    return Record(t, tuple(values))


_UNIT_TAG = re.compile(r"</?su[pb]>", re.I)
_UNITS = {"м3": "m³", "м^3": "m³", "m3": "m³", "м³": "m³", "м3/ч": "m³/h", "м³/ч": "m³/h", "°с": "°C", "°c": "°C",
          "градс": "°C", "кпа": "kPa", "мпа": "MPa", "па": "Pa", "бар": "bar", "кгс/см2": "kgf/cm²",
          "кгс/см²": "kgf/cm²", "гкал": "Gcal", "гкал/ч": "Gcal/h", "квт*ч": "kWh", "квт·ч": "kWh", "квтч": "kWh",
          "квт": "kW", "вт": "W", "ч": "h", "мин": "min", "т": "t", "т/ч": "t/h", "%": "%"}


def normalise_unit(name: object) -> str:
    """The dictionary's unit (Russian, with HTML markup) as pollerd writes units."""
    if name is None:
        return ""
    text = _UNIT_TAG.sub("", str(name)).strip()
    return _UNITS.get(text.lower().replace(" ", ""), text)
