"""Typed, strict stage configs loaded from `params.yaml`.

Every stage has one pydantic model named after its `params.yaml` section. Unknown keys, wrong types
and out-of-range values are errors that name the key (nanoGPT's strict configurator, with pydantic
doing the checking).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class StageConfig(BaseModel):
    """Base of every stage config: strict, immutable, documented fields. Strict means no coercion:
    `packing: "yes"` or `max_steps: "1600"` is an error naming the key, not True or 1600."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


class ConfigError(ValueError):
    """A params file that cannot configure a stage; the message names the key and the expectation."""


def read_params(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections at the top level")
    return data


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_validation_error(err: ValidationError, section: str, source: str) -> str:
    lines = [f"{source}: invalid section '{section}':"]
    for e in err.errors():
        key = ".".join(str(p) for p in (section, *e["loc"]))
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key")
        else:
            got = e.get("input")
            hint = ""
            if isinstance(got, str) and _is_number(got):
                hint = "; YAML reads a quoted number, or an exponent without a dot like 1e-4, as text: write 12 or 1.0e-4"
            lines.append(f"  - {key}: {e['msg']} (got {got!r}{hint})")
    return "\n".join(lines)


def build_config(cls: type[StageConfig], section: str, data: dict[str, Any] | None, source: str):
    try:
        return cls.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, section, source)) from None
