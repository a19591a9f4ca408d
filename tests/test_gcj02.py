"""Unit tests for gis.gcj02 (WGS84 <-> GCJ-02). Pure numpy/pyproj, no database."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from gis.gcj02 import gcj02_to_wgs84, out_of_china, wgs84_to_gcj02

GEOD = Geod(ellps="WGS84")


def _metres(lon1, lat1, lon2, lat2):
    return GEOD.inv(lon1, lat1, lon2, lat2)[2]


# Published WGS84 -> GCJ-02 pairs, (wgs_lon, wgs_lat, gcj_lon, gcj_lat). The sources store
# (lat, lon) in some cases; they are reordered to (lon, lat) here, values unchanged.
PUBLISHED_PAIRS = [
    # googollee/eviltransform python/test.py (same TESTS in go/transform_test.go, javascript/test.js,
    # c/test.c, matlab/test/testSuite.m) -- "shanghai"
    pytest.param(121.5272106, 31.1774276, 121.531541859215, 31.17530398364597, id="eviltransform-shanghai"),
    # googollee/eviltransform python/test.py -- "shenzhen"
    pytest.param(113.912316, 22.543847, 113.9171764808363, 22.540796131694766, id="eviltransform-shenzhen"),
    # googollee/eviltransform python/test.py -- "beijing"
    pytest.param(116.377817, 39.911954, 116.38404722455657, 39.91334545536069, id="eviltransform-beijing"),
    # wandergis/coordtransform README.md (and test/app.js): wgs84togcj02(116.404, 39.915)
    pytest.param(116.404, 39.915, 116.41024449916938, 39.91640428150164, id="coordtransform-readme"),
    # hujiulong/gcoord test/unit/crs/WGS84.spec.ts: WGS84.to.GCJ02([123, 45])
    pytest.param(123.0, 45.0, 123.00607541, 45.00197815, id="gcoord-spec"),
    # Glatzel/pyxis python/tests/test_crypto.py: wgs84 / gcj02 constants -- Pinghu, Jiaxing, Zhejiang
    # (north shore of Hangzhou Bay, ~60 km from Ningbo)
    pytest.param(121.0917077, 30.6107779, 121.09626935575027, 30.608604331756705, id="pyxis-zhejiang"),
]


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), PUBLISHED_PAIRS)
def test_published_pairs_forward(wlon: float, wlat: float, glon: float, glat: float) -> None:
    lon, lat = wgs84_to_gcj02(wlon, wlat)
    assert lon == pytest.approx(glon, abs=1e-6)
    assert lat == pytest.approx(glat, abs=1e-6)


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), PUBLISHED_PAIRS)
def test_published_pairs_inverse(wlon: float, wlat: float, glon: float, glat: float) -> None:
    lon, lat = gcj02_to_wgs84(glon, glat)
    assert lon == pytest.approx(wlon, abs=1e-6)
    assert lat == pytest.approx(wlat, abs=1e-6)


# Zhejiang cities from hujiulong/gcoord test/fixtures/china-cities.json (WGS84 and GCJ02 fields).
# That fixture was not produced by this exact formula chain: gcoord's own suite checks the
# WGS84<->GCJ02 columns only with toBeCloseTo(x, 4), i.e. |diff| < 5e-5 deg, so that is the
# tolerance used here (observed agreement is ~5e-6 deg, about 0.5-0.7 m).
GCOORD_ZHEJIANG = [
    pytest.param(119.6427465, 29.0820414, 119.6474509, 29.0790641, id="gcoord-jinhua"),  # 金华市 婺城区
    pytest.param(120.6953127, 27.9971173, 120.6993688, 27.9938322, id="gcoord-wenzhou"),  # 温州市 鹿城区
    pytest.param(120.0819509, 30.8963939, 120.0868281, 30.8943522, id="gcoord-huzhou"),  # 湖州市 吴兴区
]


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), GCOORD_ZHEJIANG)
def test_gcoord_fixture_zhejiang(wlon: float, wlat: float, glon: float, glat: float) -> None:
    lon, lat = wgs84_to_gcj02(wlon, wlat)
    assert lon == pytest.approx(glon, abs=5e-5)
    assert lat == pytest.approx(glat, abs=5e-5)
    lon, lat = gcj02_to_wgs84(glon, glat)
    assert lon == pytest.approx(wlon, abs=5e-5)
    assert lat == pytest.approx(wlat, abs=5e-5)


def test_ningbo_offset_is_a_few_hundred_metres() -> None:
    glon, glat = wgs84_to_gcj02(121.55, 29.7)
    d = _metres(121.55, 29.7, glon, glat)
    assert 100.0 < d < 1000.0


@settings(max_examples=300, deadline=None)
@given(
    lon=st.floats(min_value=73.0, max_value=135.0, allow_nan=False, allow_infinity=False),
    lat=st.floats(min_value=18.0, max_value=53.0, allow_nan=False, allow_infinity=False),
)
def test_round_trip_mainland_china(lon: float, lat: float) -> None:
    glon, glat = wgs84_to_gcj02(lon, lat)
    assert (glon, glat) != (lon, lat)  # inside China there is an offset
    wlon, wlat = gcj02_to_wgs84(glon, glat)
    d = _metres(lon, lat, wlon, wlat)
    assert d < 1.0
    assert d < 0.01


def test_round_trip_vectorised_10k() -> None:
    rng = np.random.default_rng(20240601)
    lon = rng.uniform(73.0, 135.0, 10_000)
    lat = rng.uniform(18.0, 53.0, 10_000)
    glon, glat = wgs84_to_gcj02(lon, lat)
    assert isinstance(glon, np.ndarray) and glon.shape == lon.shape
    offset = _metres(lon, lat, glon, glat)
    assert np.all(offset > 1.0)
    wlon, wlat = gcj02_to_wgs84(glon, glat)
    assert isinstance(wlon, np.ndarray) and wlon.shape == lon.shape
    d = _metres(lon, lat, wlon, wlat)
    assert np.max(d) < 1.0
    assert np.max(d) < 0.01
    # The vectorised path agrees with the scalar path.
    for i in range(0, 10_000, 1_000):
        assert wgs84_to_gcj02(float(lon[i]), float(lat[i])) == (glon[i], glat[i])
        slon, slat = gcj02_to_wgs84(float(glon[i]), float(glat[i]))
        assert slon == pytest.approx(wlon[i], abs=1e-12)
        assert slat == pytest.approx(wlat[i], abs=1e-12)


def test_scalar_and_array_return_types() -> None:
    lon, lat = wgs84_to_gcj02(121.55, 29.7)
    assert type(lon) is float and type(lat) is float
    lon, lat = gcj02_to_wgs84(121.55, 29.7)
    assert type(lon) is float and type(lat) is float
    grid_lon, grid_lat = np.meshgrid(np.linspace(120, 122, 4), np.linspace(28, 31, 3))
    for func in (wgs84_to_gcj02, gcj02_to_wgs84):
        out_lon, out_lat = func(grid_lon, grid_lat)
        assert isinstance(out_lon, np.ndarray) and out_lon.shape == (3, 4) and out_lon.dtype == np.float64
        assert isinstance(out_lat, np.ndarray) and out_lat.shape == (3, 4)


# Outside-China points (lon, lat) that must come back unchanged.
OUTSIDE = [
    (-104.9903, 39.7392),  # googollee/eviltransform matlab/test/testSuite.m: "Denver edge case"
    (153.0251, -27.4698),  # googollee/eviltransform matlab/test/testSuite.m: "Brisbane edge case"
    (-43.1729, -22.9068),  # googollee/eviltransform matlab/test/testSuite.m: "Rio de Janerio edge case"
    (183.0, 45.0),  # hujiulong/gcoord test/unit/crs/WGS84.spec.ts and GCJ02.spec.ts: "not in China"
    (2.3522, 48.8566),  # Paris
    (139.6917, 35.6895),  # Tokyo (east of 137.8347 E)
    (71.9, 40.0),  # just west of the box
    (100.0, 0.5),  # just south of the box
    (120.0, 56.0),  # just north of the box
]


@pytest.mark.parametrize(("lon", "lat"), OUTSIDE)
def test_outside_china_unchanged(lon: float, lat: float) -> None:
    assert out_of_china(lon, lat) is True
    assert wgs84_to_gcj02(lon, lat) == (lon, lat)
    assert gcj02_to_wgs84(lon, lat) == (lon, lat)


def test_outside_china_vectorised_mixed() -> None:
    lon = np.array([o[0] for o in OUTSIDE] + [121.55, 116.404])
    lat = np.array([o[1] for o in OUTSIDE] + [29.7, 39.915])
    mask = out_of_china(lon, lat)
    assert isinstance(mask, np.ndarray)
    np.testing.assert_array_equal(mask, [True] * len(OUTSIDE) + [False, False])
    for func in (wgs84_to_gcj02, gcj02_to_wgs84):
        out_lon, out_lat = func(lon, lat)
        np.testing.assert_array_equal(out_lon[mask], lon[mask])
        np.testing.assert_array_equal(out_lat[mask], lat[mask])
        assert np.all(out_lon[~mask] != lon[~mask])


def test_out_of_china_box_edges() -> None:
    assert out_of_china(72.0, 30.0) is True
    assert out_of_china(72.01, 30.0) is False
    assert out_of_china(137.83, 30.0) is False
    assert out_of_china(137.84, 30.0) is True
    assert out_of_china(100.0, 0.82) is True
    assert out_of_china(100.0, 0.83) is False
    assert out_of_china(100.0, 55.82) is False
    assert out_of_china(100.0, 55.83) is True
