"""Push-client interface: entry-point plugins, sink option keys and sink config errors at startup."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pollerd.config import load_config
from pollerd.errors import ConfigError
from pollerd.push import make_client
from pollerd.push.mqtt_options import MqttOptions, parse_template, topic_escape
from pollerd.push.registry import SinkRegistry, builtin_sinks

HERE = Path(__file__).parent
EXAMPLE = HERE.parent / "config" / "pollerd.example.toml"

PLUGIN_SRC = '''
from dataclasses import dataclass
from pollerd.errors import OptionError

@dataclass(frozen=True)
class Opts:
    topic: str

class Client:
    sent = []
    def __init__(self, sink, gateway):
        self.sink, self.gateway = sink, gateway
    async def connect(self):
        pass
    async def send(self, batch):
        Client.sent.append((self.sink.options.topic, list(batch)))
    async def close(self):
        pass

class FakeSink:
    config_keys = frozenset({"topic"})
    common_keys = frozenset({"url", "batch_size", "linger", "timeout"})
    url_schemes = ("fake",)
    def parse_options(self, raw, base_dir):
        topic = raw.get("topic", "t")
        if not isinstance(topic, str) or not topic:
            raise OptionError("topic must be a non-empty string", ("topic",))
        return Opts(topic)
    def __call__(self, sink, gateway):
        return Client(sink, gateway)

fake_sink = FakeSink()
not_a_plugin = 42
'''


@pytest.fixture
def registries() -> SinkRegistry:
    """The registry the test passes to the loader and make_client; plugins are added to it alone."""
    return builtin_sinks()


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real installed distribution on sys.path: a module and a dist-info with entry_points.txt."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "pollerd_fakesink.py").write_text(PLUGIN_SRC, encoding="utf-8")
    info = site / "pollerd_fakesink-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pollerd-fakesink\nVersion: 1.0\n",
                                   encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "[pollerd.push]\n"
        "fake = pollerd_fakesink:fake_sink\n"
        "broken = pollerd_fakesink_missing:thing\n"
        "notplugin = pollerd_fakesink:not_a_plugin\n"
        "http = pollerd_fakesink:fake_sink\n",          # cannot replace a built-in type
        encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "pollerd_fakesink", raising=False)
    return site


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pollerd.toml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


FAKE = """\
[[sinks]]
name = "f"
type = "fake"
url = "fake://127.0.0.1:9"
topic = "here"
batch_size = 7
"""


def test_plugin_is_loaded_from_entry_points_and_used(tmp_path, fake_dist, registries):
    assert "fake" not in registries                   # nothing registered until a config asks for it
    cfg = load_config(write(tmp_path, FAKE), environ={}, sinks=registries)
    sink = cfg.sinks[0]
    assert sink.type == "fake" and sink.batch_size == 7 and sink.options.topic == "here"
    client = make_client(sink, "gw1", registries)
    assert type(client).__name__ == "Client" and client.gateway == "gw1"
    assert registries["http"].keys != registries["fake"].keys    # built-in http kept
    assert registries["http"] == builtin_sinks()["http"]
    # The plugin went into the registry passed in, nowhere else.
    assert "fake" not in builtin_sinks()


def test_plugin_spec_is_visible_only_in_the_registry_passed_in(tmp_path, fake_dist, registries):
    load_config(write(tmp_path, FAKE), environ={}, sinks=registries)
    other = builtin_sinks()
    assert "fake" in registries and "fake" not in other
    # A registry that never looked at the entry points refuses the type (by loading them itself when asked).
    load_config(write(tmp_path, FAKE), environ={}, sinks=other)
    assert "fake" in other and registries["fake"] is not other["fake"]


def test_plugin_option_error_names_line_and_key(tmp_path, fake_dist, registries):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, FAKE.replace('topic = "here"', "topic = 5")), environ={}, sinks=registries)
    assert ei.value.line == 5 and "sinks[0].topic" in str(ei.value)


def test_plugin_common_keys_and_scheme_apply(tmp_path, fake_dist, registries):
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.token.*does not apply to a fake sink"):
        load_config(write(tmp_path, FAKE + 'token = "x"\n'), environ={}, sinks=registries)
    with pytest.raises(ConfigError, match=r"is not an fake:// URL"):
        load_config(write(tmp_path, FAKE.replace("fake://", "http://")), environ={}, sinks=registries)


@pytest.mark.parametrize("kind, why", [("broken", "failed to load: ModuleNotFoundError"),
                                       ("notplugin", "is not callable")])
def test_broken_plugin_is_a_config_error_where_used(tmp_path, fake_dist, registries, kind, why):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, FAKE.replace('"fake"', f'"{kind}"')), environ={}, sinks=registries)
    assert ei.value.line == 3 and "sinks[0].type" in str(ei.value) and why in str(ei.value)
    # ... and an unrelated config still loads with the broken plugin installed
    assert load_config(write(tmp_path, FAKE), environ={}, sinks=registries).sinks[0].type == "fake"


def test_unknown_type_without_plugin(tmp_path, registries):
    with pytest.raises(ConfigError, match=r"'kafka' is not one of .*http.*mqtt"):
        load_config(write(tmp_path, FAKE.replace('"fake"', '"kafka"')), environ={}, sinks=registries)


# ---- the example config shows every option key ----------------------------------------------------------------

def test_example_config_shows_every_sink_option_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    sinks = builtin_sinks()
    for kind in sinks:
        for key in sinks[kind].option_keys:
            assert re.search(rf"^#? ?{key} =", text, re.MULTILINE), f"{kind}: {key}"


def test_example_mqtt_sink_loads_when_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("# [[sinks]]\n# name = \"broker\"")
    block = []
    for line in text[start:].splitlines():
        if not line.startswith("# "):
            break
        if line.startswith("# ca_file, client_cert"):
            continue
        block.append(line[2:])
    body = text[:start] + "\n".join(block).replace("mqtts://", "mqtt://").replace(
        'password_credential = "broker-pw"', 'password = "pw"') + "\n"
    conf = tmp_path / "config"
    shutil.copytree(EXAMPLE.parent, conf)       # files the example names (templates) sit beside it
    (conf / "pollerd.toml").write_text(body, encoding="utf-8")
    cfg = load_config(conf / "pollerd.toml", environ={})
    mq = [s for s in cfg.sinks if s.type == "mqtt"]
    assert len(mq) == 1
    opts = mq[0].options
    assert isinstance(opts, MqttOptions) and opts.qos == 1 and opts.payload == "reading"
    assert mq[0].linger == 0.5 and mq[0].username == "gateway-7"


# ---- MQTT options: mistakes fail at config load ---------------------------------------------------------------

MQTT = """\
[[sinks]]
name = "b"
type = "mqtt"
url = "mqtt://127.0.0.1:1883"
"""


@pytest.mark.parametrize("extra, key, text", [
    ('topic = "p/{gateway}/{meeter}"', "topic", "unknown field {meeter}"),
    ('topic = "p/{meter:>5}"', "topic", "takes no format spec"),
    ('topic = "p/+/{meter}"', "topic", "wildcards"),
    ('topic = "p/{meter"', "topic", "not a valid template"),
    ('topic = "p/all"', "topic", "has no {meter} field"),
    ('payload = "lines"', "payload", "payload must be one of"),
    ("qos = 2", "qos", "qos must be 1"),
    ("qos = true", "qos", "qos must be 1"),
    ("keepalive = 1", "keepalive", "keepalive must be"),
    ("retain = 1", "retain", "true or false"),
    ('status_topic = "s/{meter}"', "status_topic", "unknown field {meter}"),
    ('token = "x"', "token", "does not apply to a mqtt sink"),
    ('headers = { "X" = "y" }', "headers", "does not apply to a mqtt sink"),
    ('username = "u"', "username", "needs 'password'"),
])
def test_mqtt_option_errors(tmp_path, extra, key, text):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, MQTT + extra + "\n"), environ={})
    assert ei.value.line == 5, str(ei.value)
    assert f"sinks[0].{key}" in str(ei.value) and text in str(ei.value)


def test_mqtt_url_scheme(tmp_path):
    with pytest.raises(ConfigError, match="is not an mqtt:// or mqtts:// URL"):
        load_config(write(tmp_path, MQTT.replace("mqtt://", "tcp://")), environ={})


def test_mqtt_batch_payload_may_use_one_topic(tmp_path):
    cfg = load_config(write(tmp_path, MQTT + 'payload = "batch"\ntopic = "p/{gateway}/all"\n'
                            'status_topic = ""\n'), environ={})
    opts = cfg.sinks[0].options
    assert opts.payload == "batch" and opts.status_topic is None
    assert opts.topic.render({"gateway": "g"}) == "p/g/all"


def test_mqtt_without_aiomqtt_is_a_clear_config_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiomqtt" else real(name, *a))
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, MQTT), environ={})
    assert "sinks[0].type" in str(ei.value) and "aiomqtt, which is not installed" in str(ei.value)


def test_topic_escaping_is_reversible():
    from urllib.parse import unquote
    for value in ("A+", "R-.T1", "a/b", "50%#", "plain"):
        esc = topic_escape(value)
        assert not set("+#/") & set(esc) and unquote(esc) == value
    t = parse_template("pollerd/{gateway}/{meter}/{channel}", "topic", ("gateway", "meter", "channel"))
    assert t.render({"gateway": "gw", "meter": "m1", "channel": "A+.T1"}) == "pollerd/gw/m1/A%2B.T1"


# ---- common keys new with this work ---------------------------------------------------------------------------

HTTP = """\
[[sinks]]
name = "up"
type = "http"
url = "https://127.0.0.1/in"
"""


def test_linger_gzip_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path, HTTP), environ={})
    s = cfg.sinks[0]
    assert s.linger == 0.5 and s.options.gzip is False and s.client_cert is None
    cfg = load_config(write(tmp_path, HTTP + 'linger = "0"\ngzip = true\n'), environ={})
    assert cfg.sinks[0].linger == 0.0 and cfg.sinks[0].options.gzip is True
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, HTTP + 'gzip = "yes"\n'), environ={})
    assert ei.value.line == 5 and "sinks[0].gzip" in str(ei.value)


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl binary not available to make a test certificate")
    d = tmp_path_factory.mktemp("cert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(d / "c.key"), "-out", str(d / "c.crt"), "-days", "1",
                    "-subj", "/CN=gw"], check=True, capture_output=True, timeout=30)
    return d / "c.crt", d / "c.key"


def test_client_cert_is_checked_at_load(tmp_path, cert_pair):
    crt, key = cert_pair
    cfg = load_config(write(tmp_path, HTTP + f'client_cert = "{crt}"\nclient_key = "{key}"\n'), environ={})
    assert cfg.sinks[0].client_cert == str(crt)
    with pytest.raises(ConfigError) as ei:       # a certificate without its key
        load_config(write(tmp_path, HTTP + f'client_cert = "{crt}"\n'), environ={})
    assert ei.value.line == 5 and "sinks[0].client_cert" in str(ei.value)
    with pytest.raises(ConfigError, match="client_key needs client_cert"):
        load_config(write(tmp_path, HTTP + f'client_key = "{key}"\n'), environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(write(tmp_path, HTTP + 'client_cert = "nope.pem"\n'), environ={})
