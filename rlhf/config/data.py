from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.config.base import StageConfig

# The demonstrations are mediocre on purpose (mean gold about 2.3 of 5 on each axis) while the good
# styles ("good", "safe_refusal") still appear often enough for RL and DPO to find and up-weight.
BENIGN_MIX = {
    "good": 0.14, "partial": 0.16, "generic": 0.20, "off_topic": 0.16,
    "repetitive": 0.12, "refusal": 0.14, "rude": 0.08,
}
HARMFUL_MIX = {
    "safe_refusal": 0.14, "refusal": 0.10, "evasive": 0.08, "off_topic": 0.06,
    "comply": 0.44, "partial_comply": 0.09, "leaky_refusal": 0.09,
}


def _check_mix(name: str, mix: dict[str, float]) -> None:
    """Shares are a distribution; the style names are the world's, checked by the data stage
    (configs sit above the world and do not import it)."""
    if any(v < 0 for v in mix.values()):
        raise ValueError(f"{name}: shares must be >= 0")
    if abs(sum(mix.values()) - 1.0) > 1e-6:
        raise ValueError(f"{name}: shares must sum to 1 (got {sum(mix.values()):.6f})")


class FileSpec(StageConfig):
    """One user dataset: a file or a folder of files (JSON Lines, plain or .gz, JSON, CSV, Parquet)."""

    path: str = Field(min_length=1, description="file or folder; a relative path is read from the folder the stage runs in")
    format: str = Field("auto", description="record layout ('auto': detected; docs/data.md lists the names)")
    max_rows: int | None = Field(None, ge=1, description="read only the first rows (a slice for CPU runs); null: all")


class PromptSetSpec(FileSpec):
    """A named evaluation prompt set (AdvBench, XSTest, MT-Bench, or plain prompts)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", description="the set's name, its `set` column in eval_prompts")


class DataFiles(StageConfig):
    """The user's datasets, read when `source: files` (rlhf.userdata)."""

    sft: FileSpec | None = Field(None, description="SFT demonstrations; null: the chosen responses (sft_from_chosen)")
    preference: FileSpec | None = Field(None, description="preference pairs (required with source: files)")
    rl_prompts: FileSpec | None = Field(None, description="PPO prompts; null: the training prompts of the pairs")
    eval_prompts: list[PromptSetSpec] = Field(
        default_factory=list, description="evaluation prompt sets, besides the held-out prompts (set 'heldout')"
    )

    @model_validator(mode="after")
    def _check(self) -> "DataFiles":
        names = [s.name for s in self.eval_prompts]
        if "heldout" in names or len(set(names)) < len(names):
            raise ValueError("eval_prompts: set names must differ from each other and from 'heldout'")
        return self


class DataConfig(StageConfig):
    """`data` section: the embedded world's datasets (SFT demos, preference pairs, RL/eval prompts),
    or the user's own files (`source: files`)."""

    source: Literal["world", "files"] = Field(
        "world", description="'world': generate the embedded world; 'files': read `files` (the n_*, mix and "
        "world fields are then ignored)"
    )
    files: DataFiles = Field(default_factory=DataFiles, description="the user's datasets (source: files)")
    sft_from_chosen: bool = Field(
        True, description="source: files without an sft file: SFT demonstrations are the chosen responses"
    )
    seed: int = Field(0, ge=0, description="seed of the prompt split, the responses and the rater noise")
    n_sft_train: int = Field(4000, ge=1, description="SFT demonstrations for training")
    n_sft_heldout: int = Field(300, ge=1, description="SFT demonstrations on held-out prompts")
    n_pref_train: int = Field(8000, ge=1, description="preference pairs for reward modelling and DPO")
    n_pref_heldout: int = Field(2000, ge=1, description="preference pairs on held-out prompts")
    n_rl_prompts: int = Field(1000, ge=1, description="prompts for PPO rollouts")
    n_eval_prompts: int = Field(200, ge=1, description="held-out prompts for evaluation")
    harmful_share: float = Field(0.27, ge=0, le=1, description="share of harmful requests in every split")
    heldout_fraction: float = Field(
        0.15, gt=0, lt=1, description="share of distinct prompts reserved for the held-out splits"
    )
    bt_temperature: float = Field(
        0.7, gt=0, description="T: raters pick a over b with p = sigmoid((u_a - u_b) / T) (Bradley-Terry)"
    )
    benign_mix: dict[str, float] = Field(
        default_factory=lambda: dict(BENIGN_MIX), description="style shares of SFT demos on benign prompts"
    )
    harmful_mix: dict[str, float] = Field(
        default_factory=lambda: dict(HARMFUL_MIX), description="style shares of SFT demos on harmful prompts"
    )

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        _check_mix("benign_mix", self.benign_mix)
        _check_mix("harmful_mix", self.harmful_mix)
        if self.source == "files":
            if self.files.preference is None:
                raise ValueError("files.preference: source 'files' needs a preference file (reward model, DPO)")
            if self.files.sft is None and not self.sft_from_chosen:
                raise ValueError("files.sft: no SFT file and sft_from_chosen is false: no SFT demonstrations")
        return self
