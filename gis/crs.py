"""Coordinate reference systems.

Storage is CGCS2000 (EPSG:4490) lon/lat; metric work happens in the CGCS2000 3-degree Gauss–Krüger zone
(EPSG:4534–4554) picked from the data's longitude; input may be any EPSG code or GCJ-02.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from gis import gcj02
from gis.errors import InvalidCoordinates

STORAGE_EPSG = 4490
GCJ02 = "GCJ02"
_GCJ_NAMES = {"GCJ02", "GCJ-02", "GCJ_02"}


@dataclass(frozen=True)
class InputCRS:
    """A parsed input CRS: either an EPSG/pyproj CRS or the GCJ-02 obfuscation (which PROJ lacks)."""

    name: str
    crs: CRS | None  # None means GCJ-02
    geographic: bool = True
    lonlat: bool = False  # WGS84 or CGCS2000 lon/lat: taken as they are (they agree to well under a metre)


@lru_cache(maxsize=64)
def parse_crs(text: str | int | None) -> InputCRS:
    """Parse 'EPSG:4326', '4490', 'OGC:CRS84', 'GCJ02' …; unknown names raise InvalidCoordinates."""
    if text is None or text == "":
        text = "EPSG:4326"
    s = str(text).strip()
    if s.upper() in _GCJ_NAMES:
        return InputCRS(GCJ02, None)
    if s.isdigit():
        s = f"EPSG:{s}"
    try:
        crs = CRS.from_user_input(s)
    except CRSError as exc:
        raise InvalidCoordinates(f"unknown crs {text!r}: use an EPSG code such as EPSG:4326, or GCJ02") from exc
    # Worked out once here (parse_crs is cached): asking pyproj for an EPSG code costs more than a small batch.
    lonlat = crs.to_epsg() in (4326, 4490) or crs.equals(CRS.from_user_input("OGC:CRS84"))
    return InputCRS(crs.to_string(), crs, bool(crs.is_geographic), lonlat)


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def transformer(src: CRS | int | str, dst: CRS | int | str) -> Transformer:
    """A cached always_xy transformer (EPSG:4490 is latitude-first; we never want that order)."""
    def key(c: CRS | int | str) -> str:
        if isinstance(c, int):
            return f"EPSG:{c}"
        return c.to_wkt() if isinstance(c, CRS) else c

    return _transformer(key(src), key(dst))


def to_storage(x: ArrayLike, y: ArrayLike, crs: InputCRS) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Transform coordinates to CGCS2000 lon/lat. Non-finite results stay NaN for the caller to report."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if crs.crs is None:
        # GCJ-02 is an offset of WGS84; CGCS2000 and WGS84 agree to well under a metre.
        lon, lat = gcj02.gcj02_to_wgs84(xa, ya)
        return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    if crs.lonlat:
        return xa.copy(), ya.copy()
    lon, lat = transformer(crs.crs, STORAGE_EPSG).transform(xa, ya, errcheck=False)
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


def gk_epsg(lon: float) -> int:
    """EPSG code of the CGCS2000 3-degree Gauss–Krüger zone (CM variant, 4534–4554) for a longitude."""
    cm = int(np.clip(round(lon / 3.0) * 3, 75, 135))
    return 4534 + (cm - 75) // 3


def metric_transformer(lon: float) -> Transformer:
    """Storage lon/lat → metres in the Gauss–Krüger zone that holds `lon`."""
    return transformer(STORAGE_EPSG, gk_epsg(lon))
