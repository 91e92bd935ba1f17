"""Russian and English text of the status pages, and which language a request gets.

One table, keyed by a short English id: a missing translation fails the unit test that walks the table,
not a technician's page. Texts are plain (the page escapes them); ``{}`` placeholders are filled with
``str.format`` by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGS = ("en", "ru")
LANG_COOKIE = "pollerd_lang"

# id -> (English, Russian)
TEXT: Mapping[str, tuple[str, str]] = {
    "overview": ("Overview", "Обзор"),
    "reports": ("Reports", "Отчёты"),
    "login": ("Log in", "Вход"),
    "logout": ("Log out", "Выход"),
    "token": ("Access token", "Токен доступа"),
    "login_hint": ("This gateway asks for an API token (read or admin).",
                   "Шлюз запрашивает токен API (чтение или администратор)."),
    "login_failed": ("Unknown token.", "Неизвестный токен."),
    "role": ("Role", "Роль"),
    "gateway": ("Gateway", "Шлюз"),
    "version": ("Version", "Версия"),
    "uptime": ("Uptime", "Работает"),
    "health": ("Health", "Состояние"),
    "health_ok": ("OK", "В норме"),
    "health_fail": ("Failing", "Неисправность"),
    "reasons": ("Reasons", "Причины"),
    "warnings": ("Warnings", "Предупреждения"),
    "more_reasons": ("{} more: /health", "ещё {}: /health"),
    "lines": ("Lines", "Линии связи"),
    "line": ("Line", "Линия"),
    "type": ("Type", "Тип"),
    "up": ("up", "на связи"),
    "down": ("down", "нет связи"),
    "not_open": ("not open yet", "ещё не открыта"),
    "bus_share": ("Bus time", "Занятость шины"),
    "reconnects": ("Reconnects", "Переподключений"),
    "exchanges": ("Exchanges", "Обменов"),
    "last_error": ("Last error", "Последняя ошибка"),
    "errors": ("Errors", "Ошибки"),
    "line_errors": ("{} timeouts · {} bad frames · {} failed connects",
                    "{} без ответа · {} искажённых · {} неудачных подключений"),
    "meters": ("Meters", "Счётчики"),
    "meter": ("Meter", "Счётчик"),
    "state": ("State", "Состояние"),
    "protocol": ("Protocol", "Протокол"),
    "address": ("Address", "Адрес"),
    "last_ok": ("Last successful poll", "Последний успешный опрос"),
    "readings_hour": ("Readings, last hour", "Показаний за час"),
    "readings_since": ("Readings, last {} min", "Показаний за {} мин"),
    "all": ("all", "все"),
    "filter": ("Filter", "Отобрать"),
    "shown_of": ("{} of {} meters", "{} из {} счётчиков"),
    "page": ("Page", "Страница"),
    "prev": ("previous", "назад"),
    "next": ("next", "вперёд"),
    "sinks": ("Sinks", "Передача данных"),
    "sink": ("Sink", "Получатель"),
    "lag": ("Lag", "Отставание"),
    "rows": ("rows", "строк"),
    "failing_for": ("failing for {}", "сбой {}"),
    "delivering": ("delivering", "передаёт"),
    "parked": ("Parked batches", "Отложенных пакетов"),
    "none": ("none", "нет"),
    "never": ("never", "никогда"),
    "ago": ("{} ago", "{} назад"),
    "st_ok": ("ok", "норма"),
    "st_failing": ("failing", "нет ответа"),
    "st_pending": ("pending", "ожидает"),
    "st_degraded": ("degraded", "с замечаниями"),
    "refreshed": ("Updated {}", "Обновлено {}"),
    "identity": ("Identity", "Паспорт"),
    "serial": ("Serial number", "Заводской номер"),
    "serial_config": ("Serial (config)", "Заводской номер (конфигурация)"),
    "manufactured": ("Manufactured", "Дата выпуска"),
    "ratios": ("Transformer ratios", "Коэффициенты трансформации"),
    "constant": ("Meter constant", "Постоянная счётчика"),
    "by_meter": ("reported by the meter", "по данным счётчика"),
    "by_config": ("configured", "в конфигурации"),
    "imp_kwh": ("imp/kWh", "имп/кВт·ч"),
    "timezone": ("Time zone", "Часовой пояс"),
    "polls": ("Polls / failures", "Опросов / сбоев"),
    "latest": ("Latest values", "Текущие значения"),
    "channel": ("Channel", "Канал"),
    "value": ("Value", "Значение"),
    "age": ("Age", "Давность"),
    "no_values": ("No current values stored yet.", "Текущих значений пока нет."),
    "vector": ("Vector diagram", "Векторная диаграмма"),
    "vector_missing": ("Not enough data for a vector diagram: {} missing.",
                       "Недостаточно данных для векторной диаграммы: нет {}."),
    "vector_reversed": (("Current of {} is reversed against its voltage (power flows out): check the CT "
                        "polarity or the direction of energy."),
                        ("Ток {} направлен против напряжения (мощность отдаётся): проверьте полярность "
                        "трансформатора тока или направление энергии.")),
    "profile": ("Load profile", "Профиль нагрузки"),
    "profile_none": ("No load-profile intervals in this range.", "Нет интервалов профиля за этот период."),
    "h24": ("24 hours", "24 часа"),
    "d7": ("7 days", "7 суток"),
    "gap": ("no data", "нет данных"),
    "per_interval": ("energy per interval", "энергия за интервал"),
    "events": ("Events", "События"),
    "code": ("Code", "Код"),
    "start": ("Start", "Начало"),
    "end": ("End", "Конец"),
    "text": ("Text", "Описание"),
    "from": ("From", "С"),
    "to": ("To", "По"),
    "no_events": ("No events.", "Событий нет."),
    "more_events": ("{} more not shown; narrow the filter.", "Ещё {} не показано; сузьте отбор."),
    "admin": ("Service (admin)", "Обслуживание (администратор)"),
    "poll_now": ("Poll now", "Опросить сейчас"),
    "raw": ("Raw frame (HEX)", "Команда (HEX)"),
    "send": ("Send", "Отправить"),
    "result": ("Result", "Результат"),
    "no_meter": ("No meter named {}.", "Нет счётчика {}."),
    "report_title": ("Energy by tariff", "Энергия по тарифам"),
    "period": ("Period", "Период"),
    "day": ("by day", "по суткам"),
    "month": ("by month", "по месяцам"),
    "energy": ("Energy", "Энергия"),
    "total": ("Total", "Сумма"),
    "source": ("Source", "Источник"),
    "src_daily": ("daily archive", "суточный архив"),
    "src_monthly": ("monthly archive", "месячный архив"),
    "src_counters": ("counter difference", "разность показаний"),
    "src_missing": ("no data", "нет данных"),
    "counters_note": (("Rows marked \"counter difference\" are computed from the counters polled nearest after "
                      "each period's start, not read from the meter's archive."),
                      ("Строки «разность показаний» вычислены по показаниям, опрошенным ближе всего после "
                      "начала периода, а не прочитаны из архива счётчика.")),
    "show": ("Show", "Показать"),
    "more_rows": ("{} more rows are in the CSV and JSON.", "Ещё {} строк — в CSV и JSON."),
    "csv": ("CSV", "CSV"),
    "csv_bom": ("BOM for Excel", "BOM для Excel"),
    "csv_semicolon": ("semicolon separator", "разделитель «;»"),
    "pick_meters": ("Meters (none chosen: all)", "Счётчики (ни одного: все)"),
    "bad_request": ("Bad request: {}", "Ошибка в запросе: {}"),
    "forbidden": ("This needs an admin token.", "Нужен токен администратора."),
    "csrf": ("The form is stale or came from another site; reload the page.",
             "Форма устарела или пришла с другого сайта; обновите страницу."),
    "kwh": ("kWh", "кВт·ч"),
}


def t(lang: str, key: str, *args: object) -> str:
    text = TEXT[key][1 if lang == "ru" else 0]
    return text.format(*args) if args else text


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The page language: the switch's cookie first, then the browser's Accept-Language (q-values
    honoured), English otherwise."""
    if cookie in LANGS:
        return cookie
    best, best_q = "en", 0.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGS:
            continue
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        if q > best_q:
            best, best_q = primary, q
    return best
