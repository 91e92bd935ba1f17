"""The `pollerd` command line: one grammar across commands, every config error at once, placeholder
warnings, help text on every option."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from pollerd import __version__
from pollerd.commands.cli import COMMANDS, build_parser, main
from pollerd.config import load_config
from pollerd.errors import ConfigError

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "config" / "pollerd.example.toml"

THREE_ERRORS = """\
[gateway]
nmae = "x"

[[lines]]
name = "l1"
type = "serial"
device = "/dev/ttyUSB0"
baudrate = 9601

[[meters]]
name = "m1"
protocol = "mercury230"
line = "l1"
connection_address = 1
days_of_month = [32]
"""

GOOD = """\
[[lines]]
name = "l1"
type = "serial"
device = "/dev/ttyUSB0"

[[meters]]
name = "m1"
protocol = "mercury230"
line = "l1"
connection_address = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pollerd.toml"
    p.write_text(text, encoding="utf-8")
    return p


# --- every config error at once --------------------------------------------------------------------------------

def test_loader_collects_every_error(tmp_path: Path) -> None:
    p = write(tmp_path, THREE_ERRORS)
    with pytest.raises(ConfigError) as info:
        load_config(p, environ={})
    lines = [str(e) for e in info.value.errors]
    assert lines == [
        f"{p}:2: gateway: unknown key 'nmae' (did you mean 'name'?)",
        (f"{p}:8: lines[0].baudrate: 9601 is not one of 300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, "
         "57600, 115200"),
        f"{p}:15: meters[0].days_of_month[0]: 32 is not in 1..31",
    ]
    assert str(info.value) == lines[0]  # one line, the first, for callers that show one


def test_several_bad_keys_of_one_table_and_cross_checks(tmp_path: Path) -> None:
    text = GOOD + """
[[meters]]
name = "m2"
protocol = "mercury230"
line = "nope"
connection_address = 1
waiting_time = "soon"
tn1 = -1

[[meters]]
name = "m1"
protocol = "mercury230"
line = "l1"
connection_address = 2
"""
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p, environ={})
    keys = [(e.key, e.line) for e in info.value.errors]
    # Both bad keys of meters[1]; its unknown line is not reported (the table failed), and the duplicate name
    # of meters[2] still is: a check across tables runs over the tables that loaded.
    assert keys == [("meters[1].waiting_time", 17), ("meters[1].tn1", 18), ("meters[2].name", 21)]


def test_unknown_line_is_not_reported_when_a_line_failed(tmp_path: Path) -> None:
    text = GOOD.replace('device = "/dev/ttyUSB0"', 'device = "/dev/ttyUSB0"\nbytesize = 9')
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p, environ={})
    # meters[0] names l1, which failed to load: "unknown line" would send the reader after a problem
    # that is not there.
    assert [e.key for e in info.value.errors] == ["lines[0].bytesize"]


def test_check_lists_every_error_and_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, THREE_ERRORS)
    assert main(["check", str(p)]) == 78
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4
    assert all(re.match(rf"{re.escape(str(p))}:\d+: \S+: ", line) for line in err[:3])
    assert err[3] == f"{p}: 3 errors"


def test_run_reports_every_error_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, THREE_ERRORS)
    assert main(["run", "-c", str(p), "--state-dir", str(tmp_path)]) == 78
    assert len(capsys.readouterr().err.splitlines()) == 3


# --- placeholders ----------------------------------------------------------------------------------------------

def test_check_of_the_example_warns_about_placeholders(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "warning: sink head-end: token is still the placeholder CHANGE-ME" in out
    assert "warning: sink head-end: url https://head-end.example.net/api/v1/readings is an example address" in out
    assert re.search(r"pollerd\.example\.toml: OK with \d+ warnings\n$", out)
    assert "CHANGE-ME" not in out.replace("placeholder CHANGE-ME", "")  # no secret printed beside it


def test_check_of_a_real_config_is_plain_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, GOOD + '\n[[sinks]]\nname = "up"\ntype = "http"\nurl = "https://meters.corp.test/in"\n'
              'token = "s3cret-token-0123456789"\n')
    assert main(["check", str(p)]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out and out.endswith(f"{p}: OK\n")
    assert "s3cret" not in out


# --- one grammar -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", [["--config"], ["-c"], []])
def test_check_takes_the_file_either_way(tmp_path: Path, form: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, GOOD)
    assert main(["check", *form, str(p)]) == 0
    assert capsys.readouterr().out.endswith(f"{p}: OK with 1 warning\n")  # no sinks


def test_every_command_that_reads_a_config_takes_dash_c() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    takes_config = []
    for name, command in sub.choices.items():
        opts = {o for a in command._actions for o in a.option_strings}
        if "--config" in opts:
            assert "-c" in opts, name
            takes_config.append(name)
    assert {"check", "run", "poll", "raw", "scan", "sioi", "parked"} <= set(takes_config)


def test_every_option_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    def walk(p: argparse.ArgumentParser, where: str) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for n, child in a.choices.items():
                    walk(child, f"{where} {n}")
            elif not isinstance(a, argparse._HelpAction):
                assert a.help, f"{where}: {a.option_strings or a.dest} has no help"

    for name, command in sub.choices.items():
        walk(command, name)


def test_readings_state_dir_help_names_its_default() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    help_text = sub.choices["readings"].format_help()
    assert "/var/lib/pollerd" in help_text


@pytest.mark.parametrize("argv", [["--log-level", "debug", "version"], ["version", "--log-level", "DEBUG"]])
def test_log_level_before_or_after_the_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("pollerd ")


@pytest.mark.parametrize("argv", [["--log-level", "LOUD", "version"], ["version", "--log-level", "LOUD"]])
def test_log_level_is_a_real_level(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "'LOUD' is not one of DEBUG, INFO, WARNING, ERROR" in capsys.readouterr().err


def test_version_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"pollerd {__version__}\n"


def test_bare_pollerd_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: pollerd")
    for name, *_ in COMMANDS:
        if name != "decode":
            assert name in err


def test_a_bad_option_shows_that_commands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["readings", "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: pollerd readings ")
    assert "pollerd readings: error: unrecognized arguments: --bogus" in err


def test_a_bad_option_of_a_simulator_shows_its_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["sim", "mbus", "--tcp", "127.0.0.1:0", "--addresses", "1"])
    assert capsys.readouterr().err.startswith("usage: pollerd sim mbus ")


def test_docs_list_only_flags_the_simulators_take() -> None:
    readme = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    sims = next(a for a in sub.choices["sim"]._actions if isinstance(a, argparse._SubParsersAction))
    rows = [line for line in readme.splitlines() if line.startswith("| `pollerd sim ")]
    assert rows
    for row in rows:
        command = row.split("`")[1].split()
        names = command[2].split("\\|") if len(command) > 2 else []
        assert names and all(n in sims.choices for n in names), row
        for name in names:
            opts = {o for a in sims.choices[name]._actions for o in a.option_strings}
            for flag in re.findall(r"(--[a-z][a-z-]*)", row):
                assert flag in opts, f"docs/commands.md: `pollerd sim {name}` does not take {flag}"


# --- pollerd readings ------------------------------------------------------------------------------------------

def _stored(tmp_path: Path) -> Path:
    import asyncio

    from pollerd.model import Reading
    from pollerd.store import Store

    async def fill() -> None:
        s = await Store.open(tmp_path / "pollerd.db", commit_interval=0.01)
        try:
            await s.write([Reading("m1", "A+", "current", 1_700_000_000 + 60 * i, float(i), "Wh", "good")
                           for i in range(100)]
                          + [Reading("m2", "P", "current", 1_700_000_000 + 60 * i, 1.0, "W", "good")
                             for i in range(3)])
            await s.flush()
        finally:
            await s.close()

    asyncio.run(fill())
    return tmp_path


def _values(out: str) -> list[float]:
    import orjson
    return [orjson.loads(x)["value"] for x in out.splitlines()]


def test_readings_limit_gives_the_newest_oldest_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _stored(tmp_path)
    assert main(["readings", "--state-dir", str(d), "--meter", "m1", "--limit", "3", "--json"]) == 0
    out, err = capsys.readouterr()
    assert _values(out) == [97.0, 98.0, 99.0]
    assert "the newest 3" in err


def test_readings_since_until(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _stored(tmp_path)
    # 1_700_000_000 is 2023-11-14 22:13:20 UTC; naive times are UTC, --until is exclusive.
    assert main(["readings", "--state-dir", str(d), "--meter", "m1", "--json", "--limit", "0",
                 "--since", "2023-11-14 22:15:20", "--until", str(1_700_000_000 + 60 * 5)]) == 0
    assert _values(capsys.readouterr().out) == [2.0, 3.0, 4.0]
    assert main(["readings", "--state-dir", str(d), "--meter", "m1", "--json", "--limit", "0",
                 "--since", "2023-11-15T01:15:20+03:00", "--until", "2023-11-14T22:18:20Z"]) == 0
    assert _values(capsys.readouterr().out) == [2.0, 3.0, 4.0]


def test_readings_since_a_duration_ago() -> None:
    from pollerd.commands.readings import parse_when
    assert parse_when("2h", now=10_000.0) == 10_000 - 7200
    assert parse_when("1700000000") == 1_700_000_000
    with pytest.raises(argparse.ArgumentTypeError, match="is not a time"):
        parse_when("yesterday-ish")


def test_readings_default_is_a_screenful_on_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pollerd.commands import readings
    d = _stored(tmp_path)
    monkeypatch.setattr(readings, "screenful", lambda: 10)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["readings", "--state-dir", str(d), "--meter", "m1", "--json"]) == 0
    assert _values(capsys.readouterr().out) == [float(i) for i in range(90, 100)]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # a pipe: everything, nothing lost silently
    assert main(["readings", "--state-dir", str(d), "--meter", "m1", "--json"]) == 0
    assert len(_values(capsys.readouterr().out)) == 100


def test_readings_of_an_unknown_meter_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _stored(tmp_path)
    assert main(["readings", "--state-dir", str(d), "--meter", "m3"]) == 1
    err = capsys.readouterr().err
    assert "no meter named 'm3'" in err and "meters with readings: m1, m2" in err
    # A known meter with nothing in the window is not an error.
    assert main(["readings", "--state-dir", str(d), "--meter", "m2", "--since", "1800000000"]) == 0
    assert capsys.readouterr() == ("", "")


# --- one line per event in the log -----------------------------------------------------------------------------

def test_a_fresh_store_logs_one_migration_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import logging

    from pollerd.store import Store
    from pollerd.store.schema import SCHEMA_VERSION

    async def open_twice() -> None:
        for _ in range(2):  # the second open finds the file current: nothing to say
            s = await Store.open(tmp_path / "pollerd.db")
            await s.close()

    caplog.set_level(logging.INFO, logger="pollerd.store")
    asyncio.run(open_twice())
    lines = [r.getMessage() for r in caplog.records if "schema" in r.getMessage()]
    assert lines == [f"store {tmp_path / 'pollerd.db'} created at schema version {SCHEMA_VERSION}"]


def test_check_shows_an_empty_iec_address_as_no_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, GOOD + '\n[[meters]]\nname = "ce"\nprotocol = "iec62056"\nline = "l1"\n'
              'connection_address = ""\niec_profile = "energomera"\n')
    assert main(["check", str(p)]) == 0
    row = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("ce:"))
    assert "@ (no address);" in row
