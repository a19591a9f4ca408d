"""Incident taxonomy as data: categories, the platform sets and the handling units (data/taxonomy/*.yaml).

The closed-loop workflow reads routing from here, never from code: which platform a category belongs to (in either
platform set), which unit leads it at each level, which units assist in joint handling, which device alarms map to it
and its time limit per grade. `load_taxonomy` validates every file and every cross-reference at start-up and raises
`ConfigurationError` with one line naming the file, the entry and the problem.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gis.errors import ConfigurationError, NotFound

Level = Literal["village", "township", "district"]
LEVELS: tuple[Level, ...] = get_args(Level)
Source = Literal["grid_worker", "sensor", "camera", "hotline", "assigned", "citizen"]
GRADES = (1, 2, 3)  # 1 一般 ordinary, 2 较大 serious, 3 重大 major
DEVICE_KINDS = ("smoke", "water_level", "gas", "electrical", "water_quality", "video")  # "video.<event>" refines video
PLATFORM_SETS = ("original", "2022")  # Category.platform names a key of the first, platform_2022 of the second
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "data" / "taxonomy"
_LIMIT = re.compile(r"^\s*(\d+)\s+(hours?|working_days?)\s*$")
_DEVICE = re.compile(r"^([a-z_]+)(\.[a-z][a-z0-9_]*)?$")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster
M = TypeVar("M", bound=BaseModel)
V = TypeVar("V")
Code = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
Name = Annotated[str, Field(min_length=1)]


class TaxonomySettings(BaseSettings):
    """`WANGGE_TAXONOMY_DIR`: a folder with categories/platforms/units/calendar.yaml replacing the shipped one."""

    model_config = SettingsConfigDict(env_prefix="WANGGE_", env_file=".env", extra="ignore")
    taxonomy_dir: Path | None = None
    platform_set: str | None = None  # WANGGE_PLATFORM_SET switches between "original" and "2022"


def taxonomy_dir() -> Path:
    return TaxonomySettings().taxonomy_dir or DEFAULT_DIR


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeLimit(_Model):
    """A handling time limit: `hours` are wall-clock hours, `working_days` count the working-day calendar."""

    amount: int = Field(gt=0)
    unit: Literal["hours", "working_days"]

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        if not (m := _LIMIT.match(v)):
            raise ValueError(f"malformed time limit {v!r}: expected '<n> hours' or '<n> working_days'")
        return {"amount": int(m.group(1)), "unit": m.group(2).rstrip("s") + "s"}

    def __str__(self) -> str:
        return f"{self.amount} {self.unit}"


class Platform(_Model):
    key: Code
    name_zh: Name
    name_en: Name
    order: int


class PlatformSet(_Model):
    name: str
    platforms: dict[str, Platform]  # by key, in display order


class Unit(_Model):
    code: Code
    name_zh: Name
    name_en: Name
    level: Level
    platforms: tuple[str, ...] = Field(min_length=1)


class Category(_Model):
    code: Code
    name_zh: Name
    name_en: Name
    platform: str
    platform_2022: str
    default_grade: int = Field(ge=1, le=3)
    level: Level
    time_limits: dict[int, TimeLimit]
    village_may_close: bool
    auto_escalate: bool
    units: dict[Level, str]
    assisting: tuple[str, ...] = ()
    sources: tuple[Source, ...] = Field(min_length=1)
    device_subtypes: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Category:
        problems = [f"time_limits: unknown grade {g} (grades are 1, 2, 3)" for g in self.time_limits if g not in GRADES]
        problems += [f"time_limits: grade {g} has no time limit" for g in GRADES if g not in self.time_limits]
        problems += [f"units: no lead unit for level {lv}" for lv in LEVELS if lv not in self.units]
        if self.level == "village" and not self.village_may_close:
            problems.append("handled at village level by default but village_may_close is false")
        if len(set(self.assisting)) != len(self.assisting):
            problems.append("assisting: a unit is listed twice")
        for sub in self.device_subtypes:
            m = _DEVICE.match(sub)
            if not m or m.group(1) not in DEVICE_KINDS or (m.group(2) and m.group(1) != "video"):
                problems.append(f"device_subtypes: unknown subtype {sub!r} ({', '.join(DEVICE_KINDS)}, video.<event>)")
            elif (needed := "camera" if m.group(1) == "video" else "sensor") not in self.sources:
                problems.append(f"device_subtypes: {sub!r} needs {needed!r} among the sources")
        if problems:
            raise ValueError(problems[0])
        return self

    def platform_in(self, set_name: str) -> str:
        return self.platform_2022 if set_name == "2022" else self.platform


def _fail(path: Path, entry: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"{path}: {entry}: {problem}")


def _get(mapping: dict[Any, V], key: Any, what: str) -> V:
    try:
        return mapping[key]
    except (KeyError, TypeError):
        raise NotFound(f"unknown {what}: {key!r}") from None


def read_yaml(path: Path, key: str) -> Any:
    if not path.is_file():
        raise ConfigurationError(f"{path}: file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:  # ValueError: e.g. an impossible date
        raise ConfigurationError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict) or key not in data:
        raise ConfigurationError(f"{path}: expected a mapping with a top-level {key!r} key")
    return data


def parse_entry(model: type[M], raw: Any, path: Path, entry: str) -> M:
    """Validate one entry; the first pydantic error becomes a one-line ConfigurationError."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise _fail(path, entry, f"{loc}: {msg}" if loc else msg) from None


def _entries(path: Path, data: Any, kind: str, model: type[M], key: str = "code") -> dict[str, M]:
    if not isinstance(data, list):
        raise ConfigurationError(f"{path}: expected a list of {kind} entries")
    out: dict[str, M] = {}
    for i, raw in enumerate(data, 1):
        ident = raw.get(key) if isinstance(raw, dict) else None
        entry = f"{kind} {ident!r}" if ident else f"{kind} #{i}"
        item = parse_entry(model, raw, path, entry)
        if getattr(item, key) in out:
            raise _fail(path, entry, f"duplicate {kind} {key}")
        out[getattr(item, key)] = item
    return out


class Taxonomy:
    """The validated taxonomy; look-ups raise NotFound naming what is missing."""

    def __init__(self, platform_sets: dict[str, PlatformSet], active: str, units: dict[str, Unit],
                 categories: dict[str, Category]) -> None:
        self.platform_sets, self.active, self.units, self.categories = platform_sets, active, units, categories
        self._devices = {s: c for c in categories.values() for s in c.device_subtypes}

    def category(self, code: str) -> Category:
        return _get(self.categories, code, "incident category")

    def platform_set(self, name: str | None = None) -> PlatformSet:
        return _get(self.platform_sets, self.active if name is None else str(name), "platform set")

    def platform_of(self, category_code: str, set_name: str | None = None) -> Platform:
        pset = self.platform_set(set_name)
        return _get(pset.platforms, self.category(category_code).platform_in(pset.name), f"platform in {pset.name}")

    def unit(self, code: str) -> Unit:
        return _get(self.units, code, "handling unit")

    def lead_unit(self, category_code: str, level: str) -> Unit:
        return self.unit(_get(self.category(category_code).units, level, "level"))

    def assisting_units(self, category_code: str) -> list[Unit]:
        return [self.unit(code) for code in self.category(category_code).assisting]

    def category_for_device(self, subtype: str) -> Category:
        """Exact subtype first; `video.<event>` without a category of its own falls back to `video`."""
        key = subtype.strip().lower()
        found = self._devices.get(key) or self._devices.get(key.split(".", 1)[0])
        if found is None:
            raise NotFound(f"unknown device subtype: {subtype!r}")
        return found

    def time_limit(self, category_code: str, grade: int) -> TimeLimit:
        return _get(self.category(category_code).time_limits, grade, f"grade of category {category_code!r}")


def _platform_sets(path: Path) -> tuple[dict[str, PlatformSet], str]:
    data = read_yaml(path, "sets")
    raw_sets = {str(k): v for k, v in data["sets"].items()} if isinstance(data["sets"], dict) else {}
    if missing := [n for n in PLATFORM_SETS if n not in raw_sets]:
        raise _fail(path, "sets", f"platform set {missing[0]!r} is missing")
    sets: dict[str, PlatformSet] = {}
    for name, raw in raw_sets.items():
        if name not in PLATFORM_SETS:
            raise _fail(path, f"set {name!r}", f"unknown platform set (expected {', '.join(PLATFORM_SETS)})")
        platforms = _entries(path, raw, f"platform in set {name}", Platform, key="key")
        if dup := [k for s in sets.values() for k in s.platforms if k in platforms]:
            raise _fail(path, f"set {name!r}", f"platform key {dup[0]!r} is used by another set")
        sets[name] = PlatformSet(name=name, platforms=dict(sorted(platforms.items(), key=lambda kv: kv[1].order)))
    active = str(data.get("active", PLATFORM_SETS[0]))
    if active not in sets:
        raise _fail(path, "active", f"unknown platform set {active!r}")
    return sets, active


def _check_unit(path: Path, unit: Unit, sets: dict[str, PlatformSet]) -> None:
    for key in unit.platforms:
        if not any(key in s.platforms for s in sets.values()):
            raise _fail(path, f"unit {unit.code!r}", f"unknown platform key {key!r}")
    for name, pset in sets.items():
        if not pset.platforms.keys() & set(unit.platforms):
            raise _fail(path, f"unit {unit.code!r}", f"belongs to no platform of set {name!r}")


def _check_category(path: Path, c: Category, units: dict[str, Unit], sets: dict[str, PlatformSet],
                    devices: dict[str, str]) -> None:
    entry = f"category {c.code!r}"
    for name, pset in sets.items():
        if c.platform_in(name) not in pset.platforms:
            field = "platform_2022" if name == "2022" else "platform"
            raise _fail(path, entry, f"{field}: unknown platform key {c.platform_in(name)!r} in set {name!r}")
    for where, code in [*((f"units.{lv}", u) for lv, u in c.units.items()), *(("assisting", u) for u in c.assisting)]:
        if code not in units:
            raise _fail(path, entry, f"{where}: unknown unit code {code!r}")
        if where.startswith("units.") and units[code].level != where[6:]:
            raise _fail(path, entry, f"{where}: unit {code!r} is a {units[code].level}-level unit")
    for subtype in c.device_subtypes:
        if subtype in devices:
            raise _fail(path, entry, f"device subtype {subtype!r} already maps to category {devices[subtype]!r}")
        devices[subtype] = c.code


def load_taxonomy(folder: Path | None = None) -> Taxonomy:
    """Load and validate platforms.yaml, units.yaml and categories.yaml from `folder` (default: taxonomy_dir())."""
    folder = Path(folder) if folder is not None else taxonomy_dir()
    sets, active = _platform_sets(folder / "platforms.yaml")
    units_path, cats_path = folder / "units.yaml", folder / "categories.yaml"
    units = _entries(units_path, read_yaml(units_path, "units")["units"], "unit", Unit)
    for unit in units.values():
        _check_unit(units_path, unit, sets)
    categories = _entries(cats_path, read_yaml(cats_path, "categories")["categories"], "category", Category)
    devices: dict[str, str] = {}
    for c in categories.values():
        _check_category(cats_path, c, units, sets, devices)
    override = TaxonomySettings().platform_set
    if override is not None:
        if override not in sets:
            raise ConfigurationError(f"WANGGE_PLATFORM_SET={override!r}: use one of {', '.join(sets)}")
        active = override
    return Taxonomy(sets, active, units, categories)
