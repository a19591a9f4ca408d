"""One table maps the core's domain errors to HTTP statuses; every error body is {"detail": ..., "errors": [...]}."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
from gis.workflow import ActionInvalid, IllegalTransition

STATUS: dict[type[WanggeError], int] = {
    InvalidCoordinates: 422,
    PackageInvalid: 422,
    NotFound: 404,
    DatabaseUnavailable: 503,
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


async def _handle(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WanggeError)
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
