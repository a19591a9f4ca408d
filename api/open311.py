"""Open311 GeoReport v2 (JSON) over the same intake: FixMyStreet-style clients can report and follow cases.

Services are the taxonomy's categories; a request is a case (status open/closed), `agency_responsible` the
handling unit, `expected_datetime` the deadline from our SLA. Anonymous requests come in as citizen reports;
no personal data is ever returned.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from gis.intake import TZ, Report

router = APIRouter(prefix="/open311/v2", tags=["open311"])


def _service(request: Request, c: Any) -> dict[str, Any]:
    platform = request.app.state.taxonomy.platform_of(c.code)
    return {"service_code": c.code, "service_name": c.name_zh, "description": c.name_en, "metadata": False,
            "type": "realtime", "keywords": c.name_en.lower(), "group": platform.name_zh}


@router.get("/services.json")
def services(request: Request) -> Any:
    return JSONResponse([_service(request, c) for c in request.app.state.taxonomy.categories.values()])


@router.get("/services/{code}.json")
def service(request: Request, code: str) -> Any:
    c = request.app.state.taxonomy.category(code)  # 404 via NotFound
    return JSONResponse({"service_code": c.code, "attributes": []})


@router.post("/requests.json", status_code=201)
def create_request(
    request: Request,
    service_code: Annotated[str, Form()],
    lat: Annotated[float | None, Form()] = None,
    long: Annotated[float | None, Form()] = None,
    address_string: Annotated[str | None, Form()] = None,
    description: Annotated[str | None, Form(max_length=4000)] = None,
    first_name: Annotated[str | None, Form(max_length=32)] = None,
    last_name: Annotated[str | None, Form(max_length=32)] = None,
    phone: Annotated[str | None, Form(max_length=32)] = None,
    media_url: Annotated[str | None, Form()] = None,
) -> Any:
    if (lat is None or long is None) and not address_string:
        raise HTTPException(400, "lat/long or address_string is required")
    name = "".join(p for p in (last_name, first_name) if p) or None
    report = Report(source="citizen", category=service_code, lon=long, lat=lat, address=address_string,
                    description=description, reporter_name=name, reporter_phone=phone,
                    photos=[media_url] if media_url else [])
    r = request.app.state.intake.ingest([report])[0]
    return JSONResponse([{"service_request_id": str(r["id"]), "service_notice": r["outcome"], "account_id": None}],
                        status_code=201 if r["outcome"] == "created" else 200)


_SELECT = """SELECT e.id, e.status, e.category, e.description, e.unit_code, e.received_at, e.updated_at, e.deadline,
                    e.address, ST_Y(e.geom) AS lat, ST_X(e.geom) AS lon, e.reason FROM events e"""


def _request(request: Request, r: Any) -> dict[str, Any]:
    taxonomy = request.app.state.taxonomy
    unit = taxonomy.units.get(r.unit_code) if r.unit_code else None
    closed = r.status in ("closed", "rejected")
    return {
        "service_request_id": str(r.id), "status": "closed" if closed else "open",
        "status_notes": r.status if r.status != "needs_location" else (r.reason or r.status),
        "service_name": taxonomy.category(r.category).name_zh, "service_code": r.category,
        "description": r.description, "agency_responsible": unit.name_zh if unit else None,
        "service_notice": None, "requested_datetime": r.received_at.astimezone(TZ).isoformat(),
        "updated_datetime": r.updated_at.astimezone(TZ).isoformat(),
        "expected_datetime": r.deadline.astimezone(TZ).isoformat() if r.deadline else None,
        "address": r.address, "address_id": None, "zipcode": None, "lat": r.lat, "long": r.lon, "media_url": None,
    }


@router.get("/requests.json")
def list_requests(
    request: Request, service_code: str | None = None,
    start_date: dt.datetime | None = None, end_date: dt.datetime | None = None,
    status: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
    service_request_id: str | None = None,
) -> Any:
    where: list[str] = ["true"]
    params: dict[str, Any] = {}
    if service_request_id:
        ids = [int(i) for i in service_request_id.split(",") if i.strip().isdigit()]
        where.append("e.id = ANY(:ids)")
        params["ids"] = ids
    if service_code:
        where.append("e.category = ANY(:codes)")
        params["codes"] = service_code.split(",")
    if start_date:
        where.append("e.received_at >= :start")
        params["start"] = start_date
    if end_date:
        where.append("e.received_at < :end")
        params["end"] = end_date
    if status:
        where.append("e.status IN ('closed', 'rejected')" if status == "closed" else
                     "e.status NOT IN ('closed', 'rejected')")
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(text(f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY e.id DESC LIMIT 1000"),
                            params).all()
    return JSONResponse([_request(request, r) for r in rows])


@router.get("/requests/{request_id}.json")
def get_request(request: Request, request_id: int) -> Any:
    with request.app.state.engine.connect() as conn:
        r = conn.execute(text(f"{_SELECT} WHERE e.id = :id"), {"id": request_id}).first()
    if r is None:
        raise HTTPException(404, f"no service request {request_id}")
    return JSONResponse([_request(request, r)])
