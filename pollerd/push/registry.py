"""The sink registry: one :class:`SinkSpec` per sink type, held by a :class:`SinkRegistry` that is passed in.

The config loader validates a ``[[sinks]]`` table against its type's spec; the daemon builds the client with
the spec's factory and asks its ``kind`` ("batch": a client the forwarder feeds from the outbox; "document":
a scheduled uploader run by the daemon, with no outbox cursor), never its name. Third-party types come from
the ``pollerd.push`` entry points (:mod:`pollerd.push.plugins`) as specs added to the registry object the caller
holds; no module-level table is ever changed.

Parsers and factories are :class:`pollerd.catalog.Ref`-style references imported on first use: aiomqtt and
paho (mqtt) or the XML template engine (sioi) cost memory a gateway without such a sink should not pay.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from pollerd.config.model import SinkConfig
    from pollerd.push import PushClient

__all__ = ["BUILTIN", "PLUGIN_COMMON_KEYS", "Ref", "SinkKind", "SinkRegistry", "SinkSpec", "builtin_sinks"]

SinkKind = Literal["batch", "document"]
OptionParser = Callable[[Mapping[str, object], str], object]
ClientFactory = Callable[["SinkConfig", str], "PushClient"]


@dataclass(frozen=True, slots=True)
class Ref:
    """A "module:name" callable, imported on its first call (see the module docstring for why)."""

    target: str

    def resolve(self) -> Callable[..., Any]:
        module, _, name = self.target.partition(":")
        target = getattr(importlib.import_module(module), name)
        if not callable(target):
            raise TypeError(f"{self.target} is not callable")
        # getattr() is Any to mypy; callable() checked what Callable[..., Any] promises.
        return cast("Callable[..., Any]", target)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


_ref = Ref


@dataclass(frozen=True, slots=True)
class SinkSpec:
    type: str                                  # the `type` of a [[sinks]] table
    keys: frozenset[str]                       # common sink keys it accepts (besides name and type)
    factory: ClientFactory | None              # (sink config, gateway name) -> PushClient; None: a document sink
    option_keys: frozenset[str] = frozenset()  # its own keys, parsed by `options`
    # (raw values of option_keys, config directory) -> frozen options object for SinkConfig.options; raises
    # OptionError with the key path below the sink table.
    options: OptionParser | None = None
    url_schemes: tuple[str, ...] = ("http", "https")
    required: tuple[tuple[str, ...], ...] = ()  # groups of keys, one key of each group required
    kind: SinkKind = "batch"
    # A document sink's runner: (store, sink config, gateway name, SinkState, metrics, clock=) -> an object
    # whose ``async run()`` the daemon supervises; it reads the store itself and keeps no outbox cursor.
    runner: Callable[..., Any] | None = None

    @property
    def accepted_keys(self) -> frozenset[str]:
        return self.keys | self.option_keys | {"name", "type"}


# Common keys a plugin sink accepts unless it narrows them with `common_keys`.
PLUGIN_COMMON_KEYS = frozenset({
    "url", "token", "token_file", "token_credential", "username", "password", "password_file",
    "password_credential", "headers", "verify_tls", "ca_file", "client_cert", "client_key", "timeout",
    "batch_size", "linger", "retry_min", "retry_max",
})

BUILTIN: tuple[SinkSpec, ...] = (
    SinkSpec(
        "http",
        keys=frozenset({
            "url", "token", "token_file", "token_credential", "username", "password", "password_file",
            "password_credential", "headers", "verify_tls", "ca_file", "timeout", "batch_size", "retry_min",
            "retry_max", "linger", "client_cert", "client_key",
        }),
        factory=_ref("pollerd.push.http:HttpPushClient"),
        option_keys=frozenset({"gzip", "accept_html", "events", "events_url"}),
        options=_ref("pollerd.push.http:parse_options"),
    ),
    SinkSpec(
        "mqtt",
        # MQTT has no bearer tokens or HTTP headers; username + password go into CONNECT.
        keys=frozenset({
            "url", "username", "password", "password_file", "password_credential", "verify_tls", "ca_file",
            "client_cert", "client_key", "timeout", "batch_size", "linger", "retry_min", "retry_max",
        }),
        factory=_ref("pollerd.push.mqtt:MqttPushClient"),
        option_keys=frozenset({"topic", "payload", "qos", "retain", "client_id", "keepalive", "status_topic",
                               "events_topic", "meter_status_topic"}),
        options=_ref("pollerd.push.mqtt_options:parse_options"),
        url_schemes=("mqtt", "mqtts"),
    ),
    SinkSpec(
        "sioi",
        # АС СиОИ document upload (pollerd.push.sioi): login + password, no batches.
        keys=frozenset({
            "url", "username", "password", "password_file", "password_credential", "verify_tls", "ca_file",
            "timeout", "retry_min", "retry_max",
        }),
        factory=None,
        option_keys=frozenset({
            "form_code", "template", "period", "at", "timezone", "catch_up", "data_wait", "meters", "channels",
            "archives", "value_scale", "encoding", "filename", "auth_format", "token_header", "token_prefix",
            "job_timeout", "status_poll", "auth_path", "upload_path", "status_path", "login_field",
            "password_field", "token_field", "form_field", "file_field", "job_id_field", "status_field",
            "errors_field", "status_loaded", "status_failed", "status_pending",
        }),
        options=_ref("pollerd.push.sioi.options:parse_options"),
        required=(("username",), ("password", "password_file", "password_credential")),
        kind="document",
        runner=_ref("pollerd.push.sioi:SioiSink"),
    ),
)


class SinkRegistry:
    """The sink types one configuration may use: the built-ins plus whatever plugins were added to it."""

    def __init__(self, specs: tuple[SinkSpec, ...] = BUILTIN) -> None:
        self._specs: dict[str, SinkSpec] = {s.type: s for s in specs}
        # Set by pollerd.push.plugins.load_entry_points(self): whether it ran, and the broken plugins' reasons.
        self.plugins_loaded = False
        self.broken: dict[str, str] = {}

    def __contains__(self, kind: object) -> bool:
        return kind in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __getitem__(self, kind: str) -> SinkSpec:
        return self._specs[kind]

    def get(self, kind: str) -> SinkSpec | None:
        return self._specs.get(kind)

    def types(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def add(self, spec: SinkSpec) -> None:
        """Add a type; a built-in (or an earlier plugin) of the same name wins."""
        self._specs.setdefault(spec.type, spec)

    def kind(self, sink_type: str) -> SinkKind:
        return self._specs[sink_type].kind


def builtin_sinks() -> SinkRegistry:
    """A fresh registry of the built-in types; plugins added to it stay in it."""
    return SinkRegistry(BUILTIN)
