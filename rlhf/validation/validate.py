"""Validate dataset files and load them for other stages (the `validate` stage is rlhf/stages/validate.py).

* `validate_file(path, kind)` never raises for bad input: it returns a `ValidationReport`.
* `read_dataset(path, kind)` returns the normalised rows (required columns first, index = the row
  numbers shown to the user) or raises `DataFileError` with the report's summary.
* `check_overlap(train, held_out)` reports held-out rows whose prompt is also a train prompt.

Warnings (see `rlhf.validation.hh`) are reported but never fail a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from rlhf.chat import prompt_text
from rlhf.validation.hh import EMPTY_OK, from_hh_dialogues, is_hh_frame
from rlhf.validation.readers import DataFileError, read_table
from rlhf.validation.report import Problem, ValidationReport
from rlhf.validation.schemas import COLUMNS, DEFAULT_MAX_CHARS, Kind, check_frame, check_kind, missing_columns

__all__ = [
    "DataFileError", "Problem", "ValidationFailed", "ValidationReport",
    "check_overlap", "read_dataset", "validate_file",
]

# the embedded world's files: name -> (kind, split); the name is the `Paths` attribute
WORLD_FILES: dict[str, tuple[Kind, str]] = {
    "sft_train": ("sft", "train"),
    "sft_heldout": ("sft", "heldout"),
    "pref_train": ("preference", "train"),
    "pref_heldout": ("preference", "heldout"),
    "rl_prompts": ("prompts", "train"),
    "eval_prompts": ("prompts", "heldout"),
}
OUTPUTS = ("report.json", "summary.md")


class ValidationFailed(Exception):
    """The `validate` stage found problems; the message lists the first few, `reports` holds all."""

    def __init__(self, message: str, reports: list[ValidationReport]):
        super().__init__(message)
        self.reports = reports


@dataclass
class Checked:
    """A file's report and its normalised rows (None when the rows could not be read at all)."""

    report: ValidationReport
    frame: pd.DataFrame | None


def check_file(path: str | Path, kind: Kind, max_chars: int = DEFAULT_MAX_CHARS) -> Checked:
    """Read, normalise and check one file; every problem with the data lands in the report."""
    check_kind(kind)
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    file = str(path)
    report = ValidationReport(file, kind)
    try:
        table = read_table(path)
    except DataFileError as err:
        report.problems.append(Problem(file, err.row, None, err.reason if err.row else str(err)))
        return Checked(report, None)
    report.n_rows, report.row_unit = len(table.frame), table.row_unit
    frame, empty_ok = table.frame, ()
    if kind == "preference" and is_hh_frame(frame):
        frame, errors, warnings = from_hh_dialogues(frame, file)
        report.problems += errors
        report.warnings += warnings
        empty_ok = EMPTY_OK
    missing = missing_columns(frame, kind)
    if missing:
        report.problems.append(Problem(file, None, ", ".join(missing), missing_message(frame, kind, missing)))
        return Checked(report, None)
    report.problems += check_frame(frame, kind, file, max_chars=max_chars, empty_ok=empty_ok)
    report.problems.sort(key=lambda p: p.row or 0)
    others = [c for c in frame.columns if c not in COLUMNS[kind]]
    return Checked(report, frame[[*COLUMNS[kind], *others]])


def missing_message(frame: pd.DataFrame, kind: Kind, missing: list[str]) -> str:
    """Which columns are missing, which were found, and what would have been accepted."""
    found = ", ".join(map(str, frame.columns)) or "none"
    expected = ", ".join(COLUMNS[kind])
    if kind == "preference":
        expected += " (or the HH-RLHF layout: chosen and rejected dialogues only)"
    return f"missing column(s) {', '.join(missing)}; found: {found}; a {kind} file needs {expected}"


def validate_file(path: str | Path, kind: Kind, *, max_chars: int = DEFAULT_MAX_CHARS) -> ValidationReport:
    """Validate one file as `kind` ("sft", "preference" or "prompts"); never raises for bad data."""
    return check_file(path, kind, max_chars).report


def read_dataset(path: str | Path, kind: Kind, *, max_chars: int = DEFAULT_MAX_CHARS) -> pd.DataFrame:
    """The rows of a valid file: required columns first, extra columns after, index = row number.

    Raises DataFileError (a ValueError) whose message is the validation summary when the file has
    any problem; warnings do not stop it (`validate_file` lists them).
    """
    checked = check_file(path, kind, max_chars)
    if not checked.report.ok or checked.frame is None:
        raise DataFileError(checked.report.summary())
    frame = checked.frame.infer_objects()  # extra columns: bool, float, ... where they are uniform
    return frame.astype({c: "str" for c in COLUMNS[kind]})


# --- train/held-out prompt overlap ---
def prompt_key(prompt: str) -> str:
    """What makes two prompts the same: the conditioning text the model sees, with runs of
    whitespace collapsed (so a plain prompt and its HH-RLHF form "\\n\\nHuman: ..." match)."""
    return " ".join(prompt_text(prompt).split())


def overlap_report(
    train: Mapping[str, pd.DataFrame], heldout: Mapping[str, pd.DataFrame]
) -> ValidationReport:
    """Held-out rows whose prompt is also in a train frame, each named with the train row it repeats."""
    seen: dict[str, tuple[str, int]] = {}
    for name, frame in train.items():
        for row, prompt in zip(frame.index, frame["prompt"]):
            if isinstance(prompt, str):
                seen.setdefault(prompt_key(prompt), (name, int(row)))
    unit = "rows as in each held-out file"
    report = ValidationReport("train vs held-out prompts", "overlap", row_unit=unit)
    for name, frame in heldout.items():
        report.n_rows += len(frame)
        for row, prompt in zip(frame.index, frame["prompt"]):
            hit = seen.get(prompt_key(prompt)) if isinstance(prompt, str) else None
            if hit:
                message = f"prompt also in the train file {hit[0]} (row {hit[1]})"
                report.problems.append(Problem(name, int(row), "prompt", message))
    return report


def check_overlap(train: Mapping[str | Path, Kind], heldout: Mapping[str | Path, Kind]) -> ValidationReport:
    """Held-out rows whose prompt is also a train prompt, given two sets of files ({path: kind}).

    Only the prompts are compared; a file that cannot be read at all is a problem of this report
    too, while its row problems are left to `validate_file`.
    """
    train_frames, unread_train = frames_of(train)
    heldout_frames, unread_heldout = frames_of(heldout)
    report = overlap_report(train_frames, heldout_frames)
    report.problems[:0] = unread_train + unread_heldout
    return report


def frames_of(files: Mapping[str | Path, Kind]) -> tuple[dict[str, pd.DataFrame], list[Problem]]:
    """The normalised rows of each readable file, and the problems of the files that are not."""
    frames: dict[str, pd.DataFrame] = {}
    unread: list[Problem] = []
    for path, kind in files.items():
        checked = check_file(path, kind)
        if checked.frame is not None:
            frames[str(path)] = checked.frame
        else:
            unread += [replace(p, message=f"cannot check overlap: {p.message}")
                       for p in checked.report.problems]
    return frames, unread
