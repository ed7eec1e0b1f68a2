"""What validating a dataset file found: row-level problems (errors), warnings, and their summary.

A `Problem` points at one place in one file (`file:row: field: message`); `row` is None for
problems of the whole file (it cannot be read, a column is missing). Errors go to `problems` and
make the report fail; warnings are kept apart and never fail it (e.g. the few HH-RLHF pairs whose
two dialogues differ before the last Assistant turn).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One finding: the file, the 1-based row (None for the whole file), the field, the message."""

    file: str
    row: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}:{self.row}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass
class ValidationReport:
    """The result of validating one file (or one cross-file check) against one dataset kind.

    `row_unit` says what the row numbers count (a JSON Lines line, a CSV data row without the
    header, a record of a JSON array or Parquet file); `fmt` names the layout the records were
    read in (e.g. `implicit_standard` for HH-RLHF dialogues).
    """

    file: str
    kind: str
    n_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    row_unit: str = "row"
    fmt: str | None = None  # the record layout read (`rlhf.validation.formats`), once known

    @property
    def ok(self) -> bool:
        """True when no error was found; warnings do not count."""
        return not self.problems

    @property
    def n_problems(self) -> int:
        return len(self.problems)

    @property
    def n_warnings(self) -> int:
        return len(self.warnings)

    def summary(self, max_shown: int = 5) -> str:
        """A few human-readable lines: an OK line with the row count, or the first problems."""
        if self.ok:
            head = f"OK {self.file} ({self.kind}): {self.n_rows} rows, no problems"
            if self.warnings:
                head += f", {plural(self.n_warnings, 'warning')} ({self.row_unit})"
            return "\n".join([head, *listed(self.warnings, max_shown, prefix="warning: ")])
        head = (
            f"FAILED {self.file} ({self.kind}): {plural(self.n_problems, 'problem')} "
            f"in {self.n_rows} rows ({self.row_unit})"
        )
        lines = [head, *listed(self.problems, max_shown)]
        if self.warnings:
            lines.append(f"  (and {plural(self.n_warnings, 'warning')})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole report."""
        return {
            "file": self.file,
            "kind": self.kind,
            "ok": self.ok,
            "n_rows": self.n_rows,
            "n_problems": self.n_problems,
            "n_warnings": self.n_warnings,
            "row_unit": self.row_unit,
            "format": self.fmt,
            "problems": [asdict(p) for p in self.problems],
            "warnings": [asdict(p) for p in self.warnings],
        }


def listed(items: list[Problem], max_shown: int, prefix: str = "") -> list[str]:
    """The first `max_shown` findings as indented lines, then how many were left out."""
    lines = [f"  {prefix}{p}" for p in items[:max_shown]]
    if len(items) > max_shown:
        lines.append(f"  ... and {len(items) - max_shown} more")
    return lines


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
