"""Authentication: OAuth2 password flow → bearer JWT for people, X-Device-Key for sensors and cameras."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm

from gis import accounts
from gis.workflow import Actor

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
ALGORITHM = "HS256"


@dataclass
class Principal:
    """Who is calling: a person (actor) or a device (device_id)."""

    actor: Actor | None = None
    device_id: str | None = None


def issue_token(request: Request, actor: Actor) -> str:
    auth = request.app.state.auth
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=auth.token_minutes)
    claims = {"sub": actor.username, "role": actor.role, "scope": actor.scope_code, "exp": exp}
    return jwt.encode(claims, request.app.state.secret_key, algorithm=ALGORITHM)


@router.post("/token")
def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> dict[str, Any]:
    actor = accounts.authenticate(request.app.state.engine, form.username, form.password)
    if actor is None:
        raise HTTPException(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    return {"access_token": issue_token(request, actor), "token_type": "bearer", "role": actor.role,
            "scope": actor.scope_code}


def principal(request: Request, token: Annotated[str | None, Depends(_bearer)],
              x_device_key: Annotated[str | None, Header()] = None) -> Principal:
    if x_device_key:
        device = accounts.device_for_key(request.app.state.engine, x_device_key)
        if device is None:
            raise HTTPException(401, "unknown or revoked device key")
        return Principal(device_id=device)
    if not token:
        raise HTTPException(401, "log in first: POST /api/v1/auth/token", headers={"WWW-Authenticate": "Bearer"})
    try:
        claims = jwt.decode(token, request.app.state.secret_key, algorithms=[ALGORITHM])
    except jwt.PyJWTError as exc:
        raise HTTPException(401, f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}) from exc
    actor = _cached_actor(request, str(claims.get("sub")))
    if actor is None:
        raise HTTPException(401, "the account no longer exists or is disabled")
    return Principal(actor=actor)


_ACTOR_TTL_S = 10.0  # a disabled account or a changed role takes effect within this time
_actors: dict[tuple[int, str], tuple[float, Actor | None]] = {}


def _cached_actor(request: Request, username: str) -> Actor | None:
    """The account behind a token, re-read at most every few seconds (not once per request)."""
    key = (id(request.app), username)
    now = time.monotonic()
    hit = _actors.get(key)
    if hit is not None and now - hit[0] < _ACTOR_TTL_S:
        return hit[1]
    actor = accounts.actor_for(request.app.state.engine, username)
    if len(_actors) > 10_000:
        _actors.clear()
    _actors[key] = (now, actor)
    return actor


def person(p: Annotated[Principal, Depends(principal)]) -> Actor:
    if p.actor is None:
        raise HTTPException(403, "a device key can only post events for its own device")
    return p.actor


PrincipalDep = Annotated[Principal, Depends(principal)]
ActorDep = Annotated[Actor, Depends(person)]
