"""/api/v1/grid: planners' drafts (edit, split, merge, validate, preview, publish) and the published versions.

Only planners and admins write (others get 403); drafts are read within the reader's scope. Concurrent publishes
over the same villages: the second gets 409 with a message. Bad geometry: 422 naming the problem.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Response
from pydantic import BaseModel, Field

from api.auth import ActorDep
from api.deps import EngineDep
from gis import grid
from gis.workflow import Actor

router = APIRouter(prefix="/api/v1/grid", tags=["grid versions"])
WRITERS = ("planner", "admin")
READERS = (*WRITERS, "leader", "command_centre")


def _writer(actor: ActorDep) -> Actor:
    if actor.role not in WRITERS:
        raise HTTPException(403, f"a {actor.role} cannot change the grid: only planners and admins can")
    return actor


def _reader(actor: ActorDep) -> Actor:
    if actor.role not in READERS:
        raise HTTPException(403, f"a {actor.role} cannot read grid drafts")
    return actor


WriterDep = Annotated[Actor, Depends(_writer)]
ReaderDep = Annotated[Actor, Depends(_reader)]


class DraftIn(BaseModel):
    scope: str = Field(description="12-digit code of the village (or township, or district) to redraw")
    name: str | None = Field(None, description="a label for the draft")


class CellIn(BaseModel):
    geometry: dict[str, Any] = Field(description="GeoJSON Polygon or MultiPolygon, lon/lat (EPSG:4326/4490)")
    properties: dict[str, Any] = Field(default_factory=dict,
                                       description="name, households, population, worker_id (or worker)")


class SplitIn(BaseModel):
    line: dict[str, Any] = Field(description="GeoJSON LineString crossing the cell from edge to edge")


class MergeIn(BaseModel):
    codes: list[str] = Field(description="codes of neighbouring cells of one village; the lowest code is kept")


class PublishIn(BaseModel):
    effective_date: dt.date = Field(description="first day the new cells are valid")
    note: str | None = None


@router.post("/drafts", status_code=201)
def create_draft(engine: EngineDep, actor: WriterDep, body: DraftIn) -> dict[str, Any]:
    """Copy the live cells of a village (or a township) into a new draft."""
    return grid.create_draft(engine, actor, body.scope, body.name)


@router.get("/drafts")
def list_drafts(engine: EngineDep, actor: ReaderDep,
                status: Literal["open", "published", "discarded"] | None = "open") -> dict[str, Any]:
    """Drafts within your scope, newest first (without their cells)."""
    return {"drafts": grid.list_drafts(engine, actor, status)}


@router.delete("/drafts/{draft_id}", status_code=204)
def discard_draft(engine: EngineDep, actor: WriterDep, draft_id: int) -> Response:
    """Give a draft up; it is kept, marked discarded."""
    grid.discard_draft(engine, actor, draft_id)
    return Response(status_code=204)


@router.get("/drafts/{draft_id}")
def get_draft(engine: EngineDep, actor: ReaderDep, draft_id: int) -> dict[str, Any]:
    """The draft with its cells as GeoJSON."""
    return grid.get_draft(engine, actor, draft_id)


@router.put("/drafts/{draft_id}/cells/{code}")
def put_cell(engine: EngineDep, actor: WriterDep, draft_id: int, code: str, body: CellIn,
             snap_m: Annotated[float, Query(ge=0, le=100, description="snap edges within this many metres to "
                                                                       "the village boundary and neighbours")] = 0.0,
             ) -> dict[str, Any]:
    """Create or replace one cell (a GeoJSON geometry with its properties, the grid worker among them)."""
    return grid.put_cell(engine, actor, draft_id, code, body.geometry, body.properties, snap_m)


@router.delete("/drafts/{draft_id}/cells/{code}", status_code=204)
def delete_cell(engine: EngineDep, actor: WriterDep, draft_id: int, code: str) -> Response:
    grid.delete_cell(engine, actor, draft_id, code)
    return Response(status_code=204)


@router.post("/drafts/{draft_id}/cells/{code}/split")
def split_cell(engine: EngineDep, actor: WriterDep, draft_id: int, code: str, body: SplitIn) -> dict[str, Any]:
    """Cut a cell along a line; the largest piece keeps the code and worker."""
    return {"codes": grid.split_cell(engine, actor, draft_id, code, body.line)}


@router.post("/drafts/{draft_id}/merge")
def merge_cells(engine: EngineDep, actor: WriterDep, draft_id: int, body: MergeIn) -> dict[str, Any]:
    """Merge neighbouring cells into the one with the lowest code."""
    return {"code": grid.merge_cells(engine, actor, draft_id, body.codes)}


@router.post("/drafts/{draft_id}/validate")
def validate(engine: EngineDep, actor: WriterDep, draft_id: int,
             min_area_m2: Annotated[float, Query(gt=0, description="cells or parts below this are slivers")] =
             grid.MIN_CELL_AREA_M2) -> dict[str, Any]:
    """Every problem of the draft, each with a point and a geometry to show on the map."""
    return grid.validate_draft(engine, actor, draft_id, min_area_m2)


@router.get("/drafts/{draft_id}/preview")
def preview(engine: EngineDep, actor: ReaderDep, draft_id: int) -> dict[str, Any]:
    """Draft against live: per cell and worker, area, households, population, events of 90 days, open cases;
    worker changes; the open cases that would move."""
    return grid.preview(engine, actor, draft_id)


@router.post("/drafts/{draft_id}/publish")
def publish(engine: EngineDep, actor: WriterDep, draft_id: int, body: Annotated[PublishIn, Body()]
            ) -> dict[str, Any]:
    """Publish as a new version from the effective date; open cases move to their new cell and worker."""
    return grid.publish(engine, actor, draft_id, body.effective_date, body.note)


@router.get("/versions")
def versions(engine: EngineDep, actor: ActorDep) -> dict[str, Any]:
    """Version 0 (the loaded package) and every published version, oldest first."""
    return {"versions": grid.list_versions(engine)}


@router.get("/versions/{a}/diff/{b}")
def diff(engine: EngineDep, actor: ActorDep, a: int, b: int,
         geometry: Annotated[bool, Query(description="include GeoJSON of the cells and changed areas")] = True,
         ) -> dict[str, Any]:
    """Cells added, removed and changed between two versions, with the area that changed cell."""
    return grid.diff_versions(engine, a, b, geometry)
