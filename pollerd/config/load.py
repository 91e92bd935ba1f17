"""The config loader: one TOML file -> a validated :class:`~pollerd.config.model.Config`.

Section tables map each key to its converter (:mod:`pollerd.config.fields`); protocol-specific rules come from
the protocol catalog and sink rules from the sink registry, both passed in. :func:`known_keys` reports the
same tables, for the docs-truth test.
"""

from __future__ import annotations

import os as _os
import re as _re
import socket as _socket
from collections.abc import Mapping as _Mapping
from typing import Any as _Any

from pollerd.catalog import CATALOG, Catalog
from pollerd.compat import tomllib as _tomllib
from pollerd.config.checks import _check_client_cert, _check_password, _check_schedule_runs
from pollerd.config.fields import (
    _address,
    _array_of_tables,
    _at,
    _bool,
    _choice,
    _Ctx,
    _days_of_month,
    _days_of_week,
    _did_you_mean,
    _digits,
    _duration,
    _existing_file,
    _first_of,
    _got,
    _headers,
    _host,
    _int,
    _int_in,
    _Invalid,
    _listen,
    _name,
    _one_of,
    _positive_number,
    _require,
    _secret,
    _secret_credential,
    _secret_file,
    _secret_value,
    _size,
    _Spec,
    _str,
    _string_list,
    _table,
    _timezone,
    _url,
    _url_of,
    _walk,
)
from pollerd.config.locate import KeyPath as _Path
from pollerd.config.locate import Locator as _Locator
from pollerd.config.model import (
    ApiConfig,
    ApiToken,
    Config,
    GatewayConfig,
    LineConfig,
    MeterConfig,
    Secret,
    SinkConfig,
    StoreConfig,
)
from pollerd.config.source import read_config_text, store_path_problem
from pollerd.errors import ConfigError, OptionError
from pollerd.push.plugins import load_entry_points
from pollerd.push.registry import SinkRegistry, builtin_sinks
from pollerd.text import address_text
from pollerd.units import NUMBER as _NUMBER
from pollerd.units import format_duration

__all__ = ["known_keys", "load_config"]

# --- sections --------------------------------------------------------------------------------------------------

_GATEWAY: _Spec = {"name": _name, "spread": _duration()}
_STORE: _Spec = {"path": _str, "keep": _duration(1.0), "commit_interval": _duration(0.0),
                 # Below 1 MiB the WAL and the schema alone would keep the quota permanently exceeded.
                 "max_size": _size(1024**2), "max_age": _duration(60.0)}
_API: _Spec = {"listen": _listen, "enabled": _bool, "open_monitoring": _bool, "tokens": lambda value, ctx: value}
_API_TOKEN: _Spec = {"token": _secret_value, "token_file": _secret_file, "token_credential": _secret_credential,
                     "role": _choice(("read", "admin"))}

_BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200)
_SERIAL_KEYS = ("device", "baudrate", "bytesize", "parity", "stopbits")
_TCP_KEYS = ("host", "port", "connect_timeout")
_LINE_TYPES = ("serial", "tcp")


def _stopbits(value: object, ctx: _Ctx) -> float:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _got("1, 1.5 or 2", value)
    if value not in (1, 1.5, 2):
        raise _Invalid(f"{value:g} is not one of 1, 1.5, 2")
    return float(value) if value == 1.5 else int(value)


_LINE: _Spec = {
    "name": _name, "type": _choice(_LINE_TYPES),
    "device": _str, "baudrate": _int_in(_BAUDRATES), "bytesize": _int(5, 8),
    "parity": _choice(("N", "E", "O", "M", "S"), fold=True), "stopbits": _stopbits,
    "host": _host, "port": _int(1, 65535), "connect_timeout": _duration(0.0, above=True),
    "reconnect_min": _duration(0.0, above=True), "reconnect_max": _duration(0.0, above=True),
    "trace": _bool,
}

_PASSWORD_KEYS = ("password", "password_file", "password_credential")
_TOKEN_KEYS = ("token", "token_file", "token_credential")
_API_KEY_KEYS = ("api_key", "api_key_file", "api_key_credential")
# Keys that place a meter on a bus; a cloud source (ProtocolSpec.cloud_keys) has none of them.
_BUS_KEYS = ("line", "ip_address", "port", "connection_address", "password_encoding", "access_level")

_METER: _Spec = {
    "name": _name, "protocol": _str, "line": _name, "ip_address": _host, "port": _int(1, 65535),
    "connection_address": _address,
    "number_meter": _digits,
    "password": _secret_value, "password_file": _secret_file, "password_credential": _secret_credential,
    "password_encoding": _choice(("digits", "ascii", "hex")),
    "access_level": _int_in((1, 2)),
    "waiting_time": _duration(0.0, above=True), "pause_time": _duration(),
    "package_size": _int(1, 255), "retries": _int(0, 10),
    "period_type": _choice(("interval", "daily", "weekly", "monthly")),
    "periodType": _choice(("interval", "daily", "weekly", "monthly")),
    "interval_time": _duration(1.0), "at": _at,
    "days_of_week": _days_of_week, "days_of_month": _days_of_month,
    "data_polling_length": _duration(), "time_difference": _duration(),
    "timezone": _timezone, "tn1": _positive_number, "tn2": _positive_number, "tt": _positive_number,
    "read": _string_list, "enabled": _bool,
    "url": _url, "email": _str,
    "api_key": _secret_value, "api_key_file": _secret_file, "api_key_credential": _secret_credential,
}

_SINK: _Spec = {
    "name": _name, "type": _str, "url": _url,
    "token": _secret_value, "token_file": _secret_file, "token_credential": _secret_credential,
    "username": _str,
    "password": _secret_value, "password_file": _secret_file, "password_credential": _secret_credential,
    "headers": _headers, "verify_tls": _bool, "ca_file": _existing_file,
    "timeout": _duration(0.0, above=True), "batch_size": _int(1, 10000),
    "retry_min": _duration(0.0, above=True), "retry_max": _duration(0.0, above=True),
    "linger": _duration(), "client_cert": _existing_file, "client_key": _existing_file,
}

_SECTIONS = ("gateway", "store", "api", "lines", "meters", "sinks")


def _load_gateway(ctx: _Ctx, doc: dict[str, _Any]) -> GatewayConfig:
    f = _walk(ctx, _table(ctx, doc, "gateway"), ("gateway",), _GATEWAY)
    name = f.get("name") or _socket.gethostname() or "pollerd"
    return GatewayConfig(name=name, spread=f.get("spread", 300.0))


def _load_store(ctx: _Ctx, doc: dict[str, _Any]) -> StoreConfig:
    f = _walk(ctx, _table(ctx, doc, "store"), ("store",), _STORE)
    path = f.get("path")
    if path is not None:
        path = _os.path.join(ctx.base_dir, _os.path.expanduser(path))
        problem = store_path_problem(path)
        if problem:  # caught by `check`, and by `run` before anything starts: 78, not a restart loop
            ctx.fail(("store", "path"), problem)
    kw = {k: f[k] for k in ("keep", "commit_interval", "max_size", "max_age") if k in f}
    return StoreConfig(path=path, **kw)


def _load_api(ctx: _Ctx, doc: dict[str, _Any]) -> ApiConfig:
    f = _walk(ctx, _table(ctx, doc, "api"), ("api",), _API)
    kw: dict[str, _Any] = {}
    if "listen" in f:
        kw["listen"], kw["host"], kw["port"] = f["listen"]
    for key in ("enabled", "open_monitoring"):
        if key in f:
            kw[key] = f[key]
    if "tokens" in f:
        raw = f["tokens"]
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            ctx.fail(("api", "tokens"), 'expected a list of tables like [{ token_file = "...", role = "admin" }]')
        tokens: list[ApiToken] = []
        for i, table in enumerate(raw):
            path = ("api", "tokens", i)
            t = _walk(ctx, table, path, _API_TOKEN)
            secret = _secret(ctx, path, t, _TOKEN_KEYS)
            if secret is None:
                ctx.fail(path, "missing token (one of token, token_file, token_credential)")
            if len(secret[1]) < 16:
                ctx.fail(path + (secret[0],), "an API token must be at least 16 characters")
            for j, other in enumerate(tokens):
                if other.token.reveal() == secret[1]:  # the message names the entries, never the value
                    ctx.fail(path + (secret[0],), f"the same token as api.tokens[{j}]; a token has one role")
            tokens.append(ApiToken(Secret(secret[1]), _require(ctx, path, t, "role", ' ("read" or "admin")')))
        kw["tokens"] = tuple(tokens)
    return ApiConfig(**kw)


def _load_line(ctx: _Ctx, table: dict[str, _Any], path: _Path) -> LineConfig:
    f = _walk(ctx, table, path, _LINE)
    _require(ctx, path, f, "name")
    kind = _require(ctx, path, f, "type", ' ("serial" or "tcp")')
    foreign = _TCP_KEYS if kind == "serial" else _SERIAL_KEYS
    for key in f:
        if key in foreign:
            ctx.fail(path + (key,), f"key {key!r} does not apply to a {kind} line")
    if kind == "serial":
        _require(ctx, path, f, "device", " for a serial line")
    else:
        _require(ctx, path, f, "host", " for a tcp line")
        _require(ctx, path, f, "port", " for a tcp line")
    if f.get("reconnect_min", 1.0) > f.get("reconnect_max", 60.0):
        ctx.fail(path + ("reconnect_min",), f"reconnect_min ({format_duration(f['reconnect_min'])}) is greater "
                 f"than reconnect_max ({format_duration(f.get('reconnect_max', 60.0))})")
    return LineConfig(line_no=ctx.locator.find(path), **f)


def _load_meter(ctx: _Ctx, table: dict[str, _Any], path: _Path,
                catalog: Catalog) -> tuple[dict[str, _Any], dict[str, _Any]]:
    """Field checks of one meter; cross-references (line names, addresses) come later."""
    # Protocol-specific keys (register maps, profiles...) and non-integer addresses are the driver's to
    # parse; the rest of the table goes through the common spec.
    proto_raw = table.get("protocol")
    pspec = catalog.get(proto_raw) if isinstance(proto_raw, str) else None
    extra_keys = pspec.option_keys if pspec else frozenset()
    addr_parser = pspec is not None and pspec.address is not None
    common = {k: v for k, v in table.items()
              if k not in extra_keys and not (addr_parser and k == "connection_address")}
    f = _walk(ctx, common, path, _METER, _METER.keys() | extra_keys)  # "did you mean" knows the protocol's keys
    name = _require(ctx, path, f, "name")
    protocol = _require(ctx, path, f, "protocol")
    if pspec is None:
        ctx.fail(path + ("protocol",), f"unknown protocol {protocol!r}{_did_you_mean(protocol, catalog)}; "
                 f"known: {_one_of(sorted(str(p) for p in catalog))}")
    cloud = pspec.cloud_keys is not None
    if pspec.cloud_keys is not None:
        for key in f:
            if key in _BUS_KEYS:
                ctx.fail(path + (key,), f"key {key!r} does not apply to {protocol}: a cloud source is reached "
                         "at its 'url', not on a line")
        for key in pspec.cloud_keys:
            given = _API_KEY_KEYS if key == "api_key" else _PASSWORD_KEYS if key == "password" else (key,)
            if not any(k in f for k in given):
                ctx.fail(path, f"missing required key {key!r} for {protocol}"
                         + (f" (or {', '.join(given[1:])})" if len(given) > 1 else ""))
        address: int | str = 0
    elif "url" in f or "email" in f or any(k in f for k in _API_KEY_KEYS):
        key = next(k for k in f if k in ("url", "email") + _API_KEY_KEYS)
        ctx.fail(path + (key,), f"key {key!r} applies to cloud sources "
                 f"({', '.join(sorted(str(p) for p, s in catalog.items() if s.is_cloud))}), "
                 f"not to {protocol}")
    elif addr_parser:
        if "connection_address" not in table:
            ctx.fail(path, "missing required key 'connection_address'")
        try:
            address = pspec.parse_address(table["connection_address"])
        except OptionError as exc:
            ctx.fail(path + ("connection_address",) + exc.key, exc.message)
    else:
        number: int = _require(ctx, path, f, "connection_address")
        address = number
        lo, hi = pspec.address_range
        if not lo <= number <= hi:
            ctx.fail(path + ("connection_address",), f"{address} is not in {lo}..{hi} for {protocol}")
    options = None
    if extra_keys:
        try:
            options = pspec.parse_options({k: v for k, v in table.items() if k in extra_keys}, ctx.base_dir)
        except OptionError as exc:
            ctx.fail(path + exc.key, exc.message)

    if cloud:
        pass
    elif "line" in f and ("ip_address" in f or "port" in f):
        other = "ip_address" if "ip_address" in f else "port"
        ctx.fail(path + (other,), "give either 'line' or 'ip_address' + 'port', not both")
    elif "line" not in f:
        if "ip_address" not in f and "port" not in f:
            ctx.fail(path, "missing 'line' (or 'ip_address' + 'port')")
        _require(ctx, path, f, "ip_address", " (with 'port')")
        _require(ctx, path, f, "port", " (with 'ip_address')")

    password = _secret(ctx, path, f, _PASSWORD_KEYS)
    if password is not None and not cloud:  # a cloud account's password is free text
        _check_password(ctx, path + (password[0],), password[1], f.get("password_encoding", "digits"),
                        pspec.password_bytes)
    api_key = _secret(ctx, path, f, _API_KEY_KEYS)

    period_key = _first_of(ctx, path, f, ("period_type", "periodType"))
    period = f[period_key] if period_key else "interval"
    dow = f.get("days_of_week", frozenset())
    dom, last = f.get("days_of_month", (frozenset(), False))
    if period == "weekly" and not dow:
        ctx.fail(path + (period_key or "period_type",), 'a weekly schedule needs days_of_week (e.g. days_of_week = ["mon"])')
    if period == "monthly" and not (dom or last):
        ctx.fail(path + (period_key or "period_type",), 'a monthly schedule needs days_of_month (e.g. days_of_month = [1])')
    if period == "interval" and "at" in f:
        ctx.fail(path + ("at",), "'at' applies to daily, weekly and monthly schedules, not interval")

    kinds = pspec.read_kinds
    read = f.get("read", pspec.default_read)
    for i, kind in enumerate(read):
        if kind not in kinds:
            ctx.fail(path + ("read", i), f"{protocol} cannot read {kind!r}{_did_you_mean(kind, kinds)}; "
                     f"it can read: {', '.join(kinds)}")
    if getattr(options, "clock_correction", False) and "clock" not in read:
        ctx.fail(path + ("clock_correction",), 'corrects the clock it reads: add "clock" to read')

    kw: dict[str, _Any] = {
        "name": name, "protocol": str(protocol), "line": f.get("line", ""), "connection_address": address,
        "password": Secret(password[1]) if password else None, "period_type": period,
        "days_of_week": dow, "days_of_month": dom, "last_day_of_month": last, "read": tuple(read),
        "options": options, "line_no": ctx.locator.find(path),
        "api_key": Secret(api_key[1]) if api_key else None, "cloud": cloud,
    }
    for key in ("number_meter", "password_encoding", "access_level", "waiting_time", "pause_time",
                "package_size", "retries", "interval_time", "at", "data_polling_length", "time_difference",
                "timezone", "tn1", "tn2", "tt", "enabled", "url", "email"):
        if key in f:
            kw[key] = f[key]
    if pspec.waiting_time is not None and "waiting_time" not in f:
        kw["waiting_time"] = pspec.waiting_time  # e.g. a server answering a page of archives, not a meter on a bus
    return kw, f


def _load_sink(ctx: _Ctx, table: dict[str, _Any], path: _Path, sinks: SinkRegistry) -> SinkConfig:
    kind0 = table.get("type")
    if isinstance(kind0, str) and kind0 not in sinks:
        # Not built in: look through the installed plugins once, then validate as usual.
        broken = load_entry_points(sinks)
        if kind0 in broken:
            ctx.fail(path + ("type",), broken[kind0])
    sspec = sinks.get(kind0) if isinstance(kind0, str) else None  # a list is not even hashable
    extra_keys = sspec.option_keys if sspec else frozenset()
    spec = {**_SINK, "type": _choice(sinks.types()), "url": _url_of(sspec.url_schemes if sspec else ("http", "https"))}
    # "Did you mean" offers the keys this type takes, its own (type-specific) keys included.
    known = sspec.accepted_keys if sspec else None
    f = _walk(ctx, {k: v for k, v in table.items() if k not in extra_keys}, path, spec, known)
    _require(ctx, path, f, "name")
    kind = _require(ctx, path, f, "type", f" ({', '.join(sinks.types())})")
    sspec = sinks[kind]
    allowed = sspec.keys
    for key in f:
        if key not in allowed and key not in ("name", "type"):
            ctx.fail(path + (key,), f"key {key!r} does not apply to a {kind} sink")
    url = _require(ctx, path, f, "url")
    for group in sspec.required:
        if not any(k in f for k in group):
            ctx.fail(path, f"missing required key {group[0]!r} for a {kind} sink"
                     + (f" (or {', '.join(group[1:])})" if len(group) > 1 else ""))
    auth = [k for k in f if k in _TOKEN_KEYS or k in _PASSWORD_KEYS or k == "username"]
    for key in auth:
        if (key in _TOKEN_KEYS) != (auth[0] in _TOKEN_KEYS):
            ctx.fail(path + (key,), "give either a bearer token (token, token_file, token_credential) or "
                     "basic auth (username + password), not both")
    pw_given = [k for k in f if k in _PASSWORD_KEYS]
    if pw_given and "username" not in f:
        ctx.fail(path + (pw_given[0],), "basic auth needs 'username' too")
    if "username" in f and not pw_given:
        ctx.fail(path + ("username",), "basic auth needs 'password' (or password_file, password_credential) too")
    token = _secret(ctx, path, f, _TOKEN_KEYS)
    password = _secret(ctx, path, f, _PASSWORD_KEYS)
    if f.get("retry_min", 1.0) > f.get("retry_max", 300.0):
        ctx.fail(path + ("retry_min",), f"retry_min ({format_duration(f['retry_min'])}) is greater than "
                 f"retry_max ({format_duration(f.get('retry_max', 300.0))})")
    kw: dict[str, _Any] = {
        "name": f["name"], "type": kind, "url": url,
        "token": Secret(token[1]) if token else None,
        "password": Secret(password[1]) if password else None,
        "line_no": ctx.locator.find(path),
    }
    for key in ("username", "headers", "verify_tls", "ca_file", "timeout", "batch_size", "retry_min",
                "retry_max", "linger", "client_cert", "client_key"):
        if key in f:
            kw[key] = f[key]
    _check_client_cert(ctx, path, f)
    if sspec.options is not None:
        try:
            kw["options"] = sspec.options({k: v for k, v in table.items() if k in extra_keys}, ctx.base_dir)
        except OptionError as exc:
            ctx.fail(path + exc.key, exc.message)
    return SinkConfig(**kw)


def _unique(ctx: _Ctx, section: str, names: list[tuple[int, str]]) -> None:
    seen: dict[str, int] = {}
    for i, name in names:
        if name in seen:
            ctx.errors.append(ctx.error((section, i, "name"), f"duplicate name {name!r} (also {section}[{seen[name]}])"))
        else:
            seen[name] = i


def _endpoint_name(host: str, port: int) -> str:
    return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"


def load_config(path: str | _os.PathLike[str], *, environ: _Mapping[str, str] | None = None,
                sinks: SinkRegistry | None = None, catalog: Catalog = CATALOG) -> Config:
    """Read and validate one TOML file. Raises :class:`ConfigError` naming file, line and key path.

    Relative file names inside the config (password_file, ca_file, store.path) are relative to the
    config file's directory, so a config works the same whatever the daemon's working directory is.
    ``sinks`` is the sink registry to validate against (default: a fresh one of the built-in types); plugin
    types a config names are added to it, so a caller that builds the clients later passes the same object.
    ``catalog`` is the protocol catalog (default :data:`pollerd.catalog.CATALOG`).
    """
    sinks = builtin_sinks() if sinks is None else sinks
    source = _os.fspath(path)
    env = _os.environ if environ is None else environ
    text = read_config_text(source)  # regular files only, size and nesting capped (config/source.py)
    try:
        doc = _tomllib.loads(text)
    except RecursionError:  # the nesting scan should have refused it first
        raise ConfigError("nested too deeply to parse", path=source) from None
    except _tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _re.search(r"\s*\(at line (\d+), column (\d+)\)", msg)
        if m:
            line = int(m.group(1))
            msg = msg[:m.start()] + f" (column {m.group(2)})" + msg[m.end():]
        else:
            line = text.count("\n") + 1
        raise ConfigError(f"syntax error: {msg}", path=source, line=line) from None

    ctx = _Ctx(source, _Locator(text), env, _os.path.dirname(_os.path.abspath(source)))
    cfg = _build(ctx, doc, sinks, catalog)
    if ctx.errors or cfg is None:
        raise ConfigError.several(ctx.errors)
    return cfg


def _indexed(ctx: _Ctx, tables: list[dict[str, _Any]] | None, load: _Any, section: str,
             *extra: _Any) -> tuple[list[tuple[int, _Any]], bool]:
    """Each table of an array loaded on its own, with its index (paths name the table as the file does);
    the flag says whether every table loaded."""
    out: list[tuple[int, _Any]] = []
    for i, table in enumerate(tables or ()):
        item = ctx.attempt(load, ctx, table, (section, i), *extra)
        if item is not None:
            out.append((i, item))
    return out, tables is not None and len(out) == len(tables)


def _build(ctx: _Ctx, doc: dict[str, _Any], sinks: SinkRegistry, catalog: Catalog) -> Config | None:
    """Every check of the file; each problem goes to ``ctx.errors`` and the next table is checked. A check
    across tables (a meter's line, duplicate names) runs over the tables that loaded, and is skipped where a
    table that failed could make it report a problem that is not there."""
    for key in doc:
        if key not in _SECTIONS:
            ctx.errors.append(ctx.error((), f"unknown section {key!r}{_did_you_mean(key, _SECTIONS)}",
                                        line_path=(key,)))

    gateway = ctx.attempt(_load_gateway, ctx, doc)
    store = ctx.attempt(_load_store, ctx, doc)
    api = ctx.attempt(_load_api, ctx, doc)
    lines, lines_ok = _indexed(ctx, ctx.attempt(_array_of_tables, ctx, doc, "lines"), _load_line, "lines")
    meters, meters_ok = _indexed(ctx, ctx.attempt(_array_of_tables, ctx, doc, "meters"), _load_meter, "meters",
                                 catalog)
    sink_list, _ = _indexed(ctx, ctx.attempt(_array_of_tables, ctx, doc, "sinks"), _load_sink, "sinks", sinks)

    ctx.attempt(_unique, ctx, "lines", [(i, ln.name) for i, ln in lines])
    ctx.attempt(_unique, ctx, "meters", [(i, kw["name"]) for i, (kw, _) in meters])
    ctx.attempt(_unique, ctx, "sinks", [(i, s.name) for i, s in sink_list])

    by_name = {ln.name: ln for _, ln in lines}
    by_endpoint: dict[tuple[str, int], LineConfig] = {}
    for i, ln in lines:
        if ln.type == "tcp":
            assert ln.host is not None and ln.port is not None  # _load_line required both for tcp
            endpoint = (ln.host.lower(), ln.port)
            if endpoint in by_endpoint:
                ctx.errors.append(ctx.error(
                    ("lines", i, "host"), f"line {ln.name!r} uses the same endpoint {ln.host}:{ln.port} as "
                    f"line {by_endpoint[endpoint].name!r}; one converter is one bus, name it once"))
            by_endpoint[endpoint] = ln

    implicit: list[LineConfig] = []
    built: list[tuple[int, MeterConfig]] = []
    used_address: dict[tuple[str, int | str], str] = {}
    for i, (kw, f) in meters:
        mpath: _Path = ("meters", i)
        if kw["cloud"]:
            built.append((i, MeterConfig(**kw)))
            continue
        if "line" in f:
            if f["line"] not in by_name:
                if lines_ok:  # else the line may be one that failed to load
                    ctx.errors.append(ctx.error(
                        mpath + ("line",), f"unknown line {f['line']!r}{_did_you_mean(f['line'], by_name)}"
                        + ("" if by_name else " (no [[lines]] are defined)")))
                continue
        else:
            host, port = f["ip_address"], f["port"]
            found = by_endpoint.get((host.lower(), port))
            if found is None:
                # A converter reachable at one endpoint is one bus: meters naming the same endpoint share it.
                name = _endpoint_name(host, port)
                if name in by_name:
                    ctx.errors.append(ctx.error(mpath + ("ip_address",),
                                                f"implicit line name {name!r} clashes with a [[lines]] name"))
                    continue
                found = LineConfig(name=name, type="tcp", host=host, port=port, implicit=True,
                                   line_no=ctx.locator.find(mpath + ("ip_address",)))
                by_name[name] = found
                by_endpoint[(host.lower(), port)] = found
                implicit.append(found)
            kw["line"] = found.name
        meter = MeterConfig(**kw)
        if meter.enabled:
            slot = (meter.line, meter.connection_address)
            if slot in used_address:
                ctx.errors.append(ctx.error(
                    mpath + ("connection_address",), f"address {address_text(meter.connection_address)} is already used "
                    f"by meter {used_address[slot]!r} on line {meter.line!r}"))
            used_address[slot] = meter.name
        built.append((i, meter))
    for i, meter in built:
        if gateway is not None:
            ctx.attempt(_check_schedule_runs, ctx, ("meters", i), meter, gateway.spread)
    meter_names = [m.name for _, m in built]
    for i, sink in sink_list:
        if not meters_ok:
            break  # a meter the sink names may be one that failed to load
        # A document sink (sioi) that names a meter not in this file would wait for its readings every period.
        for k, name in enumerate(getattr(sink.options, "meters", ())):
            if name not in meter_names:
                ctx.errors.append(ctx.error(("sinks", i, "meters", k), f"no meter named {name!r} in this file"
                                            f"{_did_you_mean(name, meter_names)}"))

    if store is not None and store.max_age is not None:
        for i, meter in built:
            # A backfill reaching further back than max_age would be evicted as it arrives (quota.py).
            if (meter.enabled and meter.data_polling_length > store.max_age
                    and set(meter.read) & {"profile", "hourly", "daily", "monthly", "yearly"}):
                ctx.errors.append(ctx.error(
                    ("store", "max_age"), f"max_age {format_duration(store.max_age)} is shorter than "
                    f"meters[{i}] ({meter.name}) data_polling_length "
                    f"{format_duration(meter.data_polling_length)}: its backfilled archives would be "
                    f"evicted as they arrive; raise max_age or shorten data_polling_length"))

    if ctx.errors or gateway is None or store is None or api is None:
        return None
    return Config(source=ctx.source, gateway=gateway, store=store, api=api,
                  lines=tuple(ln for _, ln in lines) + tuple(implicit),
                  meters=tuple(m for _, m in built), sinks=tuple(s for _, s in sink_list))


def known_keys(sinks: SinkRegistry | None = None, catalog: Catalog = CATALOG) -> dict[str, frozenset[str]]:
    """Every key the loader accepts, by section path, from the tables it validates with.

    Paths: "gateway", "store", "api", "api.tokens", "lines", "meters" (the keys every meter takes),
    "meters.<protocol>" (that protocol's own keys) and "sinks.<type>" (every key a sink of that type takes,
    common and own). ``sinks`` defaults to the built-in types; pass a registry with plugins to include them.
    """
    registry = builtin_sinks() if sinks is None else sinks
    out: dict[str, frozenset[str]] = {
        "gateway": frozenset(_GATEWAY), "store": frozenset(_STORE), "api": frozenset(_API),
        "api.tokens": frozenset(_API_TOKEN), "lines": frozenset(_LINE), "meters": frozenset(_METER),
    }
    for protocol, spec in catalog.items():
        out[f"meters.{protocol}"] = spec.option_keys
    for kind in registry:
        out[f"sinks.{kind}"] = registry[kind].accepted_keys
    return out
