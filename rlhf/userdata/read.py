"""Read one configured user dataset (a file or a folder of files) into the pipeline's rows.

Steps of `read_source`, for each file of the entry (a folder's files in name order):
  1. load it with the Hugging Face `datasets` library (`load_dataset("json" | "csv" | "parquet")`,
     local files only, cached under `.state/datasets`), keeping only the first `max_rows` rows of
     the entry;
  2. choose its layout (detected, or the forced `format`; `rlhf.validation.formats`);
  3. convert every record with `Dataset.map` (rows that fit no layout are kept apart with `filter`);
  4. drop exact repeats of an earlier row, then check the rows with the validation schemas
     (text, blanks, control characters, conversation prompts).
Any problem raises `UserDataError`, whose message lists the first problems as `file:row: field:
message`, with rows counted as `rlhf.validation.readers` counts them (a JSON Lines file's line
numbers; 1-based records otherwise). Lengths are left to the `validate` stage (its `max_chars`).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlhf.errors import UserError
from rlhf.validation.formats import FormatError, RowError, choose, convert
from rlhf.validation.readers import SUFFIXES, DataFileError, decode, file_format, frame_of, read_bytes, read_table
from rlhf.validation.report import Problem, listed, plural
from rlhf.validation.schemas import COLUMNS, duplicate_of
from rlhf.validation.validate import check_rows

BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}  # readers' format -> datasets'
MAX_SHOWN = 5  # problems listed in an error message


class UserDataError(UserError):
    """A user dataset that cannot be used; the message names the file, the row and the field."""

    def __init__(self, problems: list[Problem], entry: str):
        lines = [f"data.files.{entry}: {plural(len(problems), 'problem')}", *listed(problems, MAX_SHOWN)]
        super().__init__("\n".join(lines))
        self.problems = problems


@dataclass
class Source:
    """The rows of one configured entry, in the contract's columns, and how they were read."""

    entry: str  # "sft", "preference", "rl_prompts" or "eval_prompts/<name>"
    rows: list[dict[str, Any]] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # file -> format read
    n_read: int = 0  # records read (after max_rows), before duplicates were dropped
    duplicates: int = 0
    warnings: list[Problem] = field(default_factory=list)


def files_of(path: Path, entry: str) -> list[Path]:
    """The file itself, or a folder's data files (by suffix, hidden ones left out) in name order."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and known(p))
        if not files:
            known_suffixes = ", ".join(SUFFIXES)
            raise UserDataError([Problem(str(path), None, None, f"no data files ({known_suffixes}) in the folder")],
                                entry)
        return files
    if not path.exists():
        raise UserDataError([Problem(str(path), None, None, "file not found")], entry)
    return [path]


def known(path: Path) -> bool:
    try:
        file_format(path)
    except DataFileError:
        return False
    return True


def load(path: Path, cache_dir: Path) -> Any:
    """The records of one file as a `datasets.Dataset`; DataFileError (naming the line where the
    validation reader finds one) when it cannot be read."""
    import datasets

    fmt, gz = file_format(path)
    kwargs: dict[str, Any] = {}
    if fmt == "csv":  # every cell is text, as `rlhf.validation.readers` reads CSV ("NA" stays "NA")
        header = csv_header(path, gz)
        kwargs = {"features": datasets.Features({c: datasets.Value("string") for c in header}),
                  "keep_default_na": False, "na_filter": False}
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(BUILDERS[fmt], data_files=str(path.resolve()), cache_dir=str(cache_dir),
                                   split="train", **kwargs)
    except Exception as err:  # datasets and pyarrow raise many types; the reader below names the line
        read_table(path)
        raise DataFileError(f"cannot be read: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if len(ds) == 0:
        read_table(path)  # says why (empty, only a header)
        raise DataFileError("no records")
    return ds


def csv_header(path: Path, gz: bool) -> list[str]:
    text = decode(read_bytes(path, gz))
    try:
        return next(csv.reader(io.StringIO(text)))
    except (StopIteration, csv.Error) as err:
        raise DataFileError(f"not valid CSV: {err or 'no header row'}") from None


def row_numbers(path: Path, n: int) -> list[int]:
    """The row number shown to the user for each of the first n records of a file: the line number
    in JSON Lines (blank lines are skipped but counted), else the 1-based record index."""
    fmt, gz = file_format(path)
    if fmt != "jsonl":
        return list(range(1, n + 1))
    lines = decode(read_bytes(path, gz)).split("\n")
    return [i for i, line in enumerate(lines, start=1) if line.strip()][:n]


def read_source(path: str | Path, kind: str, entry: str, cache_dir: Path, fmt: str = "auto",
                max_rows: int | None = None) -> Source:
    """Every row of one configured entry (see the module's steps); UserDataError on any problem."""
    source = Source(entry)
    problems: list[Problem] = []
    for file in files_of(Path(path), entry):
        left = None if max_rows is None else max_rows - source.n_read
        if left == 0:
            break
        try:
            rows, used = read_file(file, kind, cache_dir, fmt, left)
        except DataFileError as err:
            problems.append(Problem(str(file), err.row, None, err.reason if err.row else str(err)))
            continue
        except FormatError as err:
            problems.append(Problem(str(file), None, err.field, str(err)))
            continue
        source.formats[str(file)] = used.fmt
        source.n_read += used.n_read
        source.duplicates += used.duplicates
        source.warnings += used.warnings
        problems += used.problems
        source.rows += rows
    if problems:
        raise UserDataError(problems, entry)
    return source


@dataclass
class FileResult:
    fmt: str
    n_read: int
    duplicates: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def read_file(file: Path, kind: str, cache_dir: Path, fmt: str, limit: int | None) -> tuple[list[dict], FileResult]:
    """(rows, what was found) of one file (steps 1-4 of the module)."""
    ds = load(file, cache_dir)
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    try:
        used = choose(ds.column_names, ds[0], kind, fmt)
    except FormatError:
        read_table(file)  # a file that is not a table of records (e.g. a JSON array of numbers)
        raise
    result = FileResult(used, len(ds))

    def to_row(record: dict[str, Any], index: int) -> dict[str, Any]:
        try:
            row, notes = convert(record, kind, used)
        except RowError as err:
            return {"index": index, "row": "", "error": json.dumps([err.field, str(err)]), "notes": "[]"}
        return {"index": index, "row": json.dumps(row, ensure_ascii=False), "error": "", "notes": json.dumps(notes)}

    converted = ds.map(to_row, with_indices=True, remove_columns=ds.column_names, keep_in_memory=True,
                       load_from_cache_file=False)
    failed = converted.filter(lambda e: bool(e), input_columns="error", keep_in_memory=True)
    good = converted.filter(lambda e: not e, input_columns="error", keep_in_memory=True)
    numbers = row_numbers(file, len(ds)) if len(failed) or any(n != "[]" for n in good["notes"]) else None
    number = (lambda i: numbers[i]) if numbers else (lambda i: i + 1)
    for index, error in zip(failed["index"], failed["error"]):
        name, message = json.loads(error)
        result.problems.append(Problem(str(file), number(index), name, message))
    for index, notes in zip(good["index"], good["notes"]):
        result.warnings += [Problem(str(file), number(index), f, m) for f, m in json.loads(notes)]
    rows = [json.loads(r) for r in good["row"]]
    indices = list(good["index"])
    rows, indices, result.duplicates = drop_repeats(rows, indices, COLUMNS[kind])
    result.problems += checked(rows, indices, kind, used, file)
    return rows, result


def drop_repeats(rows: list[dict], indices: list[int], columns: tuple[str, ...]) -> tuple[list[dict], list[int], int]:
    """Rows (and their indices) without exact repeats of an earlier row's contract columns."""
    if not rows:
        return rows, indices, 0
    repeats = duplicate_of(frame_of([{c: r.get(c) for c in columns} for r in rows], range(len(rows))), columns)
    keep = [i for i in range(len(rows)) if i not in repeats]
    return [rows[i] for i in keep], [indices[i] for i in keep], len(repeats)


def checked(rows: list[dict], indices: list[int], kind: str, fmt: str, file: Path) -> list[Problem]:
    """The schema's problems of converted rows, named by the file's own rows and columns."""
    if not rows:
        return []
    frame = frame_of([{c: r.get(c) for c in COLUMNS[kind]} for r in rows], indices)
    # the checks of the validate stage, less the length, which is its max_chars to judge
    problems = check_rows(frame, kind, str(file), fmt, max_chars=sys.maxsize)
    if not problems:
        return []
    numbers = row_numbers(file, max(indices) + 1)
    return [replace(p, row=numbers[p.row] if p.row is not None else None) for p in problems]
