"""/api/v1/events: intake from every channel, the case list and timeline, and actions on cases."""

from __future__ import annotations

import datetime as dt
import hashlib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Required

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy import Connection
from typing_extensions import TypedDict

from api.auth import ActorDep, PrincipalDep, principal_of
from gis import cases
from gis.intake import SOURCES, TZ, Intake, Report

router = APIRouter(prefix="/api/v1/events", tags=["events"])
MAX_BATCH = 10_000
MAX_KEY = 128  # characters of an external_id or an Idempotency-Key
REPORTING_ROLES = ("grid_worker", "grid_leader", "command_centre", "admin")
PHOTO_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}
MAX_PHOTO_BYTES = 10 * 1024 * 1024


class Reporter(BaseModel):
    name: str | None = Field(None, max_length=64)
    phone: str | None = Field(None, pattern=r"^\+?[0-9\- ]{5,20}$")


class EventIn(BaseModel):
    source: Literal["grid_worker", "sensor", "camera", "hotline", "assigned", "citizen"]
    category: str | None = Field(None, description="taxonomy code; devices may omit it (their subtype decides)")
    lon: float | None = None
    lat: float | None = None
    crs: str = "EPSG:4326"
    device_id: str | None = None
    address: str | None = Field(None, max_length=200)
    village_code: str | None = Field(None, pattern=r"^[0-9]{12}$")
    occurred_at: dt.datetime | None = None
    description: str | None = Field(None, max_length=4000)
    reporter: Reporter | None = None
    external_id: str | None = Field(None, max_length=MAX_KEY)
    grade: int | None = Field(None, ge=1, le=3)
    photos: list[str] = Field(default_factory=list, max_length=10, description="photo URLs")

    def report(self, idempotency_key: str | None = None) -> Report:
        return Report(
            source=self.source, category=self.category, lon=self.lon, lat=self.lat, crs=self.crs,
            device_id=self.device_id, address=self.address, village_code=self.village_code,
            occurred_at=self.occurred_at, description=self.description,
            reporter_name=self.reporter.name if self.reporter else None,
            reporter_phone=self.reporter.phone if self.reporter else None,
            external_id=self.external_id, idempotency_key=idempotency_key, grade=self.grade, photos=self.photos)


class BatchIn(BaseModel):
    events: list[EventIn] = Field(max_length=MAX_BATCH)


def typed_dict(model: type[BaseModel]) -> Any:
    """A TypedDict with a model's fields, types and constraints (the models among its field types likewise):
    pydantic validates a batch into dicts three times as fast as into model instances (10,000 events: 26 →
    7.5 ms), and the models stay the one definition (and the documented schema)."""

    def swap(ann: Any) -> Any:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return typed_dict(ann)
        args = typing.get_args(ann)
        if not args:
            return ann
        origin = typing.get_origin(ann)
        if origin in (typing.Union, types.UnionType):
            return typing.Union[tuple(swap(a) for a in args)]  # noqa: UP007 (built from parts)
        return origin[tuple(swap(a) for a in args)]

    fields = {name: (Required if f.is_required() else NotRequired)[
        Annotated[(swap(f.annotation), *f.metadata)] if f.metadata else swap(f.annotation)]
        for name, f in model.model_fields.items()}
    return TypedDict(model.__name__ + "Fields", fields)  # type: ignore[operator]


_BATCH = TypeAdapter(typed_dict(BatchIn))


def _report(e: dict[str, Any]) -> Report:
    """An event of a validated batch as the intake's Report (the event's keys are Report's fields, but for the
    reporter's)."""
    reporter = e.pop("reporter", None)
    r = Report(**e)
    if reporter:
        r.reporter_name, r.reporter_phone = reporter.get("name"), reporter.get("phone")
    return r


class ActionIn(BaseModel):
    note: str | None = Field(None, max_length=4000)
    reason: str | None = Field(None, max_length=1000)
    reason_code: str | None = None
    unit: str | None = Field(None, description="dispatch: the lead unit")
    assisting: list[str] = Field(default_factory=list, description="dispatch: assisting units (joint handling)")
    result: str | None = Field(None, max_length=4000, description="feedback: what was done")
    photos: list[str] = Field(default_factory=list, max_length=10)
    lon: float | None = None
    lat: float | None = None
    crs: str | None = None


def _check_may_report(p: Any, e: EventIn | Report) -> None:
    refused = _refusal(p.device_id, p.actor.role if p.actor is not None else None, e)
    if refused:
        raise HTTPException(403, refused)


def _refusal(device_id: str | None, role: str | None, e: EventIn | Report) -> str | None:
    """Why this device key or account may not post `e` (None: it may; a device's event takes its device)."""
    if device_id is not None:
        if e.source not in ("sensor", "camera"):
            return "a device key may only post sensor or camera events"
        if e.device_id not in (None, device_id):
            return f"this key belongs to device {device_id}, not {e.device_id}"
        e.device_id = device_id
    elif role not in REPORTING_ROLES:
        return f"a {role} account cannot report events"
    return None


@router.post("", status_code=201, responses={
    200: {"description": "duplicate (idempotent retry) or merged"}, 201: {"description": "a new case"}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                       "schema": {"$ref": "#/components/schemas/EventIn"}}}},
                   "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                   "schema": {"type": "string", "maxLength": MAX_KEY}}],
                   "security": [{"OAuth2PasswordBearer": []}, {"DeviceKey": []}]})
async def post_event(request: Request) -> Any:
    """Report one event from any channel; located, routed, merged into an open case or opened as a new one."""
    # The busiest endpoint reads its headers and body itself: FastAPI's dependency solving and body handling
    # cost more than the rest of answering (pydantic parses the bytes directly, orjson writes the answer).
    p = await principal_of(request)
    try:
        body = EventIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > MAX_KEY:
        raise HTTPException(422, f"the Idempotency-Key header may be at most {MAX_KEY} characters")
    _check_may_report(p, body)
    # Concurrent reports are written together (group commit); each still gets its own answer.
    result = await request.app.state.intake_queue.submit(body.report(key))
    return Response(orjson.dumps(result), status_code=201 if result["outcome"] == "created" else 200,
                    media_type="application/json")


def document(app: Any) -> None:
    """Put the models that the intake endpoints parse themselves (EventIn, BatchIn, and the models they use) and
    the device key into the OpenAPI components that their request bodies refer to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec: dict[str, Any] = build()
        components = spec.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for model in (EventIn, BatchIn):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas.setdefault(model.__name__, schema)
        components.setdefault("securitySchemes", {})["DeviceKey"] = {
            "type": "apiKey", "in": "header", "name": "X-Device-Key",
            "description": "a device's own key (wangge device-key DEVICE_ID): sensor and camera events only"}
        return spec

    app.openapi = openapi


@router.post("/batch", openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}}}}})
async def post_batch(
    request: Request, p: PrincipalDep,
    answer: Annotated[Literal["full", "brief"], Query(
        description="full: each item as POST /api/v1/events answers it; brief: its id, outcome, status, cell code "
                    "and reason (an import's answer, ~a fifth of the bytes)")] = "full",
) -> Any:
    """Up to 10,000 events in one transaction: all stored, or none (422 naming each bad item)."""
    body, state = await request.body(), request.app.state
    role = p.actor.role if p.actor is not None else None
    brief = answer == "brief"
    if state.batch_workers is not None:  # in a batch worker process (gis/intake_worker.py), the default
        status, out = await state.batch_workers.run(store_batch, body, p.device_id, role, brief)
    else:
        status, out = await run_in_threadpool(store_batch, state.intake, None, body, p.device_id, role, brief)
    if status == 422:
        raise RequestValidationError(out)
    if status == 403:
        raise HTTPException(403, out)
    return Response(out, media_type="application/json")


def store_batch(intake: Intake, connection: Connection | None, body: bytes, device_id: str | None,
                role: str | None, brief: bool = False) -> tuple[int, Any]:
    """A batch request's body parsed, checked against the poster's device key or role, and stored: (200, the
    answer's bytes), (422, the validation errors) or (403, why). Runs in a batch worker or a server thread.
    A brief answer gives each item's id, outcome, status, cell code and reason: the full one names the cell,
    worker, village, township and district of each (~480 bytes an item; in bench/ingest.py, relaying and reading
    ~5 MB a batch of 10,000 cost the server and the client ~5 % of the import's CPU)."""
    # The body is parsed straight from bytes by pydantic's JSON parser, into dicts (typed_dict): for 10,000 events
    # that is several times faster than FastAPI's json.loads + validate; orjson writes the answer for the same reason.
    try:
        reports = [_report(e) for e in _BATCH.validate_json(body)["events"]]
    except ValidationError as exc:
        return 422, jsonable_encoder(exc.errors(include_url=False))
    for r in reports:
        refused = _refusal(device_id, role, r)
        if refused:
            return 403, refused
    results = intake.ingest(reports, connection=connection)
    if brief:
        results = [{"id": r["id"], "outcome": r["outcome"], "status": r["status"],
                    "cell": r["cell"] and r["cell"]["code"], "reason": r["reason"]} for r in results]
    return 200, orjson.dumps({"results": results})


@router.get("")
def list_events(
    request: Request, actor: ActorDep,
    status: str | None = None, village: str | None = None, platform: str | None = None,
    overdue: bool | None = None, date_from: Annotated[dt.datetime | None, Query(alias="from")] = None,
    date_to: Annotated[dt.datetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0)] = 0,
) -> Any:
    """Cases in your scope, newest first, paged."""
    # A date or time without an offset is the township's local time, not the database server's.
    date_from, date_to = (d if d is None or d.tzinfo else d.replace(tzinfo=TZ) for d in (date_from, date_to))
    return JSONResponse(cases.list_events(request.app.state.engine, actor, status, village, platform, overdue,
                                          date_from, date_to, limit, offset))


@router.get("/{event_id}")
def get_event(request: Request, event_id: int, actor: ActorDep) -> Any:
    """One case with its full timeline (404 outside your scope)."""
    return JSONResponse(cases.get_event(request.app.state.engine, event_id, actor))


@router.post("/{event_id}/actions/{action}")
def act(request: Request, event_id: int, action: str, actor: ActorDep, body: ActionIn | None = None) -> Any:
    """Move a case through the loop. Wrong state or role → 409 with the allowed actions; nothing changes."""
    payload = (body or ActionIn()).model_dump(exclude_none=True)  # accept, start, review… need no body
    return JSONResponse(request.app.state.cases.act(event_id, action, actor, payload))


@router.post("/{event_id}/photos", status_code=201)
async def upload_photo(request: Request, event_id: int, file: UploadFile, actor: ActorDep) -> Any:
    """Attach a photo (JPEG, PNG or WebP, at most 10 MB) to a case in your scope."""
    if file.content_type not in PHOTO_TYPES:
        raise HTTPException(415, f"photos must be {', '.join(PHOTO_TYPES)}; got {file.content_type}")
    data = await file.read(MAX_PHOTO_BYTES + 1)
    if len(data) > MAX_PHOTO_BYTES:
        raise HTTPException(413, "a photo may be at most 10 MB")
    # The label is the client's word; the first bytes are the file's. Store what the file is.
    content_type = _image_type(data)
    if content_type is None:
        raise HTTPException(415, f"the file is not a JPEG, PNG or WebP image (sent as {file.content_type})")
    cases.get_event(request.app.state.engine, event_id, actor)  # 404 outside the scope
    digest = hashlib.sha256(data).hexdigest()
    folder: Path = request.app.state.upload_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}{PHOTO_TYPES[content_type]}"
    path.write_bytes(data)
    from sqlalchemy import text

    with request.app.state.engine.begin() as conn:
        att = conn.execute(text("""INSERT INTO attachments (event_id, path, content_type, size, sha256, created_at)
                                   VALUES (:e, :p, :t, :s, :h, now()) RETURNING id"""),
                           {"e": event_id, "p": str(path), "t": content_type, "s": len(data), "h": digest}
                           ).scalar_one()
    return {"id": att, "sha256": digest, "size": len(data), "content_type": content_type}


def _image_type(data: bytes) -> str | None:
    """The photo type from the file's signature (magic bytes), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


assert set(SOURCES) == set(EventIn.model_fields["source"].annotation.__args__)  # type: ignore[union-attr]
