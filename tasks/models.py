"""Log trained model directories to MLflow and register them, with no pickle on any load path.

Policies (`rlhf-sft`, `rlhf-ppo`, `rlhf-dpo`) are logged with MLflow's standard `transformers`
flavour from their directory (weights, tokenizer and chat template as the stage saved them), so
`mlflow.transformers.load_model("models:/rlhf-ppo/1")` gives a text-generation pipeline. The reward
model (`rlhf-reward`) is a pyfunc logged as code (`tasks/reward_pyfunc.py`) around its directory:
`mlflow.pyfunc.load_model` scores (prompt, response) pairs with the reward normalisation applied.
`mlflow.artifacts.download_artifacts` gives back directories that `from_pretrained` reads.
"""

from __future__ import annotations

from pathlib import Path

import mlflow


def requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "tokenizers", "safetensors", "pandas")]


def log_model_dir(model_dir: Path, registered_name: str) -> None:
    if registered_name.endswith("reward"):
        mlflow.pyfunc.log_model(
            name=registered_name,
            python_model=str(Path(__file__).with_name("reward_pyfunc.py")),
            artifacts={"model": str(model_dir)},
            pip_requirements=requirements() + ["rlhf-pipeline"],
            registered_model_name=registered_name,
        )
    else:
        import logging

        from transformers import pipeline

        # a text-generation pipeline over the directory (MLflow's path-only logging does not yet
        # read transformers 5's task table); the Hub's model card is not asked for (offline)
        pipe = pipeline("text-generation", model=str(model_dir), tokenizer=str(model_dir))
        quiet = logging.getLogger("mlflow.transformers")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            mlflow.transformers.log_model(
                transformers_model=pipe,
                name=registered_name,
                pip_requirements=requirements(),
                registered_model_name=registered_name,
            )
        finally:
            quiet.setLevel(level)
