"""Read user dataset files into DataFrames whose index is the row number shown to the user.

Formats, chosen by the file name: JSON Lines (`.jsonl`, one object a line), a JSON array of
objects (`.json`), CSV with a header row (`.csv`), each optionally gzip-compressed (`.gz`), and
Parquet (`.parquet`). Row numbers (the index, named "row") are 1-based: the line number in a JSON
Lines file (blank lines are skipped but counted), the data row in a CSV file (header excluded), the
record index in a JSON array or Parquet file.

Anything that stops a file from being read becomes a `DataFileError` with a message that names the
file and, where there is one, the line: no traceback reaches the user.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import numbers
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlhf.errors import UserError

# format -> what its row numbers count (shown beside every report)
ROW_UNITS = {
    "jsonl": "rows are 1-based line numbers",
    "json": "rows are 1-based record indices",
    "csv": "rows are 1-based data rows, header excluded",
    "parquet": "rows are 1-based record indices",
}
SUFFIXES = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
TEXT_FORMATS = ("jsonl", "json", "csv")


class DataFileError(UserError):
    """A dataset file that cannot be read.

    `reason` says what is wrong; `row` (with `where`, e.g. "line 3") locates it where one row is at
    fault, and the message reads "line 3: not valid JSON: ...".
    """

    def __init__(self, reason: str, *, row: int | None = None, where: str | None = None):
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.row = row


@dataclass
class Table:
    """The records of one file: a DataFrame indexed by row number, and the format it came from."""

    frame: pd.DataFrame
    fmt: str

    @property
    def row_unit(self) -> str:
        return ROW_UNITS[self.fmt]


def file_format(path: Path) -> tuple[str, bool]:
    """(format, gzip-compressed) from the file name, e.g. "x.jsonl.gz" -> ("jsonl", True)."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    fmt = SUFFIXES.get(Path(name.removesuffix(".gz")).suffix)
    if fmt is None or (gz and fmt not in TEXT_FORMATS):
        known = ", ".join([*SUFFIXES, *(f"{s}.gz" for s, f in SUFFIXES.items() if f in TEXT_FORMATS)])
        got = "".join(path.suffixes[-2:] if gz else path.suffixes[-1:]) or path.name
        raise DataFileError(f"unknown file type '{got}'; expected one of {known}")
    return fmt, gz


def read_table(path: str | Path) -> Table:
    """Read every record of a file (any supported format); raise DataFileError if it cannot."""
    path = Path(path)
    fmt, gz = file_format(path)
    if not path.exists():
        raise DataFileError("file not found")
    if not path.is_file():
        raise DataFileError("not a regular file")
    if path.stat().st_size == 0:
        raise DataFileError("the file is empty")
    if fmt == "parquet":
        frame = read_parquet(path)
    else:
        text = decode(read_bytes(path, gz))
        if not text.strip():
            raise DataFileError("the file is empty")
        parse = {"jsonl": parse_jsonl, "json": parse_json_array, "csv": parse_csv}[fmt]
        frame = parse(text)
    if len(frame.index) == 0:
        raise DataFileError("no data rows (only a header)" if fmt == "csv" else "no records")
    return Table(frame, fmt)


def read_bytes(path: Path, gz: bool) -> bytes:
    """The file's bytes, decompressed when gzip; a truncated or corrupt archive is an error."""
    try:
        if not gz:
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError:
        raise DataFileError("truncated gzip file (it ends before the compressed stream does)") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise DataFileError(f"corrupt gzip file: {err}") from None
    except OSError as err:
        raise DataFileError(f"cannot read the file: {err.strerror or err}") from None


def decode(data: bytes) -> str:
    """UTF-8 text (a leading byte-order mark is dropped); other encodings are an error that names
    the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataFileError(
            f"not UTF-8 text: byte 0x{data[err.start]:02x} on line {line} cannot be decoded "
            "(save the file as UTF-8)"
        ) from None


def parse_jsonl(text: str) -> pd.DataFrame:
    """One JSON object a line; the index is the line number. Blank lines are skipped."""
    records, rows = [], []
    # split on "\n" only: str.splitlines would also cut at U+2028 and other characters that JSON
    # strings may hold unescaped
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            reason = f"not valid JSON: {err.msg} (column {err.colno})"
            raise DataFileError(reason, row=number, where=f"line {number}") from None
        if not isinstance(value, dict):
            reason = f"expected a JSON object, got {describe(value)}"
            raise DataFileError(reason, row=number, where=f"line {number}")
        records.append(value)
        rows.append(number)
    return frame_of(records, rows)


def parse_json_array(text: str) -> pd.DataFrame:
    """A JSON array of objects; the index is the 1-based record index."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        hint = " (one object a line? name the file .jsonl)" if err.msg == "Extra data" else ""
        where = f"line {err.lineno}, column {err.colno}"
        raise DataFileError(f"not valid JSON: {err.msg} at {where}{hint}") from None
    if not isinstance(value, list):
        raise DataFileError(f"expected a JSON array of objects, got {describe(value)}")
    for number, record in enumerate(value, start=1):
        if not isinstance(record, dict):
            where = f"record {number}"
            raise DataFileError(f"expected a JSON object, got {describe(record)}", row=number, where=where)
    return frame_of(value, range(1, len(value) + 1))


def parse_csv(text: str) -> pd.DataFrame:
    """CSV with a header row; every cell is read as text (an empty cell is the empty string, "NA"
    stays "NA"). The index is the 1-based data row, header excluded."""
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataFileError(f"not valid CSV: {str(err).strip()}") from None
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return frame


def read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file; the index is the 1-based record index."""
    import pyarrow  # only for its exception type; pandas reads Parquet through it

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as err:
        raise DataFileError(f"not a readable Parquet file: {err}") from None
    frame = frame.reset_index(drop=True)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return frame


def frame_of(records: list[dict[str, Any]], rows) -> pd.DataFrame:
    """A DataFrame of records indexed by row number; a missing key is None.

    Columns keep the parsed Python values (object dtype) so that a report quotes a wrong value as
    it was written: pandas' inference would turn [None, 3] into [NaN, 3.0].
    """
    columns = list(dict.fromkeys(key for record in records for key in record))
    index = pd.Index(list(rows), dtype="int64", name="row")
    data = {c: pd.Series([r.get(c) for r in records], index=index, dtype=object) for c in columns}
    return pd.DataFrame(data, index=index)


def describe(value: Any) -> str:
    """A JSON-flavoured name of a value's type, with a short excerpt: 'a number (42)'."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, (bool, np.bool_)):
        name = "a boolean"
    elif isinstance(value, numbers.Number):
        name = "a number"
    elif isinstance(value, (list, tuple, np.ndarray)):
        name = "an array"
    elif isinstance(value, dict):
        name = "an object"
    elif isinstance(value, str):
        name = "a string"
    else:
        name = f"a value of type {type(value).__name__}"
    excerpt = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return f"{name} ({excerpt[:37] + '...' if len(excerpt) > 40 else excerpt})"
