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

from rlhf.chat import ChatFormatError, prompt_text
from rlhf.errors import UserError
from rlhf.validation.formats import FormatError, convert_frame, source_field
from rlhf.validation.hh import EMPTY_OK
from rlhf.validation.readers import DataFileError, read_table
from rlhf.validation.report import Problem, ValidationReport
from rlhf.validation.schemas import COLUMNS, DEFAULT_MAX_CHARS, Kind, check_frame, check_kind

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


class ValidationFailed(UserError):
    """The `validate` stage found problems; the message lists the first few, `reports` holds all."""

    def __init__(self, message: str, reports: list[ValidationReport]):
        super().__init__(message)
        self.reports = reports


@dataclass
class Checked:
    """A file's report (with the format its records were read in) and its normalised rows (None
    when the rows could not be read at all)."""

    report: ValidationReport
    frame: pd.DataFrame | None


def check_file(path: str | Path, kind: Kind, max_chars: int = DEFAULT_MAX_CHARS, fmt: str = "auto") -> Checked:
    """Read, normalise (from any format of `kind`, or the forced `fmt`) and check one file; every
    problem with the data lands in the report, named by the file's own row and column."""
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
    try:
        converted = convert_frame(table.frame, kind, file, fmt)
    except FormatError as err:
        report.problems.append(Problem(file, None, err.field, str(err)))
        return Checked(report, None)
    frame, report.fmt = converted.frame, converted.fmt
    report.problems += converted.errors
    report.warnings += converted.warnings
    if frame.empty:  # every row failed its format
        return Checked(report, None)
    report.problems += check_rows(frame, kind, file, converted.fmt, max_chars)
    report.problems.sort(key=lambda p: p.row or 0)
    return Checked(report, frame)


def check_rows(frame: pd.DataFrame, kind: Kind, file: str, fmt: str, max_chars: int) -> list[Problem]:
    """The schema's problems of rows in the contract's columns, each named by the file's column."""
    empty_ok = EMPTY_OK if fmt == "implicit_standard" else ()  # HH-RLHF's few empty replies
    problems = check_frame(frame, kind, file, max_chars=max_chars, empty_ok=empty_ok)
    return [replace(p, field=source_field(kind, fmt, p.field)) for p in problems]


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
    texts = [c for c in COLUMNS[kind] if frame[c].map(lambda v: isinstance(v, str)).all()]
    return frame.astype({c: "str" for c in texts})  # conversation prompts stay lists


# --- train/held-out prompt overlap ---
def prompt_key(prompt: object) -> str | None:
    """What makes two prompts the same: the conditioning text the model sees, with runs of
    whitespace collapsed (so a plain prompt, its HH-RLHF form "\\n\\nHuman: ..." and a one-message
    conversation match). None for a value that is no prompt (the schema reports it)."""
    try:
        return " ".join(prompt_text(prompt).split())
    except (ChatFormatError, AttributeError, KeyError, TypeError):
        return None


def overlap_report(
    train: Mapping[str, pd.DataFrame], heldout: Mapping[str, pd.DataFrame]
) -> ValidationReport:
    """Held-out rows whose prompt is also in a train frame, each named with the train row it repeats."""
    seen: dict[str, tuple[str, int]] = {}
    for name, frame in train.items():
        for row, prompt in zip(frame.index, frame["prompt"]):
            key = prompt_key(prompt)
            if key is not None:
                seen.setdefault(key, (name, int(row)))
    unit = "rows as in each held-out file"
    report = ValidationReport("train vs held-out prompts", "overlap", row_unit=unit)
    for name, frame in heldout.items():
        report.n_rows += len(frame)
        for row, prompt in zip(frame.index, frame["prompt"]):
            key = prompt_key(prompt)
            hit = seen.get(key) if key is not None else None
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
