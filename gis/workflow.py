"""The closed loop as a state machine (受理 → 分流交办 → 执行处置 → 督办 → 信息反馈 → 核查办结).

Pure logic: `decide` takes a case, an action, the actor and the payload, and returns the change to make and the
log entry to append — or raises IllegalTransition naming the allowed actions. The database layer (gis/cases.py)
applies the change with an optimistic version check, so two handlers cannot both move the same case.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from gis.errors import WanggeError

OPEN_STATUSES = ("needs_location", "reported", "accepted", "dispatched", "in_progress", "feedback", "review")
FINAL_STATUSES = ("closed", "rejected")
OPEN_SQL = "(" + ", ".join(f"'{s}'" for s in OPEN_STATUSES) + ")"  # for `status IN {OPEN_SQL}`
LEVELS = ("village", "township", "district")
RETURN_REASONS = ("not_our_duty", "wrong_location", "wrong_category", "duplicate", "needs_higher_level", "other")


class IllegalTransition(WanggeError):
    """The action is not allowed in this state or for this role (HTTP 409); nothing changed."""

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


class ActionInvalid(WanggeError):
    """The action is allowed but its payload is not (HTTP 422)."""


@dataclass(frozen=True)
class Rule:
    sources: tuple[str, ...]
    target: str | None  # None: the status does not change
    roles: tuple[str, ...]
    requires: tuple[str, ...] = ()


CENTRE = ("command_centre", "admin")
RULES: dict[str, Rule] = {
    "accept": Rule(("reported",), "accepted", (*CENTRE, "grid_leader")),
    "reject": Rule(("reported", "needs_location"), "rejected", (*CENTRE, "grid_leader"), ("reason",)),
    "locate": Rule(("needs_location",), "reported", CENTRE, ("lon", "lat")),
    "dispatch": Rule(("accepted",), "dispatched", (*CENTRE, "grid_leader"), ("unit",)),
    "start": Rule(("dispatched",), "in_progress", ("unit_handler", "grid_worker", "admin")),
    "return": Rule(("dispatched", "in_progress"), "accepted", ("unit_handler", "admin"), ("reason_code",)),
    "assist_done": Rule(("dispatched", "in_progress"), None, ("unit_handler", "admin")),
    "feedback": Rule(("in_progress",), "feedback", ("unit_handler", "grid_worker", "admin"), ("result",)),
    "review": Rule(("feedback",), "review", (*CENTRE, "grid_leader")),
    "close": Rule(("review",), "closed", (*CENTRE, "grid_leader")),
    "rework": Rule(("review",), "in_progress", (*CENTRE, "grid_leader"), ("reason",)),
    "escalate": Rule(("reported", "accepted", "dispatched", "in_progress"), "accepted",
                     (*CENTRE, "grid_leader", "unit_handler", "system"), ("reason",)),
    "supervise": Rule(("accepted", "dispatched", "in_progress", "feedback", "review"), None,
                      (*CENTRE, "system"), ("note",)),
}


@dataclass
class Actor:
    username: str
    role: str
    scope_code: str = ""
    unit_code: str | None = None
    worker_id: str | None = None


@dataclass
class Case:
    """What the state machine needs to know of an event."""

    id: int
    status: str
    level: str
    unit_code: str | None
    worker_id: str | None
    category: str
    village_may_close: bool
    assisting_units: tuple[str, ...] = ()
    open_assists: tuple[str, ...] = ()


@dataclass
class Decision:
    to_status: str
    updates: dict[str, Any] = field(default_factory=dict)
    increments: tuple[str, ...] = ()  # counters to add one to: returns, escalations, reworks
    log: dict[str, Any] = field(default_factory=dict)
    subtasks: list[tuple[str, str]] = field(default_factory=list)  # (unit, role) to open
    close_subtask: str | None = None
    restart_deadline: bool = False


def allowed_actions(case: Case, actor: Actor) -> list[str]:
    return sorted(a for a in RULES if _permitted(a, case, actor) is None)


def _permitted(action: str, case: Case, actor: Actor) -> str | None:
    """None when the actor may take the action now; otherwise why not."""
    rule = RULES.get(action)
    if rule is None:
        return f"unknown action {action!r}"
    if case.status not in rule.sources:
        return f"cannot {action} a case that is {case.status}"
    if actor.role not in rule.roles:
        return f"a {actor.role} cannot {action}"
    if action == "escalate" and case.level == LEVELS[-1]:
        return "the case is already at district level: nothing above it"
    if action == "assist_done" and not case.open_assists:
        return "no assisting sub-task is open"
    if actor.role in ("admin", "system"):
        return None
    if actor.role == "grid_leader" and case.level != "village":
        return f"a grid leader acts on village-level cases; this one is at {case.level} level"
    if actor.role == "grid_leader" and action == "close" and not case.village_may_close:
        return "this category must be closed by the command centre, not the village"
    if actor.role == "unit_handler":
        if action == "assist_done":
            if actor.unit_code not in case.open_assists:
                return "only an assisting unit with an open sub-task can finish it"
        elif actor.unit_code != case.unit_code:
            return f"the case is with unit {case.unit_code}, not {actor.unit_code}"
    if actor.role == "grid_worker" and (case.level != "village" or case.worker_id != actor.worker_id):
        return "a grid worker handles village-level cases of their own cell only"
    return None


def decide(case: Case, action: str, actor: Actor, payload: dict[str, Any], now: dt.datetime,
           next_unit: str | None = None) -> Decision:
    """Check and plan one transition. `next_unit` is the lead unit one level up (for escalate)."""
    why = _permitted(action, case, actor)
    if why is not None:
        raise IllegalTransition(why, allowed_actions(case, actor))
    rule = RULES[action]
    missing = [k for k in rule.requires if payload.get(k) in (None, "")]
    if missing:
        raise ActionInvalid(f"{action} needs {', '.join(missing)}")
    target = rule.target or case.status
    d = Decision(target, log={"note": payload.get("note") or payload.get("reason") or payload.get("result")})
    data: dict[str, Any] = {}
    if action == "dispatch":
        assists = tuple(u for u in payload.get("assisting", []) or [] if u != payload["unit"])
        d.updates["unit_code"] = payload["unit"]
        d.subtasks = [(payload["unit"], "lead"), *[(u, "assist") for u in assists]]
        data = {"unit": payload["unit"], "assisting": list(assists)}
    elif action == "return":
        if payload["reason_code"] not in RETURN_REASONS:
            raise ActionInvalid(f"reason_code must be one of {', '.join(RETURN_REASONS)}")
        d.updates["unit_code"] = None
        d.increments = ("returns",)
        data = {"reason_code": payload["reason_code"], "unit": case.unit_code}
    elif action == "escalate":
        up = LEVELS[LEVELS.index(case.level) + 1]
        d.updates |= {"level": up, "unit_code": next_unit}
        d.increments = ("escalations",)
        d.restart_deadline = True
        data = {"from_level": case.level, "to_level": up, "unit": next_unit, "auto": bool(payload.get("auto"))}
    elif action == "rework":
        d.increments = ("reworks",)
    elif action == "close":
        d.updates["closed_at"] = now
    elif action == "assist_done":
        unit = actor.unit_code or payload.get("unit")  # an admin names the assisting unit it acts for
        if unit not in case.open_assists:
            raise ActionInvalid(f"no open assisting sub-task for unit {unit}; open: {', '.join(case.open_assists)}")
        d.close_subtask = unit
        data = {"unit": unit}
    elif action == "locate":
        data = {"lon": payload["lon"], "lat": payload["lat"]}
    if payload.get("photos"):
        data["photos"] = list(payload["photos"])
    d.log |= {"action": action, "from_status": case.status, "to_status": target, "actor": actor.username,
              "role": actor.role, "at": now, "data": data}
    return d


def replay(log: list[dict[str, Any]], initial: str) -> str:
    """The status a case must have, folded from its log: each entry starts where the previous one ended."""
    status = initial
    for entry in log:
        if entry["from_status"] is not None and entry["from_status"] != status:
            raise ValueError(f"log entry {entry.get('id')} starts at {entry['from_status']}, not {status}")
        status = entry["to_status"]
    return status
