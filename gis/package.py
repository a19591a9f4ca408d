"""Boundary packages: the interchange format of planners and tests.

A package is a folder (or a .zip of one) holding the layers `jurisdictions`, `cells`, `devices` and optionally
`water`, each as NAME.geojson, a zipped or plain shapefile, or a layer of one *.gpkg, plus `workers.csv`.
Layers without a declared CRS are read as EPSG:4326. Everything comes back in CGCS2000 (EPSG:4490).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio

from gis.crs import STORAGE_EPSG
from gis.errors import PackageInvalid, Problem

GEOMETRY_LAYERS = ("jurisdictions", "cells", "devices", "water", "addresses")
REQUIRED_LAYERS = ("jurisdictions", "cells")
COLUMNS: dict[str, tuple[str, ...]] = {
    "jurisdictions": ("code", "name", "level", "parent_code", "kind", "households", "population"),
    "cells": ("code", "name", "village_code", "households", "population"),
    "devices": ("id", "kind", "subtype", "name"),
    "water": ("name", "kind"),
    "addresses": ("id", "village_code", "road", "number", "name"),
    "workers": ("id", "name", "phone", "role", "cell_code", "village_code"),
}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "jurisdictions": ("code", "name", "level", "parent_code"),
    "cells": ("code", "name", "village_code"),
    "devices": ("id", "kind", "subtype", "name"),
    "water": ("name",),
    "addresses": ("id", "village_code", "road", "number"),
    "workers": ("id", "name", "role"),
}
# Shapefiles cut field names at 10 characters.
_TRUNCATED = {"parent_cod": "parent_code", "village_co": "village_code", "households": "households"}
_ID_COLUMNS = {"code", "parent_code", "village_code", "cell_code", "id", "phone", "number"}


@dataclass
class Package:
    jurisdictions: gpd.GeoDataFrame
    cells: gpd.GeoDataFrame
    devices: gpd.GeoDataFrame
    water: gpd.GeoDataFrame
    workers: pd.DataFrame
    source: str = ""
    addresses: gpd.GeoDataFrame | None = None


def _empty(layer: str) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({c: pd.Series(dtype=object) for c in COLUMNS[layer]}, geometry=[], crs=STORAGE_EPSG)


def _as_text(v: object) -> object:
    """Codes arrive as text, integers or floats (shapefile N fields); keep them as exact strings."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    s = str(v).strip()
    return s or None


def _normalise(df: pd.DataFrame, layer: str) -> pd.DataFrame:
    df = df.rename(columns={c: _TRUNCATED.get(c.lower(), c.lower()) for c in df.columns if c != "geometry"})
    for col in COLUMNS[layer]:
        if col not in df.columns:
            df[col] = None
        elif col in _ID_COLUMNS or df[col].dtype == object:
            # A plain list: pandas' string dtypes would turn None back into NaN.
            df[col] = pd.Series([_as_text(v) for v in df[col].tolist()], index=df.index, dtype=object)
    return df


def normalise_package(pkg: Package) -> Package:
    """The same column clean-up `read_package` does, for packages built in memory (codes as exact strings)."""
    def geo(df: gpd.GeoDataFrame, layer: str) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame(_normalise(df.copy(), layer), geometry=df.geometry.name, crs=df.crs)

    return Package(
        geo(pkg.jurisdictions, "jurisdictions"), geo(pkg.cells, "cells"), geo(pkg.devices, "devices"),
        geo(pkg.water, "water"), _normalise(pd.DataFrame(pkg.workers).copy(), "workers"), pkg.source,
        None if pkg.addresses is None else geo(pkg.addresses, "addresses"))


class _Source:
    """Finds each layer in a folder, a zip of a folder, or a GeoPackage."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise PackageInvalid([Problem("package", str(path), "missing", "no such file or folder")])
        self.path = path
        self.members: list[str] = []
        if path.is_file() and path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                self.members = zf.namelist()
            self.prefix = f"/vsizip/{path}"
        elif path.is_file() and path.suffix.lower() == ".gpkg":
            self.members = [path.name]
            self.prefix = str(path.parent)
        elif path.is_dir():
            self.members = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]
            self.prefix = str(path)
        else:
            raise PackageInvalid(
                [Problem("package", str(path), "format", "expected a folder, a .zip or a .gpkg")]
            )
        self.gpkgs = sorted(m for m in self.members if m.lower().endswith(".gpkg"))

    def _member(self, *names: str) -> str | None:
        wanted = {n.lower() for n in names}
        hits = sorted(m for m in self.members if Path(m).name.lower() in wanted)
        return hits[0] if hits else None

    def locate(self, layer: str) -> tuple[str, str | None] | None:
        """(dataset path for GDAL, layer name) of `layer`, or None if the package lacks it."""
        m = self._member(f"{layer}.geojson", f"{layer}.json", f"{layer}.shp")
        if m:
            return f"{self.prefix}/{m}", None
        z = self._member(f"{layer}.zip", f"{layer}.shp.zip")
        if z:
            return f"/vsizip/{self.prefix}/{z}", None
        for g in self.gpkgs:
            ds = f"{self.prefix}/{g}"
            if layer in {name for name, _ in pyogrio.list_layers(ds)}:
                return ds, layer
        if layer == "workers":
            c = self._member("workers.csv")
            if c:
                return f"{self.prefix}/{c}", None
        return None


def read_package(path: str | Path, progress: Callable[[str], None] | None = None) -> Package:
    """Read every layer, reprojected to EPSG:4490. Unreadable files raise PackageInvalid naming the layer."""
    src = _Source(Path(path))
    problems: list[Problem] = []
    frames: dict[str, gpd.GeoDataFrame] = {}
    for layer in GEOMETRY_LAYERS:
        if progress:
            progress(f"reading {layer}")
        found = src.locate(layer)
        if found is None:
            if layer in REQUIRED_LAYERS:
                problems.append(Problem(layer, "-", "missing", f"layer {layer!r} not found in the package"))
            frames[layer] = _empty(layer)
            continue
        try:
            gdf = pyogrio.read_dataframe(found[0], layer=found[1], on_invalid="ignore")
        except Exception as exc:  # GDAL raises many types; the message is what the user needs
            problems.append(Problem(layer, "-", "unparseable", f"cannot read {found[0]}: {exc}"))
            frames[layer] = _empty(layer)
            continue
        if gdf.crs is None:
            gdf = gdf.set_crs(4326)
        if gdf.crs.to_epsg() != STORAGE_EPSG:
            gdf = gdf.to_crs(STORAGE_EPSG)
        frames[layer] = gpd.GeoDataFrame(_normalise(gdf, layer), geometry="geometry", crs=STORAGE_EPSG)
    workers = _read_workers(src, problems)
    if problems:
        raise PackageInvalid(problems)
    return Package(
        jurisdictions=frames["jurisdictions"], cells=frames["cells"], devices=frames["devices"],
        water=frames["water"], workers=workers, source=str(path), addresses=frames["addresses"],
    )


def _read_workers(src: _Source, problems: list[Problem]) -> pd.DataFrame:
    found = src.locate("workers")
    if found is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS["workers"]})
    try:
        if found[0].lower().endswith(".csv") and not found[0].startswith("/vsi"):
            df = pd.read_csv(found[0], dtype=str, keep_default_na=False)
        else:
            df = pyogrio.read_dataframe(found[0], layer=found[1], read_geometry=False)
    except Exception as exc:
        problems.append(Problem("workers", "-", "unparseable", f"cannot read {found[0]}: {exc}"))
        return pd.DataFrame(columns=list(COLUMNS["workers"]))
    return _normalise(pd.DataFrame(df), "workers")


def write_package(pkg: Package, out: str | Path, fmt: str = "geojson") -> list[Path]:
    """Write the layers as NAME.geojson files or as one wangge.gpkg, plus workers.csv."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    layers = {"jurisdictions": pkg.jurisdictions, "cells": pkg.cells, "devices": pkg.devices, "water": pkg.water,
              "addresses": pkg.addresses if pkg.addresses is not None else _empty("addresses")}
    if fmt == "gpkg":
        target = out / "wangge.gpkg"
        target.unlink(missing_ok=True)
        for name, gdf in layers.items():
            if len(gdf):
                gdf[[*COLUMNS[name], "geometry"]].to_file(target, layer=name, driver="GPKG")
        written.append(target)
    elif fmt == "geojson":
        for name, gdf in layers.items():
            if len(gdf):
                target = out / f"{name}.geojson"
                target.unlink(missing_ok=True)
                gdf[[*COLUMNS[name], "geometry"]].to_file(target, driver="GeoJSON", COORDINATE_PRECISION=8)
                written.append(target)
    else:
        raise ValueError(f"unknown format {fmt!r}: use gpkg or geojson")
    target = out / "workers.csv"
    pkg.workers[list(COLUMNS["workers"])].to_csv(target, index=False, lineterminator="\n")
    written.append(target)
    return written
