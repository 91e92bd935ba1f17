"""The two extension points other modules plug into: type-specific sink keys and cloud (line-less) meters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pollerd.catalog import CATALOG, ProtocolSpec, Ref
from pollerd.commands.summary import summary
from pollerd.config import load_config
from pollerd.errors import ConfigError, OptionError
from pollerd.push.registry import SinkSpec, builtin_sinks


@dataclass(frozen=True)
class _TopicOptions:
    topic: str


def parse_topic_options(raw: dict, base_dir: str) -> _TopicOptions:
    topic = raw.get("topic", "t/{meter}")
    if not isinstance(topic, str) or "{meter}" not in topic:
        raise OptionError("the topic must contain {meter}", ("topic",))
    return _TopicOptions(topic)


@pytest.fixture
def topic_sink() -> dict[str, object]:
    """A registry holding one more sink type, passed to the loader: nothing global changes."""
    sinks = builtin_sinks()
    sinks.add(SinkSpec("topicsink", keys=frozenset({"url", "batch_size"}), factory=None,
                       option_keys=frozenset({"topic"}), options=parse_topic_options,
                       url_schemes=("mqtt", "mqtts")))
    return {"sinks": sinks}


@pytest.fixture
def cloud() -> dict[str, object]:
    """A catalog holding one more (cloud) protocol, passed to the loader."""
    spec = ProtocolSpec(CATALOG["saures"].protocol, read_kinds=("hourly", "daily"), default_read=("hourly",),
                        driver=Ref("pollerd.drivers.saures", "SauresDriver"), cloud_keys=("email", "password"),
                        waiting_time=30.0)
    return {"catalog": {**CATALOG, "testcloud": spec}}


def load(tmp_path: Path, text: str, **kw: object):  # type: ignore[no-untyped-def]
    p = tmp_path / "pollerd.toml"
    p.write_text(text, encoding="utf-8")
    return load_config(p, environ={}, **kw)  # type: ignore[arg-type]


SINK = """\
[[sinks]]
name = "up"
type = "topicsink"
url = "mqtt://127.0.0.1:1883"
"""


def test_sink_options_are_parsed_by_the_type_parser(tmp_path: Path, topic_sink: dict[str, object]) -> None:
    cfg = load(tmp_path, SINK + 'topic = "a/{meter}"\nbatch_size = 10\n', **topic_sink)
    assert cfg.sinks[0].options == _TopicOptions("a/{meter}")
    assert cfg.sinks[0].batch_size == 10


def test_sink_option_error_names_line_and_key(tmp_path: Path, topic_sink: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, SINK + 'topic = "nothing"\n', **topic_sink)
    assert ei.value.line == 5
    assert "sinks[0].topic" in str(ei.value) and "{meter}" in str(ei.value)


def test_sink_url_scheme_is_per_type(tmp_path: Path, topic_sink: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, SINK.replace("mqtt://", "http://"), **topic_sink)
    assert ei.value.line == 4 and "is not an mqtt:// or mqtts:// URL" in str(ei.value)
    with pytest.raises(ConfigError, match="is not an http:// or https:// URL"):
        load(tmp_path, SINK.replace("topicsink", "http"), **topic_sink)


def test_type_specific_key_on_another_sink_type_is_unknown(tmp_path: Path, topic_sink: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="unknown key 'topic'"):
        load(tmp_path, SINK.replace("topicsink", "http").replace("mqtt", "http") + 'topic = "a/{meter}"\n', **topic_sink)


CLOUD = """\
[[meters]]
name = "acct"
protocol = "testcloud"
url = "https://127.0.0.1:8443/api"
email = "ops@example.org"
password = "free text, any length"
interval_time = "1h"
"""


def test_cloud_meter_needs_no_line(tmp_path: Path, cloud: dict[str, object]) -> None:
    cfg = load(tmp_path, CLOUD, **cloud)
    m = cfg.meters[0]
    assert m.is_cloud and m.line == "" and m.url == "https://127.0.0.1:8443/api"
    assert m.email == "ops@example.org" and m.password.reveal() == "free text, any length"
    assert m.read == ("hourly",)
    text = summary(cfg)
    assert "acct: testcloud https://127.0.0.1:8443/api as ops@example.org" in text
    assert "free text" not in text


def test_cloud_meter_rejects_bus_keys(tmp_path: Path, cloud: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, CLOUD + 'line = "rs485"\n', **cloud)
    assert "meters[0].line" in str(ei.value) and "cloud source" in str(ei.value)


def test_cloud_meter_requires_its_credentials(tmp_path: Path, cloud: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"missing required key 'password' for testcloud \(or password_file"):
        load(tmp_path, CLOUD.replace('password = "free text, any length"\n', ""), **cloud)


def test_cloud_keys_on_a_field_meter_are_errors(tmp_path: Path) -> None:
    text = """\
[[meters]]
name = "m1"
protocol = "mercury230"
ip_address = "127.0.0.1"
port = 4001
connection_address = 1
url = "https://127.0.0.1/"
"""
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, text)
    assert ei.value.line == 7 and "applies to cloud sources" in str(ei.value)


def test_every_protocol_has_a_driver_that_imports() -> None:
    """The catalog holds "module:Class" references imported on first use: each must resolve."""
    from pollerd.catalog import Protocol
    from pollerd.drivers.registry import driver_class
    assert set(CATALOG) == set(Protocol)
    for protocol in Protocol:
        cls = driver_class(str(protocol))
        assert isinstance(cls, type) and callable(getattr(cls, "poll", None)), protocol


# One valid entry per protocol; every protocol-specific key is then given values of the wrong TOML type.
_PROTOCOL_METERS = {
    "mercury230": 'protocol = "mercury230"\nip_address = "10.0.0.1"\nport = 4001\nconnection_address = 5\n',
    "modbus": 'protocol = "modbus"\nip_address = "10.0.0.1"\nport = 502\nconnection_address = 5\n'
              'registers = [{ name = "P", address = 0, type = "float32" }]\n',
    "iec62056": 'protocol = "iec62056"\nip_address = "10.0.0.1"\nport = 4001\nconnection_address = "123"\n',
    "rstech": 'protocol = "rstech"\nurl = "https://x.example"\nemail = "a@b"\npassword = "pw-pw-pw"\n',
    "webmeters": 'protocol = "webmeters"\nurl = "https://x.example"\napi_key = "key-key-key"\n',
    "saures": 'protocol = "saures"\nurl = "https://x.example"\nemail = "a@b"\npassword = "pw-pw-pw"\n',
}
_LIST_KEYS = {"iec_addresses", "registers", "stations"}   # these take a list: only a table is the wrong type
_OPTION_CASES = [(proto, key, value) for proto in _PROTOCOL_METERS for key in sorted(CATALOG[proto].option_keys)
                 for value in ("[]", '["x"]', "{ a = 1 }") if not (key in _LIST_KEYS and value.startswith("["))]


@pytest.mark.parametrize(("proto", "key", "value"), _OPTION_CASES)
def test_protocol_option_of_the_wrong_type_is_a_config_error(tmp_path: Path, proto: str, key: str,
                                                             value: str) -> None:
    # iec_profile, volume_unit and energy_unit were looked up in a dict/set: a list or a table raised
    # "TypeError: unhashable type" out of `pollerd check` instead of naming the key.
    base = "".join(ln + "\n" for ln in _PROTOCOL_METERS[proto].splitlines() if not ln.startswith(key + " "))
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f'[[meters]]\nname = "m"\n{base}{key} = {value}\n')
    assert info.value.key is not None and info.value.key.startswith(f"meters[0].{key}")
    assert info.value.line is not None


@pytest.mark.parametrize(("kind", "url", "typo", "meant"), [
    ("mqtt", "mqtt://127.0.0.1", "topik", "topic"),      # suggested 'token', which an mqtt sink refuses
    ("http", "https://x.example", "gzipp", "gzip"),      # no suggestion: type-specific keys were not offered
    ("http", "https://x.example", "hedaers", "headers"),
])
def test_unknown_sink_key_suggests_a_key_of_that_sink_type(tmp_path: Path, kind: str, url: str, typo: str,
                                                           meant: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f'[[sinks]]\nname = "s"\ntype = "{kind}"\nurl = "{url}"\n{typo} = "x"\n')
    assert info.value.problem == f"unknown key {typo!r} (did you mean {meant!r}?)"
    assert info.value.line == 5


@pytest.mark.parametrize(("meter", "typo", "meant"), [
    ('protocol = "mercury230"\nip_address = "10.0.0.1"\nport = 4001\nconnection_address = 5\n',
     "clock_corection", "clock_correction"),
    ('protocol = "iec62056"\nip_address = "10.0.0.1"\nport = 4001\nconnection_address = "1"\n',
     "iec_profil", "iec_profile"),
])
def test_unknown_meter_key_suggests_a_key_of_its_protocol(tmp_path: Path, meter: str, typo: str,
                                                          meant: str) -> None:
    # The protocol's own keys were not among the candidates: a typo in one got no suggestion at all.
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f'[[meters]]\nname = "m"\n{meter}{typo} = "x"\n')
    assert info.value.problem == f"unknown key {typo!r} (did you mean {meant!r}?)"
    assert info.value.line == 7
