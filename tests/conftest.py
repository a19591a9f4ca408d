"""Test fixtures: one real PostGIS per test session.

By default an embedded cluster is created in a temporary folder (fsync off) and removed at the end; set
WANGGE_TEST_DATABASE_URL to a superuser URL of another PostGIS server to use that instead. The demo township is
loaded once into a template database; read-only tests share one copy, tests that write get their own copy.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from api.app import create_app
from gis import db
from gis.cluster import Cluster
from gis.store import load_package

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "boundaries" / "demo-j-town"
VALID_FROM = dt.date(2017, 1, 1)
TEMPLATE = "wangge_test_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a PostGIS server (its maintenance database), as a superuser."""
    external = os.environ.get("WANGGE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    _reap_orphans()
    # Not under pytest's 0700 temp folder: when the tests run as root the cluster belongs to `postgres`.
    folder = Path(tempfile.mkdtemp(prefix="wangge-test-"))
    folder.chmod(0o755)
    (folder / "owner.pid").write_text(str(os.getpid()))
    cluster = Cluster(folder / "pgdata", fast=True)
    url = cluster.start()
    try:
        yield str(make_url(url).set(database="postgres").render_as_string(hide_password=False))
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _reap_orphans() -> None:
    """Stop the clusters of earlier test runs that were killed (their pytest process is gone): a killed run cannot
    stop its PostgreSQL, and a few left running skew every benchmark on this machine."""
    for folder in Path(tempfile.gettempdir()).glob("wangge-test-*"):
        try:
            os.kill(int((folder / "owner.pid").read_text()), 0)
            continue  # its run is alive (or the folder predates owner.pid): leave it
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        Cluster(folder / "pgdata", fast=True).stop()
        shutil.rmtree(folder, ignore_errors=True)


def _admin(server_url: str) -> psycopg.Connection:
    u = make_url(server_url)
    return psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                           dbname=u.database or "postgres", autocommit=True)


def _url(server_url: str, name: str) -> str:
    return make_url(server_url).set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False)


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return _url(server_url, name)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> str:
    """A database with the schema migrated and the demo township loaded; cloned by the fixtures below."""
    url = create_database(server_url, TEMPLATE)
    engine = db.engine_for(url)
    db.upgrade(engine)
    load_package(engine, DEMO, valid_from=VALID_FROM)
    engine.dispose()
    db.engine_for.cache_clear()
    return TEMPLATE


@pytest.fixture(scope="session")
def demo_url(server_url: str, template_db: str) -> str:
    """A shared copy of the demo database for tests that only read."""
    return create_database(server_url, "wangge_test_shared", template=template_db)


@pytest.fixture(scope="session")
def demo_engine(demo_url: str) -> Engine:
    return db.engine_for(demo_url)


@pytest.fixture
def fresh_url(server_url: str, template_db: str) -> Iterator[str]:
    """A private copy of the demo database for a test that writes; dropped afterwards."""
    name = f"wangge_test_{os.getpid()}_{next(_counter)}"
    url = create_database(server_url, name, template=template_db)
    yield url
    db.engine_for(url).dispose()
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def client(demo_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(demo_url)) as c:
        yield c
