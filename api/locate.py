"""/api/v1/locate: one point by query string, or up to 100,000 in one POST."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import LocatorDep
from gis.errors import InvalidCoordinates

router = APIRouter(prefix="/api/v1", tags=["locate"])
MAX_POINTS = 100_000


class Ref(BaseModel):
    code: str
    name: str


class WorkerRef(BaseModel):
    id: str
    name: str


class LocateResult(BaseModel):
    cell: Ref | None
    worker: WorkerRef | None = Field(description="the cell's grid worker on the given date")
    village: Ref | None
    township: Ref | None
    district: Ref | None
    snapped: bool = Field(description="true when the point lies outside every cell but within the snap distance")
    distance_m: float = Field(description="metres to the assigned (or nearest) cell; 0 inside a cell")
    reason: str | None = Field(description="why no cell was assigned")


class BatchRequest(BaseModel):
    crs: str = Field("EPSG:4326", description="EPSG:4326, EPSG:4490, any EPSG code, or GCJ02")
    points: list[tuple[float, float]] = Field(description="[lon, lat] pairs (x, y in a projected CRS)")
    date: dt.date | None = Field(None, description="assignments valid on this day; default today")


class BatchResponse(BaseModel):
    results: list[LocateResult]


@router.get("/locate", response_model=LocateResult)
def locate_one(
    locator: LocatorDep,
    lon: float = Query(description="longitude (x in a projected CRS)"),
    lat: float = Query(description="latitude (y in a projected CRS)"),
    crs: str = Query("EPSG:4326", description="EPSG:4326, EPSG:4490, any EPSG code, or GCJ02"),
    date: dt.date | None = Query(None, description="assignments valid on this day; default today"),
) -> Any:
    return JSONResponse(locator.locate([lon], [lat], crs, date)[0])


@router.post("/locate", response_model=BatchResponse)
def locate_batch(body: BatchRequest, locator: LocatorDep) -> Any:
    if len(body.points) > MAX_POINTS:
        raise InvalidCoordinates(f"{len(body.points)} points sent; at most {MAX_POINTS:,} per request")
    xs = [p[0] for p in body.points]
    ys = [p[1] for p in body.points]
    # Skip the response-model round trip: 100,000 results serialise directly.
    return JSONResponse({"results": locator.locate(xs, ys, body.crs, body.date)})
