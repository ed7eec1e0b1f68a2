"""Errors written for the user.

A `UserError` says what is wrong and what to do (naming the file, row and field, or the params key);
the command line prints its message once, as one `error:` line, with no traceback unless
`rlhf --debug` asks for one. Any other exception is a bug and keeps its traceback. These are
`ValueError`s, so callers that caught one before still do. Raised, never asserted: a check the user
can trip must survive `python -O`.
"""

from __future__ import annotations

from pathlib import Path


class UserError(ValueError):
    """A failure the user can fix: bad params, bad data, a missing input or model file."""


def require_input(path: Path, stage: str, made_by: str) -> None:
    """`path`, an input of `stage`, must exist: else a UserError naming the stage that writes it."""
    if not Path(path).exists():
        raise UserError(f"stage '{stage}' needs {path}, which is missing: "
                        f"run the '{made_by}' stage first (dvc repro {made_by})")
