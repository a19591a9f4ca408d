"""The wall's ticker of the latest cases: one entry per case, already in the reader's language.

The server renders the first entries with the page; later ones arrive on the live feed with the same fields and are
merged in the browser (assets/dashboard.js, `wangge.mergeTicker`), so a new case shows without a server round trip.
"""

from __future__ import annotations

from typing import Any

from dash import html

from dashboard import i18n
from gis.intake import TZ
from gis.taxonomy import Taxonomy

SIZE = 10


def entry(e: dict[str, Any], lang: str, taxonomy: Taxonomy) -> dict[str, Any]:
    try:
        c = taxonomy.category(e["category"])
        category = c.name_en if lang == "en" else c.name_zh
    except Exception:
        category = e["category"]
    where = " · ".join(x for x in (e.get("village_name"), e.get("cell_name"), e.get("worker_name")) if x)
    return {"id": e["id"], "time": i18n.fmt_dt(e["received_at"].astimezone(TZ), lang, short=True),
            "category": category, "status": e["status"], "status_label": i18n.status(e["status"], lang),
            "where": where or i18n.t("unassigned", lang)}


def item(x: dict[str, Any]) -> html.Li:
    attrs: Any = {"data-id": str(x["id"])}
    return html.Li([html.Span(x["time"], className="tick-time"), html.Span(f"#{x['id']}", className="tick-id"),
                    html.Span(x["category"], className="tick-cat"),
                    html.Span(x["status_label"], className=f"tick-status st-{x['status']}"),
                    html.Span(x["where"], className="tick-where")], className="tick", **attrs)
