"""Domain errors of the spatial core.

Adapters map these to their own idiom: api/errors.py to HTTP statuses, the CLI to one line and exit code 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class WanggeError(Exception):
    """Base class: the message is meant for the user, in one line."""


class ConfigurationError(WanggeError):
    """Settings that cannot work together, or a missing prerequisite."""


class ClusterError(WanggeError):
    """The embedded PostgreSQL cluster cannot be created, started or reached."""


class DatabaseUnavailable(WanggeError):
    """The configured database does not answer."""


class NotFound(WanggeError):
    """A code or id that names nothing."""


@dataclass
class InvalidCoordinates(WanggeError):
    """Coordinates that cannot be located: not numbers, out of range, swapped, unknown CRS."""

    message: str
    details: list[dict[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Problem:
    """One reason a boundary package cannot be loaded, naming the offending feature."""

    layer: str
    code: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.layer} {self.code}: {self.message} [{self.rule}]"


class PackageInvalid(WanggeError):
    """A boundary package failed validation; nothing was written."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        n = len(problems)
        first = str(problems[0]) if problems else ""
        super().__init__(f"boundary package rejected: {n} problem{'s' if n != 1 else ''}; first: {first}")

    def report(self) -> str:
        return "\n".join(str(p) for p in self.problems)
