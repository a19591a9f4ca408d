"""One table maps the core's domain errors to HTTP statuses; every error body is {"detail": ..., "errors": [...]}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from gis.accounts import AccountInvalid
from gis.cases import Forbidden
from gis.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidCoordinates,
    NotFound,
    PackageInvalid,
    WanggeError,
)
from gis.intake import BatchInvalid
from gis.intake_worker import IntakeFailed, WorkerLost
from gis.workflow import ActionInvalid, IllegalTransition

STATUS: dict[type[WanggeError], int] = {
    InvalidCoordinates: 422,
    PackageInvalid: 422,
    NotFound: 404,
    DatabaseUnavailable: 503,
    WorkerLost: 503,
    IntakeFailed: 500,
    ConfigurationError: 500,
    IllegalTransition: 409,
    ActionInvalid: 422,
    BatchInvalid: 422,
    AccountInvalid: 422,
    Forbidden: 403,
}


def _status(exc: WanggeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


OPEN311 = "/open311/"


def _open311(status: int, description: str) -> JSONResponse:
    """GeoReport v2 clients expect errors as a list of {code, description}."""
    return JSONResponse([{"code": status, "description": description}], status_code=status)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(OPEN311):
        return _open311(exc.status_code, str(exc.detail))
    return await http_exception_handler(request, exc)


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if request.url.path.startswith(OPEN311):
        # Open311 has no 422: a request the server cannot use is a 400 naming the field.
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return _open311(400, f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg")))
    return await request_validation_exception_handler(request, exc)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WanggeError)
    if request.url.path.startswith(OPEN311):
        status = _status(exc)
        return _open311(400 if status == 422 else status, str(exc))
    body: dict[str, object] = {"detail": str(exc)}
    if isinstance(exc, InvalidCoordinates) and exc.details:
        body["errors"] = exc.details
    if isinstance(exc, IllegalTransition):
        body["allowed"] = exc.allowed
    if isinstance(exc, BatchInvalid):
        body["errors"] = exc.errors
    if isinstance(exc, PackageInvalid):
        body["errors"] = [p.__dict__ for p in exc.problems]
    return JSONResponse(body, status_code=_status(exc))


def install(app: FastAPI) -> None:
    app.add_exception_handler(WanggeError, _handle)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
