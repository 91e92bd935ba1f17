"""Mercury 230 meter keys beyond the common ones (its ProtocolSpec.options in pollerd/catalog.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import OptionError
from ..units import parse_duration

KEYS = frozenset({"clock_correction", "max_clock_correction", "use_meter_ratios", "journal_interval",
                  "profile_records_per_cycle"})


@dataclass(frozen=True, slots=True)
class MercuryOptions:
    # Correct the meter clock (03 0D, once a day) when it drifts beyond time_difference. Off by default:
    # changing a billing meter's clock is an operator's decision, and the command layout comes from a
    # public concentrator firmware, not from the vendor document (docs/protocols/mercury230.md, "clock").
    clock_correction: bool = False
    # The largest drift pollerd corrects on its own; beyond it the drift is an event and a /health reason.
    # 230 s keeps inside the meter's daily limit ("within 4 minutes", protocols.mercury230.CORRECTION_LIMIT),
    # as field firmware does.
    max_clock_correction: float = 230.0
    # Apply the KU/KI ratios stored in the meter (08 02) when tn1/tn2/tt are not given.
    use_meter_ratios: bool = False
    # Event journals hold 10 records each and have no "new since" pointer, so every read costs ten requests
    # per journal; they are read at most this often.
    journal_interval: float = 3600.0
    # A backfill of the load profile continues over several cycles rather than holding the meter's cycle
    # (and its share of the bus) for minutes.
    profile_records_per_cycle: int = 512


def parse_options(raw: Mapping[str, object], base_dir: str) -> MercuryOptions:
    kw: dict[str, Any] = {}  # each value is checked where it is set; MercuryOptions(**kw) checks the names
    for key, value in raw.items():
        if key in ("clock_correction", "use_meter_ratios"):
            if not isinstance(value, bool):
                raise OptionError(f"expected true or false, got {value!r}", (key,))
            kw[key] = value
        elif key in ("max_clock_correction", "journal_interval"):
            try:
                seconds = kw[key] = parse_duration(value)
            except ValueError as exc:
                raise OptionError(str(exc), (key,)) from None
            if key == "max_clock_correction":
                from ..protocols.mercury230 import CORRECTION_LIMIT
                if seconds > CORRECTION_LIMIT:
                    raise OptionError(f"at most {CORRECTION_LIMIT} s: the meter corrects its clock by at most "
                                      f"4 minutes a day; a larger error needs a person to set the clock", (key,))
        elif key == "profile_records_per_cycle":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
                raise OptionError(f"expected an integer 1..100000, got {value!r}", (key,))
            kw[key] = value
    return MercuryOptions(**kw)
