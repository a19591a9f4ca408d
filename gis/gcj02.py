"""WGS84 <-> GCJ-02 ("Mars coordinates") conversion, vectorised with numpy.

GCJ-02 is the obfuscated datum mandated for published maps in mainland China and used by
AMap/Gaode and Tencent maps. It is not a projection or a datum shift that PROJ can express
(see PROJ issue #982), so pyproj/PostGIS cannot do it: coordinates read off those maps must be
converted here before they are compared with WGS84 (EPSG:4326) data, and vice versa.

The forward transform is the published "krasnov"/eviltransform algorithm (Krasovsky 1940
ellipsoid plus a polynomial + sine series). It has no closed-form inverse, so
``gcj02_to_wgs84`` refines the usual approximate inverse by fixed-point iteration until it
reproduces the input to ~1e-9 degrees (sub-millimetre).

Points outside the mainland-China bounding box get no offset, as in the published algorithm.
Near the box edges (Tajikistan, Russian border, open sea) the inverse is the identity whenever
its *input* is outside the box; this matches the reference implementations.
"""

from __future__ import annotations

from typing import overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["gcj02_to_wgs84", "out_of_china", "wgs84_to_gcj02"]

# Krasovsky 1940 ellipsoid, as used by the published algorithm.
_A = 6378245.0
_EE = 0.00669342162296594323

_MIN_LON, _MAX_LON = 72.004, 137.8347
_MIN_LAT, _MAX_LAT = 0.8293, 55.8271

_MAX_ITER = 10
_TOL_DEG = 1e-9

FloatArray = NDArray[np.float64]


def out_of_china(lon: ArrayLike, lat: ArrayLike) -> bool | NDArray[np.bool_]:
    """True where (lon, lat) lies outside the mainland-China bounding box (no GCJ-02 offset)."""
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    out = (x < _MIN_LON) | (x > _MAX_LON) | (y < _MIN_LAT) | (y > _MAX_LAT)
    return bool(out) if out.ndim == 0 else out


def _transform_lat(x: FloatArray, y: FloatArray) -> FloatArray:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    ret += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    ret += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    ret += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    return ret


def _transform_lon(x: FloatArray, y: FloatArray) -> FloatArray:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    ret += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    ret += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    ret += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    return ret


def _delta(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 minus WGS84 offset (degrees) at WGS84 point (lon, lat); zero outside China."""
    x, y = lon - 105.0, lat - 35.0
    rad_lat = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    d_lat = (_transform_lat(x, y) * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    d_lon = (_transform_lon(x, y) * 180.0) / (_A / sqrt_magic * np.cos(rad_lat) * np.pi)
    outside = out_of_china(lon, lat)
    return np.where(outside, 0.0, d_lon), np.where(outside, 0.0, d_lat)


def _prepare(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray, bool]:
    x, y = np.broadcast_arrays(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return x, y, x.ndim == 0


@overload
def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]: ...
@overload
def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]: ...
def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[float, float] | tuple[FloatArray, FloatArray]:
    """Convert WGS84 lon/lat (degrees) to GCJ-02. Scalars in -> floats out, arrays in -> arrays out."""
    x, y, scalar = _prepare(lon, lat)
    d_lon, d_lat = _delta(x, y)
    gx, gy = x + d_lon, y + d_lat
    return (float(gx), float(gy)) if scalar else (gx, gy)


@overload
def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]: ...
@overload
def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]: ...
def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[float, float] | tuple[FloatArray, FloatArray]:
    """Convert GCJ-02 lon/lat (degrees) to WGS84: the accurate (iterative) inverse of ``wgs84_to_gcj02``.

    Starts from the approximate inverse ``gcj - delta(gcj)`` and iterates
    ``wgs <- wgs + (gcj - wgs84_to_gcj02(wgs))`` until the largest update is below 1e-9 degrees
    (normally 2-3 iterations; capped at 10). Points whose input is outside China are returned as is.
    """
    gx, gy, scalar = _prepare(lon, lat)
    outside = out_of_china(gx, gy)
    wx, wy = gx.copy(), gy.copy()
    for _ in range(_MAX_ITER):
        d_lon, d_lat = _delta(wx, wy)
        step_x = np.where(outside, 0.0, gx - (wx + d_lon))
        step_y = np.where(outside, 0.0, gy - (wy + d_lat))
        wx, wy = wx + step_x, wy + step_y
        if not (np.any(np.abs(step_x) >= _TOL_DEG) or np.any(np.abs(step_y) >= _TOL_DEG)):
            break  # NaN steps compare False, so NaN inputs cannot stall the loop
    return (float(wx), float(wy)) if scalar else (wx, wy)
