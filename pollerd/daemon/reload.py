"""What a reload changes: the difference between the running config and a new one, worked out without
touching anything (the supervisor then stops, rebuilds and starts exactly what this names)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..config import Config, SinkConfig
from ..errors import PollerdError


class ReloadRefused(PollerdError):
    """The new config is valid but cannot be applied to a running daemon (e.g. another store path)."""


def same(a: Any, b: Any) -> bool:
    """Config equality ignoring where in the file a table sits (moving a table is not a change)."""
    return bool(replace(a, line_no=None) == replace(b, line_no=None))


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """Names of what to stop, rebuild and start; meters are the enabled ones only."""

    meters_added: frozenset[str]
    meters_removed: frozenset[str]
    meters_restarted: frozenset[str]   # the same name, another config (or on a restarted line)
    states_dropped: frozenset[str]     # not running (an earlier reload could not start them), gone from the file
    lines_added: frozenset[str]
    lines_changed: frozenset[str]
    lines_removed: frozenset[str]
    sinks_added: frozenset[str]
    sinks_removed: frozenset[str]
    sinks_restarted: frozenset[str]

    def summary(self, not_started: Collection[str] = ()) -> str:
        parts = [f"{what} {', '.join(sorted(names))}" for what, names in (
            ("meters added:", self.meters_added), ("meters removed:", self.meters_removed),
            ("meters restarted:", self.meters_restarted), ("lines restarted:", self.lines_changed),
            ("lines removed:", self.lines_removed), ("sinks added:", self.sinks_added),
            ("sinks removed:", self.sinks_removed), ("sinks restarted:", self.sinks_restarted),
            ("meters NOT started (see /health):", not_started)) if names]
        return "; ".join(parts)


def plan_reload(old: Config, new: Config, *, running: Collection[str], states: Collection[str],
                sinks: Mapping[str, SinkConfig]) -> ReloadPlan:
    """The plan from ``old`` (with the meters ``running``, the meter ``states`` kept and the ``sinks``
    forwarding now) to ``new``. Raises ReloadRefused for a change only a restart can make."""
    if old.store.path != new.store.path:
        raise ReloadRefused(f"store.path changed ({old.store.path or 'default'} -> "
                            f"{new.store.path or 'default'}); that needs a restart")
    old_lines = {ln.name: ln for ln in old.lines}
    new_lines = {ln.name: ln for ln in new.lines}
    changed_lines = {n for n in old_lines.keys() & new_lines.keys() if not same(old_lines[n], new_lines[n])}
    old_m = {m.name: m for m in old.meters if m.enabled and m.name in running}
    new_m = {m.name: m for m in new.meters if m.enabled}
    spread_changed = old.gateway.spread != new.gateway.spread

    def changed(name: str) -> bool:
        a, b = old_m[name], new_m[name]
        return (not same(a, b) or b.line in changed_lines
                or (spread_changed and b.period_type != "interval"))  # calendar slots use spread

    # The gateway name is part of every payload, so renaming the gateway restarts every sink.
    new_s = {s.name: s for s in new.sinks}
    regateway = old.gateway.name != new.gateway.name
    return ReloadPlan(
        meters_added=frozenset(new_m.keys() - old_m.keys()),
        meters_removed=frozenset(old_m.keys() - new_m.keys()),
        meters_restarted=frozenset(n for n in old_m.keys() & new_m.keys() if changed(n)),
        states_dropped=frozenset(set(states) - set(running) - new_m.keys()),
        lines_added=frozenset(new_lines.keys() - old_lines.keys()),
        lines_changed=frozenset(changed_lines),
        lines_removed=frozenset(old_lines.keys() - new_lines.keys()),
        sinks_added=frozenset(new_s.keys() - sinks.keys()),
        sinks_removed=frozenset(sinks.keys() - new_s.keys()),
        sinks_restarted=frozenset(n for n in sinks.keys() & new_s.keys()
                                  if regateway or not same(sinks[n], new_s[n])),
    )
