"""The extension catalogs: one complete ProtocolSpec per Protocol, one SinkSpec per sink type, known_keys()."""

from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

from pollerd.catalog import CATALOG, Protocol, ProtocolSpec
from pollerd.config import known_keys
from pollerd.config.load import _API, _GATEWAY, _LINE, _METER, _STORE
from pollerd.push.registry import BUILTIN, Ref, SinkSpec, builtin_sinks


def test_every_protocol_has_exactly_one_spec_under_its_own_key() -> None:
    assert list(CATALOG) == list(Protocol)            # one entry each, no extra, one key style (the enum)
    for key, spec in CATALOG.items():
        assert isinstance(key, Protocol) and isinstance(spec, ProtocolSpec)
        assert spec.protocol is key


@pytest.mark.parametrize("protocol", list(Protocol))
def test_spec_is_complete_and_every_reference_resolves(protocol: Protocol) -> None:
    spec = CATALOG[protocol]
    assert spec.read_kinds and set(spec.default_read) <= set(spec.read_kinds)
    cls = spec.driver.load()
    assert inspect.isclass(cls) and callable(getattr(cls, "poll", None))
    # Protocol keys come with their parser, and a parser with keys.
    assert (spec.options is None) == (not spec.option_keys)
    if spec.options is not None:
        assert callable(spec.options.load())
    if spec.address is not None:
        assert callable(spec.address.load())
    lo, hi = spec.address_range
    assert 0 <= lo <= hi
    if spec.is_cloud:
        assert spec.cloud_keys and spec.address is None and spec.password_bytes is None
    for tool, entry in ((spec.simulator, "main"), (spec.decoder, "run")):
        if tool is not None:
            module = importlib.import_module(tool.module)
            assert callable(module.configure_parser) and callable(getattr(module, entry))
            module.configure_parser(argparse.ArgumentParser())


def test_cloud_protocols_need_no_bus_and_take_a_longer_wait() -> None:
    clouds = {p for p, s in CATALOG.items() if s.is_cloud}
    assert clouds == {Protocol.RSTECH, Protocol.WEBMETERS, Protocol.SAURES}
    assert all(CATALOG[p].waiting_time for p in clouds)


def test_sink_registry_has_one_spec_per_type_and_kinds() -> None:
    assert [s.type for s in BUILTIN] == ["http", "mqtt", "sioi"]
    sinks = builtin_sinks()
    assert {t: sinks.kind(t) for t in sinks} == {"http": "batch", "mqtt": "batch", "sioi": "document"}
    for t in sinks:
        spec = sinks[t]
        assert (spec.factory is None) == (spec.kind == "document") == (spec.runner is not None)
        assert not spec.option_keys & spec.keys      # own keys never shadow common ones
        for ref in (spec.factory, spec.options, spec.runner):
            if ref is not None:                      # every built-in reference names something that imports
                assert isinstance(ref, Ref) and callable(ref.resolve()), ref


def test_a_spec_added_to_one_registry_is_invisible_to_others() -> None:
    a, b = builtin_sinks(), builtin_sinks()
    a.add(SinkSpec("kafka", keys=frozenset({"url"}), factory=None))
    assert "kafka" in a and "kafka" not in b and "kafka" not in builtin_sinks()
    a.add(SinkSpec("http", keys=frozenset(), factory=None))   # a plugin cannot replace a built-in type
    assert a["http"] is b["http"]


def test_known_keys_come_from_the_loader_tables() -> None:
    keys = known_keys()
    assert keys["gateway"] == frozenset(_GATEWAY) and keys["store"] == frozenset(_STORE)
    assert keys["api"] == frozenset(_API) and keys["lines"] == frozenset(_LINE)
    assert keys["meters"] == frozenset(_METER)
    for protocol, spec in CATALOG.items():
        assert keys[f"meters.{protocol}"] == spec.option_keys
    sinks = builtin_sinks()
    for t in sinks:
        assert keys[f"sinks.{t}"] == sinks[t].keys | sinks[t].option_keys | {"name", "type"}
    assert "topic" in keys["sinks.mqtt"] and "gzip" not in keys["sinks.mqtt"]
    assert "registers" in keys["meters.modbus"] and "token" in keys["api.tokens"]


def test_known_keys_include_plugin_types_of_the_registry_passed_in() -> None:
    sinks = builtin_sinks()
    sinks.add(SinkSpec("kafka", keys=frozenset({"url"}), factory=None, option_keys=frozenset({"topic"})))
    assert known_keys(sinks)["sinks.kafka"] == {"url", "topic", "name", "type"}
    assert "sinks.kafka" not in known_keys()
