"""Log trained model directories to MLflow as pyfunc models and register them.

Causal LM policies (`rlhf-sft`, `rlhf-ppo`, `rlhf-dpo`) predict a response for each prompt; the reward
model (`rlhf-reward`) predicts a score for each (prompt, response). The Hugging Face directory
(weights, tokenizer, stage config) is stored whole as the model's artifact, so
`mlflow.artifacts.download_artifacts` also gives back a directory that `from_pretrained` reads.
Loading the pyfunc needs this package installed (it is named in the model's requirements).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd


class PolicyModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a `prompt` column. Output: the sampled responses (fixed seed)."""

    def load_context(self, context):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = context.artifacts["model"]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()

    def predict(self, context, model_input: pd.DataFrame, params=None):
        from rlhf.generation import generate
        from rlhf.train.models import max_positions

        # default: up to 64 new tokens, never more than half the model's context
        new_tokens = min(64, max_positions(self.model.config) // 2)
        options = {"max_new_tokens": new_tokens, "temperature": 1.0, "seed": 0, **(params or {})}
        return generate(self.model, self.tokenizer, list(model_input["prompt"]), **options).texts


class RewardPyfunc(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with `prompt` and `response` columns. Output: normalised reward scores."""

    def load_context(self, context):
        from rlhf.reward import RewardModel

        self.rm = RewardModel.from_pretrained(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.rm.score_pairs(list(model_input["prompt"]), list(model_input["response"]))


def requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "tokenizers", "safetensors", "pandas")]


def log_model_dir(model_dir: Path, registered_name: str) -> None:
    wrapper = RewardPyfunc() if registered_name.endswith("reward") else PolicyModel()
    mlflow.pyfunc.log_model(
        name=registered_name,
        python_model=wrapper,
        artifacts={"model": str(model_dir)},
        pip_requirements=requirements(),
        registered_model_name=registered_name,
    )
