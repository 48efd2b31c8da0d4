"""Bookkeeping of unreadable samples met while training/evaluating a probe (torch-free).

Failed samples are never replaced by other samples (the V-JEPA release silently substitutes a
random video, in evaluation too, which changes the number being reported). They are counted per
phase, listed once each, written into the result record, and a run stops when too many fail.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

# How many failures a DataProblemError message quotes; the full list is on `.problems`.
_QUOTED = 5


class DataProblemError(RuntimeError):
    """Too many samples could not be read; `.problems` holds the full account."""

    def __init__(self, message: str, problems: "DataProblems"):
        super().__init__(message)
        self.problems = problems


@dataclass
class DataProblems:
    """Counts of samples seen / failed per phase ('train', 'eval') and the unique failures.

    Training counts accumulate over epochs (a file that fails every epoch is counted every
    epoch but listed once), so `failed/seen` stays the per-load failure rate.
    """

    seen: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    _known: set = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self):
        self.failures = [(str(p), str(e)) for p, e in self.failures]
        self._known = set(self.failures)

    def add(self, phase: str, num_ok: int, failures: Iterable[tuple[str, str]] = ()) -> None:
        failures = [(str(p), str(e)) for p, e in failures]
        self.seen[phase] = self.seen.get(phase, 0) + num_ok + len(failures)
        self.failed[phase] = self.failed.get(phase, 0) + len(failures)
        for item in failures:
            if item not in self._known:
                self._known.add(item)
                self.failures.append(item)

    def fraction(self, phase: str) -> float:
        seen = self.seen.get(phase, 0)
        return self.failed.get(phase, 0) / seen if seen else 0.0

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used in result records and in the resumable training state)."""
        return {
            "seen": dict(self.seen),
            "failed": dict(self.failed),
            "failures": [{"path": p, "error": e} for p, e in self.failures],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataProblems":
        return cls(seen={k: int(v) for k, v in data.get("seen", {}).items()},
                   failed={k: int(v) for k, v in data.get("failed", {}).items()},
                   failures=[(f["path"], f["error"]) for f in data.get("failures", [])])

    def check(self, where: str, seen: int, failed: int, max_fraction: float) -> None:
        """Raise DataProblemError when `failed` of `seen` samples (of one pass) is too many."""
        if seen and failed / seen > max_fraction:
            raise DataProblemError(self.message(where, seen, failed, max_fraction), self)

    def message(self, where: str, seen: int, failed: int, max_fraction: float) -> str:
        quoted = "; ".join(f"{p}: {e}" for p, e in self.failures[:_QUOTED])
        more = len(self.failures) - _QUOTED
        return (
            f"{failed} of {seen} samples ({100 * failed / seen:.1f}%) in {where} could not be "
            f"read, above max_failure_fraction={max_fraction:g} ({100 * max_fraction:g}%). "
            f"Failures: {quoted}{f' (and {more} more)' if more > 0 else ''}. Fix or re-fetch these "
            f"files (check the data root and re-run the task's preparer), remove them from the "
            f"split, or raise max_failure_fraction if losing them is acceptable; failed samples "
            f"are never replaced by other samples."
        )
