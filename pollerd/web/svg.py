"""Server-side SVG: the vector diagram and the load-profile chart of a meter.

Pure functions from values to markup, so the geometry is unit-tested without a browser, and the browser
test reads the same numbers back from the DOM (``data-angle``, ``data-t``/``data-v``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from .html import e, number
from .i18n import t

PHASES = ("L1", "L2", "L3")


@dataclass(frozen=True, slots=True)
class Phasor:
    """One arrow of the diagram. ``angle`` is in degrees with U.L1 at 0, counterclockwise positive (a lagging
    phasor is negative), normalised to (-180, 180]. ``phi`` is a current's power angle atan2(Q, P)."""

    name: str
    angle: float
    magnitude: float
    unit: str
    phi: float | None = None


def _norm(deg: float) -> float:
    d = math.fmod(deg, 360.0)
    if d <= -180.0:
        d += 360.0
    elif d > 180.0:
        d -= 360.0
    return d


def phasors(values: Mapping[str, float]) -> tuple[list[Phasor], list[str]]:
    """The phasors the values allow, and the channels that are missing for the rest.

    Voltages: U.L1 is the reference; the meter measures the angles between phase voltages, and L2, L3 lag
    L1 by ``angle.L1-L2`` and ``angle.L1-L3`` (``angle.L1-L2 + angle.L2-L3`` when only those two were read).
    Nothing is assumed: a diagram that drew 120° where no angle was measured would hide a swapped phase.
    Currents: each phase's current lags its own voltage by the power angle φ = atan2(Q, P), so a reversed
    CT (P and Q both negative) puts the arrow opposite its voltage."""
    missing: list[str] = []
    u_angle: dict[str, float] = {"L1": 0.0}
    a12, a13, a23 = (values.get(f"angle.{n}") for n in ("L1-L2", "L1-L3", "L2-L3"))
    if a12 is not None:
        u_angle["L2"] = -a12
    if a13 is not None:
        u_angle["L3"] = -a13
    elif a12 is not None and a23 is not None:
        u_angle["L3"] = -(a12 + a23)
    out: list[Phasor] = []
    for ph in PHASES:
        u = values.get(f"U.{ph}")
        if u is None:
            missing.append(f"U.{ph}")
            continue
        if ph not in u_angle:
            missing.append("angle.L1-L2" if ph == "L2" else "angle.L1-L3")
            continue
        out.append(Phasor(f"U.{ph}", _norm(u_angle[ph]), u, "V"))
    for ph in PHASES:
        i, p, q = values.get(f"I.{ph}"), values.get(f"P.{ph}"), values.get(f"Q.{ph}")
        lacking = [c for c, v in ((f"I.{ph}", i), (f"P.{ph}", p), (f"Q.{ph}", q)) if v is None]
        if lacking or ph not in u_angle or f"U.{ph}" in missing:
            missing.extend(lacking)
            continue
        assert i is not None and p is not None and q is not None
        phi = math.degrees(math.atan2(q, p))
        out.append(Phasor(f"I.{ph}", _norm(u_angle[ph] - phi), i, "A", phi))
    return out, missing


_SIZE = 420
_C = _SIZE / 2
_R = 135.0


def _xy(angle: float, r: float) -> tuple[float, float]:
    # U.L1 points up; positive angles turn counterclockwise, so the direct sequence L1, L2, L3 runs clockwise.
    a = math.radians(angle + 90.0)
    return _C + r * math.cos(a), _C - r * math.sin(a)


def vector_diagram(ps: list[Phasor], lang: str) -> str:
    """SVG of the phasors: voltages solid, currents dashed, each labelled with its magnitude and angle."""
    u_max = max((p.magnitude for p in ps if p.unit == "V"), default=0.0)
    i_max = max((p.magnitude for p in ps if p.unit == "A"), default=0.0)
    parts = [(f'<svg class="vector" viewBox="0 0 {_SIZE} {_SIZE}" role="img" '
             f'aria-label="{e(t(lang, "vector"))}">'
             '<defs><marker id="ah" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
             'orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" fill="context-stroke"/></marker></defs>'
             f'<circle cx="{_C}" cy="{_C}" r="{_R}" class="grid"/>'
             f'<circle cx="{_C}" cy="{_C}" r="{_R / 2}" class="grid"/>'
             f'<line x1="{_C}" y1="{_C - _R}" x2="{_C}" y2="{_C + _R}" class="grid"/>'
             f'<line x1="{_C - _R}" y1="{_C}" x2="{_C + _R}" y2="{_C}" class="grid"/>')]
    for p in ps:
        if p.unit == "V":
            r = _R * (p.magnitude / u_max if u_max > 0 else 0.0)
        else:
            # Currents share one scale of their own (0.7 of the voltages' circle): amperes and volts have no
            # common length, and the arrows must not hide the voltage labels.
            r = 0.7 * _R * (p.magnitude / i_max if i_max > 0 else 0.0)
        x, y = _xy(p.angle, r)
        lx, ly = _xy(p.angle, r + (14 if p.unit == "V" else 10))
        phase = p.name.split(".")[1]
        label = f"{p.name[0]}{phase[1]} {number(p.magnitude)} {p.unit}"
        title = f"{p.name}: {number(p.magnitude)} {p.unit}, {p.angle:.1f}°"
        if p.phi is not None:
            title += f", φ = {p.phi:.1f}°"
        cls = ("u " if p.unit == "V" else "i ") + phase.lower()
        phi_attr = f' data-phi="{p.phi:.3f}"' if p.phi is not None else ""
        anchor = "start" if lx > _C + 2 else "end" if lx < _C - 2 else "middle"
        parts.append(
            f'<g class="ph {cls}" data-phasor="{e(p.name)}" data-angle="{p.angle:.3f}" '
            f'data-magnitude="{number(p.magnitude)}"{phi_attr}><title>{e(title)}</title>'
            f'<line x1="{_C}" y1="{_C}" x2="{x:.1f}" y2="{y:.1f}" marker-end="url(#ah)"/>'
            f'<text x="{lx:.1f}" y="{ly + 4:.1f}" text-anchor="{anchor}">{e(label)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _nice(v: float) -> float:
    """The smallest 1/2/5 x 10^n at or above ``v`` (axis maximum)."""
    if v <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(v))
    for m in (1, 2, 5, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def interval_of(ts: list[int], default: int = 1800) -> int:
    """The load profile's interval: the smallest step between stored intervals (meters keep 1-60 min)."""
    steps = [b - a for a, b in itertools.pairwise(ts) if b > a]
    step = min(steps, default=default)
    return step if 60 <= step <= 3600 else default


MAX_BARS = 400   # per channel: a 7-day range of 1-minute intervals would otherwise weigh a megabyte


def _buckets(data: Mapping[int, float], start: int, end: int, width: int) -> dict[int, tuple[float, int]]:
    """Bucket index -> (energy sum, intervals present)."""
    out: dict[int, tuple[float, int]] = {}
    for ts, v in data.items():
        if start <= ts < end:
            k = (ts - start) // width
            total, n = out.get(k, (0.0, 0))
            out[k] = (total + v, n + 1)
    return out


def profile_chart(series: Mapping[str, Mapping[int, float]], start: int, end: int, period: int,
                  tz: ZoneInfo, lang: str) -> str:
    """Bars of A+ (up) and A- (down) per interval from ``start`` to ``end``. An interval with no reading
    of either is a grey gap, never a zero bar: zero is a value the meter can report.

    More than :data:`MAX_BARS` intervals (short intervals over 7 days) are summed into buckets of several
    intervals; a bucket missing some of them is drawn pale (class ``part``, ``data-n`` = intervals present),
    since its sum is short by what was not read."""
    per = max(1, -(-(end - start) // period // MAX_BARS))
    width = period * per
    slots = max(1, -(-(end - start) // width))
    ap = _buckets(series.get("A+", {}), start, end, width)
    am = _buckets(series.get("A-", {}), start, end, width)
    w, h, left, top, bottom = 960.0, 260.0, 56.0, 8.0, 22.0
    plot_w, plot_h = w - left - 8.0, h - top - bottom
    pos_max = _nice(max((v for v, _ in ap.values()), default=0.0))
    neg_max = max((v for v, _ in am.values()), default=0.0)
    neg_max = _nice(neg_max) if neg_max > 0 else 0.0
    pos_h = plot_h * pos_max / (pos_max + neg_max)
    base = top + pos_h
    scale = pos_h / pos_max
    sw = plot_w / slots
    unit = f"Wh / {width // 60} min"
    parts = [(f'<svg class="profile" viewBox="0 0 {w:.0f} {h:.0f}" role="img" '
              f'aria-label="{e(t(lang, "profile"))}" data-start="{start}" data-end="{end}" '
              f'data-period="{period}" data-bucket="{width}">')]
    # Axis labels: the maximum and zero on both sides, energy per bar.
    for v, y in ((pos_max, top), (0.0, base), *(((-neg_max, top + plot_h),) if neg_max else ())):
        if v == 0.0 and neg_max and min(base - top, top + plot_h - base) < 14:
            continue  # the zero label would overlap the other side's
        parts.append(f'<line class="grid" x1="{left}" x2="{w - 8}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="ax" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{number(v)}</text>')
    parts.append(f'<text class="ax" x="{left + 4}" y="{top + 12}">{e(unit)}</text>')
    step_h = 3 if end - start <= 2 * 86400 else 24
    tick = dt.datetime.fromtimestamp(start, tz).replace(minute=0, second=0, microsecond=0)
    while tick.timestamp() < end:
        ts = tick.timestamp()
        if ts >= start and (tick.hour % step_h == 0):
            x = left + (ts - start) / width * sw
            text = tick.strftime("%H:%M") if step_h < 24 else tick.strftime("%d.%m")
            parts.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}"/>'
                         f'<text class="ax" x="{x:.1f}" y="{h - 6}" text-anchor="middle">{text}</text>')
        tick = (tick + dt.timedelta(hours=1)).astimezone(tz)
    gaps: list[tuple[int, int]] = []
    run: int | None = None
    for k in range(slots):
        if k not in ap and k not in am:
            run = k if run is None else run
        elif run is not None:
            gaps.append((run, k))
            run = None
    if run is not None:
        gaps.append((run, slots))
    gap_text = e(t(lang, "gap"))
    parts.append('<g class="gap">')
    for a, b in gaps:
        parts.append(f'<rect x="{left + a * sw:.1f}" y="{top}" width="{(b - a) * sw:.1f}" height="{plot_h:.1f}" '
                     f'data-t="{start + a * width}" data-n="{b - a}"><title>{gap_text}</title></rect>')
    parts.append("</g>")
    for cls, data, sign in (("ap", ap, -1), ("am", am, 1)):
        parts.append(f'<g class="{cls}" data-channel="{"A+" if cls == "ap" else "A-"}">')
        for k, (v, n) in sorted(data.items()):
            bar = abs(v) * scale
            y = base - bar if sign < 0 else base
            part = f' class="part" data-n="{n}"' if n < per else ""
            parts.append(f'<rect x="{left + k * sw:.1f}" y="{y:.1f}" width="{max(sw - 0.4, 0.6):.1f}" '
                         f'height="{bar:.1f}" data-t="{start + k * width}" data-v="{number(v)}"{part}/>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
