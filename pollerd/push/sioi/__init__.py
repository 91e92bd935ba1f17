"""АС СиОИ document sink (seed 003): builds a period's XML collection document, uploads it once and follows
the job until the service has loaded or failed it.

One module per role: :mod:`.sink` (the schedule and the exactly-once state machine), :mod:`.client` (the
HTTP exchange), :mod:`.document` (readings -> document), :mod:`.template` (the XML template engine),
:mod:`.periods` (what one document covers), :mod:`.records` (period records in the store and the operator's
actions) and :mod:`.options` (the sink's config keys).
"""

from __future__ import annotations

from .client import (
    Ambiguous,
    JobUnknown,
    Rejected,
    SioiClient,
)
from .document import (
    collect_readings,
    render_document,
)
from .options import (
    JOB_RETENTION,
    KEYS,
    SioiOptions,
    parse_options,
)
from .periods import (
    PERIODS,
    Periods,
)
from .records import (
    FINAL_OK,
    HELD,
    list_records,
    operator_set,
    since_key,
    state_key,
)
from .sink import (
    ALARM_AFTER,
    DATA_RECHECK,
    MAX_SLEEP,
    RECHECK,
    SioiSink,
)
from .template import (
    HEADER_FIELDS,
    METER_FIELDS,
    READING_FIELDS,
    SAMPLE_HEADER,
    SAMPLE_READING,
    Block,
    Field,
    Gap,
    Template,
    TemplateError,
    check_well_formed,
    format_value,
)

__all__ = [
    "ALARM_AFTER",
    "Ambiguous",
    "Block",
    "DATA_RECHECK",
    "FINAL_OK",
    "Field",
    "Gap",
    "HEADER_FIELDS",
    "HELD",
    "JOB_RETENTION",
    "JobUnknown",
    "KEYS",
    "MAX_SLEEP",
    "METER_FIELDS",
    "PERIODS",
    "Periods",
    "READING_FIELDS",
    "RECHECK",
    "Rejected",
    "SAMPLE_HEADER",
    "SAMPLE_READING",
    "SioiClient",
    "SioiOptions",
    "SioiSink",
    "Template",
    "TemplateError",
    "check_well_formed",
    "collect_readings",
    "format_value",
    "list_records",
    "operator_set",
    "parse_options",
    "render_document",
    "since_key",
    "state_key",
]
