"""Third-party push clients through the ``pollerd.push`` entry-point group.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."pollerd.push"]
    kafka = "pollerd_kafka:KafkaSink"

The name is the sink ``type`` used in ``[[sinks]]``; the object is a :class:`pollerd.push.SinkPlugin`:
a client factory with ``config_keys`` and ``parse_options`` (and optionally ``common_keys``,
``url_schemes``). :func:`load_entry_points` adds a :class:`~pollerd.push.registry.SinkSpec` for each plugin to
the registry it is given. It is called explicitly — by the config loader when a config names a sink type
that is not in its registry, and by ``make_client`` — never as a side effect of an import. Built-in types win over a
plugin of the same name. A plugin that fails to load is reported as a config error only where a config
uses its type; otherwise it is logged and ignored, so a broken unrelated package cannot stop the daemon.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pollerd.push.registry import PLUGIN_COMMON_KEYS, SinkRegistry, SinkSpec

if TYPE_CHECKING:
    from importlib import metadata

log = logging.getLogger(__name__)

GROUP = "pollerd.push"


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    # On use: importlib.metadata pulls in email, zipfile, csv... (~1.5 MB RSS) that a gateway whose sinks are
    # all built in never needs; the config loader and the daemon import this module.
    from importlib import metadata

    return list(metadata.entry_points(group=group))   # selection by group: Python >= 3.10, as required


def _check(name: str, obj: object) -> str | None:
    """Why ``obj`` cannot be a sink plugin, or None."""
    if not callable(obj):
        return "is not callable (it must build a client from (sink_config, gateway))"
    keys = getattr(obj, "config_keys", None)
    if not isinstance(keys, (frozenset, set)) or not all(isinstance(k, str) for k in keys):
        return "has no config_keys (a frozenset of its type-specific key names)"
    if not callable(getattr(obj, "parse_options", None)):
        return "has no parse_options(raw, base_dir)"
    common = getattr(obj, "common_keys", PLUGIN_COMMON_KEYS)
    if not isinstance(common, (frozenset, set)) or not set(common) <= PLUGIN_COMMON_KEYS:
        return f"common_keys must be a subset of {sorted(PLUGIN_COMMON_KEYS)}"
    clash = set(keys) & (PLUGIN_COMMON_KEYS | {"name", "type"})
    if clash:
        return f"config_keys {sorted(clash)} clash with common sink keys"
    schemes = getattr(obj, "url_schemes", ("http", "https"))
    if not isinstance(schemes, tuple) or not schemes or not all(isinstance(s, str) for s in schemes):
        return "url_schemes must be a non-empty tuple of strings"
    return None


def load_entry_points(registry: SinkRegistry, group: str = GROUP) -> dict[str, str]:
    """Add the plugins of ``group`` to ``registry``, once per registry; return {type: why it failed} for the
    broken ones (also kept in ``registry.broken``)."""
    if registry.plugins_loaded:
        return registry.broken
    registry.plugins_loaded = True
    broken = registry.broken
    for ep in _entry_points(group):
        name = ep.name
        if name in registry:
            continue    # built in: the built-in type wins
        where = f"sink type {name!r} from plugin {ep.value!r}"
        try:
            obj = ep.load()
        except Exception as exc:  # an import error inside someone else's package: report, do not crash
            broken[name] = f"{where} failed to load: {type(exc).__name__}: {exc}"
            log.warning("%s", broken[name])
            continue
        why = _check(name, obj)
        if why is not None:
            broken[name] = f"{where} {why}"
            log.warning("%s", broken[name])
            continue
        registry.add(SinkSpec(
            name,
            keys=frozenset(getattr(obj, "common_keys", PLUGIN_COMMON_KEYS)),
            factory=obj,
            option_keys=frozenset(obj.config_keys),
            options=obj.parse_options,
            url_schemes=tuple(s.lower() for s in getattr(obj, "url_schemes", ("http", "https"))),
        ))
        log.info("push plugin loaded: %s", where)
    return broken


__all__ = ["GROUP", "load_entry_points"]
