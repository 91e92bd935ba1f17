"""A small Prometheus-text metrics registry (counters and gauges with labels).

No global state: the daemon owns one :class:`Registry` and passes it where it is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _fmt_labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    parts = []
    for n, v in zip(names, values):
        v = str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{n}="{v}"')
    return "{" + ",".join(parts) + "}"


def _fmt_value(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


@dataclass(eq=False)
class Metric:
    name: str
    help: str
    kind: str  # "counter" | "gauge"
    labels: tuple[str, ...] = ()
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def _key(self, labels: dict[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.labels)}")
        return tuple(str(labels[n]) for n in self.labels)

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        k = self._key(labels)
        self.values[k] = self.values.get(k, 0.0) + amount

    def set(self, value: float, **labels: object) -> None:
        self.values[self._key(labels)] = float(value)

    def child(self, **labels: object) -> Child:
        """A handle on one label set, for hot paths: no label checking per update."""
        return Child(self, self._key(labels))

    def get(self, **labels: object) -> float:
        return self.values.get(self._key(labels), 0.0)

    def remove(self, **labels: object) -> None:
        self.values.pop(self._key(labels), None)

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}")
        out.append(f"# TYPE {self.name} {self.kind}")
        for k, v in sorted(self.values.items()):
            out.append(f"{self.name}{_fmt_labels(self.labels, k)} {_fmt_value(v)}")


class Child:
    __slots__ = ("_values", "_key")

    def __init__(self, metric: Metric, key: tuple[str, ...]) -> None:
        self._values = metric.values
        self._key = key
        self._values.setdefault(key, 0.0)

    def inc(self, amount: float = 1.0) -> None:
        self._values[self._key] += amount

    def set(self, value: float) -> None:
        self._values[self._key] = float(value)


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def _get(self, name: str, help: str, kind: str, labels: tuple[str, ...]) -> Metric:
        m = self._metrics.get(name)
        if m is None:
            m = self._metrics[name] = Metric(name, help, kind, labels)
        elif m.kind != kind or m.labels != labels:
            raise ValueError(f"metric {name} re-registered with a different shape")
        return m

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Metric:
        return self._get(name, help, "counter", labels)

    def gauge(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Metric:
        return self._get(name, help, "gauge", labels)

    def find(self, name: str) -> Metric | None:
        """A registered metric, for readers that must not register it (the status pages)."""
        return self._metrics.get(name)

    def render(self) -> str:
        out: list[str] = []
        for m in self._metrics.values():
            m.render(out)
        return "\n".join(out) + "\n"
