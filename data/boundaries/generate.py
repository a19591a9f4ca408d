#!/usr/bin/env python3
"""Generate the demo boundary package for J镇 (J town) into data/boundaries/demo-j-town/.

Seeded and deterministic: re-running reproduces every file byte for byte (same numpy/shapely/GEOS).
Usage: python data/boundaries/generate.py [--out DIR] [--check]
Uses only numpy, shapely, pyproj and the standard library.
"""
import argparse
import csv
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box, shape
from shapely.geometry.polygon import orient
from shapely.ops import substring

SEED = 20240226
GRID = 1e-7  # output precision in degrees: overlays snap to this grid so that shared edges stay identical
BOX = (121.45, 29.62, 121.70, 29.80)
CRS = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}}
DISTRICT = ("330212000000", "甬江区")
TOWNSHIPS = [("330212101000", "J镇"), ("330212102000", "东钱镇"), ("330212103000", "横溪镇")]
J_CODE = TOWNSHIPS[0][0]
# Local isotropic plane (metres) around the district centre: Voronoi, Lloyd and the river are built here.
LON0, LAT0 = 121.575, 29.71
KX, KY = 111320.0 * math.cos(math.radians(LAT0)), 110574.0

SURNAMES = list("王陈李张周徐林胡应俞毛邵史竺孙朱吴郑杨赵黄何沈蒋董袁范叶傅汪舒虞忻鲍")
PREFIXES = list("东西南北上下前后新大小横高石青金马梅桃沙黄云白鹤凤")
FEATURES = list("岙山桥塘浦湾墩溪岭畈漕洋港河头堰塍埠")
COMMUNITY_NAMES = ["新城", "康宁", "翠屏", "和平", "兴华", "阳光", "明湖", "文昌", "安泰", "振兴",
                   "景湖", "花园", "朝阳", "丰乐", "惠民", "长春", "锦绣", "瑞丰"]
GIVEN = list("国建华明伟芳丽军勇杰静敏燕强磊洋艳娟涛斌超秀英平刚桂兰海波红霞志峰亚萍文浩宇佳琪晨")
CAMERA_PLACES = ["路口", "村口", "桥头", "广场", "菜场", "停车场"]
RIVER_NAME = "甬江支流"
DEVICE_MIX = {"smoke": 60, "water_level": 20, "gas": 25, "video": 45}
DENSE = ("社区", "居")


def to_deg(g, snap=False):
    g = shapely.transform(g, lambda c: c / [KX, KY] + [LON0, LAT0])
    return shapely.set_precision(g, GRID) if snap else g


def to_m(g):
    return shapely.transform(g, lambda c: (c - [LON0, LAT0]) * [KX, KY])


def union(geoms):
    return shapely.union_all(geoms, grid_size=GRID)


def band_key(g, north, band):
    """Sort key for 'west→east, north→south': row band of the centroid latitude, then longitude."""
    c = g.centroid
    return (int((north - c.y) // band), c.x)


# ---------------------------------------------------------------- geometry building blocks
def district_shape(rng):
    """Irregular outline (harmonic radius noise), scaled to sit inside BOX."""
    t = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 12):
        r += rng.uniform(0.3, 1.0) * 0.12 / k**0.8 * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    x, y = r * np.cos(t), r * np.sin(t)
    xy = np.column_stack([x * 11000 / np.abs(x).max(), y * 9000 / np.abs(y).max()])
    return to_deg(Polygon(xy), snap=True)


def sample_in(poly_m, n, rng, centre=None, spread=None, frac=0.0):
    """n random points in poly_m; a fraction clusters around centre (the town seat is denser)."""
    x0, y0, x1, y1 = poly_m.bounds
    pts = []
    while len(pts) < n:
        p = rng.normal(centre, spread) if rng.random() < frac else rng.uniform([x0, y0], [x1, y1])
        if shapely.contains_xy(poly_m, *p):
            pts.append(p)
    return np.array(pts)


def wiggle(x0, y0, x1, y1, rng, amp):
    """Turn a straight Voronoi edge into a smooth irregular one; endpoints stay exact so edges still meet."""
    d = np.array([x1 - x0, y1 - y0])
    length = float(np.hypot(*d))
    t = np.linspace(0, 1, max(2, int(length / 50)) + 1)
    c = rng.uniform(-1, 1, 3)
    off = amp * length * (c[0] + c[1] * np.sin(2 * np.pi * t) + c[2] * np.sin(3 * np.pi * t)) / 3
    for wl in rng.uniform(300, 1500, 3):  # short meanders, so long borders are not ruler-straight
        off += min(0.02 * length, 25) * np.sin(2 * np.pi * length * t / wl + rng.uniform(0, 2 * np.pi))
    off *= np.sin(np.pi * t)
    pts = np.column_stack([x0 + d[0] * t, y0 + d[1] * t]) + np.outer(off, [-d[1], d[0]]) / length
    pts[0], pts[-1] = (x0, y0), (x1, y1)
    return LineString(pts)


def tessellate(parent, seeds_m, rng, lloyd=2, amp=0.05):
    """Planar partition of `parent` (degrees): Voronoi of seeds (Lloyd-relaxed), edges wiggled, clipped."""
    parent_m = to_m(parent)
    pts = np.asarray(seeds_m, dtype=float)
    for _ in range(lloyd):  # Lloyd relaxation: move each seed to the centroid of its clipped cell
        cells = shapely.voronoi_polygons(MultiPoint(pts), extend_to=parent_m).geoms
        for i, p in enumerate(pts):
            cp = next(c for c in cells if c.contains(Point(p))).intersection(parent_m).centroid
            if not cp.is_empty and parent_m.contains(cp):
                pts[i] = (cp.x, cp.y)
    # Edges are cut to an outer frame first so unbounded Voronoi edges do not get km-sized wiggles;
    # the inner frame closes the faces, and the bits between the two frames drop out as dangles.
    pad = max(300.0, 0.5 * math.sqrt(parent_m.area / len(pts)))
    frame, outer = (parent_m.envelope.buffer(k * pad, join_style="mitre") for k in (1, 2))
    edges = shapely.voronoi_polygons(MultiPoint(pts), extend_to=outer.buffer(2 * pad), only_edges=True)
    edges = shapely.get_parts(shapely.intersection(edges, outer))
    lines = [wiggle(*a, *b, rng, amp) for e in edges for a, b in itertools.pairwise(e.coords)]
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(shapely.union_all([*lines, frame.exterior]))))
    owner = []
    for f in faces:  # the face holding a seed belongs to it; seedless slivers go to the nearest seed
        inside = np.flatnonzero(shapely.contains_xy(f, pts[:, 0], pts[:, 1]))
        near = np.hypot(*(pts - f.representative_point().coords[0]).T)
        owner.append(int(inside[0]) if len(inside) == 1 else int(np.argmin(near)))
    out = []
    for i in range(len(pts)):
        mine = [f for f, o in zip(faces, owner, strict=True) if o == i]
        out.append(shapely.intersection(to_deg(shapely.union_all(mine)), parent, grid_size=GRID))
        assert out[-1].geom_type == "Polygon", "tessellation produced an empty or split piece"
    return out, pts


# ---------------------------------------------------------------- the hierarchy
def name_pool(rng):
    """Unique Chinese place stems (李家, 东岙, 石桥 ...), shuffled by the seeded rng."""
    stems = [s + "家" for s in SURNAMES] + [p + f for p in PREFIXES for f in FEATURES if p != f]
    return [stems[i] for i in rng.permutation(len(stems))]


def build_j_villages(town, rng, stems):
    """The 63 units of J镇: 62 Voronoi villages, one of which also owns a detached piece, plus an enclave."""
    geom, town_m = town["geom"], to_m(town["geom"])
    seat = np.add(town_m.centroid.coords[0], (1200, 400))  # town seat: communities cluster here
    seeds = sample_in(town_m, 63, rng, centre=seat, spread=1800, frac=0.3)
    geoms, pts = tessellate(geom, seeds, rng, lloyd=2, amp=0.10)
    d_seat = np.hypot(*(pts - seat).T)
    # Exclave: the smallest face away from the township border and the seat; its owner is the nearest
    # bigger village that does not touch it, so the piece is surrounded by other villages.
    inner = [i for i, g in enumerate(geoms) if g.distance(geom.boundary) > 2e-3 and d_seat[i] > 5000]
    ex = min(inner, key=lambda i: geoms[i].area)
    others = [i for i in range(63) if i != ex]
    owner = next(i for i in sorted(others, key=lambda i: np.hypot(*(pts[i] - pts[ex])))
                 if geoms[i].distance(geoms[ex]) > 3e-3 and d_seat[i] > 5000 and geoms[i].area > 1.5 * geoms[ex].area)
    units = [{"geom": geoms[i], "seat_d": d_seat[i], "parts": [geoms[i]]} for i in others]
    own = units[others.index(owner)]
    own.update(parts=[geoms[owner], geoms[ex]], geom=MultiPolygon([geoms[owner], geoms[ex]]), exclave=True)
    # Kinds: the 10 units nearest the seat are 社区, the 11th a 居, the farthest one a 林场.
    order = sorted(range(len(units)), key=lambda i: units[i]["seat_d"])
    for rank, i in enumerate(order):
        units[i]["kind"] = "社区" if rank < 10 else "居" if rank == 10 else "村"
    units[next(i for i in reversed(order) if units[i] is not own)]["kind"] = "场"
    # Enclave: a small 农场 carved out of the largest rural village, which gets a hole.
    host = max((u for u in units if u["kind"] == "村" and u is not own), key=lambda u: u["geom"].area)
    c = to_m(host["geom"]).buffer(-700).representative_point()
    a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = 420 * (1 + 0.15 * np.sin(3 * a + rng.uniform(0, 6)) + 0.08 * np.cos(5 * a))
    blob = to_deg(Polygon(np.column_stack([c.x + r * np.cos(a), c.y + r * np.sin(a)])), snap=True)
    assert host["geom"].contains_properly(blob)
    host["geom"] = shapely.difference(host["geom"], blob, grid_size=GRID)
    host["parts"] = [host["geom"]]
    units.append({"geom": blob, "kind": "场", "parts": [blob], "enclave": True})
    return name_units(units, stems, town)


def name_units(units, stems, town):
    """Names and 12-digit codes: 社区 001.., 居 011.., 村 201.., 场 401.. (statistical code ranges)."""
    north = town["geom"].bounds[3]
    first = {"社区": 1, "居": 11, "村": 201, "场": 401}
    suffix = {"社区": "社区", "居": "居委会", "村": "村"}
    for kind, start in first.items():
        group = sorted((u for u in units if u["kind"] == kind), key=lambda u: band_key(u["geom"], north, 0.01))
        for k, u in enumerate(group):
            pool = COMMUNITY_NAMES if kind == "社区" else stems["pool"]
            stem = next(s for s in pool if s not in stems["used"])
            stems["used"].add(stem)
            u["name"] = stem + (("农场" if u.get("enclave") else "林场") if kind == "场" else suffix[kind])
            u["code"] = town["code"][:9] + f"{start + k:03d}"
    return sorted(units, key=lambda u: u["code"])


def build_small_villages(town, rng, stems):
    """Four units in each neighbouring township: one 社区 and three 村, with 1–2 cells each."""
    geoms = tessellate(town["geom"], sample_in(to_m(town["geom"]), 4, rng), rng, lloyd=3, amp=0.10)[0]
    units = [{"geom": g, "parts": [g], "kind": "社区" if i == 0 else "村"} for i, g in enumerate(geoms)]
    for u in units:
        u["n_cells"] = int(rng.integers(1, 3))
    return name_units(units, stems, town)


def allocate_cells(units, total):
    """Cells per J village: 2–5 (the small 农场 2, the two-part village ≥ 3 as its piece is one cell),
    proportional to area with communities ×3 denser, summing to `total`."""
    w = np.array([u["geom"].area * (3.0 if u["kind"] in DENSE else 1.0) for u in units])
    lo = np.array([3 if u.get("exclave") else 2 for u in units])
    hi = np.array([2 if u.get("enclave") else 5 for u in units])
    n = np.clip(np.round(total * w / w.sum()), lo, hi).astype(int)
    while n.sum() != total:  # nudge the village furthest from its fair share
        share = total * w / w.sum() - n
        if n.sum() < total:
            n[int(np.argmax(np.where(n < hi, share, -np.inf)))] += 1
        else:
            n[int(np.argmin(np.where(n > lo, share, np.inf)))] -= 1
    for u, k in zip(units, n, strict=True):
        u["n_cells"] = int(k)


def build_cells(u, rng):
    """Tessellate a village into its cells (a detached piece is one cell of its own) and number them."""
    parts = sorted(u["parts"], key=lambda g: -g.area)
    n_main = u["n_cells"] - (len(parts) - 1)
    seeds = sample_in(to_m(parts[0]), n_main, rng)
    geoms = [parts[0]] if n_main == 1 else tessellate(parts[0], seeds, rng, lloyd=3, amp=0.07)[0]
    north = u["geom"].bounds[3]
    geoms = sorted(geoms + parts[1:], key=lambda g: band_key(g, north, 0.004))
    dense = u["kind"] in DENSE
    cells = []
    for i, g in enumerate(geoms, 1):
        lo, hi = (450, 800) if dense else (60, 150) if u["kind"] == "场" else (250, 550)
        hh = int(rng.integers(lo, hi))
        pop = round(float(hh * (rng.uniform(2.3, 2.7) if dense else rng.uniform(2.5, 3.0))))
        cells.append({"code": f"{u['code']}{i:03d}", "name": f"{u['name']}第{i}网格",
                      "village_code": u["code"], "households": hh, "population": pop, "geom": g})
    u["households"] = sum(c["households"] for c in cells)
    u["population"] = sum(c["population"] for c in cells)
    return cells


def finalize(cells, units, towns):
    """Make the partition exact at all levels at once. Clipping level by level leaves mm-wide slivers
    where a child's snapped vertex sits off its parent's edge, so: node all cell borders on the grid,
    polygonize into atomic faces, give each face to the cell it overlaps (gaps: longest shared border),
    and rebuild villages, townships and the district as unions of their cells."""
    geoms = [c["geom"] for c in cells]
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(union([g.boundary for g in geoms]))))
    tree = shapely.STRtree(geoms)
    mine: list[list] = [[] for _ in cells]
    for f in faces:
        cand = sorted(int(i) for i in tree.query(f))
        mine[max(cand, key=lambda i: (f.intersection(geoms[i]).area > 0.5 * f.area,
                                      f.boundary.intersection(geoms[i].boundary).length))].append(f)
    for c, fs in zip(cells, mine, strict=True):
        c["geom"] = union(fs)
        assert c["geom"].geom_type == "Polygon", c["code"]
    for u in units:
        u["geom"] = union([c["geom"] for c in cells if c["village_code"] == u["code"]])
    for t in towns:
        t["geom"] = union([u["geom"] for u in units if u["code"][:9] == t["code"][:9]])
    return union([t["geom"] for t in towns])


def build_river(district, rng):
    """A 60 m wide river meandering west→east across J镇 (a buffered smooth line), clipped to the district."""
    x = np.arange(-14000, 14001, 100.0)
    y = (900 * np.sin(2 * np.pi * x / 7000 + rng.uniform(0, 6))
         + 350 * np.sin(2 * np.pi * x / 2300 + rng.uniform(0, 6)) - 0.12 * x - 800)
    centre = LineString(np.column_stack([x, y]))
    river = shapely.intersection(to_deg(centre.buffer(30, quad_segs=4)), district, grid_size=GRID)
    return max(shapely.get_parts(river), key=lambda g: g.area), to_deg(centre)


def point_in(cell, rng, inset=1.5e-4):
    """Random point strictly inside `cell` (≥ ~15 m from its border where possible), on the 7-decimal grid."""
    inner = cell.buffer(-inset)
    target = inner if not inner.is_empty else cell
    x0, y0, x1, y1 = target.bounds
    while True:
        p = Point(round(rng.uniform(x0, x1), 7), round(rng.uniform(y0, y1), 7))
        if target.contains(p) and cell.contains_properly(p):
            return p


def build_devices(j_units, cells, river, centre, rng):
    """IoT devices in J镇: smoke alarms, gas sensors and cameras in cells, water-level gauges by the river."""
    village = {u["code"]: u for u in j_units}
    jcells = [c for c in cells if c["village_code"] in village]
    hh = np.array([c["households"] for c in jcells], dtype=float)
    dense = np.array([village[c["village_code"]]["kind"] in DENSE for c in jcells])
    counter: dict[str, int] = {}
    devices = []

    def add(kind, subtype, label, geom):
        counter[label] = counter.get(label, 0) + 1
        devices.append({"id": f"D{len(devices) + 1:04d}", "name": f"{label}{counter[label]:02d}",
                        "kind": kind, "subtype": subtype, "geom": geom})

    for subtype, weight in [("smoke", hh), ("gas", hh * np.where(dense, 4, 1))]:  # gas: mostly in towns
        for i in rng.choice(len(jcells), DEVICE_MIX[subtype], p=weight / weight.sum()):
            label = village[jcells[i]["village_code"]]["name"] + ("烟感" if subtype == "smoke" else "燃气报警器")
            add("sensor", subtype, label, point_in(jcells[i]["geom"], rng))
    # Water-level gauges: on the bank 10–25 m from the water, at evenly spread stations inside J镇.
    j_geom = union([u["geom"] for u in j_units])
    stations = [s for s in np.linspace(0.02, 0.98, 400) if j_geom.contains(centre.interpolate(s, normalized=True))]
    for k in np.linspace(0, len(stations) - 1, DEVICE_MIX["water_level"]).round().astype(int):
        a, b = (centre.interpolate(s, normalized=True) for s in (stations[k], stations[k] + 1e-4))
        for _ in range(50):
            nx, ny = -(b.y - a.y), b.x - a.x
            off = rng.choice([-1, 1]) * (30 + rng.uniform(10, 25)) / KX / math.hypot(nx, ny)
            p = Point(round(a.x + nx * off, 7), round(a.y + ny * off, 7))
            if not river.intersects(p) and any(c["geom"].contains_properly(p) for c in jcells):
                break
        add("sensor", "water_level", RIVER_NAME + "水位计", p)
    for i in rng.choice(len(jcells), DEVICE_MIX["video"], p=hh / hh.sum()):
        label = village[jcells[i]["village_code"]]["name"] + str(rng.choice(CAMERA_PLACES)) + "摄像头"
        add("camera", "video", label, point_in(jcells[i]["geom"], rng))
    return devices


def build_workers(units, cells, rng):
    """One grid_worker per cell and one grid_leader (网格长) per village, with fake names and phones."""
    names, phones, rows = set(), set(), []

    def person():
        while True:
            given = rng.choice(GIVEN, int(rng.choice([1, 2], p=[0.3, 0.7])))
            name = str(rng.choice(SURNAMES)) + "".join(given)
            phone = f"{rng.choice([13, 15, 18])}{rng.integers(0, 10)}{rng.integers(0, 10**8):08d}"
            if name not in names and phone not in phones:
                names.add(name)
                phones.add(phone)
                return name, phone

    rows += [[f"W{i:04d}", *person(), "grid_worker", c["code"], ""] for i, c in enumerate(cells, 1)]
    rows += [[f"L{i:03d}", *person(), "grid_leader", "", u["code"]] for i, u in enumerate(units, 1)]
    return rows


# ---------------------------------------------------------------- addresses (gazetteer)
ADDRESS_STREAM = 7  # addresses draw from their own stream, default_rng([SEED, 7]), so no other layer changes
COMMUNITY_LANES = ["人民路", "新华路", "建设路", "解放路", "中兴路", "兴业路", "跃进路", "和平弄", "学前弄", "后街",
                   "新街"]
VILLAGE_LANES = ["学前弄", "村前路", "后街", "前街", "河滨路", "中心路", "新街", "祠堂弄", "后塘路", "池塘弄", "大桥路",
                 "老街", "竹园弄", "井头弄", "石板弄", "庙前路"]
TOWN_LANDMARKS = {"横街": ["横街菜市场", "横街邮政所"], "文昌街": ["文昌阁", "文昌街幼儿园"],
                  "镇中路": ["镇卫生院", "镇中心小学", "镇文化站"]}
VILLAGE_LANDMARKS = {"村": ["文化礼堂", "村委会"], "社区": ["党群服务中心", "卫生服务站"], "居": ["老年活动中心"],
                     "场": ["场部"]}


def along(line, road, rng, step, offset, sub_p=0.0):
    """Address candidates along a road in the metre plane, numbered from its start: the k-th house is number k
    (an odd number on the left, an even one on the right), so numbers increase along the road. Some numbers
    get sub-numbers (12-1, 12-2 ...) set further back from the road. Each house comes with three spots to
    try, the later ones shifted by a third of the minimum step, so the order along the road holds."""
    out, s, n, length = [], rng.uniform(*step) / 2, 1, line.length

    def spots(dist):
        res = []
        for t in np.clip([s, s + step[0] / 3, s - step[0] / 3], 0, length):
            a, b = line.interpolate(max(t - 1, 0)), line.interpolate(min(t + 1, length))
            nx, ny = np.array([a.y - b.y, b.x - a.x]) / math.hypot(b.x - a.x, b.y - a.y)  # left-hand normal
            c, side = line.interpolate(t), 1 if n % 2 else -1
            res.append((c.x + side * nx * dist, c.y + side * ny * dist))
        return res

    while s < length:
        d = rng.uniform(*offset)
        out.append((road, str(n), spots(d)))
        if rng.random() < sub_p:
            out += [(road, f"{n}-{j}", spots(d + 12 * j)) for j in range(1, int(rng.integers(2, 5)))]
        s += rng.uniform(*step)
        n += 1
    return out


def chord(poly_m, rng, max_len, min_len=100.0):
    """A straight lane across poly_m through a random inner point, at most max_len long (None if it won't fit)."""
    for _ in range(30):
        (p,) = sample_in(poly_m, 1, rng)
        t = rng.uniform(0, np.pi)
        d = 5000 * np.array([math.cos(t), math.sin(t)])
        parts = shapely.get_parts(LineString([p - d, p + d]).intersection(poly_m))
        part = min(parts, key=lambda g: g.distance(Point(p)))
        if part.length >= min_len:
            mid = part.project(Point(p))
            lo = float(np.clip(mid - max_len / 2, 0, max(part.length - max_len, 0)))
            return substring(part, lo, min(lo + max_len, part.length))
    return None


def build_addresses(units, cells, river, rng):
    """About 2,500 address points: town roads through the J镇 seat and out to the villages (numbered across
    village borders), lanes inside every J village (generic names such as 学前弄 recur, so road + number alone
    can be ambiguous), a few lanes in the other two townships, and landmark names on some of them."""
    j_units = [u for u in units if u["code"].startswith(J_CODE[:9])]
    seat = to_m(union([u["geom"] for u in j_units if u["kind"] == "社区"])).centroid
    sx, sy = seat.x, seat.y
    t0 = rng.uniform(-0.25, 0.25)

    def straight(cx, cy, angle, length):
        d = np.array([math.cos(angle), math.sin(angle)]) * length / 2
        return wiggle(cx - d[0], cy - d[1], cx + d[0], cy + d[1], rng, 0.03)

    def arc(a0, a1, r):
        a = np.linspace(a0, a1, 60)
        rr = r * (1 + 0.06 * np.sin(3 * a + 1.0))
        return LineString(np.column_stack([sx + rr * np.cos(a), sy + rr * np.sin(a)]))

    r_ring = rng.uniform(2100, 2500)
    off = rng.uniform(200, 400)
    roads = [("横街", straight(sx, sy, t0, 1000), (8, 14), (8, 14), 0.10),
             ("文昌街", straight(sx + off * math.cos(t0), sy + off * math.sin(t0), t0 + np.pi / 2, 800),
              (9, 16), (8, 14), 0.10),
             ("镇中路", straight(sx, sy, t0 + 0.6, 2400), (18, 35), (12, 25), 0.05)]
    for k, name in enumerate(["环镇东路", "环镇北路", "环镇西路", "环镇南路"]):  # quarter arcs of a ring road
        a0 = (2 * k - 1) * np.pi / 4
        roads.append((name, arc(a0, a0 + np.pi / 2, r_ring), (35, 75), (12, 30), 0.0))
    # Radial roads from the ring out to a far village, named after it (东岙村 → 东岙路).
    bearings: list[float] = []
    for i in rng.permutation(len(j_units)):
        u = j_units[i]
        c = to_m(u["geom"]).representative_point()
        dist, bearing = math.hypot(c.x - sx, c.y - sy), math.atan2(c.y - sy, c.x - sx)
        name = u["name"].removesuffix("村") + "路"
        if (u["kind"] != "村" or not 4000 < dist < 9000 or name in VILLAGE_LANES + COMMUNITY_LANES
                or any(abs((bearing - b + np.pi) % (2 * np.pi) - np.pi) < np.pi / 3 for b in bearings)):
            continue
        bearings.append(bearing)
        start = (sx + r_ring * math.cos(bearing), sy + r_ring * math.sin(bearing))
        roads.append((name, wiggle(*start, c.x, c.y, rng, 0.04), (40, 90), (12, 30), 0.0))
        if len(bearings) == 4:
            break
    candidates = [(None, a) for road, line, *spec in roads for a in along(line, road, rng, *spec)]
    # Lanes inside each village: numbers start at 1 in every village.
    for u in units:
        in_j = u["code"].startswith(J_CODE[:9])
        if in_j:
            k = {"社区": int(rng.integers(2, 4)), "居": 2, "场": 1}.get(u["kind"], int(rng.integers(1, 3)))
        else:
            k = 1
        pool = COMMUNITY_LANES if u["kind"] in DENSE else VILLAGE_LANES
        main = max(shapely.get_parts(u["geom"]), key=lambda g: g.area)
        inner = to_m(main).buffer(-40)
        if inner.is_empty:
            inner = to_m(main).buffer(-15)
        for name in rng.choice(pool, k, replace=False):
            dense = u["kind"] in DENSE
            lane = chord(inner, rng, (400 if dense else 350) if in_j else 200)
            if lane is not None:
                spec = ((12, 24), (6, 14), 0.10) if dense else ((18, 40), (6, 14), 0.05)
                candidates += [(u["code"], a) for a in along(lane, str(name), rng, *spec)]
    # Keep the points that fall well inside one cell (of the lane's village), off the river, not on top of another.
    tree = shapely.STRtree([c["geom"] for c in cells])
    seen, bases, rows = set(), set(), []

    def fits(xy):
        p = to_deg(Point(xy))
        p = Point(round(p.x, 7), round(p.y, 7))
        hits = [cells[i] for i in tree.query(p, predicate="within") if cells[i]["geom"].contains_properly(p)]
        ok = len(hits) == 1 and hits[0]["geom"].boundary.distance(p) >= 3e-5 and river.distance(p) >= 2e-4
        return (p, hits[0]) if ok else None

    for village, (road, number, spots) in candidates:
        found = next((f for f in map(fits, spots) if f is not None), None)
        if found is None:
            continue
        p, hit = found
        code = hit["village_code"]
        if (p.x, p.y) in seen or code != (village or code) or (village is None and not code.startswith(J_CODE[:9])):
            continue  # a lane's house in its own village; a town road's only inside J镇
        base = (code, road, number.split("-")[0])
        if "-" in number and base not in bases:
            continue  # no 12-1 without 12
        seen.add((p.x, p.y))
        bases.add(base)
        rows.append({"village_code": code, "road": road, "number": number, "name": None, "geom": p})

    # Landmarks on plain (non-sub) numbers: a few in the seat streets, one or two per village.
    def plain(rs):
        return [r for r in rs if "-" not in r["number"] and r["name"] is None]

    for road, names in TOWN_LANDMARKS.items():
        on = plain(r for r in rows if r["road"] == road)
        for name, i in zip(names, rng.choice(len(on), len(names), replace=False), strict=True):
            on[i]["name"] = name
    for u in units:
        mine = plain(r for r in rows if r["village_code"] == u["code"])
        names = VILLAGE_LANDMARKS[u["kind"]][:2 if u["code"].startswith(J_CODE[:9]) else 1]
        for name, i in zip(names, rng.choice(len(mine), len(names), replace=False), strict=True):
            mine[i]["name"] = u["name"] + name
    rows.sort(key=lambda r: (r["village_code"], r["road"], [int(x) for x in r["number"].split("-")]))
    for i, r in enumerate(rows, 1):
        r["id"] = f"A{i:05d}"
    return rows


# ---------------------------------------------------------------- output
def geojson_geom(g):
    def ring(r):
        return [[round(x, 7), round(y, 7)] for x, y in r.coords]

    if isinstance(g, Point):
        return {"type": "Point", "coordinates": [round(g.x, 7), round(g.y, 7)]}
    polys = [orient(p, 1.0) for p in shapely.get_parts(g)]  # exterior CCW, holes CW (RFC 7946)
    rings = [[ring(p.exterior)] + [ring(h) for h in p.interiors] for p in polys]
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": rings[0]}
    return {"type": "MultiPolygon", "coordinates": rings}


def write_layer(path, name, items, keys):
    """FeatureCollection with fixed key order and one feature per line, so diffs stay readable."""
    def dumps(o):
        return json.dumps(o, ensure_ascii=False, separators=(",", ":"))

    feats = [dumps({"type": "Feature", "properties": {k: it[k] for k in keys}, "geometry": geojson_geom(it["geom"])})
             for it in items]
    head = dumps({"type": "FeatureCollection", "name": name, "crs": CRS})[:-1]
    path.write_text(head + ',"features":[\n' + ",\n".join(feats) + "\n]}\n", encoding="utf-8")


def generate(out: Path):
    rng = np.random.default_rng(SEED)
    out.mkdir(parents=True, exist_ok=True)
    district = district_shape(rng)
    stems = {"pool": name_pool(rng), "used": set()}
    # Townships: J镇 takes the western ~half, the two other towns share the east.
    seeds = np.array([[-4600.0, 300.0], [5600, 4000], [5600, -4000]])
    geoms = tessellate(district, seeds, rng, lloyd=0, amp=0.12)[0]
    towns = [{"code": c, "name": n, "geom": g} for (c, n), g in zip(TOWNSHIPS, geoms, strict=True)]
    j_units = build_j_villages(towns[0], rng, stems)
    allocate_cells(j_units, 200)
    units = j_units + [u for t in towns[1:] for u in build_small_villages(t, rng, stems)]
    cells = [c for u in units for c in build_cells(u, rng)]
    district = finalize(cells, units, towns)
    river, centre = build_river(district, rng)
    devices = build_devices(j_units, cells, river, centre, rng)
    workers = build_workers(units, cells, rng)
    # Households and population roll up: cells → villages → townships → district.
    for u in units:
        u.update(level="village", parent_code=u["code"][:9] + "000")
    for t in towns:
        mine = [u for u in units if u["parent_code"] == t["code"]]
        t.update(level="township", parent_code=DISTRICT[0], kind=None,
                 households=sum(u["households"] for u in mine), population=sum(u["population"] for u in mine))
    top = {"code": DISTRICT[0], "name": DISTRICT[1], "level": "district", "parent_code": None, "kind": None,
           "households": sum(t["households"] for t in towns), "population": sum(t["population"] for t in towns),
           "geom": district}
    keys = ["code", "name", "level", "parent_code", "kind", "households", "population"]
    write_layer(out / "jurisdictions.geojson", "jurisdictions", [top, *towns, *units], keys)
    write_layer(out / "cells.geojson", "cells", cells, ["code", "name", "village_code", "households", "population"])
    write_layer(out / "devices.geojson", "devices", devices, ["id", "name", "kind", "subtype"])
    write_layer(out / "water.geojson", "water", [{"name": RIVER_NAME, "kind": "river", "geom": river}],
                ["name", "kind"])
    with open(out / "workers.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "name", "phone", "role", "cell_code", "village_code"])
        w.writerows(workers)
    # Addresses come last, from their own random stream: the layers above do not change.
    addresses = build_addresses(units, cells, river, np.random.default_rng([SEED, ADDRESS_STREAM]))
    write_layer(out / "addresses.geojson", "addresses", addresses, ["id", "village_code", "road", "number", "name"])


# ---------------------------------------------------------------- self-check (--check)
def check(out: Path):
    """Re-read the written files and assert topology and bookkeeping, areas in metres (EPSG:4550)."""
    tr = Transformer.from_crs("EPSG:4490", "EPSG:4550", always_xy=True)

    def load(name):
        fc = json.loads((out / name).read_text(encoding="utf-8"))
        assert fc["crs"] == CRS, name
        for f in fc["features"]:
            g = f["geometry"]
            for rings in {"Polygon": [g["coordinates"]], "MultiPolygon": g["coordinates"]}.get(g["type"], []):
                assert all(r[0] == r[-1] for r in rings), "ring not closed"
                assert shapely.is_ccw(shapely.linearrings(rings[0])), "exterior ring not CCW"
                assert not any(shapely.is_ccw(shapely.linearrings(r)) for r in rings[1:]), "hole not CW"
        items = [dict(f["properties"], geom=shape(f["geometry"])) for f in fc["features"]]
        for it in items:
            assert shapely.is_valid(it["geom"]), (name, it, shapely.is_valid_reason(it["geom"]))
            it["m"] = shapely.transform(it["geom"], lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
        return items

    jur, cells, devices, water, addresses = (load(n + ".geojson")
                                             for n in ("jurisdictions", "cells", "devices", "water", "addresses"))
    with open(out / "workers.csv", encoding="utf-8", newline="") as f:
        workers = list(csv.DictReader(f))
    by_code = {j["code"]: j for j in jur}
    villages = [j for j in jur if j["level"] == "village"]
    assert box(*BOX).contains(by_code[DISTRICT[0]]["geom"]), "district outside the demo box"
    assert len(by_code) == len(jur) and len({c["code"] for c in cells}) == len(cells), "duplicate codes"
    assert len({d["id"] for d in devices}) == len(devices) and len({w["id"] for w in workers}) == len(workers)
    assert all(len(c) == 12 and c.isdigit() for c in by_code) and all(len(c["code"]) == 15 for c in cells)
    children: dict[str, list] = {}
    for it in jur[1:] + cells:  # a child's code starts with its parent's significant digits
        parent = it.get("parent_code") or it["village_code"]
        digits = {"district": 6, "township": 9, "village": 12}[by_code[parent]["level"]]
        assert it["code"][:digits] == parent[:digits] and it["code"] != parent, it["code"]
        children.setdefault(parent, []).append(it)
    # Every parent is the union of its children, nothing sticks out, and totals roll up.
    for code, kids in children.items():
        parent = by_code[code]
        assert shapely.symmetric_difference(shapely.union_all([k["m"] for k in kids]), parent["m"]).area < 1.0, code
        assert all(k["m"].difference(parent["m"]).area < 1.0 for k in kids), f"child sticks out of {code}"
        for key in ("households", "population"):
            assert parent[key] == sum(k[key] for k in kids), f"{key} of {code}"
    # No overlaps between any two units of the same level (hence none between siblings).
    for level in ("township", "village", "cell"):
        items = cells if level == "cell" else [j for j in jur if j["level"] == level]
        geoms = [i["m"] for i in items]
        for i, k in zip(*shapely.STRtree(geoms).query(geoms, predicate="intersects"), strict=True):
            assert i >= k or geoms[i].intersection(geoms[k]).area < 1.0, f"overlap {items[i]['code']}"
    # Devices strictly inside exactly one cell, in J镇.
    tree = shapely.STRtree([c["geom"] for c in cells])
    for d in devices:
        hits = [i for i in tree.query(d["geom"]) if cells[i]["geom"].contains_properly(d["geom"])]
        assert len(hits) == 1 and cells[hits[0]]["code"].startswith(J_CODE[:9]), d["id"]
    # Workers: one grid_worker per cell, one grid_leader per village, fake mobile numbers.
    roles = {r: sorted(w["cell_code"] + w["village_code"] for w in workers if w["role"] == r)
             for r in ("grid_worker", "grid_leader")}
    assert roles["grid_worker"] == sorted(c["code"] for c in cells), "not one grid_worker per cell"
    assert roles["grid_leader"] == sorted(v["code"] for v in villages), "not one grid_leader per village"
    assert all(len(w["phone"]) == 11 and w["phone"][:2] in ("13", "15", "18") for w in workers)
    # The J镇 figures from the paper, plus the two special shapes and the river.
    j_villages = children[J_CODE]
    j_cells = [c for v in j_villages for c in children[v["code"]]]
    assert len(j_villages) == 63 and 190 <= len(j_cells) <= 215, (len(j_villages), len(j_cells))
    assert all(2 <= len(children[v["code"]]) <= 5 for v in j_villages)
    two_part = [v for v in villages if v["geom"].geom_type == "MultiPolygon"
                and any(p.intersection(by_code[v["parent_code"]]["m"].boundary).length < 1.0
                        for p in shapely.get_parts(v["m"]))]
    enclaves = [(v, h) for v in villages for h in villages for ring in getattr(h["m"], "interiors", [])
                if v is not h and v["m"].difference(Polygon(ring)).area < 1.0]
    assert two_part and enclaves, "two-part village or enclave missing"
    river = water[0]
    width = 2 * river["m"].area / river["m"].length
    assert river["geom"].geom_type == "Polygon" and river["kind"] == "river" and 40 <= width <= 80, width
    assert all(river["m"].distance(d["m"]) < 50 for d in devices if d["subtype"] == "water_level")
    roads = check_addresses(addresses, by_code, cells, tree)
    readme = (Path(__file__).resolve().parent / "README.md").read_text(encoding="utf-8")
    layers = [f"{n}.geojson" for n in ("jurisdictions", "cells", "devices", "water", "addresses")] + ["workers.csv"]
    missing = [name for name in layers if f"| `{name}` |" not in readme]
    assert not missing, f"README.md does not list {missing}"
    for j in [by_code[DISTRICT[0]], *children[DISTRICT[0]]]:
        vs = villages if j["level"] == "district" else children[j["code"]]
        print(f"{j['code']} {j['name']}: {j['m'].area / 1e6:.1f} km², {len(vs)} villages, "
              f"{sum(len(children[v['code']]) for v in vs)} cells, "
              f"{j['households']} households, {j['population']} people")
    print("J镇 village kinds:", {k: sum(v["kind"] == k for v in j_villages) for k in ("村", "社区", "场", "居")})
    print(f"devices: {len(devices)}", {s: sum(d["subtype"] == s for d in devices) for s in DEVICE_MIX},
          f"workers: {len(workers)}; river ≈ {width:.0f} m wide, {river['m'].area / 1e6:.3f} km²")
    print("two-part village:", *(f"{v['code']} {v['name']} ({len(v['geom'].geoms)} parts)" for v in two_part))
    print("enclave:", *(f"{v['code']} {v['name']} inside {h['code']} {h['name']}" for v, h in enclaves))
    n_villages = len({a["village_code"] for a in addresses})
    print(f"addresses: {len(addresses)} on {len(roads)} roads in {n_villages} villages,",
          f"{sum(a['name'] is not None for a in addresses)} landmarks,",
          f"{sum(len(vs) > 1 for vs in roads.values())} roads named in several villages")
    print("check: OK")


def check_addresses(addresses, by_code, cells, tree):
    """Each address strictly inside its village and one of its cells; ids, (village, road, number) and landmark
    names unique; numbers canonical (12 or 12-3, no 12-3 without 12); the seat streets and shared names exist."""
    assert 1500 <= len(addresses) <= 3000, len(addresses)
    assert all(re.fullmatch(r"A\d{5}", a["id"]) for a in addresses) and len({a["id"] for a in addresses}) == len(
        addresses), "address ids"
    keys = {(a["village_code"], a["road"], a["number"]) for a in addresses}
    assert len(keys) == len(addresses), "duplicate (village, road, number)"
    assert all(re.fullmatch(r"[1-9]\d*(-[1-9]\d*)?", a["number"]) for a in addresses), "number not canonical"
    assert all((a["village_code"], a["road"], a["number"].split("-")[0]) in keys for a in addresses), "12-1 without 12"
    names = [a["name"] for a in addresses if a["name"] is not None]
    assert len(set(names)) == len(names), "landmark names not unique"
    for a in addresses:
        village = by_code[a["village_code"]]
        assert village["level"] == "village" and village["geom"].contains_properly(a["geom"]), a["id"]
        hits = [i for i in tree.query(a["geom"]) if cells[i]["geom"].contains_properly(a["geom"])]
        assert len(hits) == 1 and cells[hits[0]]["village_code"] == a["village_code"], a["id"]
    roads: dict[str, set] = {}
    for a in addresses:
        roads.setdefault(a["road"], set()).add(a["village_code"])
    assert {"横街", "文昌街"} <= roads.keys(), "the seat's shop streets 横街 and 文昌街 are missing"
    assert max(len(v) for v in roads.values()) >= 3, "no road crosses several villages"
    pairs: dict[tuple, set] = {}
    for v, road, number in keys:
        pairs.setdefault((road, number), set()).add(v)
    assert any(len(v) > 1 for v in pairs.values()), "no road + number shared by two villages"
    assert any(not a["village_code"].startswith(J_CODE[:9]) for a in addresses), "no addresses outside J镇"
    return roads


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "demo-j-town")
    ap.add_argument("--check", action="store_true", help="validate the written package and print a summary")
    args = ap.parse_args()
    generate(args.out)
    if args.check:
        check(args.out)


if __name__ == "__main__":
    main()
