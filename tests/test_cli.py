"""The command line: the embedded cluster's lifecycle, locate, export, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import shapely
from sqlalchemy import text

from gis import db
from gis.cluster import Cluster, memory_settings


def wangge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANGGE_")}
    return subprocess.run([sys.executable, "-m", "api", *args], capture_output=True, text=True,
                          env=base | (env or {}), timeout=180, stdin=subprocess.DEVNULL)


def _mb(setting: str) -> float:
    """'3GB', '3053MB', '8192kB' → megabytes."""
    units = {"kB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024}
    unit = setting.lstrip("0123456789")
    return int(setting[: len(setting) - len(unit)]) * units[unit]


def test_db_start_status_stop_on_a_project_local_cluster(tmp_path: Path) -> None:
    env = {"WANGGE_DATA_DIR": str(tmp_path / "state")}
    assert wangge("db", "status", env=env).returncode == 1
    started = wangge("db", "start", env=env)
    try:
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url.startswith("postgresql+psycopg://wangge@127.0.0.1:")
        status = wangge("db", "status", env=env)
        assert status.returncode == 0 and "running" in status.stdout and url in status.stdout
        up = wangge("db", "upgrade", env=env)
        assert up.returncode == 0 and f"schema at revision {db.head()}" in up.stdout
        # Sized to this machine, not PostgreSQL's 128 MB: an eighth of the memory for shared buffers.
        with db.engine_for(url).connect() as conn:
            shown = {k: conn.execute(text(f"SHOW {k}")).scalar_one() for k in ("shared_buffers",
                                                                              "effective_cache_size")}
        db.engine_for(url).dispose()
        want = memory_settings()
        assert all(_mb(shown[k]) == _mb(want[k].strip("'")) for k in shown), (shown, want)
    finally:
        stop = wangge("db", "stop", env=env)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert "stopped" in wangge("db", "status", env=env).stdout


def test_missing_postgres_binaries_give_one_line_saying_what_to_install(tmp_path: Path) -> None:
    proc = wangge("db", "start", env={"WANGGE_DATA_DIR": str(tmp_path), "WANGGE_PG_BINDIR": str(tmp_path)})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install postgresql" in lines[0]


def test_locate_and_export_through_the_cli(demo_url: str, tmp_path: Path) -> None:
    cells = json.loads((Path(__file__).parent.parent / "data/boundaries/demo-j-town/cells.geojson").read_text())
    env = {"WANGGE_DATABASE_URL": demo_url}
    p = shapely.geometry.shape(cells["features"][0]["geometry"]).representative_point()
    proc = wangge("locate", str(p.x), str(p.y), env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cell"]["code"] == cells["features"][0]["properties"]["code"]
    out = wangge("export", str(tmp_path / "pkg"), "--format", "gpkg", env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "pkg" / "wangge.gpkg").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (("locate", "abc", "29.7"), "coordinates must be numbers"),
        (("locate", "29.7", "121.5"), "swapped"),
        (("export", "/tmp/x", "--format", "shp"), "unknown format"),
        (("load", "/nonexistent/package"), "no such file or folder"),
    ],
)
def test_bad_cli_input_is_one_line_and_non_zero(demo_url: str, args: tuple[str, ...], phrase: str) -> None:
    proc = wangge(*args, env={"WANGGE_DATABASE_URL": demo_url})
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and phrase in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_cluster_refuses_an_unusable_bindir(tmp_path: Path) -> None:
    from gis.errors import ClusterError

    with pytest.raises(ClusterError, match="apt-get install"):
        Cluster(tmp_path / "pgdata", bindir=tmp_path).start()
