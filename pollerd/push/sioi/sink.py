"""АС СиОИ document sink (seed 003): turns a period's readings into an XML collection document, uploads it
once, and follows the job until the service has loaded or failed it.

Not a batch push client: it runs on its own schedule (a daily or monthly document, built at ``at`` on the
day after the period) and keeps no outbox cursor.

Exactly once. A loaded document cannot be corrected by its sender (seed 003: only support can delete it), so
a period's record lives in the store's state table under ``sioi:<sink>:<period>`` and is written *before*
every upload ("uploading", with the document's SHA-256) and right after it ("queued", with the job id):

* "uploading" found at start (we died between the two writes), or an upload whose answer is unclear (a
  timeout after the body went out, a 5xx, a 2xx without a job id) -> "ambiguous": reported, never re-sent
  automatically. The operator checks АС СиОИ and runs ``pollerd sioi --retry PERIOD`` or ``--accept PERIOD``.
* "queued" -> the job is polled every ``status_poll``; "loaded" or "failed" (the service's errors kept and
  reported); still unresolved after ``job_timeout`` (at most the 2 hours the service keeps jobs) -> "lost",
  reported, not re-sent.
* "failed"/"rejected" -> the document is rebuilt every hour and uploaded again only if it changed: a hash
  once sent is never sent again (except after ``--retry``).

Failures that certainly did not deliver the document (connection refused, login refused, 401/403/404/429/
503, garbage from the login or status call) are retried with capped, jittered backoff and reported in /health
after a few tries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pollerd.config.model import SinkConfig
from pollerd.errors import SinkError, StoreError
from pollerd.metrics import Registry
from pollerd.push import TransientSinkError
from pollerd.push.forwarder import retry_delay
from pollerd.state import SinkState

from .client import Ambiguous, JobUnknown, Rejected, SioiClient
from .document import collect_readings, render_document
from .options import SioiOptions
from .records import FINAL_OK, HELD, _brief, _copy, since_key, state_key

log = logging.getLogger("pollerd.push.sioi")

if TYPE_CHECKING:
    from pollerd.store import Store




RECHECK = 3600.0          # how often a failed/empty period's document is rebuilt to see whether it changed
DATA_RECHECK = 300.0      # how often a period waiting for readings is looked at again
MAX_SLEEP = 30.0          # longest sleep: operator changes (`pollerd sioi --retry`) and clock steps are seen
ALARM_AFTER = 3           # consecutive failed tries before an upstream problem becomes a /health reason


class SioiSink:
    """Run with ``await SioiSink(...).run()`` until cancelled."""

    def __init__(self, store: Store, sink: SinkConfig, gateway: str, state: SinkState, metrics: Registry, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random,
                 client: SioiClient | None = None, max_sleep: float = MAX_SLEEP) -> None:
        if not isinstance(sink.options, SioiOptions):
            raise SinkError(f"sink {sink.name!r}: no АС СиОИ options (type {sink.type!r})")
        self._store = store
        self._sink = sink
        self._opts: SioiOptions = sink.options
        self._gateway = gateway
        self._state = state
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._max_sleep = max_sleep
        self.client = client or SioiClient(sink, self._opts)
        self._name = sink.name
        self._attempt = 0
        self._failing: str | None = None
        self._logged: dict[str, str] = {}   # period -> the last problem logged, so each is logged once
        self._waiting_logged: set[str] = set()
        self._following: set[str] = set()   # periods with a job to follow, also once out of the window
        # period -> its record as this sink last read or wrote it: every write is conditional on it, so an
        # operator's `pollerd sioi --retry/--accept` from another process is never overwritten
        self._seen: dict[str, Any] = {}
        self._m_uploads = metrics.counter("pollerd_sioi_uploads_total", "Documents sent to АС СиОИ.", ("sink",))
        self._m_docs = metrics.counter("pollerd_sioi_documents_total",
                                       "Documents by final outcome (loaded, failed, rejected, lost, ambiguous, "
                                       "empty).", ("sink", "outcome"))
        self._m_fail = metrics.counter("pollerd_sink_failures_total", "Failed batch deliveries, by kind.",
                                       ("sink", "kind"))
        self._m_lag_s = metrics.gauge("pollerd_sink_lag_seconds", "Age of the oldest reading not yet confirmed.",
                                      ("sink",))
        self._m_last_ok = metrics.gauge("pollerd_sink_last_success_timestamp",
                                        "Unix time of the last confirmed batch.", ("sink",))
        self._m_uploads.inc(0, sink=self._name)
        self._m_lag_s.set(0, sink=self._name)

    # -- loop -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        recovered = False
        try:
            while True:
                try:
                    if not recovered:
                        # Inside the retry: a store error here must not leave run() (the daemon's task group
                        # would stop everything), and no upload may happen before it succeeded.
                        await self._recover()
                        recovered = True
                    wake = await self.tick()
                    if self._failing:
                        log.info("sink %s: АС СиОИ reachable again after %d failed tries", self._name,
                                 self._attempt)
                    self._attempt, self._failing = 0, None
                    self._state.alarms.pop("upstream", None)
                except (TransientSinkError, StoreError) as exc:
                    wake = self._clock() + self._on_failure(exc)
                except Exception as exc:  # a bug must not stop the daemon; an "uploading" record stays ambiguous
                    log.exception("sink %s: unexpected error", self._name)
                    wake = self._clock() + self._on_failure(exc)
                delay = max(0.0, min(wake - self._clock(), self._max_sleep))
                await self._sleep(delay if delay > 0 else 0.001)
        finally:
            await self.client.close()

    def _on_failure(self, exc: Exception) -> float:
        text = str(exc)
        kind = getattr(exc, "kind", "store")
        self._state.failures += 1
        self._state.last_error = text
        self._m_fail.inc(kind=kind, sink=self._name)
        delay = self.backoff(self._attempt)
        self._attempt += 1
        if self._failing is None:
            log.warning("sink %s: %s; retrying with backoff", self._name, text)
        else:
            log.debug("sink %s: try %d failed, next in %.1f s: %s", self._name, self._attempt, delay, text)
        self._failing = text
        if self._attempt >= ALARM_AFTER:
            self._state.alarms["upstream"] = f"{text} ({self._attempt} tries, retrying)"
        return delay

    def backoff(self, attempt: int) -> float:
        return retry_delay(self._sink, attempt, self._rng)

    async def _recover(self) -> None:
        """An "uploading" record at start means we died between sending and recording the job id. A
        "queued" one is followed to its end even when its period has left the ``catch_up`` window."""
        await self._window(self._clock())   # records the sink's first period before anything else
        for key, rec in (await self._store.states(f"sioi:{self._name}:")).items():
            period = key[len(f"sioi:{self._name}:"):]
            # ":" : a record of another sink whose name extends this one's ("a" and "a:b"); periods have none.
            if key == since_key(self._name) or ":" in period or not isinstance(rec, dict):
                continue
            if rec.get("status") == "queued":
                self._following.add(period)
            if rec.get("status") == "uploading":
                before = _copy(rec)
                rec.update(status="ambiguous", updated=self._clock(),
                           reason="pollerd stopped during the upload, before the job id was recorded")
                if await self._store.set_state_if(state_key(self._name, period), rec, before):
                    self._m_docs.inc(sink=self._name, outcome="ambiguous")

    async def _retries(self) -> set[str]:
        """Periods the operator handed back with `pollerd sioi --retry` (written by another process)."""
        prefix = f"sioi:{self._name}:"
        return {key[len(prefix):] for key, rec in (await self._store.states(prefix)).items()
                if key != since_key(self._name) and ":" not in key[len(prefix):]
                and isinstance(rec, dict) and rec.get("status") == "retry"}

    async def _window(self, now: float) -> list[str]:
        """Periods this sink is responsible for, oldest first: the last ``catch_up`` completed periods, but
        none before the first period after the sink was first started (no surprise uploads of old data)."""
        per = self._opts.period
        last = per.prev_key(per.containing(now))
        since = await self._store.get_state(since_key(self._name))
        if not isinstance(since, dict) or since.get("period") != per.kind:
            since = {"period": per.kind, "key": last}
            await self._store.set_state(since_key(self._name), since)
        keys = [last]
        while len(keys) < self._opts.catch_up and keys[-1] > since["key"]:
            keys.append(per.prev_key(keys[-1]))
        return [k for k in reversed(keys) if k >= since["key"]]

    async def tick(self) -> float:
        """Look at every period in the window once; return when to look again."""
        now = self._clock()
        per = self._opts.period
        window = await self._window(now)
        wake = per.build_time(per.containing(now))
        alarms: dict[str, str] = {}
        oldest_open: float | None = None
        # A job queued near the end of its period's turn in the window (a late `at`, a small catch_up) is still
        # followed after the period left the window, until loaded, failed or lost; otherwise it would stay
        # "queued" forever, never reported. Outside the window nothing is built or uploaded.
        # An operator's `pollerd sioi --retry` is acted on whatever the period's age: they asked for it.
        extra = sorted((self._following | await self._retries()) - set(window))
        try:
            for period in extra + window:
                if period in window and per.build_time(period) > now:
                    wake = min(wake, per.build_time(period))
                    continue
                key = state_key(self._name, period)
                rec = await self._store.get_state(key)
                self._seen[period] = _copy(rec)
                if period not in window and (rec or {}).get("status") not in ("queued", "uploading", "retry",
                                                                               *HELD):
                    self._following.discard(period)
                    continue
                try:
                    nxt = await self._handle(period, rec, now)
                except _Changed:
                    log.info("sink %s: document %s was changed by an operator meanwhile; acting on that",
                             self._name, period)
                    nxt = self._clock()
                finally:
                    rec = await self._store.get_state(key)
                    status = (rec or {}).get("status")
                    if status == "queued":
                        self._following.add(period)
                    if status not in FINAL_OK and status not in HELD and status not in ("failed", "rejected",
                                                                                         "empty"):
                        oldest_open = per.build_time(period) if oldest_open is None else oldest_open
                    text = self._problem(period, rec)
                    if text:
                        alarms[f"document {period}"] = text
                if nxt is not None:
                    wake = min(wake, nxt)
        finally:
            upstream = self._state.alarms.get("upstream")
            self._state.alarms = alarms
            if upstream:
                self._state.alarms["upstream"] = upstream
            lag = max(0.0, now - oldest_open) if oldest_open is not None else 0.0
            self._state.lag_seconds = lag
            self._m_lag_s.set(lag, sink=self._name)
        return wake

    def _problem(self, period: str, rec: dict[str, Any] | None) -> str | None:
        if not rec:
            return None
        status = rec.get("status")
        retry = (f"check the document in АС СиОИ, then `pollerd sioi --config FILE --sink {self._name} "
                 f"--retry {period}` (send it again) or `--accept {period}` (it is there)")
        if status in ("failed", "rejected"):
            errors = "; ".join(rec.get("errors") or []) or "no error text"
            text = f"{status} by АС СиОИ: {errors[:500]}"
            if rec.get("unchanged"):
                text += " (document unchanged since, not re-sent)"
        elif status == "lost":
            text = f"lost: {rec.get('reason')}; not re-sent: {retry}"
        elif status == "ambiguous":
            text = f"possibly uploaded ({rec.get('reason')}); not re-sent: {retry}"
        elif status == "empty":
            text = "no readings for the period; nothing sent"
        else:
            return None
        if self._logged.get(period) != text:
            self._logged[period] = text
            log.error("sink %s: document %s %s", self._name, period, text)
        return text

    # -- one period -------------------------------------------------------------------------------------

    async def _save(self, period: str, rec: dict[str, Any]) -> None:
        """Write the period's record unless someone else changed it since this sink read it (_Changed)."""
        rec["updated"] = self._clock()
        if not await self._store.set_state_if(state_key(self._name, period), rec, self._seen.get(period)):
            raise _Changed(period)
        self._seen[period] = _copy(rec)

    async def _handle(self, period: str, rec: dict[str, Any] | None, now: float) -> float | None:
        if rec is not None:
            status = rec.get("status")
            if status in FINAL_OK or status in HELD:
                return None
            if status == "uploading":  # another sink instance cannot exist; treat like a crash mid-upload
                rec.update(status="ambiguous", reason="an upload was in progress with no job id recorded")
                await self._save(period, rec)
                return None
            if status == "queued":
                return await self._follow(period, rec, now)
            if status in ("failed", "rejected", "empty") and now < float(rec.get("checked", 0)) + RECHECK:
                return float(rec["checked"]) + RECHECK
        return await self._build_and_upload(period, rec, now)

    async def _build_and_upload(self, period: str, rec: dict[str, Any] | None, now: float) -> float | None:
        opts = self._opts
        readings = await collect_readings(self._store, opts, period)
        missing = sorted(set(opts.meters) - {r.meter for r in readings})
        deadline = opts.period.build_time(period) + opts.data_wait
        if (not readings or missing) and now < deadline:
            if period not in self._waiting_logged:
                self._waiting_logged.add(period)
                log.info("sink %s: document %s waits for readings of %s (until %s)", self._name, period,
                         ", ".join(missing) or "any meter", time.strftime("%Y-%m-%d %H:%M", time.gmtime(deadline)))
            return min(deadline, now + DATA_RECHECK)
        if not readings:
            if (rec or {}).get("status") != "empty":
                self._m_docs.inc(sink=self._name, outcome="empty")
            await self._save(period, {**(rec or {}), "period": period, "status": "empty", "checked": now})
            return now + RECHECK
        if missing:
            log.warning("sink %s: document %s goes without readings of %s (waited %s s)", self._name, period,
                        ", ".join(missing), f"{opts.data_wait:g}")
        document = render_document(opts, gateway=self._gateway, sink=self._name, period=period, readings=readings)
        digest = hashlib.sha256(document).hexdigest()
        prev = dict(rec or {})
        hashes = list(prev.get("hashes") or [])
        if prev.get("status") != "retry" and digest in hashes:
            # A hash once sent is never sent again: the document did not change since it failed.
            await self._save(period, {**prev, "checked": now, "unchanged": True})
            return now + RECHECK
        filename = opts.filename.format(form_code=opts.form_code, period=period)
        # Log in first: a refused login then costs no "uploading" record write (SD cards wear).
        await self.client.ensure_login()
        record = {"period": period, "status": "uploading", "hash": digest, "hashes": hashes + [digest],
                  "rows": len(readings), "meters": len({r.meter for r in readings}), "job_id": None,
                  "started": now, "attempts": int(prev.get("attempts", 0)) + 1, "errors": [],
                  "history": (prev.get("history") or []) + ([_brief(prev)] if prev.get("status") else [])}
        # Durable before the first byte goes out: a crash from here on is "ambiguous", never a second upload.
        await self._save(period, record)
        self._m_uploads.inc(sink=self._name)
        log.info("sink %s: uploading document %s (%d readings, %d bytes, sha256 %s)", self._name, period,
                 len(readings), len(document), digest[:16])
        try:
            job = await self.client.upload(opts.form_code, filename, document)
        except TransientSinkError:
            # Certainly not delivered: back to how it was, so the same document may go on the next try.
            await self._save(period, prev or {"period": period, "status": None})
            raise
        except Rejected as exc:
            record.update(status="rejected", errors=exc.errors, reason=str(exc), checked=self._clock())
            await self._save(period, record)
            self._m_docs.inc(sink=self._name, outcome="rejected")
            return self._clock() + RECHECK
        except Ambiguous as exc:
            record.update(status="ambiguous", reason=str(exc))
            await self._save(period, record)
            self._m_docs.inc(sink=self._name, outcome="ambiguous")
            return None
        # Logged before it is saved: if the save fails, the record turns ambiguous and this line is the only
        # place the operator finds the job id.
        log.info("sink %s: document %s queued as job %s", self._name, period, job)
        record.update(status="queued", job_id=job, uploaded_at=self._clock())
        await self._save(period, record)
        self._state.sent += 1
        return self._clock() + opts.status_poll

    async def _follow(self, period: str, rec: dict[str, Any], now: float) -> float | None:
        opts = self._opts
        job = str(rec["job_id"])
        age = now - float(rec.get("uploaded_at", now))
        due = float(rec.get("polled", 0)) + opts.status_poll
        if due > now and age < opts.job_timeout:
            return due
        try:
            status, errors = await self.client.status(job)
        except JobUnknown as exc:
            if age < opts.job_timeout:
                log.warning("sink %s: %s; asking again until the job is %s old", self._name, exc,
                            f"{opts.job_timeout:g} s")
                rec["polled"] = now
                await self._save(period, rec)
                return now + opts.status_poll
            await self._lost(period, rec, f"job {job} unknown to АС СиОИ {age:.0f} s after the upload "
                                           f"(finished jobs are kept at most 2 h), outcome unknown")
            return None
        except TransientSinkError as exc:
            if age >= opts.job_timeout:
                await self._lost(period, rec, f"no status for job {job} within {opts.job_timeout:g} s "
                                               f"(last error: {exc})")
                return None
            raise
        low = status.lower()
        if low in (s.lower() for s in opts.status_loaded):
            rec.update(status="loaded", service_status=status, loaded_at=now, errors=[])
            await self._save(period, rec)
            self._state.last_success = now
            self._m_last_ok.set(now, sink=self._name)
            self._m_docs.inc(sink=self._name, outcome="loaded")
            log.info("sink %s: document %s loaded by АС СиОИ (job %s, status %r)", self._name, period, job, status)
            return None
        if low in (s.lower() for s in opts.status_failed):
            rec.update(status="failed", service_status=status, errors=errors or [f"status {status!r}"],
                       checked=now)
            await self._save(period, rec)
            self._m_docs.inc(sink=self._name, outcome="failed")
            return now + RECHECK
        if low not in (s.lower() for s in opts.status_pending) and rec.get("service_status") != status:
            log.warning("sink %s: job %s reports status %r, which is in none of status_loaded, status_failed, "
                        "status_pending; treating it as pending", self._name, job, status)
        if age >= opts.job_timeout:
            await self._lost(period, rec, f"job {job} still {status!r} after {opts.job_timeout:g} s")
            return None
        rec.update(service_status=status, polled=now)
        await self._save(period, rec)
        return now + opts.status_poll

    async def _lost(self, period: str, rec: dict[str, Any], reason: str) -> None:
        rec.update(status="lost", reason=reason)
        await self._save(period, rec)
        self._m_docs.inc(sink=self._name, outcome="lost")
        return


class _Changed(Exception):
    """A period's record changed in the store since this sink read it: an operator acted meanwhile."""
