"""Python code shipped inside a model directory runs only when the params say so, for that model.

A model whose `config.json` (or `tokenizer_config.json`) maps its classes to the directory's own
modules (`auto_map` -> `modeling_*.py`) and whose type transformers does not know needs
`trust_remote_code=True`, which executes those modules. The project never passes it by default:
- `sft.trust_remote_code` trusts the code of `sft.model_path`; `reward.trust_remote_code` that of
  `reward.model_path`; `rlhf chat --trust-remote-code` that of the directory it opens.
- A model trained from a trusted one records it in its `config.json` (`TRUST_KEY`), so the
  pipeline's later stages (reward from SFT, PPO, DPO, evaluation) load its checkpoints and outputs
  with the same code. A directory the user names is never trusted because of that key, only by its
  param: loaders take `trust=True/False` for such a directory and `trust=None` for the pipeline's own.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlhf.errors import UserError

TRUST_KEY = "rlhf_trust_remote_code"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def needs_code(model_dir: str | Path) -> bool:
    """Whether loading `model_dir` would execute Python files shipped in it."""
    from transformers import CONFIG_MAPPING

    model_dir = Path(model_dir)
    config = _read(model_dir / "config.json")
    if config.get("auto_map") and config.get("model_type") not in CONFIG_MAPPING:
        return True
    tok_map = _read(model_dir / "tokenizer_config.json").get("auto_map")
    return bool(tok_map) and any(v for v in (tok_map.values() if isinstance(tok_map, dict) else tok_map))


def trusted(model_dir: str | Path, trust: bool | None) -> bool:
    """`trust` for a directory the user named; for the pipeline's own (`None`), what its config records."""
    if trust is not None:
        return trust
    return _read(Path(model_dir) / "config.json").get(TRUST_KEY) is True


def allow(model_dir: str | Path, trust: bool | None) -> bool:
    """The `trust_remote_code` to pass for `model_dir`: True only if its code is trusted; a model
    that needs its own code and is not trusted is a UserError that says which param turns it on."""
    if trusted(model_dir, trust):
        return True
    if needs_code(model_dir):
        raise UserError(
            f"{model_dir}: this model runs Python code shipped in its directory (config.json auto_map); "
            "the project does not execute it unless asked: set trust_remote_code: true in the params "
            "section that names this model (sft or reward), or pass --trust-remote-code to rlhf chat, "
            "only for code you have read and trust")
    return False


def mark(model, trust: bool) -> None:
    """Record in the model's config (saved with it) that its code was trusted."""
    if trust:
        setattr(model.config, TRUST_KEY, True)
