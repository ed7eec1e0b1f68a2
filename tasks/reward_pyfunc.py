"""The reward model's MLflow pyfunc, logged as code ("models from code"): loading it runs this file,
never unpickles an object. Input: a DataFrame with `prompt` and `response` columns; output: the
normalised reward of each pair. The model's directory is the `model` artifact (a standard
`AutoModelForSequenceClassification` directory that `from_pretrained` also reads)."""

from __future__ import annotations

import mlflow
import pandas as pd


class RewardPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from rlhf.reward import RewardModel

        self.rm = RewardModel.from_pretrained(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.rm.score_pairs(list(model_input["prompt"]), list(model_input["response"]))


mlflow.models.set_model(RewardPyfunc())
