"""The pipeline's stages, one module per `dvc.yaml` stage: `run_<stage>(cfg, paths) -> StageOutput`.

| module | stage | building blocks it wires |
| --- | --- | --- |
| `data` | write the embedded world's datasets | `rlhf.world` |
| `validate` | check them (schemas, overlap) | `rlhf.validation` |
| `tokenizer` | train the BPE | `rlhf.tokenizer` |
| `sft` | supervised fine-tuning (+ `sft_samples`: gold-judged samples, evaluation-owned) | `rlhf.train`, `rlhf.losses` |
| `reward` | the Bradley-Terry reward model | `rlhf.reward`, `rlhf.train`, `rlhf.losses` |
| `ppo` | PPO against the reward model (+ `ppo_update`: the update and its forward passes) | `rlhf.rl`, `rlhf.generation`, `rlhf.losses`, `rlhf.train` |
| `dpo` | DPO / cDPO / IPO | `rlhf.losses`, `rlhf.train` |
| `evaluate` | gold, proxy and KL of every policy | `rlhf.world.judge`, `rlhf.generation`, `rlhf.reward` |

The building blocks never import a stage. The table of stages (name -> run function) is
`tasks.stages.STAGES`; nothing here imports the stage modules, so that a stage's code
dependencies (dvc.yaml `deps`) are only the modules it uses.
"""
