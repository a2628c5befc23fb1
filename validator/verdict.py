"""The validator's answer: a verdict and the violations behind it (PROGRAM_FORMAT.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WELL_FORMED = "well_formed"
CO_RESIDENT = "co_resident"
EPOCH_EXACT = "epoch_exact"
DEADLOCK_FREE = "deadlock_free"
RACE_FREE = "race_free"
PROPERTIES = (WELL_FORMED, CO_RESIDENT, EPOCH_EXACT, DEADLOCK_FREE, RACE_FREE)

# A report lists at most this many violations of one property, then one summary line.
# Only the report is capped: every check runs to the end.
REPORT_LIMIT = 20


@dataclass(frozen=True)
class Violation:
    """One failed property: which property, the task ids involved, and what to do about it."""

    property: str
    tasks: tuple[str, ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"property": self.property, "tasks": list(self.tasks), "message": self.message}

    def describe(self) -> str:
        where = f" [{', '.join(self.tasks)}]" if self.tasks else ""
        return f"{self.property}{where}: {self.message}"


@dataclass(frozen=True)
class Verdict:
    """ACCEPTED when there is no violation; ``skipped`` names properties not decidable
    because the program is not well-formed (such a program is REJECTED anyway)."""

    violations: tuple[Violation, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.violations

    @property
    def verdict(self) -> str:
        return "ACCEPTED" if self.accepted else "REJECTED"

    @property
    def failed(self) -> frozenset[str]:
        """The names of the properties that failed."""
        return frozenset(v.property for v in self.violations)

    def to_dict(self) -> dict[str, Any]:
        """The CLI's ``--json`` object, exactly as PROGRAM_FORMAT.md gives it."""
        return {"verdict": self.verdict, "violations": [v.to_dict() for v in self.violations]}

    def describe(self) -> str:
        lines = [self.verdict]
        lines += [f"  {v.describe()}" for v in self.violations]
        if self.skipped:
            skipped = ", ".join(self.skipped)
            lines.append(f"  (not checked until the program is well-formed: {skipped})")
        return "\n".join(lines)


def capped(prop: str, found: list[Violation], noun: str, total: int | None = None
           ) -> list[Violation]:
    """``found`` cut to REPORT_LIMIT, with one line counting what was left out (of
    ``total``, when more were found than built)."""
    total = len(found) if total is None else total
    shown = found[:REPORT_LIMIT]
    if total <= len(shown):
        return shown
    return [*shown, Violation(prop, (), f"... and {total - len(shown)} more {noun} like these")]
