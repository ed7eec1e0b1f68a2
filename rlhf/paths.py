"""Where every stage reads and writes, relative to a project root.

One place for the layout so that `dvc.yaml`, the stages and the tests agree. Stages take a `root`
argument (the project root by default) so that tests can run them in a temporary folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    # --- pipeline outputs (DVC `outs`, git-ignored) ---
    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def data(self) -> Path:  # the embedded world's datasets (JSON Lines)
        return self.artifacts / "data"

    @property
    def validation(self) -> Path:  # validation report of every dataset
        return self.artifacts / "validation"

    @property
    def tokenizer(self) -> Path:  # a Hugging Face tokenizer directory
        return self.artifacts / "tokenizer"

    @property
    def sft(self) -> Path:
        return self.artifacts / "sft"

    @property
    def reward(self) -> Path:
        return self.artifacts / "reward"

    @property
    def ppo(self) -> Path:
        return self.artifacts / "ppo"

    @property
    def dpo(self) -> Path:
        return self.artifacts / "dpo"

    @property
    def evaluate(self) -> Path:
        return self.artifacts / "evaluate"

    # --- small metrics JSON files (DVC `metrics`, cache: false, kept in git) ---
    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    def user_path(self, path: str | Path) -> Path:
        """A path from the params (a model directory): as given if absolute, else under the root."""
        return Path(path) if Path(path).is_absolute() else self.root / path

    def metrics_file(self, stage: str) -> Path:
        return self.metrics / f"{stage}.json"

    def plots_file(self, stage: str) -> Path:
        """A training stage's curves (its history rows), which `dvc plots` draws."""
        return self.root / "plots" / f"{stage}.json"

    # --- state that is not source (git-ignored) ---
    @property
    def state(self) -> Path:
        return self.root / ".state"

    def checkpoints(self, stage: str) -> Path:
        """Resumable checkpoints of a training stage. Outside the DVC `outs` on purpose: DVC clears a
        stage's outputs before running it, which would make a killed `dvc repro` start afresh."""
        return self.state / "checkpoints" / stage

    # --- dataset files written by the data stage ---
    @property
    def sft_train(self) -> Path:
        return self.data / "sft_train.jsonl"

    @property
    def sft_heldout(self) -> Path:
        return self.data / "sft_heldout.jsonl"

    @property
    def pref_train(self) -> Path:
        return self.data / "pref_train.jsonl"

    @property
    def pref_heldout(self) -> Path:
        return self.data / "pref_heldout.jsonl"

    @property
    def rl_prompts(self) -> Path:
        return self.data / "rl_prompts.jsonl"

    @property
    def eval_prompts(self) -> Path:
        return self.data / "eval_prompts.jsonl"
