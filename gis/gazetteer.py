"""Address gazetteer: match free-text addresses (12345 hotline, tasks from above) to address points.

Pure Python, no database. `normalise` brings a text to a canonical form; a `Gazetteer` built from address points
(and, optionally, village names) answers `match(text)` with the one address it names, or None. It never guesses:
a road + number that exists in several villages matches only when the text also names the village.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

How = Literal["exact", "road_number", "landmark"]

# Administrative prefixes dropped from the front of a text when more text follows (the demo district and its
# townships, with the paper's anonymised N市 / Y区). Bare forms go only when another prefix follows them.
ADMIN_PREFIXES = ("中华人民共和国", "中国", "浙江省", "宁波市", "N市", "甬江区", "Y区", "J镇", "东钱镇", "横溪镇")
BARE_PREFIXES = ("浙江", "宁波", "甬江")
# Trailing words an operator adds after the number: 横街12号门口.
NEAR = ("附近", "门口", "门前", "对面", "旁边", "边上", "一带", "处")

_VARIANTS = str.maketrans({"號": "号", "巷": "弄", "衖": "弄", "棟": "栋", "‐": "-", "‑": "-", "‒": "-", "–": "-",
                           "—": "-", "―": "-", "−": "-"})
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN = "零〇一二两三四五六七八九十百千"
_CN_BEFORE = re.compile(f"[{_CN}]+(?=[号弄幢栋座之-])")  # 十二号, 三弄, 五幢
_CN_AFTER = re.compile(f"(?<=[0-9号][之-])[{_CN}]+")  # 12号之三
_BRACKETS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]|\{[^{}]*\}|【[^【】]*】|〔[^〔〕]*〕|〖[^〖〗]*〗")
_SUB = re.compile(r"([0-9]+)(号?)[-之]([0-9]+)(?![0-9幢])(号?)")  # 12之3, 12号-3, 12—3号 → 12-3(号)
_NUMBER = re.compile(r"([0-9]+)(?:-([0-9]+)号?|号([0-9]+)幢|号)?(?:{})?".format("|".join(NEAR)))
_KINDS = ("居委会", "村委会", "社区", "农场", "林场", "村", "场", "居")


def _cn_number(s: str) -> str:
    """Chinese numerals → decimal digits: 十二 → 12, 二十三 → 23, 一百零五 → 105, 一二三 → 123."""
    if not any(c in _CN_UNITS for c in s):
        return "".join(str(_CN_DIGITS[c]) for c in s)
    total, digit = 0, None
    for c in s:
        if c in _CN_UNITS:
            total += (1 if digit is None else digit) * _CN_UNITS[c]
            digit = None
        else:
            digit = _CN_DIGITS[c]
    return str(total + (digit or 0))


def _strip_prefixes(s: str) -> str:
    while True:
        for p in ADMIN_PREFIXES:
            if s.startswith(p) and len(s) > len(p):
                s = s[len(p):]
                break
        else:
            bare = next((p for p in BARE_PREFIXES if s.startswith(p)
                         and s[len(p):].startswith(ADMIN_PREFIXES + BARE_PREFIXES)), None)
            if bare is None:
                return s
            s = s[len(bare):]


def _pass(s: str) -> str:
    s = unicodedata.normalize("NFKC", s)
    s = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c.upper() if "a" <= c <= "z" else c for c in s)
    while (t := _BRACKETS.sub("", s)) != s:
        s = t
    s = s.translate(_VARIANTS)
    s = "".join(c if c in "-#" or unicodedata.category(c)[0] not in "PSZC" else "\0" for c in s)
    s = re.sub(r"(?<=[0-9])\0+(?=[0-9])", " ", s).replace("\0", "")  # 12 3 stays apart from 123
    s = re.sub(r"(?<=[0-9])#", "号", s).replace("#", "")
    s = _CN_BEFORE.sub(lambda m: _cn_number(m.group()), s)
    s = _CN_AFTER.sub(lambda m: _cn_number(m.group()), s)
    s = re.sub(r"(?<=[0-9])[栋座]", "幢", s)
    s = _SUB.sub(lambda m: f"{m[1]}-{m[3]}" + ("号" if m[2] or m[4] else ""), s)
    s = re.sub(r"-(?![0-9])|(?<![0-9])-", "", s)
    return _strip_prefixes(s)


def normalise(text: str) -> str:
    """Canonical form of an address text, for comparison (not for display).

    - Unicode NFKC (full-width digits, letters, punctuation and the ideographic space become half-width), every
      decimal digit becomes ASCII, Latin letters upper case (j镇 → J镇).
    - Bracketed remarks are dropped (横街12号(菜市场旁) → 横街12号); all whitespace, punctuation and symbols go,
      except a `-` between two numbers; `#` after a number means 号 (3# → 3号). Other noise between two digits
      becomes one space, so numbers never merge (12 3 or 12~14 match nothing rather than 123 or 1214).
    - Variants: 號 → 号; 巷, 衖 → 弄 (a lane stays a lane: 12弄 is not 12号); 栋, 棟, 座 after a number → 幢.
    - Chinese numerals in a house number become digits: before 号/弄/幢/栋/座/之/- or after 之/- that follows a
      number (十二号 → 12号, 一百零五号 → 105号, 12号之三 → 12-3号). Numerals elsewhere (第一, 五一) stay.
    - A sub-number is `N-M`: 12之3, 12号之3, 12-3, 12—3号 and 12－3 all become 12-3 (with 号 if one was there).
    - Province/city/district/township prefixes (浙江省, 宁波市, 甬江区, J镇 …, see ADMIN_PREFIXES) are dropped when
      more text follows; road words (路, 街, 弄) and village names are kept.

    So 浙江省宁波市甬江区J镇横街十二號 → 横街12号 and 李家村 学前巷 ３之２ 号 → 李家村学前弄3-2号. Idempotent.
    """
    for _ in range(50):
        t = _pass(text)
        if t == text:
            break
        text = t
    return text


def canonical_number(number: str) -> str | None:
    """House number → `12` or `12-3` (leading zeros dropped, 号 optional, 12号3幢 → 12-3); None if not one."""
    m = re.fullmatch(r"([0-9]+)(?:-([0-9]+)号?|号([0-9]+)幢|号)?", normalise(number))
    if m is None:
        return None
    sub = m[2] or m[3]
    return str(int(m[1])) + (f"-{int(sub)}" if sub else "")


@dataclass(frozen=True)
class Address:
    id: str
    village_code: str
    road: str
    number: str  # 12 or 12-3
    name: str | None  # landmark, e.g. 李家村文化礼堂
    lon: float
    lat: float


@dataclass(frozen=True)
class Match:
    address: Address
    how: How  # exact: the whole text is a key; road_number: road + number (+ village) parsed; landmark: a name


class Gazetteer:
    """Address points indexed by normalised keys; `villages` (code → name) adds 李家村横街12号 style keys."""

    def __init__(self, addresses: Iterable[Address], villages: Mapping[str, str] | None = None) -> None:
        self.addresses = list(addresses)
        self.villages = dict(villages or {})
        self._exact: dict[str, dict[str, Address]] = {}
        self._by_road_number: dict[tuple[str, str], list[Address]] = {}
        self._landmarks: dict[str, dict[str, Address]] = {}
        for a in self.addresses:
            road, number = normalise(a.road), canonical_number(a.number) or normalise(a.number)
            self._by_road_number.setdefault((road, number), []).append(a)
            keys = [f"{road}{number}号", f"{road}{number}"]
            if a.village_code in self.villages:
                keys += [self.villages[a.village_code] + k for k in keys]
            for key in keys:
                self._exact.setdefault(normalise(key), {})[a.id] = a
            if a.name:
                self._landmarks.setdefault(normalise(a.name), {})[a.id] = a
        self._roads: dict[str, list[str]] = {}
        for road in sorted({r for r, _ in self._by_road_number if r}, key=len, reverse=True):
            self._roads.setdefault(road[0], []).append(road)
        # Village heads: the full name and, when unambiguous, the stem (李家村 → 李家; 康宁社区 → 康宁).
        heads: dict[str, set[str]] = {}
        for code, name in self.villages.items():
            full = normalise(name)
            heads.setdefault(full, set()).add(code)
            stem = next((full[: -len(k)] for k in _KINDS if full.endswith(k)), "")
            if len(stem) >= 2 and stem != full:
                heads.setdefault(stem, set()).add(code)
        self._heads = {h: next(iter(c)) for h, c in heads.items() if len(c) == 1}

    def __len__(self) -> int:
        return len(self.addresses)

    def canonical_text(self, a: Address) -> str:
        """The text that names `a` unambiguously: village name + road + number + 号 (李家村横街12号)."""
        return f"{self.villages.get(a.village_code, '')}{a.road}{a.number}号"

    def match(self, text: str) -> Match | None:
        """The one address `text` names, or None when it names none or several (never a guess)."""
        n = normalise(text)
        if not n:
            return None
        exact = self._exact.get(n)
        if exact is not None:
            return Match(next(iter(exact.values())), "exact") if len(exact) == 1 else None
        found = self._parse(n)
        if found is not None:  # the text is a road + number: unique or nothing
            return Match(found[0], "road_number") if len(found) == 1 else None
        marks = self._landmark(n)
        return Match(marks[0], "landmark") if len(marks) == 1 else None

    def _split_heads(self, n: str) -> list[tuple[str, str | None]]:
        """(rest of text, village code) for no village prefix and for every village name the text starts with."""
        return [(n, None)] + [(n[len(h):], code) for h, code in self._heads.items() if n.startswith(h) and n != h]

    def _parse(self, n: str) -> list[Address] | None:
        """Addresses for `[village] road number [near-word]`; None if the text does not have that shape."""
        found: dict[str, Address] | None = None
        for rest, code in self._split_heads(n):
            for road in self._roads.get(rest[:1], []):
                m = _NUMBER.fullmatch(rest, len(road)) if rest.startswith(road) else None
                if m is None:
                    continue
                found = found or {}
                sub = m[2] or m[3]
                number = str(int(m[1])) + (f"-{int(sub)}" if sub else "")
                for a in self._by_road_number.get((road, number), []):
                    if code is None or a.village_code == code:
                        found[a.id] = a
        return None if found is None else list(found.values())

    def _landmark(self, n: str) -> list[Address]:
        found: dict[str, Address] = {}
        for rest, code in self._split_heads(n):
            for key in {rest, *(rest[: -len(w)] for w in NEAR if rest.endswith(w) and rest != w)}:
                for a in self._landmarks.get(key, {}).values():
                    if code is None or a.village_code == code:
                        found[a.id] = a
        return list(found.values())


def read_addresses(path: str | Path) -> list[Address]:
    """Address points of an addresses.geojson (EPSG:4490, [lon, lat])."""
    fc = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Address(p["id"], p["village_code"], p["road"], str(p["number"]), p.get("name"),
                    *map(float, f["geometry"]["coordinates"][:2]))
            for f in fc["features"] for p in [f["properties"]]]


def read_village_names(path: str | Path) -> dict[str, str]:
    """code → name of the villages in a jurisdictions.geojson."""
    fc = json.loads(Path(path).read_text(encoding="utf-8"))
    return {f["properties"]["code"]: f["properties"]["name"] for f in fc["features"]
            if f["properties"].get("level") == "village"}
