"""The configuration model: the frozen dataclasses a loaded TOML file becomes.

The bottom layer: imports nothing of pollerd but errors and units, so every layer above may use these types.
Durations are float seconds. Secrets are :class:`Secret`, whose repr never shows the value.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

__all__ = ["ApiConfig", "ApiToken", "Config", "GatewayConfig", "LineConfig", "MeterConfig", "Secret",
           "SinkConfig", "StoreConfig"]


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value (meter password, token). Never printed: repr/str give ``'***'``."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    name: str                      # appears in upstream payloads; default: the host name
    spread: float = 300.0          # window (s) over which calendar (daily/weekly/monthly) cycles are spread


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: str | None = None        # default: <state_dir>/pollerd.db
    keep: float = 7 * 86400.0      # local retention of rows every sink has confirmed
    # group commit: at most this long between a write and its commit. 2 s, not 1: each commit rewrites ~5 pages of
    # its own (the b-trees' right edges, the pointer map, page 1, sqlite_sequence), and halving their number took
    # the SD-card bytes per reading of the 1000-meter bench from ~153 to ~140 (issue 18, docs/performance.md).
    commit_interval: float = 2.0
    max_size: int | None = None    # bytes of used database pages; oldest readings evicted beyond it (quota.py)
    max_age: float | None = None   # seconds; readings with an older ts are evicted, delivered or not


@dataclass(frozen=True, slots=True)
class ApiToken:
    token: Secret
    role: str                       # "read" | "admin"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    listen: str = "127.0.0.1:8780"
    host: str = "127.0.0.1"
    port: int = 8780
    enabled: bool = True
    # Bearer tokens. Once there is one, the data endpoints need a token (read or admin) and the write
    # endpoints (raw frames, poll now) one of role admin.
    tokens: tuple[ApiToken, ...] = ()
    open_monitoring: bool = True        # /health and /metrics answer without a token even when tokens exist


@dataclass(frozen=True, slots=True)
class LineConfig:
    name: str
    type: str                       # "serial" | "tcp"
    # serial
    device: str | None = None
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"               # N E O M S
    stopbits: float = 1
    # tcp
    host: str | None = None
    port: int | None = None
    connect_timeout: float = 5.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    trace: bool = False             # log every frame on this line at INFO (pollerd.wire)
    implicit: bool = False          # made from a meter's ip_address/port
    line_no: int | None = None      # where it was defined in the file, for messages


# The empty day filter every meter without one shares (an empty frozenset is 216 bytes, not a singleton, and
# the loader made two per meter: 4 MB at 10 000 meters).
_NO_DAYS: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class MeterConfig:
    name: str
    protocol: str                   # "mercury230"
    line: str                       # name of a LineConfig (implicit lines are named "tcp:HOST:PORT")
    connection_address: int | str   # an int for most protocols; see catalog.ProtocolSpec.address
    number_meter: str | None = None
    password: Secret | None = None
    password_encoding: str = "digits"   # digits | ascii | hex
    access_level: int = 1
    waiting_time: float = 1.0
    pause_time: float = 0.005
    package_size: int = 16
    retries: int = 2
    period_type: str = "interval"   # interval | daily | weekly | monthly
    interval_time: float = 900.0
    at: _dt.time = _dt.time(0, 0)
    days_of_week: frozenset[int] = _NO_DAYS      # 1=Mon..7=Sun; empty = every day
    days_of_month: frozenset[int] = _NO_DAYS     # 1..31; empty = every day
    last_day_of_month: bool = False              # days_of_month contained "last"
    data_polling_length: float = 31 * 86400.0
    time_difference: float = 60.0
    timezone: str = "UTC"
    tn1: float | None = None
    tn2: float | None = None
    tt: float | None = None
    read: tuple[str, ...] = ("energy", "instant")
    enabled: bool = True
    options: object | None = None   # protocol-specific keys, parsed by catalog.ProtocolSpec.options
    line_no: int | None = None
    # cloud sources (catalog.ProtocolSpec.cloud_keys): no line and no bus address; the account's endpoint and credentials
    url: str | None = None
    email: str | None = None
    api_key: Secret | None = None

    # Set by the loader from the protocol catalog: the model cannot ask the catalog (it sits below it).
    cloud: bool = False

    def __post_init__(self) -> None:
        for name in ("days_of_week", "days_of_month"):
            days = getattr(self, name)
            if not days and days is not _NO_DAYS:
                object.__setattr__(self, name, _NO_DAYS)

    @property
    def is_cloud(self) -> bool:
        return self.cloud


@dataclass(frozen=True, slots=True)
class SinkConfig:
    name: str
    type: str                        # "http"
    url: str
    token: Secret | None = None      # bearer
    username: str | None = None      # basic
    password: Secret | None = None
    headers: tuple[tuple[str, str], ...] = ()
    verify_tls: bool = True
    ca_file: str | None = None
    timeout: float = 30.0
    # 1000, not 500: a 1000-meter gateway commits ~800-1600 readings a group commit; a batch that takes them in one
    # request saves a POST and a cursor commit (one 4 KiB page on the SD card) per group commit.
    batch_size: int = 1000
    retry_min: float = 1.0
    retry_max: float = 300.0
    line_no: int | None = None
    options: object | None = None    # type-specific keys, parsed by push.registry.SinkSpec.options
    linger: float = 0.5              # wait this long for a partial batch to fill (push/forwarder.py)
    client_cert: str | None = None   # TLS client certificate (mTLS), PEM; may hold the key too
    client_key: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    gateway: GatewayConfig
    store: StoreConfig
    api: ApiConfig
    lines: tuple[LineConfig, ...]
    meters: tuple[MeterConfig, ...]
    sinks: tuple[SinkConfig, ...]

    def meter(self, name: str) -> MeterConfig:
        for m in self.meters:
            if m.name == name:
                return m
        raise KeyError(name)

    def line(self, name: str) -> LineConfig:
        for ln in self.lines:
            if ln.name == name:
                return ln
        raise KeyError(name)
