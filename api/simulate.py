"""`wangge simulate`: a living demo town. Drives the running service over HTTP (loopback only by default) with
traffic from every channel — grid-worker patrols, IoT alarms with alarm storms, video-AI alerts, 12345 hotline
calls by address, tasks assigned from above, citizen reports — with hotspot villages, a recurring problem spot
and the paper's three cases, and plays the handlers who move cases around the closed loop at human-like delays.

One loop over a virtual clock sends every request in a fixed order, never concurrently: the seed decides the
traffic and rate × duration the number of reports. A slow service makes the run late, not different.
"""

from __future__ import annotations

import datetime as dt
import heapq
import ipaddress
import json
import random
import re
import threading
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import shapely
from shapely.geometry import shape

from gis.errors import WanggeError
from gis.gcj02 import wgs84_to_gcj02
from gis.taxonomy import load_taxonomy

TZ = zoneinfo.ZoneInfo("Asia/Shanghai")
ADDRESSES = Path(__file__).resolve().parent.parent / "data" / "boundaries" / "demo-j-town" / "addresses.geojson"
SCENARIOS = {"patrol": 28, "sensor": 13, "camera": 14, "hotline": 18, "assigned": 5, "citizen": 13, "recurring": 5,
             "echo": 4}
FATES = {"close": 45, "rework": 10, "return": 8, "escalate": 8, "reject": 5, "stall": 24}  # stall: left to go overdue
FIRST_FATES = ("escalate", "return", "rework", "close", "reject", "stall", "close", "escalate")  # short runs too
SLOW = ("start", "feedback", "assist", "return")  # the units take longer than the command centre
SURNAMES, GIVEN = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林忻邬", "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀英华"
TAILS = ("，请尽快处理", "，群众反映强烈", "，已拍照", "，现场核实中", "")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


class SimulationError(WanggeError):
    """The simulator cannot run: bad arguments, the service unreachable or the login refused."""


@dataclass
class SimStats:
    posted: int = 0
    created: int = 0
    merged: int = 0
    duplicates: int = 0
    needs_location: int = 0
    actions: int = 0
    closed: int = 0
    escalated: int = 0
    returned: int = 0
    reworked: int = 0
    rejected: int = 0
    errors: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    paper_cases: dict[str, int] = field(default_factory=dict)  # case name → event id
    error_samples: list[str] = field(default_factory=list)


@dataclass
class _Case:
    id: int
    category: str
    unit: str | None  # lead unit: from the intake's answer, then from escalation
    steps: list[str]
    assisting: tuple[str, ...]
    truth: tuple[float, float] | None = None  # where an unlocated report really is (the centre finds out)


def parse_rate(text: str) -> float:
    """'5/s', '300/min', '120/h' or a bare number (per second) → events per second."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(?:/\s*(s|sec|second|m|min|minute|h|hr|hour))?\s*", str(text))
    if m is None or float(m[1]) <= 0:
        raise SimulationError(f"rate {text!r}: use a positive number per second or minute, e.g. 5/s or 300/min")
    return float(m[1]) / {"m": 60, "h": 3600}.get((m[2] or "s")[0], 1)


def parse_duration(text: str) -> float:
    """'90s', '10m', '2h', '1h30m' or a bare number (seconds) → seconds."""
    if re.fullmatch(r"(\s*[0-9]*\.?[0-9]+\s*(ms|s|m|h|d)?)+\s*", str(text)) is None:
        raise SimulationError(f"duration {text!r}: use e.g. 90s, 10m or 2h")
    seconds = sum(float(n) * {"ms": 0.001, "m": 60, "h": 3600, "d": 86400}.get(u, 1)
                  for n, u in re.findall(r"([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?", str(text)))
    if seconds <= 0:
        raise SimulationError(f"duration {text!r} must be longer than zero")
    return seconds


def check_url(base_url: str, allow_remote: bool = False) -> str:
    """The base URL without its trailing slash; refuses anything but loopback unless allow_remote."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SimulationError(f"{base_url!r} is not an http(s) URL")
    try:
        loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    if not (loopback or allow_remote):
        raise SimulationError(f"refusing to send simulated traffic to {parts.hostname}: only loopback "
                              "(127.0.0.1, ::1, localhost) unless allow_remote=True")
    return base_url.rstrip("/")


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", ""))[:200]
    except (ValueError, AttributeError):
        return r.text[:200]


class _Api:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base, self.username, self.password = base_url, username, password
        self.http = httpx.Client(base_url=base_url, timeout=15.0, trust_env=False, follow_redirects=False)

    def login(self) -> None:
        try:
            r = self.http.post("/api/v1/auth/token", data={"username": self.username, "password": self.password})
        except httpx.TransportError as exc:
            raise SimulationError(f"the service at {self.base} is not reachable: {exc}") from exc
        if r.status_code != 200:
            raise SimulationError(f"login as {self.username!r} refused by {self.base}: HTTP {r.status_code} "
                                  f"{_detail(r)}")
        if r.json().get("role") != "admin":
            raise SimulationError(f"{self.username!r} is a {r.json().get('role')}; the simulator plays every "
                                  "handler and needs an admin account")
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        r = self.http.request(method, path, **kw)
        if r.status_code == 401:  # the token expired during a long run
            self.login()
            r = self.http.request(method, path, **kw)
        return r

    def features(self, path: str) -> list[tuple[dict[str, Any], Any]]:
        r = self.call("GET", path)
        if r.status_code != 200:
            raise SimulationError(f"GET {path} failed: HTTP {r.status_code} {_detail(r)}")
        return [(f["properties"], shape(f["geometry"])) for f in r.json()["features"]]


class _Town:
    """The town as the service serves it (villages, cells, devices, water), the demo addresses and the taxonomy."""

    def __init__(self, api: _Api, rng: random.Random) -> None:
        self.villages = {p["code"]: p["name"] for p, _ in api.features("/api/v1/jurisdictions?level=village")}
        self.cells = api.features("/api/v1/cells")
        self.devices = api.features("/api/v1/devices")
        self.river = next((g for _, g in api.features("/api/v1/water")), None)
        if not self.villages or not self.cells:
            raise SimulationError("the service has no villages or grid cells: load the demo township first")
        r = api.call("GET", "/open311/v2/services.json")
        served = {s["service_code"] for s in r.json()} if r.status_code == 200 else set()
        self.tax = load_taxonomy()
        self.cats = {c: v for c, v in self.tax.categories.items() if not served or c in served}
        self.device_cat = {p["id"]: self._category_for(p["subtype"]) for p, _ in self.devices}
        raw = json.loads(ADDRESSES.read_text("utf-8"))["features"] if ADDRESSES.exists() else []
        self.addresses = [(a["properties"], a["geometry"]["coordinates"]) for a in raw
                          if a["properties"]["village_code"] in self.villages]
        seen = Counter((p["road"], p["number"]) for p, _ in self.addresses)
        self.ambiguous = {k for k, n in seen.items() if n > 1}  # the gazetteer needs the village name for these
        self.hot = set(rng.sample(sorted(self.villages), min(3, len(self.villages))))  # much more traffic here
        self.cell_weights = [8.0 if p["village_code"] in self.hot else 1.0 for p, _ in self.cells]
        hot_area = shapely.union_all([g for p, g in self.cells if p["village_code"] in self.hot])
        self.sensors = [p for p, _ in self.devices if p["kind"] == "sensor"]
        self.hot_sensors = [p for p, g in self.devices if p["kind"] == "sensor" and hot_area.intersects(g)]
        self.cameras = [p for p, _ in self.devices if p["kind"] == "camera"]
        self.video = [c for c in self.by_source("camera") if any(s.startswith("video.")
                                                                 for s in self.cats[c].device_subtypes)]
        self.hot_addresses = [a for a in self.addresses if a[0]["village_code"] in self.hot]
        named = [a for a in self.hot_addresses if a[0].get("name")]
        self.spot = rng.choice(named or self.addresses) if self.addresses else None  # the recurring problem

    def _category_for(self, subtype: str) -> Any:
        try:
            return self.tax.category_for_device(subtype)
        except WanggeError:
            return None

    def by_source(self, source: str) -> list[str]:
        return sorted(c for c, v in self.cats.items() if source in v.sources) or sorted(self.cats)


class Simulator:
    def __init__(self, api: _Api, rate: float, duration: float, seed: int) -> None:
        self.api, self.rate, self.duration = api, rate, duration
        self.rng = random.Random(seed)
        self.stats = SimStats()
        self.town = _Town(api, self.rng)
        self.heap: list[tuple[float, int, str, Any]] = []  # (virtual time, order, "post" | "act", slot | case id)
        self.pending: list[tuple[float, int, dict[str, Any]]] = []  # storm alarms and retries, due at a time
        self.cases: dict[int, _Case] = {}
        self.recent: list[tuple[str, float, float]] = []  # (category, lon, lat) of new cases: others see them too
        self.n = max(3, round(rate * duration))
        self.paper = {min(int(self.n * f), self.n - 3) + i: name for i, (f, name) in enumerate(
            ((0.04, "shop_fire_hazard"), (0.10, "fire_passage"), (0.16, "fishing_nets")))}
        self.seq = self.fated = self.failures = self.calls = self.fresh = 0
        self.tag = f"{dt.datetime.now(TZ):%y%m%d%H%M%S}"  # external ids of this run: new calls, not retries

    def _push(self, t: float, kind: str, ref: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, ref))

    def run(self, stop: threading.Event, progress: Callable[[SimStats, float], None] | None) -> SimStats:
        self._push(0.0, "post", 0)
        start = time.monotonic()
        try:
            while self.heap and not stop.is_set():
                t, _, kind, ref = heapq.heappop(self.heap)
                if t >= self.duration or stop.wait(max(0.0, start + t - time.monotonic())):
                    break
                try:
                    if kind == "post":
                        self._post(ref, t)
                    else:
                        self._act(self.cases[ref], t)
                    self.failures = 0
                except httpx.TransportError as exc:
                    self._error(f"{kind}: {exc!r}")
                    self.failures += 1
                    if self.failures >= 20:
                        raise SimulationError(f"the service at {self.api.base} stopped answering: {exc}") from exc
                if progress:
                    progress(self.stats, min(1.0, t / self.duration))
        except KeyboardInterrupt:  # Ctrl-C ends the run early; the totals so far are the answer
            return self.stats
        if progress:
            progress(self.stats, 1.0)
        return self.stats

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        if len(self.stats.error_samples) < 20:
            self.stats.error_samples.append(message)

    # -- reporters ------------------------------------------------------------------------------------------------
    def _post(self, i: int, t: float) -> None:
        if i + 1 < self.n:
            self._push((i + 1 + 0.8 * self.rng.random()) * self.duration / self.n, "post", i + 1)
        if i in self.paper:
            name = self.paper[i]
            self._send(getattr(self, f"_{name}")(), t, "rework" if name == "fire_passage" else "close", name)
        elif self.pending and self.pending[0][0] <= t:
            self._send(heapq.heappop(self.pending)[2], t)
        else:  # every channel early on, so that short runs show them all; then the mix
            self.fresh += 1
            scenario = list(SCENARIOS)[self.fresh - 1] if self.fresh <= len(SCENARIOS) else self.rng.choices(
                list(SCENARIOS), weights=list(SCENARIOS.values()))[0]
            self._send(getattr(self, f"_{scenario}")(t), t)

    def _send(self, body: dict[str, Any], t: float, fate: str | None = None, paper: str | None = None) -> None:
        truth = body.pop("_truth", None)
        body["occurred_at"] = dt.datetime.now(TZ).isoformat()
        self.stats.posted += 1
        self.stats.by_source[body["source"]] = self.stats.by_source.get(body["source"], 0) + 1
        r = self.api.call("POST", "/api/v1/events", json=body)
        if r.status_code not in (200, 201):
            return self._error(f"POST {body['source']}/{body.get('category')} → {r.status_code} {_detail(r)}")
        e = r.json()
        stat = {"created": "created", "merged": "merged", "duplicate": "duplicates"}.get(e.get("outcome", ""))
        if stat:
            setattr(self.stats, stat, getattr(self.stats, stat) + 1)
        if paper:
            self.stats.paper_cases[paper] = e["id"]
        if stat != "created":
            return None
        cat = self.town.cats.get(body.get("category") or "") or self.town.device_cat.get(body.get("device_id", ""))
        if e["status"] == "needs_location":  # the centre calls back and places it, rejects it, or it waits
            self.stats.needs_location += 1
            head = self.rng.choices(["locate", "reject", ""], weights=[6 if truth else 0, 3, 2])[0]
            steps = [] if not head else ["reject"] if head == "reject" else ["locate", *self._plan(None)]
        else:
            steps = self._plan(fate)
            if cat and "lon" in body and "crs" not in body:
                self.recent = [*self.recent[-19:], (cat.code, body["lon"], body["lat"])]
        self.cases[e["id"]] = _Case(e["id"], cat.code if cat else "", e.get("unit"), steps,
                                    tuple(cat.assisting) if cat else (), truth)
        return self._next(self.cases[e["id"]], t)

    def _later(self, due: float, body: dict[str, Any]) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (due, self.seq, body))

    def _who(self, name: str | None = None) -> dict[str, str]:
        name = name or self.rng.choice(SURNAMES) + "".join(self.rng.choices(GIVEN, k=self.rng.choice((1, 2))))
        return {"name": name, "phone": "1" + self.rng.choice("3589") + "".join(self.rng.choices("0123456789", k=9))}

    def _cell(self) -> tuple[dict[str, Any], Any]:
        return self.rng.choices(self.town.cells, weights=self.town.cell_weights)[0]

    def _point_in(self, geom: Any) -> tuple[float, float]:
        x0, y0, x1, y1 = geom.bounds
        for _ in range(50):
            x, y = self.rng.uniform(x0, x1), self.rng.uniform(y0, y1)
            if shapely.contains_xy(geom, x, y):
                return round(x, 7), round(y, 7)
        p = geom.representative_point()
        return round(p.x, 7), round(p.y, 7)

    def _at(self, point: tuple[float, float] | None, source: str, cat: str, where: str, **kw: Any) -> dict[str, Any]:
        """A person's report, at a point when they have one."""
        return {"source": source, "category": cat, "reporter": self._who(),
                "description": f"{where}{self.town.cats[cat].name_zh}{self.rng.choice(TAILS)}"} | (
                    {"lon": round(point[0], 7), "lat": round(point[1], 7)} if point else {}) | kw

    def _near(self, lon: float, lat: float, metres: float) -> tuple[float, float]:
        d = metres / 111_000
        return round(lon + self.rng.uniform(-d, d), 7), round(lat + self.rng.uniform(-d, d) * 0.87, 7)

    def _patrol(self, t: float) -> dict[str, Any]:
        props, geom = self._cell()
        return self._at(self._point_in(geom), "grid_worker", self.rng.choice(self.town.by_source("grid_worker")),
                        f"巡查{props['name']}发现", reporter=self._who(props.get("worker_name")))

    def _sensor(self, t: float) -> dict[str, Any]:
        hot = self.town.hot_sensors
        dev = self.rng.choice(hot if hot and self.rng.random() < 0.6 else self.town.sensors)
        body = {"source": "sensor", "device_id": dev["id"], "description": f"{dev.get('name') or dev['id']}告警"}
        for k in range(self.rng.randint(2, 5) if self.rng.random() < 0.2 else 0):  # an alarm storm
            self._later(t + (k + 1) * self.rng.uniform(0.5, 3.0) / max(self.rate, 0.2), dict(body))
        return body

    def _camera(self, t: float) -> dict[str, Any]:
        dev, video = self.rng.choice(self.town.cameras), self.town.video
        cat = self.rng.choice(video) if video and self.rng.random() < 0.7 else None  # None: the device decides
        body = {"source": "camera", "device_id": dev["id"], "category": cat,
                "description": f"视频AI识别：{self.town.cats[cat].name_zh if cat else '异常行为'}（{dev['id']}）"}
        if self.rng.random() < 0.2:  # the camera flags it again
            self._later(t + self.rng.uniform(1.0, 5.0) / max(self.rate, 0.2), dict(body))
        return body

    def _address_text(self, props: dict[str, Any]) -> str:
        number = props["number"].translate(FULL_WIDTH) if self.rng.random() < 0.25 else props["number"]
        village = (props["road"], props["number"]) in self.town.ambiguous or self.rng.random() < 0.3
        return (self.town.villages[props["village_code"]] if village else "") + f"{props['road']}{number}号"

    def _hotline(self, t: float, cat: str | None = None, address: str | None = None) -> dict[str, Any]:
        cat = cat or self.rng.choice(self.town.by_source("hotline"))
        body = self._at(None, "hotline", cat, "来电反映", external_id=f"12345-{self.tag}-{self.calls:05d}")
        self.calls += 1
        if address is None and (not self.town.addresses or self.calls % 8 == 2):  # an address no gazetteer knows
            address = self.rng.choice(("幸福路", "光明大道", "横街", "解放路")) + f"{self.rng.randint(800, 999)}号"
            body["_truth"] = self._point_in(self._cell()[1])
        hot = self.town.hot_addresses
        body["address"] = address or self._address_text(
            self.rng.choice(hot if hot and self.rng.random() < 0.5 else self.town.addresses)[0])
        if self.rng.random() < 0.06:  # the hotline system retries: the same external id → the first event
            self._later(t + 1.0 / self.rate, {k: v for k, v in body.items() if k != "_truth"})
        return body

    def _citizen(self, t: float) -> dict[str, Any]:
        (lon, lat), cat = self._point_in(self._cell()[1]), self.rng.choice(self.town.by_source("citizen"))
        if self.rng.random() < 0.4:  # consumer map apps speak GCJ-02
            return self._at(wgs84_to_gcj02(lon, lat), "citizen", cat, "随手拍：", crs="GCJ02")
        return self._at((lon, lat), "citizen", cat, "随手拍：")

    def _assigned(self, t: float) -> dict[str, Any]:
        village, cat = self.rng.choice(sorted(self.town.villages)), self.rng.choice(self.town.by_source("assigned"))
        return {"source": "assigned", "category": cat, "village_code": village,
                "external_id": f"JB-{self.tag}-{self.seq:06d}",
                "description": f"区里交办：请{self.town.villages[village]}核查{self.town.cats[cat].name_zh}"}

    def _recurring(self, t: float) -> dict[str, Any]:
        """The same problem at the same place, again and again: merged while open, a new case once closed."""
        if self.town.spot is None or "illegal_parking" not in self.town.cats:
            return self._patrol(t)
        props, (lon, lat) = self.town.spot
        where = props.get("name") or f"{props['road']}{props['number']}号"
        source = self.rng.choice(("grid_worker", "citizen", "hotline"))
        if source == "hotline":
            return self._hotline(t, "illegal_parking", f"{where}门口")
        return self._at(self._near(lon, lat, 12), source, "illegal_parking", f"{where}门口又有")

    def _echo(self, t: float) -> dict[str, Any]:
        """Someone else reports a problem already reported: one case, merged across channels."""
        cat, lon, lat = self.rng.choice(self.recent) if self.recent else ("", 0.0, 0.0)
        source = next((s for s in ("citizen", "grid_worker") if cat and s in self.town.cats[cat].sources), None)
        return self._at(self._near(lon, lat, 15), source, cat, "附近又见") if source else self._citizen(t)

    def _shop_fire_hazard(self) -> dict[str, Any]:
        """Case 1: the early-warning system flags a fire hazard in a shop on 横街 → market supervision."""
        heng = [(a, shapely.Point(xy)) for a, xy in self.town.addresses if a["road"] == "横街"]
        sensors = [(p, g) for p, g in self.town.devices if p["kind"] == "sensor"]
        dev, g = min(sensors, key=lambda pg: min((pg[1].distance(h) for _, h in heng), default=0.0))
        number = min(heng, key=lambda a: g.distance(a[1]))[0]["number"] if heng else "1"
        return {"source": "sensor", "device_id": dev["id"], "category": "fire_hazard_shop",
                "description": f"预警系统：横街{number}号商铺电气线路过热，存在火灾隐患（{dev['id']}）"}

    def _fire_passage(self) -> dict[str, Any]:
        """Case 2: fire passages blocked on 文昌街 → joint enforcement, the fire station leading."""
        wc = [a for a in self.town.addresses if a[0]["road"] == "文昌街"] or self.town.addresses
        body = self._hotline(-1.0, "fire_passage_blocked", self._address_text(self.rng.choice(wc)[0]))
        return body | {"description": "文昌街消防通道被杂物和违章搭建堵塞，存在重大隐患"}

    def _fishing_nets(self) -> dict[str, Any]:
        """Case 3: a grid worker on an evening walk sees illegal fishing nets by the river."""
        props, geom = self._cell()
        if (river := self.town.river) is not None:
            props, geom = self.rng.choice([c for c in self.town.cells if river.intersects(c[1])])
            bank = river.boundary.intersection(geom).buffer(0.0002).intersection(geom)
            geom = geom if bank.is_empty else bank
        return self._at(self._point_in(geom), "grid_worker", "illegal_fishing", "晚上散步时发现河边有人下地笼网，",
                        reporter=self._who(props.get("worker_name")))

    # -- handlers -------------------------------------------------------------------------------------------------
    def _plan(self, fate: str | None) -> list[str]:
        if fate is None:
            fate = FIRST_FATES[self.fated] if self.fated < len(FIRST_FATES) else self.rng.choices(
                list(FATES), weights=list(FATES.values()))[0]
            self.fated += 1
        done = ["start", "assist", "feedback", "review"]
        return {"close": ["accept", "dispatch", *done, "close"],
                "rework": ["accept", "dispatch", *done, "rework", "feedback", "review", "close"],
                "return": ["accept", "dispatch_wrong", "return", "dispatch", *done, "close"],
                "escalate": ["accept", "dispatch", "start", "escalate", "dispatch", *done, "close"],
                "reject": ["reject"],
                "stall": ["accept", "dispatch", "start"][: self.rng.randint(1, 3)]}[fate]

    def _next(self, case: _Case, t: float) -> None:
        if not case.steps:
            del self.cases[case.id]
            return
        slow = 2.0 if case.steps[0] in SLOW else 1.0
        self._push(t + max(0.05, self.duration * self.rng.uniform(0.006, 0.03) * slow), "act", case.id)

    def _payload(self, case: _Case, step: str) -> tuple[str, Any]:
        if step == "assist":  # one sub-task per assisting unit, then the lead unit's feedback
            unit, *rest = case.assisting
            case.assisting = tuple(rest)
            case.steps[:0] = ["assist"] if rest else []
            return "assist_done", {"unit": unit, "note": f"{self.town.tax.units[unit].name_zh}协办完成"}
        if step == "dispatch_wrong":  # the centre guesses wrong; the unit will return it
            units = sorted(u for u, v in self.town.tax.units.items() if v.level == "township"
                           and u != case.unit and u not in case.assisting)
            return "dispatch", {"unit": self.rng.choice(units), "note": "按初判分派"}
        return step, {
            "dispatch": {"unit": case.unit, "assisting": list(case.assisting)},
            "return": {"reason_code": self.rng.choice(("not_our_duty", "wrong_category", "wrong_location")),
                       "note": "不属于本单位职责"},
            "reject": {"reason": self.rng.choice(("重复上报", "经核实不属实", "地址无法核实"))},
            "locate": {"lon": (case.truth or (0, 0))[0], "lat": (case.truth or (0, 0))[1], "note": "回访来电人后定位"},
            "escalate": {"reason": "超出本级处置能力，请求上级协调"},
            "feedback": {"result": "已到现场处置完毕", "photos": [f"https://example.invalid/{case.id}.jpg"]},
            "rework": {"reason": "复核发现问题未彻底解决"},
            "close": {"note": "核查属实，办结归档"},
        }.get(step, {"note": "模拟处置"})

    def _act(self, case: _Case, t: float) -> None:
        while case.steps and case.steps[0] == "assist" and not case.assisting:
            case.steps.pop(0)
        action, payload = self._payload(case, case.steps.pop(0))
        self.stats.actions += 1
        r = self.api.call("POST", f"/api/v1/events/{case.id}/actions/{action}", json=payload)
        if r.status_code != 200:
            del self.cases[case.id]  # left where it is: it will go overdue
            return self._error(f"{action} on {case.id} ({case.category}) → {r.status_code} {_detail(r)}")
        if action == "escalate":
            case.unit, case.assisting = r.json().get("unit_code"), ()  # the new level's lead unit, alone
        stat = {"close": "closed", "escalate": "escalated", "return": "returned", "rework": "reworked",
                "reject": "rejected"}.get(action)
        if stat:
            setattr(self.stats, stat, getattr(self.stats, stat) + 1)
        return self._next(case, t)


def run(base_url: str, username: str, password: str, rate: float | str, duration: float | str, seed: int = 1,
        stop: threading.Event | None = None, progress: Callable[[SimStats, float], None] | None = None,
        allow_remote: bool = False) -> SimStats:
    """Simulate `rate` reports per second for `duration` seconds against the service at `base_url`."""
    base = check_url(base_url, allow_remote)
    rate_s = parse_rate(rate) if isinstance(rate, str) else float(rate)
    seconds = parse_duration(duration) if isinstance(duration, str) else float(duration)
    if rate_s <= 0 or seconds <= 0:
        raise SimulationError("rate and duration must be positive")
    api = _Api(base, username, password)
    try:
        api.login()
        return Simulator(api, rate_s, seconds, seed).run(stop or threading.Event(), progress)
    finally:
        api.http.close()


def demo_password(data_dir: Path | None = None) -> str:
    """The demo accounts' password from <data_dir>/demo-accounts.txt (written by `wangge demo`)."""
    from gis.settings import DatabaseSettings

    path = (data_dir or DatabaseSettings().data_dir) / "demo-accounts.txt"
    m = re.search(r"^password:\s*(\S+)", path.read_text("utf-8"), re.MULTILINE) if path.exists() else None
    if m is None:
        raise SimulationError(f"no demo password in {path}: pass --password, or start `wangge demo` once")
    return m[1]


def simulate_command(rate: str = "2/s", duration: str = "10m", url: str = "http://127.0.0.1:8000",
                     user: str = "admin", password: str | None = None, seed: int = 1) -> None:
    """Make the demo a living town: reports from every channel and handlers working the cases (Ctrl-C stops)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    rate_s, seconds, base = parse_rate(rate), parse_duration(duration), check_url(url)
    secret, err = password or demo_password(), Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("logging in", total=seconds)

        def show(s: SimStats, done: float) -> None:
            bar.update(task, completed=done * seconds, description=f"posted {s.posted} · new {s.created} · "
                       f"merged {s.merged} · closed {s.closed} · escalated {s.escalated} · errors {s.errors}")

        stats = run(base, user, secret, rate_s, seconds, seed, progress=show)
    Console().print_json(data={k: v for k, v in asdict(stats).items() if k != "error_samples"})
    for sample in stats.error_samples[:5]:
        err.print(f"error: {sample}", markup=False, highlight=False)
