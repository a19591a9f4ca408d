"""Per-request dependencies: the process-wide engine and locator live on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from gis.locate import Locator


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _locator(request: Request) -> Locator:
    locator: Locator = request.app.state.locator
    return locator


EngineDep = Annotated[Engine, Depends(_engine)]
LocatorDep = Annotated[Locator, Depends(_locator)]
