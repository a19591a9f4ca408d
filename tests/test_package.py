"""Loading boundary packages: every rule rejects a broken package by naming the feature, and loses nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from sqlalchemy import text

from gis import db
from gis.errors import PackageInvalid
from gis.store import export_dataset, load_package
from tests.conftest import DEMO

TABLES = ("jurisdictions", "cells", "workers", "worker_assignments", "devices", "water_bodies", "addresses")


def snapshot(url: str) -> dict[str, object]:
    """Row counts, the dataset revision and a checksum of all cell geometry."""
    with db.engine_for(url).connect() as conn:
        state = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
        state["revision"] = conn.execute(text("SELECT revision FROM dataset_state")).scalar_one()
        state["cells_md5"] = conn.execute(
            text("SELECT md5(string_agg(code || ST_AsText(geom), ',' ORDER BY code)) FROM cells")).scalar_one()
    return state


def broken(tmp_path: Path, edit: Callable[[Path], None]) -> Path:
    pkg = tmp_path / "pkg"
    shutil.copytree(DEMO, pkg)
    edit(pkg)
    return pkg


def edit_layer(pkg: Path, layer: str, fn: Callable[[gpd.GeoDataFrame], gpd.GeoDataFrame]) -> None:
    gdf = gpd.read_file(pkg / f"{layer}.geojson")
    fn(gdf).to_file(pkg / f"{layer}.geojson", driver="GeoJSON")


def _first_inner_cell(cells: gpd.GeoDataFrame) -> int:
    """A cell whose village has at least three cells (so that it has cell neighbours)."""
    counts = cells["village_code"].value_counts()
    return int(cells.index[cells["village_code"] == counts.index[0]][1])


def _bowtie(g: shapely.Geometry) -> shapely.Geometry:
    minx, miny, maxx, maxy = g.bounds
    return shapely.Polygon([(minx, miny), (maxx, maxy), (maxx, miny), (minx, maxy), (minx, miny)])


def _set(gdf: gpd.GeoDataFrame, i: int, col: str, value: object) -> gpd.GeoDataFrame:
    gdf.loc[i, col] = value
    return gdf


def _shift(gdf: gpd.GeoDataFrame, i: int, dx: float) -> gpd.GeoDataFrame:
    gdf.loc[i, "geometry"] = shapely.affinity.translate(gdf.geometry.iloc[i], xoff=dx)
    return gdf


def _shrink(gdf: gpd.GeoDataFrame, i: int) -> gpd.GeoDataFrame:
    gdf.loc[i, "geometry"] = gdf.geometry.iloc[i].buffer(-0.00003)  # ~3 m inwards
    return gdf


def _grow_into_neighbour(gdf: gpd.GeoDataFrame, i: int) -> gpd.GeoDataFrame:
    village = gdf.loc[gdf["village_code"] == gdf.loc[i, "village_code"]].geometry.union_all()
    gdf.loc[i, "geometry"] = gdf.geometry.iloc[i].buffer(0.00005).intersection(village)
    return gdf


def _workers(pkg: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    df = pd.read_csv(pkg / "workers.csv", dtype=str, keep_default_na=False)
    fn(df).to_csv(pkg / "workers.csv", index=False)


def _cell_code(pkg: Path, i: int) -> str:
    return str(gpd.read_file(pkg / "cells.geojson")["code"].iloc[i])


CASES: list[tuple[str, Callable[[Path], tuple[str, str]]]] = []


def case(name: str):  # type: ignore[no-untyped-def]
    def register(fn: Callable[[Path], tuple[str, str]]) -> Callable[[Path], tuple[str, str]]:
        CASES.append((name, fn))
        return fn
    return register


@case("invalid geometry that cannot be repaired")
def _c1(pkg: Path) -> tuple[str, str]:
    edit_layer(pkg, "cells", lambda g: _set(g, 7, "geometry", _bowtie(g.geometry.iloc[7])))
    return _cell_code(pkg, 7), "cannot be repaired"


@case("cell not inside its village")
def _c2(pkg: Path) -> tuple[str, str]:
    edit_layer(pkg, "cells", lambda g: _shift(g, 3, 0.01))
    return _cell_code(pkg, 3), "outside its village"


@case("overlapping cells")
def _c3(pkg: Path) -> tuple[str, str]:
    cells = gpd.read_file(pkg / "cells.geojson")
    i = _first_inner_cell(cells)
    edit_layer(pkg, "cells", lambda g: _grow_into_neighbour(g, i))
    return _cell_code(pkg, i), "overlaps cell"


@case("gap between cells")
def _c4(pkg: Path) -> tuple[str, str]:
    edit_layer(pkg, "cells", lambda g: _shrink(g, 11))
    return _cell_code(pkg, 11)[:12], "gap of"


@case("unknown parent code")
def _c5(pkg: Path) -> tuple[str, str]:
    jur = gpd.read_file(pkg / "jurisdictions.geojson")
    i = int(jur.index[jur["level"] == "village"][4])
    edit_layer(pkg, "jurisdictions", lambda g: _set(g, i, "parent_code", "330212999000"))
    return str(jur["code"].iloc[i]), "parent_code 330212999000 names no jurisdiction"


@case("duplicate codes")
def _c6(pkg: Path) -> tuple[str, str]:
    dup = _cell_code(pkg, 1)
    edit_layer(pkg, "cells", lambda g: _set(g, 2, "code", dup))
    return dup, "appears 2 times"


@case("worker pointing at an unknown cell")
def _c7(pkg: Path) -> tuple[str, str]:
    _workers(pkg, lambda df: _set(df, 0, "cell_code", "330212101299999"))  # type: ignore[arg-type]
    wid = pd.read_csv(pkg / "workers.csv", dtype=str)["id"].iloc[0]
    return str(wid), "cell_code 330212101299999 names no cell"


@case("unparseable file")
def _c8(pkg: Path) -> tuple[str, str]:
    (pkg / "devices.geojson").write_text('{"type": "FeatureCollection", "features": [ {"type": "Feat')
    return "devices", "cannot read"


@pytest.mark.parametrize(("name", "make"), CASES, ids=[c[0] for c in CASES])
def test_broken_package_is_rejected_naming_the_feature_and_nothing_changes(
    tmp_path: Path, fresh_url: str, name: str, make: Callable[[Path], tuple[str, str]]
) -> None:
    before = snapshot(fresh_url)
    holder: dict[str, tuple[str, str]] = {}
    pkg = broken(tmp_path, lambda p: holder.__setitem__("want", make(p)))
    code, phrase = holder["want"]
    with pytest.raises(PackageInvalid) as info:
        load_package(db.engine_for(fresh_url), pkg)
    report = info.value.report()
    assert any(code in line and phrase in line for line in report.splitlines()), report
    assert snapshot(fresh_url) == before


def test_cli_load_prints_the_report_and_exits_non_zero(tmp_path: Path, fresh_url: str) -> None:
    pkg = broken(tmp_path, lambda p: edit_layer(p, "cells", lambda g: _shift(g, 3, 0.01)))
    before = snapshot(fresh_url)
    proc = subprocess.run([sys.executable, "-m", "api", "load", str(pkg)], capture_output=True, text=True,
                          env={"WANGGE_DATABASE_URL": fresh_url, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "outside its village" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: boundary package rejected")
    assert "Traceback" not in proc.stderr
    assert snapshot(fresh_url) == before


def test_a_failure_while_writing_rolls_everything_back(tmp_path: Path, fresh_url: str) -> None:
    # Passes validation, but the database refuses the row (worker ids are at most 32 characters).
    pkg = broken(tmp_path, lambda p: _workers(p, lambda df: _set(df, len(df) - 1, "id", "X" * 40)))  # type: ignore
    before = snapshot(fresh_url)
    with pytest.raises(Exception, match="value too long"):
        load_package(db.engine_for(fresh_url), pkg)
    assert snapshot(fresh_url) == before


def test_repairable_geometry_is_repaired_and_noted(tmp_path: Path, fresh_url: str) -> None:
    def spike(g: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        # A ring that touches itself at one vertex: invalid, repairable without changing the area.
        poly = shapely.get_parts(g.geometry.iloc[9])[0]
        ring = list(poly.exterior.coords)
        ring = [*ring[:2], ring[1], *ring[2:]]  # duplicate vertex: harmless; then a zero-width spike
        ring.insert(2, (ring[1][0] + 1e-9, ring[1][1]))
        g.loc[9, "geometry"] = shapely.Polygon(ring)
        return g
    pkg = broken(tmp_path, lambda p: edit_layer(p, "cells", spike))
    summary = load_package(db.engine_for(fresh_url), pkg)
    assert summary.cells == len(gpd.read_file(DEMO / "cells.geojson"))
    assert any("repaired invalid geometry" in n and "Self-intersection" in n for n in summary.notes), summary.notes
    with db.engine_for(fresh_url).connect() as conn:
        assert conn.execute(text("SELECT bool_and(ST_IsValid(geom)) FROM cells")).scalar_one() is True


@pytest.mark.parametrize("fmt", ["gpkg", "geojson"])
def test_export_then_load_round_trips(tmp_path: Path, fresh_url: str, fmt: str) -> None:
    engine = db.engine_for(fresh_url)
    before = snapshot(fresh_url)
    files = export_dataset(engine, tmp_path / "out", fmt)
    assert (tmp_path / "out" / "workers.csv") in files
    load_package(engine, tmp_path / "out")
    after = snapshot(fresh_url)
    assert after["revision"] == before["revision"] + 1  # type: ignore[operator]
    assert {k: v for k, v in after.items() if k != "revision"} == {k: v for k, v in before.items() if k != "revision"}


def test_zipped_shapefiles_load(tmp_path: Path, fresh_url: str) -> None:
    src = tmp_path / "shp"
    src.mkdir()
    for layer in ("jurisdictions", "cells", "devices"):
        gdf = gpd.read_file(DEMO / f"{layer}.geojson")
        gdf.to_file(src / f"{layer}.shp", driver="ESRI Shapefile", encoding="UTF-8")
    shutil.copy(DEMO / "workers.csv", src / "workers.csv")
    archive = tmp_path / "package.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"demo/{f.name}")
    summary = load_package(db.engine_for(fresh_url), archive)
    cells = json.loads((DEMO / "cells.geojson").read_text())["features"]
    assert summary.cells == len(cells)
    with db.engine_for(fresh_url).connect() as conn:
        names = conn.execute(text("SELECT name FROM jurisdictions WHERE code = '330212101000'")).scalar_one()
        parents = conn.execute(text("SELECT count(*) FROM jurisdictions WHERE parent_id IS NULL")).scalar_one()
    assert names == "J镇" and parents == 1
