"""АС СиОИ documents: a period's readings from the store, rendered through the sink's template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pollerd.model import Reading

from .options import SioiOptions

if TYPE_CHECKING:
    from pollerd.store import Store



_PAGE = 5000


async def collect_readings(store: Store, opts: SioiOptions, period: str) -> list[Reading]:
    """The period's readings that go into the document, in a stable order (meter, ts, channel, archive)."""
    start, end = opts.period.bounds(period)
    out: dict[tuple[str, str, str, int], Reading] = {}
    for meter in (opts.meters or (None,)):
        page = 1
        while True:
            rows, total = await store.query_readings(meter=meter, ts_from=start, ts_to=end, page=page,
                                                     per_page=_PAGE)
            for r in rows:
                if opts.channels and r.channel not in opts.channels:
                    continue
                if opts.archives and str(r.archive) not in opts.archives:
                    continue
                out[(r.meter, r.channel, str(r.archive), r.ts)] = r
            if page * _PAGE >= total or not rows:
                break
            page += 1
    return sorted(out.values(), key=lambda r: (r.meter, r.ts, r.channel, str(r.archive)))


def render_document(opts: SioiOptions, *, gateway: str, sink: str, period: str,
                    readings: list[Reading]) -> bytes:
    header = {"gateway": gateway, "sink": sink, "form_code": opts.form_code, **opts.period.header(period),
              "count": len(readings), "meter_count": len({r.meter for r in readings})}
    rows = [opts.period.reading_fields(r, opts.value_scale) for r in readings]
    return opts.template.render(header, rows).encode(opts.encoding, errors="xmlcharrefreplace")
