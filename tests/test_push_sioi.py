"""АС СиОИ document sink against a local fake of the service (tests/sioi_server.py) and the real Store."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pollerd.commands import cli
from pollerd.config import load_config
from pollerd.errors import ConfigError, SinkError, StoreError
from pollerd.metrics import Registry
from pollerd.model import Reading
from pollerd.push.registry import builtin_sinks
from pollerd.push.sioi import RECHECK, SioiSink, operator_set, state_key
from pollerd.push.sioi import options as sioi_options
from pollerd.push.sioi.template import Template, TemplateError, check_well_formed
from pollerd.state import SinkState
from pollerd.store import Store
from tests.sioi_server import FakeSioi, start

HERE = Path(__file__).parent
PERIOD = "2024-05-01"
# 2024-05-01 in Moscow (UTC+3, no DST): 2024-04-30T21:00Z .. 2024-05-01T21:00Z.
P_START = 1714510800
P_END = P_START + 86400
BUILD = P_END + 3600          # "at = 01:00" on the day after

TEMPLATE = """\
<?xml version="1.0" encoding="UTF-8"?>
<doc form="{form_code}" from="{date_from}" to="{date_to}" rows="{count}">
<!-- for meter -->
  <object id="{meter}">
  <!-- for reading -->
    <v ch="{channel}" at="{ts_local}" unit="{unit}">{value}</v>
  <!-- end -->
  </object>
<!-- end -->
</doc>
"""

SINK = """\
[[sinks]]
name = "sioi"
type = "sioi"
url = "{url}"
username = "gw@example.org"
password = "S3cret-pass-word"
timeout = "{timeout}"
retry_min = "50ms"
retry_max = "200ms"
form_code = "F-DAILY"
template = "tpl.xml"
timezone = "Europe/Moscow"
at = "01:00"
data_wait = "0s"
status_poll = "100ms"
job_timeout = "{job_timeout}"
channels = ["A+", "A-"]
"""


class Clock:
    """Wall time for the sink: starts a minute after the document is due and runs at real speed."""

    def __init__(self, start: float = BUILD + 60) -> None:
        self.start, self.t0, self.offset = start, time.monotonic(), 0.0

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self.t0) + self.offset


def write_config(tmp_path: Path, url: str, *, timeout: str = "2s", job_timeout: str = "2h", extra: str = "",
                 template: str = TEMPLATE) -> Path:
    (tmp_path / "tpl.xml").write_text(template, encoding="utf-8")
    p = tmp_path / "pollerd.toml"
    p.write_text(SINK.format(url=url, timeout=timeout, job_timeout=job_timeout) + extra, encoding="utf-8")
    return p


READINGS = [
    Reading("m1", "A+", "daily", P_START, 12345.5, "Wh"),
    Reading("m1", "A-", "daily", P_START, 7.0, "Wh"),
    Reading("m1", "P", "current", P_START + 600, 900.0, "W"),          # channel not in the filter
    Reading("m2 & co", "A+", "daily", P_START, 42.0, "Wh"),
    Reading("m1", "A+", "daily", P_END, 99999.0, "Wh"),                 # next day: not in this document
    Reading("m1", "A+", "daily", P_START - 86400, 11111.0, "Wh"),       # day before: before the sink's start
]


@contextlib.asynccontextmanager
async def env(tmp_path: Path, **server_kw):  # type: ignore[no-untyped-def]
    server = FakeSioi(**server_kw)
    runner = await start(server)
    store = await Store.open(tmp_path / "pollerd.db", commit_interval=0.01)
    await store.write(READINGS)
    await store.flush()
    try:
        yield server, store
    finally:
        await store.close()
        await runner.cleanup()


class Running:
    """One sink instance as a task, like the daemon runs it."""

    def __init__(self, store: Store, cfg_path: Path, clock: Clock) -> None:
        self.cfg = load_config(cfg_path, environ={})
        self.state = SinkState("sioi", "sioi")
        self.sink = SioiSink(store, self.cfg.sinks[0], "gw-7", self.state, Registry(), clock=clock,
                              max_sleep=0.1)
        self.task = asyncio.create_task(self.sink.run())
        self.store = store

    async def record(self) -> dict:
        return await self.store.get_state(state_key("sioi", PERIOD)) or {}

    async def until(self, what: Callable[[dict], bool], limit: float = 20.0) -> dict:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.task.done():
                self.task.result()
                raise AssertionError("the sink stopped")
            rec = await self.record()
            if what(rec):
                return rec
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out; record is {await self.record()}, state {self.state.as_dict()}")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def status_is(*names: str) -> Callable[[dict], bool]:
    return lambda rec: rec.get("status") in names


# ---- happy path --------------------------------------------------------------------------------------------

async def test_daily_document_for_the_previous_day_is_uploaded_once_and_loaded(tmp_path: Path) -> None:
    async with env(tmp_path) as (server, store):
        run = Running(store, write_config(tmp_path, server.url), Clock())
        try:
            rec = await run.until(status_is("loaded"))
        finally:
            await run.stop()
        [up] = server.uploads
        assert up.form_code == "F-DAILY" and up.filename == "F-DAILY_2024-05-01.xml"
        assert rec["hash"] == up.sha256 == hashlib.sha256(up.body).hexdigest() and rec["job_id"] == up.job_id
        assert rec["rows"] == 3 and rec["meters"] == 2
        assert up.body.decode() == """\
<?xml version="1.0" encoding="UTF-8"?>
<doc form="F-DAILY" from="2024-05-01" to="2024-05-01" rows="3">
  <object id="m1">
    <v ch="A+" at="2024-05-01T00:00:00+03:00" unit="Wh">12345.5</v>
    <v ch="A-" at="2024-05-01T00:00:00+03:00" unit="Wh">7</v>
  </object>
  <object id="m2 &amp; co">
    <v ch="A+" at="2024-05-01T00:00:00+03:00" unit="Wh">42</v>
  </object>
</doc>
"""
        assert run.state.alarms == {} and run.state.last_success is not None and run.state.lag_seconds == 0
        # The day before the sink first ran is not its business; no surprise uploads of old data.
        assert await store.get_state(state_key("sioi", "2024-04-30")) is None


async def test_nothing_is_built_before_at(tmp_path: Path) -> None:
    async with env(tmp_path) as (server, store):
        clock = Clock(start=BUILD - 0.5)
        run = Running(store, write_config(tmp_path, server.url), clock)
        try:
            await asyncio.sleep(0.2)
            assert server.uploads == [] and await run.record() == {}
            await run.until(status_is("loaded"))
        finally:
            await run.stop()
        assert len(server.uploads) == 1


# ---- failures the service reports --------------------------------------------------------------------------

async def test_failed_job_errors_are_surfaced_and_the_same_document_is_never_resent(tmp_path: Path) -> None:
    async with env(tmp_path, reject_next=[["Строка 3: объект не найден"]]) as (server, store):
        clock = Clock()
        run = Running(store, write_config(tmp_path, server.url), clock)
        try:
            rec = await run.until(status_is("failed"))
            assert rec["errors"] == ["code: E1; message: Строка 3: объект не найден"]
            await run.until(lambda r: "document 2024-05-01" in run.state.alarms)
            assert "объект не найден" in run.state.alarms["document 2024-05-01"]
            # An hour later the document is rebuilt: unchanged, so not sent again.
            clock.offset += RECHECK + 1
            await run.until(lambda r: r.get("unchanged") is True)
            assert len(server.uploads) == 1
            # A late reading changes the document: it goes once more, and loads.
            await store.write([Reading("m3", "A+", "daily", P_START, 5.0, "Wh")])
            await store.flush()
            clock.offset += RECHECK + 1
            rec = await run.until(status_is("loaded"))
        finally:
            await run.stop()
        assert len(server.uploads) == 2 and server.max_uploads_of_one_document() == 1
        assert len(rec["hashes"]) == 2 and rec["history"][0]["status"] == "failed"
        assert run.state.alarms == {}


async def test_upload_refused_on_content_is_rejected_with_the_errors(tmp_path: Path) -> None:
    async with env(tmp_path, forms=("OTHER",)) as (server, store):
        run = Running(store, write_config(tmp_path, server.url), Clock())
        try:
            rec = await run.until(status_is("rejected"))
            await asyncio.sleep(0.3)
        finally:
            await run.stop()
        assert "Форма сбора 'F-DAILY' не найдена" in rec["errors"][0]
        assert server.calls["upload"] == 1


# ---- restarts ------------------------------------------------------------------------------------------------

async def test_restart_between_upload_and_job_id_is_ambiguous_and_not_resent(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture,
                                                                              ) -> None:
    async with env(tmp_path, hold_upload=asyncio.Event()) as (server, store):
        cfg = write_config(tmp_path, server.url)
        run = Running(store, cfg, Clock())
        await asyncio.wait_for(server.upload_arrived.wait(), 20)
        await run.stop()   # "kill": the service has the document, we have no job id
        assert (await run.record())["status"] == "uploading"
        server.hold_upload.set()  # type: ignore[union-attr]
        with caplog.at_level(logging.ERROR, logger="pollerd.push.sioi"):
            run = Running(store, cfg, Clock())
            try:
                rec = await run.until(status_is("ambiguous"))
                await run.until(lambda r: "document 2024-05-01" in run.state.alarms)
                await asyncio.sleep(0.5)
                assert len(server.uploads) == 1
                assert "possibly uploaded" in run.state.alarms["document 2024-05-01"]
                assert "--retry 2024-05-01" in run.state.alarms["document 2024-05-01"]
                # The operator checked АС СиОИ: not there. Send it again, exactly once more.
                await operator_set(store, run.cfg.sinks[0], PERIOD, "retry", time.time())
                rec = await run.until(status_is("loaded"))
            finally:
                await run.stop()
        assert len(server.uploads) == 2 and rec["attempts"] == 2
        assert any("possibly uploaded" in r.getMessage() for r in caplog.records)


async def test_restart_during_status_polling_resumes_the_job(tmp_path: Path) -> None:
    async with env(tmp_path, process_time=1.0) as (server, store):
        cfg = write_config(tmp_path, server.url)
        run = Running(store, cfg, Clock())
        queued = await run.until(status_is("queued"))
        await run.stop()
        run = Running(store, cfg, Clock())
        try:
            rec = await run.until(status_is("loaded"))
        finally:
            await run.stop()
        assert len(server.uploads) == 1 and rec["job_id"] == queued["job_id"]
        assert server.calls["status"] >= 1


# ---- lost jobs -------------------------------------------------------------------------------------------------

async def test_job_never_finishing_within_job_timeout_is_lost_and_not_resent(tmp_path: Path) -> None:
    async with env(tmp_path, process_time=3600) as (server, store):
        run = Running(store, write_config(tmp_path, server.url, job_timeout="1s"), Clock())
        try:
            rec = await run.until(status_is("lost"))
            await run.until(lambda r: "document 2024-05-01" in run.state.alarms)
            await asyncio.sleep(0.3)
        finally:
            await run.stop()
        assert "still 'processing'" in rec["reason"] and len(server.uploads) == 1
        assert run.state.alarms["document 2024-05-01"].startswith("lost: job ")


async def test_job_expired_while_we_were_down_is_lost(tmp_path: Path) -> None:
    # The service keeps finished jobs "at most 2 hours" (here 0.2 s); we come back later than that.
    async with env(tmp_path, process_time=0.05, retention=0.2) as (server, store):
        cfg = write_config(tmp_path, server.url, job_timeout="1s")
        clock = Clock()
        run = Running(store, cfg, clock)
        await run.until(status_is("queued"))
        await run.stop()
        await asyncio.sleep(0.4)
        clock.offset += 5
        run = Running(store, cfg, clock)
        try:
            rec = await run.until(status_is("lost"))
        finally:
            await run.stop()
        assert "unknown to АС СиОИ" in rec["reason"] and len(server.uploads) == 1


# ---- a misbehaving upstream ------------------------------------------------------------------------------------

async def test_html_garbage_and_hangs_are_retried_with_backoff_and_one_upload(tmp_path: Path) -> None:
    faults = {"auth": ["html", "garbage", 503, "drop"], "upload": [503, 429], "status": ["garbage", "hang", "html"]}
    async with env(tmp_path, faults=faults, process_time=0.05) as (server, store):
        run = Running(store, write_config(tmp_path, server.url, timeout="500ms"), Clock())
        try:
            await run.until(lambda r: "upstream" in run.state.alarms)
            assert "502 Bad Gateway" in run.state.alarms["upstream"] or "not a JSON" in run.state.alarms["upstream"] \
                or "HTTP 503" in run.state.alarms["upstream"] or "upstream" in run.state.alarms
            rec = await run.until(status_is("loaded"))
            await run.until(lambda r: "upstream" not in run.state.alarms)
        finally:
            await run.stop()
        assert len(server.uploads) == 1 and server.calls["upload"] == 3
        assert run.state.failures >= 9 and rec["attempts"] == 1


async def test_wrong_password_is_a_bounded_retry_with_a_reason_and_no_secret(tmp_path: Path) -> None:
    async with env(tmp_path, password="another") as (server, store):
        run = Running(store, write_config(tmp_path, server.url), Clock())
        try:
            await run.until(lambda r: "upstream" in run.state.alarms)
            t0, n0 = time.monotonic(), server.calls["auth"]
            await asyncio.sleep(1.0)
            rate = (server.calls["auth"] - n0) / (time.monotonic() - t0)
        finally:
            await run.stop()
        alarm = run.state.alarms["upstream"]
        assert "login refused (HTTP 401)" in alarm and "Неверный логин или пароль" in alarm
        assert "S3cret" not in alarm and "S3cret" not in str(run.state.as_dict())
        assert rate < 25   # retry_min 50 ms, backoff capped at 200 ms: never a hot loop
        assert server.uploads == [] and await run.record() == {}  # nothing recorded as being sent


async def test_upload_without_a_clear_answer_is_ambiguous_never_resent(tmp_path: Path) -> None:
    async with env(tmp_path, faults={"upload": ["hang"]}) as (server, store):
        run = Running(store, write_config(tmp_path, server.url, timeout="300ms"), Clock())
        try:
            rec = await run.until(status_is("ambiguous"))
            await asyncio.sleep(0.5)
        finally:
            await run.stop()
        assert "no answer within" in rec["reason"] and server.calls["upload"] == 1


async def test_expired_token_logs_in_again(tmp_path: Path) -> None:
    async with env(tmp_path, token_ttl=0.05, process_time=0.5) as (server, store):
        run = Running(store, write_config(tmp_path, server.url), Clock())
        try:
            await run.until(status_is("loaded"))
        finally:
            await run.stop()
        assert server.calls["auth"] >= 2 and len(server.uploads) == 1


async def test_operator_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with env(tmp_path, faults={"upload": ["hang"]}) as (server, store):
        cfg_path = write_config(tmp_path, server.url, timeout="300ms")
        run = Running(store, cfg_path, Clock())
        try:
            await run.until(status_is("ambiguous"))
        finally:
            await run.stop()
    args = ["sioi", "--config", str(cfg_path), "--state-dir", str(tmp_path)]
    assert await asyncio.to_thread(cli.main, args) == 0
    out = capsys.readouterr().out
    assert "2024-05-01 ambiguous" in out and "no answer within" in out
    assert await asyncio.to_thread(cli.main, args + ["--accept", "2024-05-01"]) == 0
    assert await asyncio.to_thread(cli.main, args + ["--retry", "2024-05-01"]) == 1
    assert "cannot be corrected" in capsys.readouterr().err
    assert await asyncio.to_thread(cli.main, args + ["--retry", "2024-5-1"]) == 1
    assert "is not a daily period (YYYY-MM-DD)" in capsys.readouterr().err


async def test_an_operator_accept_while_the_daemon_rebuilds_wins_and_nothing_is_sent(tmp_path: Path,
                                                                                     caplog) -> None:
    caplog.set_level(logging.INFO, logger="pollerd.push.sioi")
    async with env(tmp_path, reject_next=[["bad row"]]) as (server, store):
        clock = Clock()
        run = Running(store, write_config(tmp_path, server.url), clock)
        try:
            await run.until(status_is("failed"))
            real_login = run.sink.client.ensure_login

            async def login_while_the_operator_accepts() -> None:
                # Between the daemon reading the record and writing "uploading", `pollerd sioi --accept`.
                await operator_set(store, run.cfg.sinks[0], PERIOD, "accept", time.time())
                await real_login()
            run.sink.client.ensure_login = login_while_the_operator_accepts  # type: ignore[method-assign]
            await store.write([Reading("m3", "A+", "daily", P_START, 5.0, "Wh")])  # the document changes
            await store.flush()
            clock.offset += RECHECK + 1
            await run.until(lambda r: "changed by an operator" in caplog.text)
            await asyncio.sleep(0.3)  # a few more turns of the sink
            rec = await run.record()
        finally:
            await run.stop()
        assert rec["status"] == "accepted" and len(server.uploads) == 1


async def test_an_operator_action_racing_the_daemon_is_refused_not_overwriting(tmp_path: Path) -> None:
    async with env(tmp_path) as (server, store):
        cfg = load_config(write_config(tmp_path, server.url), environ={}).sinks[0]
        key = state_key("sioi", PERIOD)
        await store.set_state(key, {"period": PERIOD, "status": "failed", "errors": ["bad row"]})

        class DaemonFirst:  # the daemon writes between the operator's read and write
            async def get_state(self, k: str):  # type: ignore[no-untyped-def]
                value = await store.get_state(k)
                await store.set_state(k, {**value, "status": "queued", "job_id": "J-9"})
                return value

            def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                return getattr(store, name)
        with pytest.raises(SinkError, match="changed while you acted"):
            await operator_set(DaemonFirst(), cfg, PERIOD, "accept", time.time())  # type: ignore[arg-type]
        assert (await store.get_state(key))["job_id"] == "J-9"
        await store.set_state(key, {"period": PERIOD, "status": "uploading"})
        with pytest.raises(SinkError, match="being uploaded right now"):
            await operator_set(store, cfg, PERIOD, "retry", time.time())


# ---- config ----------------------------------------------------------------------------------------------------

def config_error(tmp_path: Path, **kw: str) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        load_config(write_config(tmp_path, "http://127.0.0.1:1", **kw), environ={})
    return ei.value


def test_option_keys_match(tmp_path: Path) -> None:
    assert builtin_sinks()["sioi"].option_keys == sioi_options.KEYS
    cfg = load_config(write_config(tmp_path, "https://sioi.example/"), environ={})
    o = cfg.sinks[0].options
    assert o.form_code == "F-DAILY" and o.period.kind == "daily" and o.job_timeout == 7200


def test_missing_template_file_is_a_config_error(tmp_path: Path) -> None:
    p = write_config(tmp_path, "http://127.0.0.1:1")
    (tmp_path / "tpl.xml").unlink()
    with pytest.raises(ConfigError) as ei:
        load_config(p, environ={})
    assert ei.value.key == "sinks[0].template" and ei.value.line == 11 and "does not exist" in str(ei.value)


def test_unknown_template_field_names_the_template_line(tmp_path: Path) -> None:
    err = config_error(tmp_path, template=TEMPLATE.replace("{unit}", "{units}"))
    assert err.key == "sinks[0].template" and "tpl.xml:6: unknown field {units}" in str(err)


def test_reading_field_outside_its_block(tmp_path: Path) -> None:
    err = config_error(tmp_path, template=TEMPLATE.replace('rows="{count}"', 'rows="{value}"'))
    assert "tpl.xml:2: field {value} is only known inside a '<!-- for reading -->' block" in str(err)


def test_template_not_well_formed_once_filled(tmp_path: Path) -> None:
    err = config_error(tmp_path, template=TEMPLATE.replace("</object>", "</objekt>"))
    assert "tpl.xml:8: not well-formed XML once filled in: mismatched tag" in str(err)


def test_missing_credentials(tmp_path: Path) -> None:
    p = write_config(tmp_path, "http://127.0.0.1:1")
    p.write_text(p.read_text().replace('password = "S3cret-pass-word"\n', ""))
    with pytest.raises(ConfigError) as ei:
        load_config(p, environ={})
    assert "missing required key 'password' for a sioi sink (or password_file, password_credential)" in str(ei.value)
    p.write_text(p.read_text().replace('username = "gw@example.org"\n', ""))
    with pytest.raises(ConfigError, match="missing required key 'username' for a sioi sink"):
        load_config(p, environ={})


def test_bad_url_and_values(tmp_path: Path) -> None:
    p = write_config(tmp_path, "ftp://sioi.example/")
    with pytest.raises(ConfigError, match=r"sinks\[0\].url: 'ftp://sioi.example/' is not an http"):
        load_config(p, environ={})
    err = config_error(tmp_path, job_timeout="3h")
    assert err.key == "sinks[0].job_timeout" and "at most 2h" in str(err)
    for extra, key in (('period = "weekly"\n', "period"), ('upload_path = "api/x"\n', "upload_path"),
                       ('status_loaded = ["failed"]\n', "status_loaded"), ('batch_size = 5\n', "batch_size"),
                       ('encoding = "klingon"\n', "encoding"), ('catch_up = 0\n', "catch_up")):
        e = config_error(tmp_path, extra=extra)
        assert e.key == f"sinks[0].{key}", (extra, str(e))


def test_unknown_archive_is_a_config_error(tmp_path: Path) -> None:
    # archives = ["dayly"] was accepted: the filter matched no reading and every document came out empty.
    err = config_error(tmp_path, extra='archives = ["daily", "dayly"]\n')
    assert (err.key, err.line) == ("sinks[0].archives[1]", 18)
    assert "'dayly' is not an archive" in err.problem and "did you mean 'daily'" in err.problem


_METER = '\n[[meters]]\nname = "{name}"\nprotocol = "mercury230"\nip_address = "10.0.0.1"\nport = 4001\n' \
         'connection_address = {address}\n'


def test_unknown_meter_is_a_config_error(tmp_path: Path) -> None:
    # meters = ["m-1"] for a meter named "m1" was accepted: each document waited data_wait (6 h) for readings
    # that could never come, then went without that meter.
    extra = 'meters = ["m1", "m-2"]\n' + _METER.format(name="m1", address=1) + _METER.format(name="m2", address=2)
    err = config_error(tmp_path, extra=extra)
    assert (err.key, err.line) == ("sinks[0].meters[1]", 18)
    assert "no meter named 'm-2'" in err.problem and "did you mean 'm2'" in err.problem
    p = write_config(tmp_path, "http://127.0.0.1:1", extra=extra.replace('"m-2"', '"m2"'))
    assert load_config(p, environ={}).sinks[0].options.meters == ("m1", "m2")


# ---- template ------------------------------------------------------------------------------------------------

def test_template_blocks_and_formats() -> None:
    t = Template.parse("<a n='{count}'>{{x}}<!-- for reading --><r m=\"{meter}\">{value:.2f}</r><!-- end --></a>",
                       "t")
    rows = [{"meter": "<&>", "value": 1.0}, {"meter": "b", "value": 2.5}]
    assert t.render({"count": 2}, rows) == ("<a n='2'>{x}<r m=\"&lt;&amp;&gt;\">1.00</r>"
                                            "<r m=\"b\">2.50</r></a>")
    for bad, msg in (("<!-- for reading --><!-- for meter --><!-- end --><!-- end -->", "cannot be inside"),
                     ("<!-- end -->", "without"), ("<!-- for reading -->", "never closed"),
                     ("<!-- for row --><!-- end -->", "unknown block"), ("{value:zz}", "only known inside"),
                     ("<!-- for reading -->{value:zz}<!-- end -->", "bad format"), ("a } b", "lone")):
        with pytest.raises(TemplateError, match=msg):
            Template.parse(bad, "t")
    check_well_formed(Template.parse((HERE.parent / "config" / "sioi-template.xml").read_text("utf-8"), "x"),
                      "utf-8")


async def test_a_job_queued_late_is_followed_after_its_period_left_the_window(tmp_path: Path) -> None:
    # catch_up = 1 and at = 23:30: the document of 05-01 is queued at 05-02 23:31 and half an hour later the
    # window holds only 05-02. Before: the job was never asked about again and stayed "queued" for ever.
    async with env(tmp_path, process_time=1.0) as (server, store):
        cfg = write_config(tmp_path, server.url)
        cfg.write_text(cfg.read_text().replace('at = "01:00"', 'at = "23:30"\ncatch_up = 1'))
        clock = Clock(start=P_END + 23.5 * 3600 + 60)
        run = Running(store, cfg, clock)
        try:
            await run.until(status_is("queued"))
            clock.offset += 1800                # past midnight: 05-01 is out of the window
            rec = await run.until(status_is("loaded"))
        finally:
            await run.stop()
        assert len(server.uploads) == 1 and rec["job_id"] == server.uploads[0].job_id


async def test_a_job_queued_out_of_the_window_is_followed_after_a_restart(tmp_path: Path) -> None:
    async with env(tmp_path, process_time=1.0) as (server, store):
        cfg = write_config(tmp_path, server.url)
        cfg.write_text(cfg.read_text().replace('at = "01:00"', 'at = "23:30"\ncatch_up = 1'))
        clock = Clock(start=P_END + 23.5 * 3600 + 60)
        run = Running(store, cfg, clock)
        await run.until(status_is("queued"))
        await run.stop()
        clock.offset += 1800
        # Another sink whose name extends this one's must not be taken for one of its periods.
        await store.set_state("sioi:sioi:x:2024-05-01", {"period": "2024-05-01", "status": "uploading"})
        run = Running(store, cfg, clock)
        try:
            rec = await run.until(status_is("loaded"))
        finally:
            await run.stop()
        assert len(server.uploads) == 1 and rec["job_id"] == server.uploads[0].job_id
        assert (await store.get_state("sioi:sioi:x:2024-05-01"))["status"] == "uploading"


async def test_an_operator_retry_of_a_period_out_of_the_window_is_sent(tmp_path: Path) -> None:
    # catch_up = 1: once 05-02 is due, 05-01 is out of the window. Before: `pollerd sioi --retry 2024-05-01`
    # was recorded and never acted on.
    async with env(tmp_path) as (server, store):
        cfg = write_config(tmp_path, server.url)
        cfg.write_text(cfg.read_text().replace('at = "01:00"', 'at = "01:00"\ncatch_up = 1'))
        clock = Clock()
        run = Running(store, cfg, clock)
        try:
            await run.until(status_is("loaded"))
            clock.offset += 86400                           # a day later: the window holds 05-02 only
            await run.until(lambda r: len(server.uploads) == 2)  # the next day's document
            await operator_set(store, run.cfg.sinks[0], PERIOD, "retry", time.time(), force=True)
            rec = await run.until(lambda r: r.get("status") == "loaded" and r.get("attempts") == 2)
        finally:
            await run.stop()
        assert len(server.uploads) == 3 and rec["job_id"] == server.uploads[2].job_id


async def test_a_store_failure_at_start_is_retried_not_raised(tmp_path: Path) -> None:
    # Before: _recover() ran outside the retry loop, so its StoreError ended run() and, in the daemon's task
    # group, the whole daemon.
    async with env(tmp_path) as (server, store):
        real = store.get_state
        fails = [2]

        async def get_state(key: str):  # type: ignore[no-untyped-def]
            if fails[0] and key == "sioi:sioi:since":     # the sink's first read at start
                fails[0] -= 1
                raise StoreError(f"read state {key!r}: database is locked")
            return await real(key)

        store.get_state = get_state  # type: ignore[method-assign]
        run = Running(store, write_config(tmp_path, server.url), Clock())
        try:
            await run.until(status_is("loaded"))
        finally:
            await run.stop()
        assert fails == [0] and len(server.uploads) == 1 and run.state.failures == 2


def test_secrets_are_scrubbed_also_when_echoed_url_encoded() -> None:
    # auth_format = "form" sends the password form-encoded; a service echoing its request body must not
    # leak it in that spelling either.
    from types import SimpleNamespace

    from pollerd.push.sioi import SioiClient
    from pollerd.push.sioi.options import SioiOptions
    pw = "S3cret pass&word$"
    sink = SimpleNamespace(url="http://127.0.0.1:1", password=SimpleNamespace(reveal=lambda: pw), name="s")
    opts = SioiOptions(form_code="F", template=(), template_path="t.xml", period="daily")  # type: ignore[arg-type]
    client = SioiClient(sink, opts)  # type: ignore[arg-type]
    body = b"bad request: login=gw%40example.org&password=S3cret+pass%26word%24"
    text = client._describe(400, body, "text/plain")
    assert "S3cret" not in text and "***" in text
