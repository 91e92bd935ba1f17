"""Config loader: every bad file names its line and key; good files give the expected dataclasses."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest

from pollerd.catalog import CATALOG, Protocol
from pollerd.commands.summary import summary
from pollerd.config import (
    Config,
    LineConfig,
    Secret,
    format_duration,
    load_config,
    parse_duration,
)
from pollerd.errors import ConfigError, PollerdError

HERE = Path(__file__).parent
BAD = HERE / "bad_configs"
EXAMPLE = HERE.parent / "config" / "pollerd.example.toml"
BAD_FILES = sorted(p.name for p in BAD.glob("*.toml"))

SERIAL = """\
[[lines]]
name = "rs485-1"
type = "serial"
device = "/dev/ttyUSB0"
"""


def write(tmp_path: Path, text: str, name: str = "pollerd.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def load(tmp_path: Path, text: str, **kw: object) -> Config:
    return load_config(write(tmp_path, text), environ=kw.pop("environ", {}), **kw)  # type: ignore[arg-type]


def error_of(tmp_path: Path, text: str, **kw: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kw)
    return info.value


# --- bad configs -----------------------------------------------------------------------------------------------

def test_enough_bad_configs() -> None:
    assert len(BAD_FILES) >= 18


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_config(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first = (BAD / name).read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{name}: first line must be '# expect: ...'"
    expected = first.removeprefix("# expect: ")
    # The message names the file as the caller passed it: load by the bare name from inside the directory.
    monkeypatch.chdir(BAD)
    with pytest.raises(ConfigError) as info:
        load_config(name, environ={})
    assert str(info.value) == expected
    assert isinstance(info.value, PollerdError)
    assert info.value.path == name
    assert f"{name}:{info.value.line}: " in expected


def test_error_names_the_file_as_given(tmp_path: Path) -> None:
    p = write(tmp_path, "[gateway]\nnmae = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(p), environ={})
    assert str(info.value) == f"{p}:2: gateway: unknown key 'nmae' (did you mean 'name'?)"
    assert (info.value.line, info.value.key) == (2, "gateway")


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read: No such file"):
        load_config(missing, environ={})


def test_unknown_key_without_a_close_match(tmp_path: Path) -> None:
    err = error_of(tmp_path, "[store]\nzzzz = 1\n")
    assert str(err).endswith("store: unknown key 'zzzz'")


def test_missing_key_points_at_table_header(tmp_path: Path) -> None:
    err = error_of(tmp_path, SERIAL + "\n\n[[meters]]\nname = 'm'\n# comment\nprotocol = 'mercury230'\n"
                                      "line = 'rs485-1'\n")
    assert err.line == 7 and err.key == "meters[0]"
    assert err.problem == "missing required key 'connection_address'"


def test_first_error_in_file_order(tmp_path: Path) -> None:
    text = SERIAL + """
[[meters]]
name = "m1"
protocol = "mercury230"
line = "rs485-1"
connection_address = 1
days_of_week = [9]
days_of_month = [40]
"""
    assert error_of(tmp_path, text).key == "meters[0].days_of_week[0]"


def test_locator_follows_nested_and_dotted_keys(tmp_path: Path) -> None:
    text = '''\
gateway.name = "gw"
store = { keep = "1d", commit_interval = "x" }
'''
    err = error_of(tmp_path, text)
    assert (err.line, err.key) == (2, "store.commit_interval")
    text = '''\
[[sinks]]
name = "a"
type = "http"
url = "https://a.example/x"
[sinks.headers]
"X-One" = "1"
"X-Two" = 2
'''
    err = error_of(tmp_path, text)
    assert (err.line, err.key) == (7, 'sinks[0].headers.X-Two')


def test_locator_skips_multiline_strings_and_arrays(tmp_path: Path) -> None:
    text = SERIAL + '''
[[meters]]
name = "m1"
protocol = "mercury230"
line = "rs485-1"
connection_address = 1
read = [
  "energy",   # [not a header]
]
password = """
[[meters]]
x = 1"""
waiting_time = "soon"
'''
    err = error_of(tmp_path, text)
    assert (err.line, err.key) == (17, "meters[0].waiting_time")


def test_lines_table_instead_of_array(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[lines]\nname = "x"\n')
    assert str(err).endswith(":1: lines: expected an array of tables [[lines]], got table")


# --- durations -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("15m", 900.0), ("900s", 900.0), ("1h30m", 5400.0), ("2d", 172800.0), ("250ms", 0.25), ("1m30s", 90.0),
    ("1h 30m", 5400.0), ("1w", 604800.0), ("1.5h", 5400.0), (900, 900.0), (0.5, 0.5), ("900", 900.0),
    ("0", 0.0), (" 12.5 ", 12.5),
])
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5 minutes", "15x", "1h-30m", "h", "-1", -5, "-2d", True, [1],
                                  float("inf"), "nan"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.25, 1.0, 59.0, 900.0, 5400.0, 86400.0 + 61.0, 12.5])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# --- good configs ----------------------------------------------------------------------------------------------

def test_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, SERIAL + '[[meters]]\nname = "m1"\nprotocol = "mercury230"\nline = "rs485-1"\n'
                                  'connection_address = 5\n')
    assert cfg.gateway.name == socket.gethostname()
    assert cfg.gateway.spread == 300.0
    assert (cfg.store.path, cfg.store.keep, cfg.store.commit_interval) == (None, 7 * 86400.0, 2.0)
    assert (cfg.api.host, cfg.api.port, cfg.api.enabled) == ("127.0.0.1", 8780, True)
    line = cfg.line("rs485-1")
    assert (line.baudrate, line.bytesize, line.parity, line.stopbits, line.implicit) == (9600, 8, "N", 1, False)
    assert line.line_no == 1
    m = cfg.meter("m1")
    assert (m.period_type, m.interval_time, m.timezone, m.password, m.enabled) == ("interval", 900.0, "UTC",
                                                                                   None, True)
    assert m.read == CATALOG[Protocol.MERCURY230].default_read
    assert m.line_no == 5
    assert cfg.sinks == ()


def test_sections_parse(tmp_path: Path) -> None:
    cfg = load(tmp_path, '''
[gateway]
name = "gw-1"
spread = "10m"
[store]
path = "data/p.db"
keep = "2d"
commit_interval = "250ms"
[api]
listen = "[::1]:9000"
enabled = false
[[lines]]
name = "bus"
type = "serial"
device = "/dev/ttyS1"
baudrate = "19200"
parity = "e"
stopbits = 1.5
bytesize = 7
''')
    assert (cfg.gateway.name, cfg.gateway.spread) == ("gw-1", 600.0)
    assert cfg.store.path == str(tmp_path / "data" / "p.db")
    assert (cfg.store.keep, cfg.store.commit_interval) == (172800.0, 0.25)
    assert (cfg.api.listen, cfg.api.host, cfg.api.port, cfg.api.enabled) == ("[::1]:9000", "::1", 9000, False)
    line = cfg.line("bus")
    assert (line.baudrate, line.parity, line.stopbits, line.bytesize) == (19200, "E", 1.5, 7)


def test_implicit_lines_are_shared_per_endpoint(tmp_path: Path) -> None:
    meters = "".join(f'''
[[meters]]
name = "m{i}"
protocol = "mercury230"
ip_address = "{host}"
port = {port}
connection_address = {i}
''' for i, (host, port) in enumerate([("10.0.0.5", 4001), ("10.0.0.5", "4001"), ("10.0.0.5", 4002),
                                      ("10.0.0.9", 4001)], start=1))
    explicit = '[[lines]]\nname = "moxa"\ntype = "tcp"\nhost = "10.0.0.9"\nport = 4001\n'
    cfg = load(tmp_path, explicit + meters)
    assert [m.line for m in cfg.meters] == ["tcp:10.0.0.5:4001", "tcp:10.0.0.5:4001", "tcp:10.0.0.5:4002", "moxa"]
    implicit = [ln for ln in cfg.lines if ln.implicit]
    assert [(ln.name, ln.type, ln.host, ln.port) for ln in implicit] == [
        ("tcp:10.0.0.5:4001", "tcp", "10.0.0.5", 4001), ("tcp:10.0.0.5:4002", "tcp", "10.0.0.5", 4002)]
    assert implicit[0].line_no == 10  # the ip_address line of the first meter that named it


def test_disabled_meters_may_share_an_address(tmp_path: Path) -> None:
    text = SERIAL + "".join(f'''
[[meters]]
name = "m{i}"
protocol = "mercury230"
line = "rs485-1"
connection_address = 7
enabled = {"true" if i == 1 else "false"}
''' for i in (1, 2))
    assert [m.enabled for m in load(tmp_path, text).meters] == [True, False]


def test_seed_004_style_all_strings(tmp_path: Path) -> None:
    cfg = load(tmp_path, '''
[[meters]]
name = "m1"
protocol = "mercury230"
number_meter = "41234567"
connection_address = "5"
password = "111111"
ip_address = "192.168.1.50"
port = "4001"
waiting_time = "2"
interval_time = "900"
pause_time = "0.1"
package_size = "16"
time_difference = "30"
periodType = "interval"
data_polling_length = "86400"
days_of_week = "1,2,5"
days_of_month = "1, 15,last"
''')
    m = cfg.meter("m1")
    assert (m.connection_address, m.waiting_time, m.interval_time, m.pause_time, m.package_size) == (
        5, 2.0, 900.0, 0.1, 16)
    assert (m.time_difference, m.data_polling_length, m.period_type) == (30.0, 86400.0, "interval")
    assert m.days_of_week == {1, 2, 5} and m.days_of_month == {1, 15} and m.last_day_of_month
    assert m.password == Secret("111111") and m.number_meter == "41234567"
    assert m.line == "tcp:192.168.1.50:4001"


def test_period_type_alias_and_calendar_values(tmp_path: Path) -> None:
    cfg = load(tmp_path, SERIAL + '''
[[meters]]
name = "m1"
protocol = "mercury230"
line = "rs485-1"
connection_address = 1
periodType = "weekly"
days_of_week = ["Mon", "fri", 7, "3"]
at = 06:30:00
timezone = "Europe/Berlin"
''')
    m = cfg.meter("m1")
    assert (m.period_type, m.days_of_week, m.at, m.timezone) == ("weekly", {1, 3, 5, 7}, dt.time(6, 30),
                                                                 "Europe/Berlin")


def test_at_string_forms(tmp_path: Path) -> None:
    base = SERIAL + '[[meters]]\nname = "m"\nprotocol = "mercury230"\nline = "rs485-1"\nconnection_address = 1\n' \
                    'period_type = "daily"\n'
    assert load(tmp_path, base + 'at = "7:05"\n').meter("m").at == dt.time(7, 5)
    assert load(tmp_path, base + 'at = "23:59:30"\n').meter("m").at == dt.time(23, 59, 30)
    assert "bad time of day '7h'" in str(error_of(tmp_path, base + 'at = "7h"\n'))


def test_monthly_needs_days(tmp_path: Path) -> None:
    err = error_of(tmp_path, SERIAL + '[[meters]]\nname = "m"\nprotocol = "mercury230"\nline = "rs485-1"\n'
                                      'connection_address = 1\nperiod_type = "monthly"\n')
    assert err.key == "meters[0].period_type" and "days_of_month" in err.problem


def test_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "m1-pw").write_text("123456\n")
    (creds / "up-token").write_text("tok-abc\r\n")
    (tmp_path / "basic.pw").write_text("s3cret pass\n")
    cfg = load(tmp_path, SERIAL + '''
[[meters]]
name = "m1"
protocol = "mercury230"
line = "rs485-1"
connection_address = 1
password_credential = "m1-pw"

[[sinks]]
name = "up"
type = "http"
url = "https://up.example/in"
token_credential = "up-token"

[[sinks]]
name = "basic"
type = "http"
url = "http://basic.example/in"
username = "gw"
password_file = "basic.pw"
''', environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.meter("m1").password == Secret("123456")
    up, basic = cfg.sinks
    assert up.token is not None and up.token.reveal() == "tok-abc"
    assert (basic.username, basic.password) == ("gw", Secret("s3cret pass"))


def test_missing_credential_names_the_key(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    err = error_of(tmp_path, SERIAL + '[[meters]]\nname = "m"\nprotocol = "mercury230"\nline = "rs485-1"\n'
                                      'connection_address = 1\npassword_credential = "m-pw"\n',
                   environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert err.key == "meters[0].password_credential" and err.line == 10
    assert err.problem.startswith("credential 'm-pw' not found in $CREDENTIALS_DIRECTORY")


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("\n")
    err = error_of(tmp_path, '[[sinks]]\nname = "up"\ntype = "http"\nurl = "https://x.example/"\n'
                             'token_file = "t"\n')
    assert (err.key, err.problem) == ("sinks[0].token_file", "file 't' is empty")


def test_password_encodings(tmp_path: Path) -> None:
    base = SERIAL + '[[meters]]\nname = "m"\nprotocol = "mercury230"\nline = "rs485-1"\nconnection_address = 1\n'
    assert load(tmp_path, base + 'password = "a1b2c3"\npassword_encoding = "ascii"\n').meter("m").password
    assert load(tmp_path, base + 'password = "0102030405ff"\npassword_encoding = "hex"\n').meter("m").password
    err = error_of(tmp_path, base + 'password = "0102"\npassword_encoding = "hex"\n')
    assert "6 bytes" in err.problem and "0102" not in str(err)


def test_secrets_never_in_repr_or_summary(tmp_path: Path) -> None:
    (tmp_path / "basic.pw").write_text("basic-PASSWORD-42\n")
    cfg = load(tmp_path, SERIAL + '''
[[meters]]
name = "m1"
protocol = "mercury230"
line = "rs485-1"
connection_address = 1
password = "987654"

[[sinks]]
name = "up"
type = "http"
url = "https://up.example/in"
token = "tok-SECRET-xyz"
headers = { "X-Site" = "a" }

[[sinks]]
name = "basic"
type = "http"
url = "http://basic.example/in"
username = "gw"
password_file = "basic.pw"

[[sinks]]
name = "keyed"
type = "http"
url = "https://[2001:db8::1]:8443/in?api_key=QUERY-KEY-77"
''')
    texts = [repr(cfg), str(cfg), summary(cfg)]
    for secret in ("987654", "tok-SECRET-xyz", "basic-PASSWORD-42"):
        for text in texts:
            assert secret not in text
    # `pollerd check` prints no query string: API keys often ride there
    assert "QUERY-KEY-77" not in summary(cfg) and "https://[2001:db8::1]:8443/in (query hidden)" in summary(cfg)
    out = summary(cfg)
    assert "m1" in out and "https://up.example/in" in out and "bearer token" in out
    assert "basic auth as gw" in out


def test_credentials_in_sink_url_are_refused(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[[sinks]]\nname = "up"\ntype = "http"\nurl = "https://u:url-PASSWORD@x.example/"\n')
    assert err.key == "sinks[0].url" and "username" in err.problem
    assert "url-PASSWORD" not in str(err)


def test_example_config_loads_and_summarises() -> None:
    cfg = load_config(EXAMPLE, environ={})
    assert {ln.type for ln in cfg.lines} == {"serial", "tcp"}
    assert any(ln.implicit for ln in cfg.lines)
    assert {m.line for m in cfg.meters if not m.is_cloud} == {ln.name for ln in cfg.lines}
    assert {m.protocol for m in cfg.meters if m.is_cloud} >= {"rstech", "webmeters", "saures"}
    assert [s.type for s in cfg.sinks] == ["http", "sioi"]
    assert {m.period_type for m in cfg.meters} >= {"interval", "daily", "monthly"}
    out = summary(cfg)
    for m in cfg.meters:
        assert m.name in out
        if m.password is not None:
            assert m.password.reveal() not in out
    for s in cfg.sinks:
        assert s.token is None or s.token.reveal() not in out


def test_example_config_shows_every_key() -> None:
    from pollerd.config import known_keys

    text = EXAMPLE.read_text(encoding="utf-8")
    # Every section's keys and every sink type's keys; a protocol's own keys are in the protocol docs.
    for section, keys in known_keys().items():
        if section.startswith("meters."):
            continue
        for key in keys:
            if key == "periodType":
                continue  # mentioned in a comment, not as a key
            assert f"{key} =" in text, (section, key)


def test_summary_describes_schedules(tmp_path: Path) -> None:
    cfg = load(tmp_path, SERIAL + '''
[[meters]]
name = "a"
protocol = "mercury230"
line = "rs485-1"
connection_address = 1
interval_time = "1h30m"
days_of_week = [6, 7]

[[meters]]
name = "b"
protocol = "mercury230"
line = "rs485-1"
connection_address = 2
period_type = "monthly"
days_of_month = [1, "last"]
at = "01:00"
timezone = "Europe/Berlin"
''')
    out = summary(cfg)
    assert "every 1h30m on Sat, Sun" in out
    assert "monthly on day 1 and the last day of the month at 01:00 Europe/Berlin" in out


def test_explicit_lines_are_returned_as_line_config(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[[lines]]\nname = "t"\ntype = "tcp"\nhost = "h.example"\nport = 502\n'
                         'reconnect_max = "2m"\n')
    assert cfg.lines == (LineConfig(name="t", type="tcp", host="h.example", port=502, reconnect_max=120.0,
                                    line_no=1),)


def test_an_interval_schedule_that_never_runs_is_refused(tmp_path: Path) -> None:
    # A 7-day grid lands on one weekday (fixed by the meter's spread offset: Sunday for "m7"). Filtered to
    # Mon..Sat it never runs; `pollerd check` said OK and the daemon then died at start with a traceback
    # (next_run's ValueError ended the task group), taking every other meter with it.
    text = (SERIAL + '\n[[meters]]\nname = "m7"\nprotocol = "mercury230"\nline = "rs485-1"\n'
            'connection_address = 1\ninterval_time = "7d"\n'
            'days_of_week = ["mon", "tue", "wed", "thu", "fri", "sat"]\n')
    err = error_of(tmp_path, text)
    assert err.key == "meters[0].days_of_week" and err.line == 12
    assert "never runs" in str(err) and "Sun" in str(err)
    ok = load(tmp_path, text.replace('"sat"]', '"sat", "sun"]'))
    assert ok.meters[0].days_of_week == frozenset(range(1, 8))


@pytest.mark.parametrize("extra", [
    'interval_time = 1e12\ndays_of_week = [1]\n',      # was a ValueError traceback (datetime year out of range)
    'interval_time = "99999999999999999w"\n',           # was accepted: the summary printed a 20-digit day count
    'data_polling_length = 1e308\n',
])
def test_absurdly_long_durations_are_config_errors(tmp_path: Path, extra: str) -> None:
    err = error_of(tmp_path, SERIAL + '[[meters]]\nname = "m1"\nprotocol = "mercury230"\nline = "rs485-1"\n'
                                      'connection_address = 5\n' + extra)
    assert err.line is not None and err.key is not None and err.key.startswith("meters[0].")
    assert "too long" in err.problem and "36500d" in err.problem


def test_parse_duration_has_an_upper_bound() -> None:
    assert parse_duration("36500d") == 36500 * 86400.0
    with pytest.raises(ValueError, match="too long"):
        parse_duration("36501d")


@pytest.mark.parametrize(("kind", "url", "needle"), [
    # These passed `pollerd check`; the daemon then died at start with yarl's ValueError from the sink task.
    ("mqtt", "mqtt://broker.local:abc", "port"),
    ("mqtt", "mqtt://broker.local:99999", "port 99999 is not in 1..65535"),
    ("http", "https://x.example:0/in", "port 0 is not in 1..65535"),
    ("http", "https://x.example:8o80/in", "port"),
    ("http", "https://[zz::1]/in", "not a host"),
])
def test_sink_url_with_a_bad_host_or_port_is_refused(tmp_path: Path, kind: str, url: str, needle: str) -> None:
    err = error_of(tmp_path, f'[[sinks]]\nname = "up"\ntype = "{kind}"\nurl = "{url}"\n')
    assert (err.key, err.line) == ("sinks[0].url", 4)
    assert needle in err.problem


@pytest.mark.parametrize("url", ["https://x.example:8443/in", "http://[::1]:8080/", "https://10.0.0.1/in?x=1"])
def test_sink_url_with_a_port_or_ipv6_host_loads(tmp_path: Path, url: str) -> None:
    assert load(tmp_path, f'[[sinks]]\nname = "up"\ntype = "http"\nurl = "{url}"\n').sinks[0].url == url


def test_the_same_api_token_twice_is_refused(tmp_path: Path) -> None:
    # With one token listed as admin and again as read, the role a request got depended on the list order
    # (the last match won): an admin token answered 403.
    (tmp_path / "admin.token").write_text("same-token-0123456789\n", encoding="utf-8")
    err = error_of(tmp_path, '[api]\ntokens = [\n  { token_file = "admin.token", role = "admin" },\n'
                             '  { token = "same-token-0123456789", role = "read" },\n]\n')
    assert err.key == "api.tokens[1].token" and err.line is not None
    assert "api.tokens[0]" in err.problem
    assert "same-token" not in str(err)


@pytest.mark.parametrize("value", ['["http"]', "{ kind = \"http\" }"])
def test_sink_type_of_the_wrong_toml_type_is_a_config_error(tmp_path: Path, value: str) -> None:
    # Was 'TypeError: unhashable type' from the sink-type lookups, before the type was checked.
    err = error_of(tmp_path, f'[[sinks]]\nname = "up"\ntype = {value}\nurl = "https://x.example/in"\n')
    assert (err.key, err.line) == ("sinks[0].type", 3)
    assert err.problem.startswith("expected a string, got ")


def test_wrong_type_message_names_an_array_or_table_once(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[[meters]]\nname = "m"\nprotocol = ["modbus"]\n')
    assert err.problem == "expected a string, got array"


def test_the_locator_finds_keys_tables_inline_keys_and_falls_back_to_the_longest_known_prefix() -> None:
    # Issue 18 made its index a tree (a dict of every key path and its prefixes was 16.7 MB at 10,000 meters);
    # the answers must not change.
    from pollerd.config.locate import Locator
    text = ('[gateway]\nname = "gw"\n\n[[meters]]\nname = "a"\noptions = { clock_correction = true,\n'
            '  max_clock_correction = 30 }\n\n[[meters]]\nname = "b"\nread = ["energy",\n "instant"]\n'
            '[meters.options]\nx = 1\n')
    loc = Locator(text)
    assert loc.find(("gateway",)) == 1 and loc.find(("gateway", "name")) == 2
    assert loc.find(("meters", 0)) == 4 and loc.find(("meters", 0, "name")) == 5
    assert loc.find(("meters", 0, "options")) == 6
    assert loc.find(("meters", 0, "options", "max_clock_correction")) == 7
    assert loc.find(("meters", 1, "read", 1)) == 11  # inside an array: the array's line
    assert loc.find(("meters", 1, "options", "x")) == 14 and loc.find(("meters", 1, "options")) == 13
    assert loc.find(("meters", 1, "missing")) == 9  # unknown key: its table's header
    assert loc.find(("nowhere",)) is None
    assert loc.line_of_pos(text.index("instant")) == 12
