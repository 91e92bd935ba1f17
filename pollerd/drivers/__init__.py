"""Meter drivers: per meter family, which requests to send and how replies become readings.

The registry is explicit: a protocol name maps to what it can ``read`` and to its driver factory.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable, Mapping
from typing import Any

# Re-exported: the option parsers and the config loader import it from here.
from ..errors import OptionError as OptionError


class Protocol(str, enum.Enum):
    MERCURY230 = "mercury230"
    MODBUS = "modbus"
    MBUS = "mbus"
    IEC62056 = "iec62056"
    RSTECH = "rstech"
    WEBMETERS = "webmeters"
    SAURES = "saures"

    def __str__(self) -> str:
        return self.value


# What a meter's `read = [...]` may contain, per protocol, and what it defaults to.
READ_KINDS: dict[Protocol, tuple[str, ...]] = {
    Protocol.MERCURY230: ("energy", "instant", "profile", "daily", "monthly", "yearly", "fixed", "events",
                          "clock"),
    Protocol.MODBUS: ("registers",),
    # current: records of storage number 0; archive: historic storage numbers, at the meter's stored dates
    Protocol.MBUS: ("current", "archive"),
    # energy: A+/A-/R+/R- and tariffs; instant: P, Q, S, PF, U, I, F, angles, T.meter; other: every address
    # pollerd has no channel name for (kept under its address) and billing-period values (*12, &12)
    Protocol.IEC62056: ("energy", "instant", "other"),
    # seed 000 archive types (readings with those archive names), nesht (events), settings (device metadata)
    Protocol.RSTECH: ("hourly", "daily", "monthly", "yearly", "nesht", "settings"),
    # values: every device's current values; ellis: exportEllisFile saved into the state directory
    Protocol.WEBMETERS: ("values", "ellis"),
    # meters: the flats' meters; controllers: battery, RSSI and last connection of each controller
    Protocol.SAURES: ("meters", "controllers"),
}
DEFAULT_READ: dict[Protocol, tuple[str, ...]] = {
    Protocol.MERCURY230: ("energy", "instant"),
    Protocol.MODBUS: ("registers",),
    Protocol.MBUS: ("current", "archive"),
    Protocol.IEC62056: ("energy", "instant", "other"),
    Protocol.RSTECH: ("hourly", "daily", "monthly", "nesht", "settings"),
    Protocol.WEBMETERS: ("values",),
    Protocol.SAURES: ("meters", "controllers"),
}


# Cloud sources: protocols that reach a vendor server at the meter's `url` instead of a meter on a line. They
# take no line, ip_address, port or bus address; the value lists the credential keys each requires ("password"
# and "api_key" may also come as *_file / *_credential). Their drivers get DriverContext.line = None and name
# their readings "{entry}:{device id}", one account yielding many devices.
CLOUD_KEYS: dict[str, tuple[str, ...]] = {
    "rstech": ("email", "password"),
    Protocol.WEBMETERS: ("api_key",),
    Protocol.SAURES: ("email", "password"),
}
# A cloud entry's default waiting_time (one HTTP request, e.g. a page of 1000 archive records), unless given.
CLOUD_WAITING_TIME = 30.0

# Protocols whose `connection_address` is not a plain integer (IEC device address strings, M-Bus secondary
# addresses) name a parser "module:function" taking the raw TOML value and returning int | str, raising
# OptionError. Protocols absent here take an integer, range-checked by the config loader.
ADDRESS_PARSERS: dict[Protocol, str] = {
    Protocol.MBUS: "pollerd.drivers.mbus:parse_address",
    Protocol.IEC62056: "pollerd.drivers.iec62056:parse_address",
}

# Protocol-specific meter keys: protocol -> (key names, "module:function"). The function takes
# (the meter's raw values of those keys, the config file's directory) and returns a frozen options object
# that lands in MeterConfig.options; it raises OptionError. Imported lazily, so driver modules may import
# the config module without a cycle.
OPTION_PARSERS: dict[Protocol, tuple[frozenset[str], str]] = {
    Protocol.MERCURY230: (frozenset({"clock_correction", "max_clock_correction", "use_meter_ratios",
                                     "journal_interval", "profile_records_per_cycle"}),
                          "pollerd.drivers.mercury230_options:parse_options"),
    Protocol.MODBUS: (frozenset({"modbus_mode", "template", "registers", "word_order", "byte_order", "max_gap"}),
                      "pollerd.drivers.modbus_options:parse_options"),
    Protocol.IEC62056: (frozenset({"iec_profile", "iec_mode", "iec_baud_switch", "iec_addresses",
                                   "iec_parity_bit", "iec_baud"}), "pollerd.drivers.iec62056:parse_options"),
    Protocol.RSTECH: (frozenset({"verify_tls", "ca_file", "per_page", "archive_overlap", "stations"}),
                      "pollerd.drivers.rstech:parse_options"),
    Protocol.WEBMETERS: (frozenset({"verify_tls", "ca_file"}), "pollerd.drivers.cloud:parse_options"),
    Protocol.SAURES: (frozenset({"verify_tls", "ca_file", "volume_unit", "energy_unit"}),
                      "pollerd.drivers.saures:parse_options"),
}


def resolve(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def option_keys(protocol: object) -> frozenset[str]:
    try:
        return OPTION_PARSERS[Protocol(protocol)][0]
    except (ValueError, KeyError):
        return frozenset()


def parse_options(protocol: str, raw: Mapping[str, object], base_dir: str) -> object | None:
    entry = OPTION_PARSERS.get(Protocol(protocol))
    return resolve(entry[1])(raw, base_dir) if entry else None
