"""The OpenAPI 3 description of the local HTTP API, served at ``GET /api/openapi.json``.

Hand-written on purpose: it is the contract, and tests/test_openapi.py runs schemathesis against the running
daemon with it (no 5xx, every status, content type and body as described here). When an endpoint changes,
this document changes in the same commit.
"""

from __future__ import annotations

from typing import Any

from pollerd import __version__
from pollerd.model import Archive

_STR = {"type": "string"}
_NUM_OR_NULL = {"type": "number", "nullable": True}
_STR_OR_NULL = {"type": "string", "nullable": True}
_STR_LIST = {"type": "array", "items": _STR}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_NAME = {"name": "name", "in": "path", "required": True, "description": "the meter's name from the config",
         "schema": {"type": "string", "minLength": 1}}


def _paged(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "total", "total_pages", "current_page", "next_page"],
        "properties": {
            "data": {"type": "array", "items": _ref(item)},
            "total": {"type": "integer", "minimum": 0},
            "total_pages": {"type": "integer", "minimum": 0},
            "current_page": {"type": "integer", "minimum": 1},
            "next_page": {"type": "integer", "minimum": 2, "nullable": True},
        },
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_PAGING = [
    _query("from", "start, inclusive: unix seconds or ISO 8601 (UTC when no offset is given)", _STR),
    _query("to", "end, exclusive: unix seconds or ISO 8601", _STR),
    _query("page", "page number", {"type": "integer", "minimum": 1, "maximum": 10**9, "default": 1}),
    _query("per_page", "rows per page", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
]

# A data endpoint is open while no token is configured and needs one of role read or admin once there is
# one; /health and /metrics likewise only when [api] open_monitoring = false. "{}" is the open alternative.
_READ_SECURITY: list[dict[str, list[str]]] = [{}, {"bearer": []}]
_READ_AUTH_ERRORS = {"401": _err("tokens are configured and none was given, or an unknown one")}

_AUTH_ERRORS = {
    "401": _err("no bearer token, or an unknown one"),
    "403": _err("the token's role is not admin"),
}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": _STR}},
    "Health": {
        "type": "object",
        "required": ["status", "reasons", "warnings"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "fail"]},
            "reasons": {**_STR_LIST, "description": "why the health fails (empty when ok)"},
            "warnings": {**_STR_LIST, "description": "worth a look, but not a failure"},
        },
    },
    "Meter": {
        "type": "object",
        "required": ["name", "state", "protocol", "line", "address", "last_poll", "last_ok", "last_error",
                     "consecutive_failures", "degraded", "degraded_reason", "polls", "failures", "readings"],
        "properties": {
            "name": _STR,
            "state": {"type": "string", "enum": ["pending", "ok", "partial", "failing", "degraded"]},
            "protocol": _STR,
            "line": _STR_OR_NULL,
            "address": {"oneOf": [{"type": "integer"}, {"type": "string"}], "nullable": True},
            "next_run": _NUM_OR_NULL,
            "last_poll": _NUM_OR_NULL,
            "last_ok": _NUM_OR_NULL,
            "last_error": _STR_OR_NULL,
            "consecutive_failures": {"type": "integer", "minimum": 0},
            "degraded": {"type": "boolean"},
            "degraded_reason": _STR_OR_NULL,
            "polls": {"type": "integer", "minimum": 0},
            "failures": {"type": "integer", "minimum": 0},
            "skipped": {"type": "integer", "minimum": 0},
            "readings": {"type": "integer", "minimum": 0},
            "dropped": {"type": "integer", "minimum": 0,
                        "description": "readings dropped before the store (not finite, implausible)"},
            "last_dropped": {**_STR_OR_NULL, "description": "what the last cycle dropped and why"},
            "identity": {"type": "object", "description": "what the meter reported: serial, ratios, ..."},
            "alarms": {"type": "object", "additionalProperties": _STR},
        },
    },
    "Sink": {
        "type": "object",
        "required": ["name", "type", "alarms", "last_success", "last_error", "failures", "sent", "parked",
                     "lag_rows", "lag_seconds", "connected", "failing_since"],
        "properties": {
            "name": _STR,
            "type": _STR,
            "alarms": {"type": "object", "additionalProperties": _STR,
                       "description": "kind -> text; each is a /health reason"},
            "last_success": _NUM_OR_NULL,
            "last_error": _STR_OR_NULL,
            "failures": {"type": "integer", "minimum": 0},
            "sent": {"type": "integer", "minimum": 0, "description": "readings the upstream confirmed"},
            "parked": {"type": "integer", "minimum": 0},
            "lag_rows": {"type": "integer", "minimum": 0},
            "lag_seconds": {"type": "number", "minimum": 0},
            "connected": {"type": "boolean"},
            "failing_since": {**_NUM_OR_NULL, "description": "first failure of the current run of failures"},
        },
    },
    "Reading": {
        "type": "object",
        "required": ["meter", "channel", "archive", "ts", "value", "unit"],
        "properties": {
            "meter": _STR, "channel": _STR,
            "archive": {"type": "string", "enum": [a.value for a in Archive]},
            "ts": {"type": "integer", "description": "unix seconds, UTC"},
            "value": {"type": "number"}, "unit": _STR, "quality": _STR,
        },
    },
    "Event": {
        "type": "object",
        "required": ["meter", "code", "ts_start", "ts_end", "text"],
        "properties": {"meter": _STR, "code": _STR, "ts_start": {"type": "integer"},
                       "ts_end": {"type": "integer", "nullable": True}, "text": _STR_OR_NULL},
    },
    "PollResult": {
        "type": "object",
        "required": ["meter", "ok", "answered", "error", "readings", "events", "started", "duration"],
        "properties": {
            "meter": _STR,
            "ok": {"type": "boolean", "description": "the meter answered and the cycle completed"},
            "answered": {"type": "boolean"},
            "error": _STR_OR_NULL,
            "readings": {"type": "integer", "minimum": 0, "description": "readings stored by this cycle"},
            "events": {"type": "integer", "minimum": 0},
            "started": {"type": "number"},
            "duration": {"type": "number", "minimum": 0},
        },
    },
    "ReportRow": {
        "type": "object",
        "required": ["meter", "period", "start", "end", "T1", "T2", "T3", "T4", "total", "unit", "source"],
        "properties": {
            "meter": _STR,
            "period": {**_STR, "description": "YYYY-MM-DD (by day) or YYYY-MM (by month), in the meter's zone"},
            "start": {"type": "integer", "description": "the period's start, unix seconds"},
            "end": {"type": "integer", "description": "the period's end (exclusive), unix seconds"},
            **{f"T{n}": {**_NUM_OR_NULL, "description": f"energy of tariff {n} in the period (Wh or varh)"}
               for n in (1, 2, 3, 4)},
            "total": {**_NUM_OR_NULL, "description": "energy of all tariffs (the meter's own total)"},
            "unit": {"type": "string", "enum": ["Wh", "varh"]},
            "source": {"type": "string", "enum": ["daily", "monthly", "counters", "missing"],
                       "description": "the meter's archive; or 'counters': the difference of the current "
                                      "counters polled first after this period's start and the next one's "
                                      "(counters_from/counters_to); 'missing': no data, values null"},
            "counters_from": {"type": "integer"},
            "counters_to": {"type": "integer"},
        },
    },
    "Report": {
        "type": "object",
        "required": ["period", "from", "to", "energy", "data"],
        "properties": {
            "period": {"type": "string", "enum": ["day", "month"]},
            "from": _STR, "to": _STR,
            "energy": {"type": "string", "enum": ["A+", "A-", "R+", "R-"]},
            "data": {"type": "array", "items": _ref("ReportRow")},
        },
    },
    "RawRequest": {
        "type": "object", "required": ["command"],
        "properties": {"command": {"type": "string", "description": "HEX frame; the CRC is appended when missing",
                                   "example": "01 08 00"}},
    },
    "RawResult": {
        "type": "object",
        "required": ["meter", "request", "command", "response", "status"],
        "properties": {
            "meter": _STR, "request": _STR,
            "command": {**_STR, "description": "as sent, password bytes masked"},
            "response": {**_STR, "description": "the reply frame as HEX"},
            "status": {"type": "integer", "nullable": True},
            "decoded": {"type": "object"},
            "decode_error": _STR,
        },
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document (a fresh dict each call)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pollerd local API",
            "version": __version__,
            "description": "Health, metrics and data of one pollerd gateway. Errors are {\"error\": \"...\"}. "
                           "Write endpoints need 'Authorization: Bearer <token>' with role admin; once tokens "
                           "are configured, the data endpoints need one of role read or admin (and /health, "
                           "/metrics too when open_monitoring is false).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "paths": {
            "/health": {"get": {
                "summary": "200 when the gateway collects and delivers, 503 with reasons when not",
                "operationId": "health",
                "security": _READ_SECURITY,
                "responses": {**_READ_AUTH_ERRORS, "200": _json(_ref("Health"), "healthy"),
                              "503": _json(_ref("Health"), "failing; see reasons")},
            }},
            "/metrics": {"get": {
                "summary": "Prometheus text format 0.0.4",
                "operationId": "metrics",
                "security": _READ_SECURITY,
                "responses": {**_READ_AUTH_ERRORS, "200": {"description": "metrics",
                                      "content": {"text/plain": {"schema": _STR}}}},
            }},
            "/api/openapi.json": {"get": {
                "summary": "this document",
                "operationId": "openapi",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")},
            }},
            "/api/meters": {"get": {
                "summary": "all running meters with their state",
                "operationId": "listMeters",
                "security": _READ_SECURITY,
                "responses": {**_READ_AUTH_ERRORS, "200": _json({"type": "object", "required": ["data"],
                                            "properties": {"data": {"type": "array", "items": _ref("Meter")}}},
                                           "meters")},
            }},
            "/api/meters/{name}": {"get": {
                "summary": "one meter: state, last poll, errors, degraded reason, identity",
                "operationId": "getMeter",
                "security": _READ_SECURITY,
                "parameters": [_NAME],
                "responses": {**_READ_AUTH_ERRORS, "200": _json({"type": "object", "required": ["data"],
                                            "properties": {"data": _ref("Meter")}}, "the meter"),
                              "404": _err("no such meter")},
            }},
            "/api/sinks": {"get": {
                "summary": "every upstream sink: delivery state, lag, last error, alarms",
                "operationId": "listSinks",
                "security": _READ_SECURITY,
                "responses": {**_READ_AUTH_ERRORS, "200": _json({"type": "object", "required": ["data"],
                                            "properties": {"data": {"type": "array", "items": _ref("Sink")}}},
                                           "sinks")},
            }},
            "/api/readings": {"get": {
                "summary": "stored readings, paged (seed 000 style)",
                "operationId": "listReadings",
                "security": _READ_SECURITY,
                "parameters": [
                    _query("meter", "meter name", {"type": "string", "minLength": 1}),
                    _query("channel", "channel name, e.g. A+", {"type": "string", "minLength": 1}),
                    _query("archive", "archive", {"type": "string", "enum": [a.value for a in Archive]}),
                    *_PAGING,
                ],
                "responses": {**_READ_AUTH_ERRORS, "200": _json(_paged("Reading"), "one page"),
                              "400": _err("a malformed or unknown query parameter"),
                              "503": _err("the store is unavailable")},
            }},
            "/api/events": {"get": {
                "summary": "stored meter events (journals, identity mismatches, clock drift), paged",
                "operationId": "listEvents",
                "security": _READ_SECURITY,
                "parameters": [_query("meter", "meter name", {"type": "string", "minLength": 1}), *_PAGING],
                "responses": {**_READ_AUTH_ERRORS, "200": _json(_paged("Event"), "one page"),
                              "400": _err("a malformed or unknown query parameter"),
                              "503": _err("the store is unavailable")},
            }},
            "/api/reports": {"get": {
                "summary": "energy per tariff T1..T4 and total, per day or month, for chosen meters (seed 004 "
                           "reports); also as HTML at /reports and CSV at /reports.csv",
                "operationId": "energyReport",
                "parameters": [
                    {"name": "meter", "in": "query", "required": False, "style": "form", "explode": True,
                     "description": "meter name, repeatable; none means every meter",
                     "schema": {"type": "array", "items": {"type": "string"}}},
                    _query("period", "day or month", {"type": "string", "enum": ["day", "month"],
                                                      "default": "day"}),
                    _query("from", "first day (YYYY-MM-DD) or month (YYYY-MM), inclusive; default: a week "
                                   "(or 3 months) back", _STR),
                    _query("to", "last day or month, inclusive; default: yesterday (or this month)", _STR),
                    _query("energy", "which energy", {"type": "string", "enum": ["A+", "A-", "R+", "R-"],
                                                      "default": "A+"}),
                ],
                "responses": {"200": _json(_ref("Report"), "one row per meter and period"),
                              "400": _err("an unknown meter, a malformed date or parameter, or too many rows"),
                              "503": _err("the store is unavailable")},
            }},
            "/api/meters/{name}/poll": {"post": {
                "summary": "poll the meter now: one cycle, ahead of scheduled requests on its line; the "
                           "readings are stored as usual",
                "operationId": "pollMeter",
                "security": [{"bearer": []}],
                "parameters": [_NAME],
                "responses": {"200": _json(_ref("PollResult"), "the cycle ran (ok tells whether it completed)"),
                              **_AUTH_ERRORS,
                              "404": _err("no such meter"),
                              "409": _err("a cycle of this meter is running, or it is stopping; retry later"),
                              "503": _err("poll now is not available")},
            }},
            "/api/meters/{name}/raw": {"post": {
                "summary": "send one HEX frame to the meter through its line (seed 004 raw polling)",
                "operationId": "rawFrame",
                "security": [{"bearer": []}],
                "parameters": [_NAME],
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": _ref("RawRequest")}}},
                "responses": {"200": _json(_ref("RawResult"), "the meter's reply"),
                              "400": _err("not JSON, no command, not HEX, or not addressed to this meter"),
                              **_AUTH_ERRORS,
                              "404": _err("no such meter"),
                              "413": _err("the body is larger than 64 KiB"),
                              "502": _err("the meter did not answer or the line is down"),
                              "503": _err("raw frames are not available")},
            }},
        },
    }
