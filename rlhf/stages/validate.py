"""The `validate` stage: the six files of the data stage (world or user data) and their
train/held-out prompt overlap, checked with `rlhf.validation`; `report.json` and `summary.md` are
written only when everything passes (and removed when anything fails, so no stale report claims a
pass).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rlhf.config.validate import ValidateConfig
from rlhf.files import write_text
from rlhf.paths import Paths
from rlhf.stage import StageOutput
from rlhf.validation.formats import CONTRACT
from rlhf.validation.report import ValidationReport, listed, plural
from rlhf.validation.validate import (
    OUTPUTS,
    WORLD_FILES,
    Checked,
    ValidationFailed,
    check_file,
    overlap_report,
)


def run_validate(cfg: ValidateConfig, paths: Paths) -> StageOutput:
    """Validate the six world files and their train/held-out prompt overlap.

    On success writes `paths.validation/report.json` and `summary.md` (atomically) and returns row
    counts as metrics; on any problem removes those two files and raises ValidationFailed.
    """
    files = {name: getattr(paths, name) for name in WORLD_FILES}
    # the data stage writes the contract's layout: an eval set's `label`/`type` columns (XSTest)
    # are lineage, not a layout to detect
    checked = {name: check_file(files[name], kind, cfg.max_chars, CONTRACT[kind])
               for name, (kind, _) in WORLD_FILES.items()}
    overlap = overlap_report(*(split_frames(checked, split) for split in ("train", "heldout")))
    reports = [c.report for c in checked.values()] + [overlap]
    if not all(r.ok for r in reports):
        for name in OUTPUTS:  # no stale report may claim that these datasets passed
            (paths.validation / name).unlink(missing_ok=True)
        raise ValidationFailed(failure_message(reports, cfg.max_problems_shown), reports)
    written = write_outputs(paths.validation, reports, cfg)
    metrics = {f"rows/{name}": c.report.n_rows for name, c in checked.items()}
    metrics |= {
        "validate/files": len(checked),
        "validate/problems": 0,
        "validate/warnings": sum(r.n_warnings for r in reports),
    }
    return StageOutput(metrics=metrics, inputs=files, reports=written)


def split_frames(checked: dict[str, Checked], split: str) -> dict[str, pd.DataFrame]:
    """{file: rows} of the readable world files of one split ("train" or "heldout")."""
    return {
        c.report.file: c.frame
        for name, c in checked.items()
        if WORLD_FILES[name][1] == split and c.frame is not None
    }


def failure_message(reports: list[ValidationReport], max_shown: int) -> str:
    """The first few problems over all reports (file:row: field: message) and the count of all."""
    problems = [p for r in reports for p in r.problems]
    failed = sum(not r.ok for r in reports)
    head = f"validation failed: {plural(len(problems), 'problem')} in {failed} of {len(reports)} checks"
    return "\n".join([head, *listed(problems, max_shown)])


def write_outputs(folder: Path, reports: list[ValidationReport], cfg: ValidateConfig) -> list[Path]:
    """report.json (every report in full) and summary.md (a table and the first warnings)."""
    full = {
        "ok": True,
        "config": cfg.model_dump(),
        "n_rows": sum(r.n_rows for r in reports if r.kind != "overlap"),
        "n_warnings": sum(r.n_warnings for r in reports),
        "reports": [r.to_dict() for r in reports],
    }
    out = [folder / name for name in OUTPUTS]
    write_text(out[0], json.dumps(full, indent=2) + "\n")
    write_text(out[1], summary_markdown(reports, cfg))
    return out


def summary_markdown(reports: list[ValidationReport], cfg: ValidateConfig) -> str:
    """A short page for people: one table row per check, then the first warnings of each file."""
    lines = [
        "# Dataset validation",
        "",
        f"All {len(reports) - 1} files passed (max_chars = {cfg.max_chars}); "
        "no held-out prompt is a train prompt.",
        "",
        "| file | kind | rows | problems | warnings |",
        "| --- | --- | ---: | ---: | ---: |",
        *(f"| {r.file} | {r.kind} | {r.n_rows} | {r.n_problems} | {r.n_warnings} |" for r in reports),
    ]
    for r in (r for r in reports if r.warnings):
        lines += ["", f"## Warnings in {r.file} ({r.row_unit})", ""]
        lines += [line.replace("  ", "- ", 1) for line in listed(r.warnings, cfg.max_problems_shown)]
    return "\n".join(lines) + "\n"


