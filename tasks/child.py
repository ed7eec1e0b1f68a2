"""A child process's stderr, relayed: echoed through as it comes (progress bars included) while its
`error: ...` lines (DVC's `ERROR: ...` too), with the indented lines that detail them, are kept, so
the parent can fail with the child's own message."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import BinaryIO


def error_sink(found: list[str]) -> Callable[[bytes], None]:
    """A function that takes chunks of a child's stderr, echoes them and appends its error lines to `found`."""
    pending, inside = [b""], [False]

    def sink(chunk: bytes) -> None:
        sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()
        lines = (pending[0] + chunk).split(b"\n")
        pending[0] = lines.pop()
        for line in (raw.decode(errors="replace").rstrip() for raw in lines):
            if line.startswith(("error: ", "ERROR: ")):  # the stage's own message, or DVC's
                found.append(line[len("error: "):])
                inside[0] = True
            elif inside[0] and line.startswith((" ", "\t")) and line.strip():
                found[-1] += " " + line.strip()
            else:
                inside[0] = False

    return sink


def relay(stream: BinaryIO, found: list[str]) -> None:
    """Relay `stream` (a child's stderr pipe, binary) to the end, keeping its error lines in `found`."""
    sink = error_sink(found)
    while chunk := stream.read1(1 << 16):
        sink(chunk)
