"""АС СиОИ period records in the store's state table (``sioi:<sink>:<period>``) and the operator's actions on
them (``pollerd sioi``: list, retry, accept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from pollerd.config.model import SinkConfig
from pollerd.errors import SinkError

from .options import SioiOptions

if TYPE_CHECKING:
    from pollerd.store import Store



FINAL_OK = ("loaded", "accepted")
HELD = ("ambiguous", "lost")


def state_key(sink: str, period: str) -> str:
    return f"sioi:{sink}:{period}"


def since_key(sink: str) -> str:
    return f"sioi:{sink}:since"


def _copy(rec: Any) -> Any:
    """A deep copy of a JSON value (records are updated in place)."""
    return None if rec is None else orjson.loads(orjson.dumps(rec))


def _brief(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec.get(k) for k in ("status", "hash", "job_id", "errors", "reason", "updated") if rec.get(k)}


async def list_records(store: Store, sink: SinkConfig) -> list[dict[str, Any]]:
    """Every period record of the sink, newest first."""
    recs = await store.states(f"sioi:{sink.name}:")
    recs.pop(since_key(sink.name), None)
    return [r for _, r in sorted(recs.items(), reverse=True) if isinstance(r, dict)]


async def operator_set(store: Store, sink: SinkConfig, period: str, action: str, now: float, *,
                       force: bool = False) -> dict[str, Any]:
    """``retry``: send the period's document again on the next look (even a hash sent before: the operator
    checked АС СиОИ has none); ``accept``: mark it loaded (the operator found it there)."""
    opts = sink.options
    if not isinstance(opts, SioiOptions):
        raise SinkError(f"sink {sink.name!r}: no АС СиОИ options (type {sink.type!r})")
    try:
        canonical = opts.period.key_of(opts.period.start_date(period))
    except (ValueError, TypeError):
        raise SinkError(f"{period!r} is not a {opts.period.kind} period "
                        f"({'YYYY-MM-DD' if opts.period.kind == 'daily' else 'YYYY-MM'})") from None
    if canonical != period:
        raise SinkError(f"{period!r} is not a {opts.period.kind} period (did you mean {canonical!r}?)")
    key = state_key(sink.name, period)
    stored = await store.get_state(key)
    rec = _copy(stored) or {"period": period}
    if rec.get("status") == "uploading":
        raise SinkError(f"document {period} is being uploaded right now; look again in a minute "
                        f"(`pollerd sioi --sink {sink.name}`)")
    if rec.get("status") in FINAL_OK and action == "retry" and not force:
        raise SinkError(f"document {period} is {rec['status']} (job {rec.get('job_id')}); a loaded document "
                        "cannot be corrected: ask АС СиОИ support (skts@ti-ees.ru) to delete it, then add --force")
    history = (rec.get("history") or []) + ([_brief(rec)] if rec.get("status") else [])
    if action == "retry":
        rec.update(status="retry", history=history, reason="operator: send again", updated=now, checked=0)
    elif action == "accept":
        rec.update(status="accepted", history=history, reason="operator: the document is in АС СиОИ", updated=now)
    else:
        raise SinkError(f"unknown action {action!r}")
    if not await store.set_state_if(key, rec, stored):
        raise SinkError(f"document {period} changed while you acted (the running daemon is working on it); "
                        f"look again with `pollerd sioi --sink {sink.name}` and repeat if still needed")
    return rec
