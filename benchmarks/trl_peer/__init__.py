"""The project's trainers against TRL's on identical work (benchmarks/trl_compare.py drives it).

| module | what it holds |
| --- | --- |
| `settings` | every shared setting: model sizes, batch, sequence lengths, optimizer, loss coefficients |
| `fixtures` | the files both sides start from: one tokenizer, one state dict per size, the token sequences |
| `measure` | clocks, the matmul peak, FLOPs per step, peak RSS, the result record a worker writes |
| `project` | the project's SFT, reward, DPO and PPO steps, timed |
| `peer` | TRL's SFTTrainer, RewardTrainer and DPOTrainer on the same data, timed |
| `peer_ppo` | TRL 1.12's PPOTrainer (the last release with PPO), run from its own install folder |
| `worker` | `python -m benchmarks.trl_peer.worker SPEC OUT`: one trainer, one side, in its own process |

TRL is a peer here only; nothing under rlhf/ imports it.
"""
