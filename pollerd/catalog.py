"""The protocol catalog: one :class:`ProtocolSpec` per :class:`Protocol`, in one dict.

Everything the rest of pollerd needs to know about a protocol is here: what a meter's ``read`` may hold and
its default, how ``connection_address`` and the protocol's own keys parse, the password length it fixes, the
driver, the simulator and decode tools, and whether it is a cloud source. Adding a protocol is its own modules
plus one entry in :data:`CATALOG` (and its name in the ``Protocol`` enum); see docs/developing.md.

Layering: this module sits above drivers, sim and decode and is imported by the config loader, the daemon and
the commands. It refers to those modules by :class:`Ref` ("module", "name") and imports them only when a
spec's part is used: a gateway loads only the drivers its config names (the cloud drivers alone pull in
XML-RPC and a few MB of modules a field-bus gateway never needs), and loading a config must not import every
simulator and decoder.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from pollerd.drivers.base import Driver, DriverContext

__all__ = ["CATALOG", "CLOUD_WAITING_TIME", "Catalog", "Protocol", "ProtocolSpec", "Ref", "Tool", "spec_of"]


class Protocol(str, enum.Enum):
    """Protocol names as a config writes them; CATALOG below holds one spec per member."""

    MERCURY230 = "mercury230"
    MODBUS = "modbus"
    MBUS = "mbus"
    IEC62056 = "iec62056"
    RSTECH = "rstech"
    WEBMETERS = "webmeters"
    SAURES = "saures"
    DLMS = "dlms"

    def __str__(self) -> str:
        return self.value

# A cloud entry's default waiting_time (one HTTP request, e.g. a page of 1000 archive records), unless given.
CLOUD_WAITING_TIME = 30.0


@dataclass(frozen=True, slots=True)
class Ref:
    """A module attribute imported on first use (see the module docstring for why not at import)."""

    module: str
    name: str

    def load(self) -> Any:
        return getattr(importlib.import_module(self.module), self.name)


@dataclass(frozen=True, slots=True)
class Tool:
    """A command module behind `pollerd sim PROTOCOL` / `pollerd decode PROTOCOL`.

    A simulator module provides ``configure_parser(p)`` and ``async main(args) -> int``; a decode module
    ``configure_parser(p)`` and ``run(args) -> int``."""

    module: str
    help: str = ""


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    protocol: Protocol
    read_kinds: tuple[str, ...]            # what a meter's `read = [...]` may contain
    default_read: tuple[str, ...]          # what it reads when `read` is not given
    driver: Ref                            # a Callable[[DriverContext], Driver]
    # Protocol-specific meter keys and their parser (raw values of those keys, config directory) -> a frozen
    # options object for MeterConfig.options; raises OptionError with the key path below the meter table.
    option_keys: frozenset[str] = frozenset()
    options: Ref | None = None
    # A parser for a `connection_address` that is not a plain integer (IEC device strings, M-Bus secondary
    # addresses): raw TOML value -> int | str, raising OptionError. None: an integer in address_range.
    address: Ref | None = None
    address_range: tuple[int, int] = (0, 0xFFFFFFFF)
    password_bytes: int | None = None      # the length a protocol fixes (Mercury: 6 bytes)
    # Cloud sources reach a vendor server at the meter's `url`, not a meter on a line: they take no line,
    # ip_address, port or bus address; these are the credential keys each requires ("password" and "api_key"
    # may also come as *_file / *_credential). None: a bus protocol.
    cloud_keys: tuple[str, ...] | None = None
    waiting_time: float | None = None      # default waiting_time, where not the common one
    simulator: Tool | None = None
    decoder: Tool | None = None

    @property
    def is_cloud(self) -> bool:
        return self.cloud_keys is not None

    def make_driver(self, ctx: DriverContext) -> Driver:
        factory = cast("Callable[[DriverContext], Driver]", self.driver.load())
        return factory(ctx)

    def parse_options(self, raw: Mapping[str, object], base_dir: str) -> object | None:
        return None if self.options is None else self.options.load()(raw, base_dir)

    def parse_address(self, raw: object) -> int | str:
        assert self.address is not None, "only for protocols with an address parser"
        return cast("int | str", self.address.load()(raw))


Catalog = Mapping[str, ProtocolSpec]   # keyed by Protocol (a str enum); a test may add a plain str key

_TLS_KEYS = frozenset({"verify_tls", "ca_file"})

CATALOG: Catalog = {   # keys are Protocol members (str enum), typed as str for lookups by name
    Protocol.MERCURY230: ProtocolSpec(
        Protocol.MERCURY230,
        read_kinds=("energy", "instant", "profile", "daily", "monthly", "yearly", "fixed", "events", "clock"),
        default_read=("energy", "instant"),
        driver=Ref("pollerd.drivers.mercury230", "Mercury230Driver"),
        option_keys=frozenset({"clock_correction", "max_clock_correction", "use_meter_ratios",
                               "journal_interval", "profile_records_per_cycle"}),
        options=Ref("pollerd.drivers.mercury230_options", "parse_options"),
        address_range=(1, 254),            # 0 is broadcast, 255 reserved
        password_bytes=6,
        simulator=Tool("pollerd.sim.cli", "Mercury 230 meters on TCP or a pty"),
        decoder=Tool("pollerd.decode.mercury230"),
    ),
    Protocol.MODBUS: ProtocolSpec(
        Protocol.MODBUS,
        read_kinds=("registers",),
        default_read=("registers",),
        driver=Ref("pollerd.drivers.modbus", "ModbusDriver"),
        option_keys=frozenset({"modbus_mode", "template", "registers", "word_order", "byte_order", "max_gap"}),
        options=Ref("pollerd.drivers.modbus_options", "parse_options"),
        address_range=(1, 255),
        decoder=Tool("pollerd.decode.modbus"),
    ),
    Protocol.MBUS: ProtocolSpec(
        Protocol.MBUS,
        # current: records of storage number 0; archive: historic storage numbers, at the meter's stored dates
        read_kinds=("current", "archive"),
        default_read=("current", "archive"),
        driver=Ref("pollerd.drivers.mbus", "MbusDriver"),
        address=Ref("pollerd.drivers.mbus", "parse_address"),
        simulator=Tool("pollerd.sim.mbus", "wired M-Bus heat and water meters on TCP or a pty"),
        decoder=Tool("pollerd.decode.mbus"),
    ),
    Protocol.IEC62056: ProtocolSpec(
        Protocol.IEC62056,
        # energy: A+/A-/R+/R- and tariffs; instant: P, Q, S, PF, U, I, F, angles, T.meter; other: every address
        # pollerd has no channel name for (kept under its address) and billing-period values (*12, &12)
        read_kinds=("energy", "instant", "other"),
        default_read=("energy", "instant", "other"),
        driver=Ref("pollerd.drivers.iec62056", "Iec62056Driver"),
        option_keys=frozenset({"iec_profile", "iec_mode", "iec_baud_switch", "iec_addresses", "iec_parity_bit",
                               "iec_baud"}),
        options=Ref("pollerd.drivers.iec62056", "parse_options"),
        address=Ref("pollerd.drivers.iec62056", "parse_address"),
        simulator=Tool("pollerd.sim.iec62056",
                       "IEC 62056-21 mode C meters (generic, Neva, Energomera) on TCP or a pty"),
        decoder=Tool("pollerd.decode.iec62056"),
    ),
    Protocol.RSTECH: ProtocolSpec(
        Protocol.RSTECH,
        # seed 000 archive types (readings with those archive names), nesht (events), settings (device metadata)
        read_kinds=("hourly", "daily", "monthly", "yearly", "nesht", "settings"),
        default_read=("hourly", "daily", "monthly", "nesht", "settings"),
        driver=Ref("pollerd.drivers.rstech", "RstechDriver"),
        option_keys=_TLS_KEYS | {"per_page", "archive_overlap", "stations"},
        options=Ref("pollerd.drivers.rstech", "parse_options"),
        cloud_keys=("email", "password"),
        waiting_time=CLOUD_WAITING_TIME,
    ),
    Protocol.WEBMETERS: ProtocolSpec(
        Protocol.WEBMETERS,
        # values: every device's current values; ellis: exportEllisFile saved into the state directory
        read_kinds=("values", "ellis"),
        default_read=("values",),
        driver=Ref("pollerd.drivers.webmeters", "WebmetersDriver"),
        option_keys=_TLS_KEYS,
        options=Ref("pollerd.drivers.cloud", "parse_options"),
        cloud_keys=("api_key",),
        waiting_time=CLOUD_WAITING_TIME,
    ),
    Protocol.SAURES: ProtocolSpec(
        Protocol.SAURES,
        # meters: the flats' meters; controllers: battery, RSSI and last connection of each controller
        read_kinds=("meters", "controllers"),
        default_read=("meters", "controllers"),
        driver=Ref("pollerd.drivers.saures", "SauresDriver"),
        option_keys=_TLS_KEYS | {"volume_unit", "energy_unit"},
        options=Ref("pollerd.drivers.saures", "parse_options"),
        cloud_keys=("email", "password"),
        waiting_time=CLOUD_WAITING_TIME,
    ),
    Protocol.DLMS: ProtocolSpec(
        Protocol.DLMS,
        # DLMS/COSEM with the СПОДЭС profile (ГОСТ Р 58940-2020), over HDLC or the IEC 62056-47 TCP wrapper;
        # profile: load profile(s); daily/monthly: billing profiles; events: the СПОДЭС journals
        read_kinds=("energy", "instant", "profile", "daily", "monthly", "events", "clock"),
        default_read=("energy", "instant"),
        driver=Ref("pollerd.drivers.dlms", "DlmsDriver"),
        option_keys=frozenset({"dlms_framing", "server_logical", "server_address_size", "client_sap",
                               "authentication", "max_info_length", "max_pdu", "clock_set", "keep_association",
                               "load_profiles", "journals",
                               # refused with a clear message: HLS and ciphering are not implemented
                               "security", "security_suite", "block_cipher_key", "authentication_key",
                               "system_title"}),
        options=Ref("pollerd.drivers.dlms_options", "parse_options"),
        address=Ref("pollerd.drivers.dlms_options", "parse_address"),
        simulator=Tool("pollerd.sim.dlms", "СПОДЭС DLMS/COSEM meters over HDLC (TCP or a pty) or the TCP wrapper"),
        decoder=Tool("pollerd.decode.dlms"),
    ),
}


def spec_of(protocol: str, catalog: Catalog = CATALOG) -> ProtocolSpec:
    """The spec of a protocol named in a (validated) config; KeyError for an unknown name."""
    return catalog[protocol]
