"""The reports page: the form, the table, and the CSV's header in the page's language."""

from __future__ import annotations

from collections.abc import Sequence

from .html import e, url
from .i18n import t
from .reports import ENERGIES, ReportQuery, ReportRow, kwh

# About 300 bytes a row: 300 rows and a list of 1,000 meters keep the page within its 150 KB; CSV and JSON
# carry every row.
HTML_ROWS = 300
SOURCES = {"daily": "src_daily", "monthly": "src_monthly", "counters": "src_counters", "missing": "src_missing"}


def csv_header(lang: str) -> list[str]:
    return [t(lang, "meter"), t(lang, "period"), "T1", "T2", "T3", "T4", t(lang, "total"), "unit",
            t(lang, "source")]


def render(*, meters: Sequence[str], query: ReportQuery | None, chosen: Sequence[str], rows: Sequence[ReportRow],
           error: str | None, lang: str) -> str:
    period = query.period if query else "day"
    energy = query.energy if query else "A+"
    first = "" if query is None else (query.first.isoformat() if period == "day" else query.first.strftime("%Y-%m"))
    last = "" if query is None else (query.last.isoformat() if period == "day" else query.last.strftime("%Y-%m"))
    size = min(8, max(2, len(meters)))
    picked = set(chosen)
    opts = "".join(f'<option{" selected" if m in picked else ""}>{e(m)}</option>' for m in meters)
    period_opts = "".join(f'<option value="{p}"{" selected" if p == period else ""}>{e(t(lang, p))}</option>'
                          for p in ("day", "month"))
    energy_opts = "".join(f'<option{" selected" if x == energy else ""}>{x}</option>' for x in ENERGIES)
    kind = "month" if period == "month" else "date"
    out = [(f'<h1>{e(t(lang, "report_title"))}</h1>'
           f'<form class="filters report" method="get" action="/reports">'
           f'<label>{e(t(lang, "pick_meters"))}<select name="meter" multiple size="{size}">{opts}</select></label>'
           f'<label>{e(t(lang, "period"))} <select name="period">{period_opts}</select></label>'
           f'<label>{e(t(lang, "energy"))} <select name="energy">{energy_opts}</select></label>'
           f'<label>{e(t(lang, "from"))} <input type="{kind}" name="from" value="{e(first)}"></label>'
           f'<label>{e(t(lang, "to"))} <input type="{kind}" name="to" value="{e(last)}"></label>'
           f'<button>{e(t(lang, "show"))}</button></form>')]
    if error:
        out.append(f'<p class="warn" data-error>{e(t(lang, "bad_request", error))}</p>')
    if query is None:
        return "".join(out)
    params = {"meter": list(chosen), "period": query.period, "energy": query.energy, "from": first, "to": last}
    out.append('<form class="filters" method="get" action="/reports.csv">'
               + "".join(f'<input type="hidden" name="meter" value="{e(m)}">' for m in chosen)
               + "".join(f'<input type="hidden" name="{k}" value="{e(v)}">' for k, v in params.items() if k != "meter")
               + f'<label class="check"><input type="checkbox" name="bom" value="1"{" checked" if lang == "ru" else ""}> '
               f'{e(t(lang, "csv_bom"))}</label><label class="check"><input type="checkbox" name="semicolon" value="1"'
               f'{" checked" if lang == "ru" else ""}> {e(t(lang, "csv_semicolon"))}</label>'
               f'<button>{e(t(lang, "csv"))}</button> <a href="{e(url("/api/reports", **params))}">JSON</a></form>')
    unit = "k" + ENERGIES[query.energy] if query.energy.startswith("R") else t(lang, "kwh")
    out.append(f'<div class="scroll"><table class="report"><thead><tr><th>{e(t(lang, "meter"))}</th>'
               f'<th>{e(t(lang, "period"))}</th><th>T1</th><th>T2</th><th>T3</th><th>T4</th>'
               f'<th>{e(t(lang, "total"))}, {e(unit)}</th><th>{e(t(lang, "source"))}</th></tr></thead><tbody>')
    for r in rows[:HTML_ROWS]:
        span = f' title="{r.span[0]}..{r.span[1]}"' if r.span else ""
        cells = "".join(f'<td class="num">{kwh(v)}</td>' for v in r.tariffs)
        out.append(f'<tr data-meter="{e(r.meter)}" data-period="{e(r.period)}" data-source="{r.source}" '
                   f'data-total="{"" if r.total is None else repr(r.total)}"><td>{e(r.meter)}</td>'
                   f'<td>{e(r.period)}</td>{cells}<td class="num">{kwh(r.total)}</td>'
                   f'<td class="src {r.source}"{span}>{e(t(lang, SOURCES[r.source]))}</td></tr>')
    out.append("</tbody></table></div>")
    if len(rows) > HTML_ROWS:
        out.append(f'<p class="note" data-more="{len(rows) - HTML_ROWS}">'
                   f'{e(t(lang, "more_rows", len(rows) - HTML_ROWS))}</p>')
    if any(r.source == "counters" for r in rows):
        out.append(f'<p class="note">{e(t(lang, "counters_note"))}</p>')
    return "".join(out)
