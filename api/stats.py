"""/api/v1/stats: the evaluation indicators (督查考核), as JSON or CSV."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from api.auth import ActorDep
from gis import kpi
from gis.intake import TZ

router = APIRouter(prefix="/api/v1/stats", tags=["stats"])


@router.get("/kpi")
def kpis(
    request: Request, actor: ActorDep,
    date_from: Annotated[dt.datetime, Query(alias="from", description="start of the period (received at)")],
    date_to: Annotated[dt.datetime, Query(alias="to", description="end of the period, exclusive")],
    by: Literal["village", "platform", "unit", "worker", "township", "category"] = "village",
    format: Literal["json", "csv"] = "json",
) -> Any:
    """Received, accepted, closed, closure and on-time rates, handling hours (mean, p90), overdue, rework, return
    and escalation rates, merged duplicates — over the cases received in [from, to) within your scope."""
    # A date or time without an offset is the township's local time, not the database server's.
    date_from, date_to = (d if d.tzinfo else d.replace(tzinfo=TZ) for d in (date_from, date_to))
    rows = kpi.kpis(request.app.state.engine, actor, date_from, date_to, by, taxonomy=request.app.state.taxonomy)
    if format == "csv":
        name = f"kpi-{by}-{date_from:%Y%m%d}-{date_to:%Y%m%d}.csv"
        return Response(kpi.to_csv(rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return JSONResponse({"from": date_from.isoformat(), "to": date_to.isoformat(), "by": by, "rows": rows})
