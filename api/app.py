"""The FastAPI application: a thin adapter over gis/ and the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from api import errors, layers, locate
from gis import db
from gis.locate import Locator
from gis.settings import DatabaseSettings, LocateSettings


def create_app(database_url: str | None = None, locate_settings: LocateSettings | None = None) -> FastAPI:
    """Build the app for a database URL (default: WANGGE_DATABASE_URL or the running embedded cluster)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = database_url or db.database_url(DatabaseSettings(), start=False)
        app.state.engine = db.engine_for(url)
        app.state.locator = Locator(app.state.engine, locate_settings or LocateSettings())
        yield
        app.state.engine.dispose()

    app = FastAPI(
        title="wangge",
        summary="Grid-management GIS (网格化管理): point → grid cell, grid worker and jurisdiction",
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(locate.router)
    app.include_router(layers.router)

    @app.get("/healthz", tags=["health"])
    def healthz(request: Request) -> Any:
        try:
            with request.app.state.engine.connect() as conn:
                rev = conn.execute(text("SELECT revision FROM dataset_state WHERE id = 1")).scalar_one()
        except OperationalError as exc:
            return JSONResponse({"status": "error", "database": False, "detail": str(exc.orig)}, status_code=503)
        return {"status": "ok", "database": True, "dataset_revision": rev}

    return app
