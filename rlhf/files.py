"""Atomic writes, checksums and JSON Lines: the one place where the library writes a file or a directory.

Every writer goes through a temporary sibling and a rename (`os.replace`), so a reader, or a stage
killed halfway, never sees a half-written file: the old content stays until the new one is whole.
A model directory or checkpoint carries `checksums.json` (sha256 of its files); readers verify it
(`checksum_problem`), so a truncated or altered file is named instead of loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` (rename), on error it is
    removed and `path` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `target`; on success it replaces `target`
    (rename), on error it is removed and `target` is left untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; the result is an ordinary directory
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():  # rename cannot replace a non-empty directory: move the old one aside first
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "x")
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Indented JSON with sorted keys (stable diffs for DVC metrics and configs)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object a line, UTF-8 kept as is."""
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSON Lines file the pipeline wrote itself (blank lines skipped). Files from
    users go through `rlhf.validation.readers`, which names the row of every problem."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


CHECKSUMS = "checksums.json"


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in blocks."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256(path: str | Path) -> str:
    return file_digest(path, "sha256")


def file_checksums(folder: str | Path, skip: Iterable[str] = ()) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` but the checksum file and `skip`."""
    folder, skip = Path(folder), {CHECKSUMS, *skip}
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return {name: sha256(folder / name) for name in names if name not in skip}


def _signature(folder: Path, names: Iterable[str]) -> tuple:
    """What a file's bytes cannot change without changing: size, mtime (ns) and inode of each file."""
    def stat(path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns, st.st_ino

    return tuple((name, stat(folder / name)) for name in (CHECKSUMS, *names))


_VERIFIED: dict[Path, tuple] = {}  # folder -> the signature of its files when they last matched


def checksum_problem(folder: str | Path) -> str | None:
    """The first file of `folder` that is missing or differs from `checksums.json` ("<name> is
    missing" / "<name> does not match its checksum ..."); None when all match or there is no
    checksum file (a folder written before checksums existed). A folder that matched before in this
    process and whose files have not been touched since (same size, mtime and inode) is not read
    again: a stage that loads one model twice (policy and reference) hashes it once."""
    folder = Path(folder)
    if not (folder / CHECKSUMS).is_file():
        return None
    try:
        expected = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{CHECKSUMS} is unreadable ({err})"
    key, signature = folder.resolve(), _signature(folder, expected)
    if _VERIFIED.get(key) == signature:
        return None
    for name, digest in expected.items():
        if not (folder / name).is_file():
            return f"{name} is missing"
        if sha256(folder / name) != digest:
            return f"{name} does not match its checksum (truncated or altered)"
    _VERIFIED[key] = signature
    return None


def require_intact(folder: str | Path) -> None:
    """A UserError naming the first file of `folder` that fails its checksum."""
    from rlhf.errors import UserError

    problem = checksum_problem(folder)
    if problem is not None:
        raise UserError(f"{folder}: {problem}; restore it (dvc checkout) or rerun the stage that writes it")
