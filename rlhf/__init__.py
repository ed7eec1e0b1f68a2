"""rlhf: the library of the RLHF pipeline (data, models, losses, trainers, evaluation).

It never imports Prefect, MLflow or DVC; `tasks/` and `flows/` wrap it. Heavy imports (torch,
transformers) stay inside the modules that need them so that `import rlhf` is instant.
"""

__version__ = "0.1.0"
