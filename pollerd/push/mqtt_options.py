"""The mqtt sink's own keys (its SinkSpec in push/registry.py) and its topic templates.

Kept apart from :mod:`pollerd.push.mqtt` so that ``pollerd check`` validates an MQTT sink without importing
the MQTT client library, and says plainly when that library is missing.
"""

from __future__ import annotations

import importlib.util
import string
from collections.abc import Mapping
from dataclasses import dataclass

from pollerd.errors import OptionError

DEFAULT_TOPIC = "pollerd/{gateway}/{meter}/{channel}"
DEFAULT_STATUS_TOPIC = "pollerd/{gateway}/status"
DEFAULT_EVENTS_TOPIC = "pollerd/{gateway}/{meter}/events"
DEFAULT_METER_STATUS_TOPIC = "pollerd/{gateway}/{meter}/status"
TOPIC_FIELDS = ("gateway", "meter", "channel", "archive")
PAYLOADS = ("reading", "batch")
_MAX_TOPIC = 65535          # MQTT: a topic is a UTF-8 string with a 16-bit length

# Topic levels must not contain the wildcards + and # (MQTT 3.1.1 §4.7.1: a PUBLISH with one is a protocol
# violation and the broker drops the connection) and a value must not add levels with /. Channel names do
# contain + ("A+", "R+.T1"), so field values are percent-encoded: reversible, and plain names stay readable.
_ESCAPE = str.maketrans({"%": "%25", "+": "%2B", "#": "%23", "/": "%2F", "\0": "%00"})


def topic_escape(value: str) -> str:
    return value.translate(_ESCAPE)


@dataclass(frozen=True, slots=True)
class Template:
    """A topic template split once into literal text and field names (no str.format per message)."""

    text: str
    parts: tuple[tuple[str, str | None], ...]   # (literal, field or None)
    fields: frozenset[str]

    def render(self, values: Mapping[str, str]) -> str:
        return "".join(lit + (topic_escape(values[f]) if f is not None else "") for lit, f in self.parts)


def parse_template(text: object, key: str, allowed: tuple[str, ...]) -> Template:
    if not isinstance(text, str):
        raise OptionError(f"{key} must be a string, got {type(text).__name__}", (key,))
    if not text:
        raise OptionError(f"{key} must not be empty", (key,))
    if "\0" in text:
        raise OptionError(f"{key} must not contain a NUL character", (key,))
    if len(text.encode()) > _MAX_TOPIC:
        raise OptionError(f"{key} is longer than MQTT allows ({_MAX_TOPIC} bytes)", (key,))
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise OptionError(f"{key} {text!r} is not a valid template: {exc} (write {{{{ and }}}} for braces)",
                          (key,)) from None
    for literal, field, spec, conv in parsed:
        if "+" in literal or "#" in literal:
            raise OptionError(f"{key} {text!r}: the wildcards + and # are not allowed in a topic to publish to",
                              (key,))
        if field is None:
            parts.append((literal, None))
            continue
        if field not in allowed:
            raise OptionError(f"{key} {text!r}: unknown field {{{field}}}, expected one of "
                              + ", ".join(f"{{{f}}}" for f in allowed), (key,))
        if spec or conv:
            raise OptionError(f"{key} {text!r}: field {{{field}}} takes no format spec or conversion", (key,))
        parts.append((literal, field))
    return Template(text, tuple(parts), frozenset(f for _, f in parts if f is not None))


@dataclass(frozen=True, slots=True)
class MqttOptions:
    topic: Template
    payload: str = "reading"          # "reading": one message per reading; "batch": one per distinct topic
    qos: int = 1
    retain: bool = False
    client_id: str | None = None      # default pollerd-<gateway>-<sink>
    keepalive: int = 60
    status_topic: Template | None = None   # None: no status messages, no last will
    events_topic: Template | None = None   # None: this sink declines events
    meter_status_topic: Template | None = None   # None: no per-meter online/offline messages


def _bool(raw: Mapping[str, object], key: str, default: bool) -> bool:
    v = raw.get(key, default)
    if not isinstance(v, bool):
        raise OptionError(f"{key} must be true or false, got {v!r}", (key,))
    return v


def parse_options(raw: Mapping[str, object], base_dir: str) -> MqttOptions:
    if importlib.util.find_spec("aiomqtt") is None:
        raise OptionError("an mqtt sink needs the Python package aiomqtt, which is not installed "
                          "(pip install 'aiomqtt>=2,<3' into pollerd's environment)", ("type",))
    topic = parse_template(raw.get("topic", DEFAULT_TOPIC), "topic", TOPIC_FIELDS)
    payload = raw.get("payload", "reading")
    if payload not in PAYLOADS:
        raise OptionError(f"payload must be one of {', '.join(repr(p) for p in PAYLOADS)}, got {payload!r}",
                          ("payload",))
    if payload == "reading" and "meter" not in topic.fields:
        # Every reading of every meter on one topic is allowed, but with payload="reading" it is almost
        # always a mistake: say so rather than flood one topic.
        raise OptionError(f"topic {topic.text!r} has no {{meter}} field; with payload = \"reading\" every "
                          "meter would publish to one topic (use payload = \"batch\" for that)", ("topic",))
    qos = raw.get("qos", 1)
    if isinstance(qos, bool) or qos not in (0, 1):
        raise OptionError(f"qos must be 1 (delivery confirmed by PUBACK) or 0 (fire and forget), got {qos!r}",
                          ("qos",))
    client_id = raw.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not client_id
                                  or len(client_id.encode()) > 65535):
        raise OptionError(f"client_id must be a non-empty string, got {client_id!r}", ("client_id",))
    keepalive = raw.get("keepalive", 60)
    if isinstance(keepalive, bool) or not isinstance(keepalive, int) or not 5 <= keepalive <= 65535:
        raise OptionError(f"keepalive must be whole seconds in 5..65535, got {keepalive!r}", ("keepalive",))
    status_raw = raw.get("status_topic", DEFAULT_STATUS_TOPIC)
    status = None
    if status_raw != "":
        status = parse_template(status_raw, "status_topic", ("gateway",))
    events_raw = raw.get("events_topic", DEFAULT_EVENTS_TOPIC)
    events = None
    if events_raw != "":
        events = parse_template(events_raw, "events_topic", ("gateway", "meter"))
    meter_status_raw = raw.get("meter_status_topic", DEFAULT_METER_STATUS_TOPIC)
    meter_status = None
    if meter_status_raw != "":
        meter_status = parse_template(meter_status_raw, "meter_status_topic", ("gateway", "meter"))
    return MqttOptions(topic=topic, payload=str(payload), qos=int(qos), retain=_bool(raw, "retain", False),
                       client_id=client_id, keepalive=keepalive, status_topic=status, events_topic=events,
                       meter_status_topic=meter_status)


__all__ = ["DEFAULT_EVENTS_TOPIC", "DEFAULT_STATUS_TOPIC", "DEFAULT_TOPIC", "MqttOptions", "Template", "parse_options",
           "parse_template", "topic_escape"]
