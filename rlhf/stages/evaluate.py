"""The `evaluate` stage: every trained policy answers the eval prompts, scored by the judges.

Policies: SFT always; PPO and DPO unless their stage was disabled; and the best-of-n baselines
bon<n> (`evaluate.best_of_n`: the best of n SFT samples by the proxy reward model), all with the
same sampling settings. Every policy gets, whatever the data:
  - the proxy reward-model score (normalised units) twice: as PPO optimised it (a response without
    EOS scores ppo.missing_eos_score, `rlhf.rl.penalise_missing_eos`) and as the reward model
    gives it to every response;
  - the KL to the reference (SFT) on the policy's own samples:
        KL(pi || pi_ref) ~ mean over prompts of sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)]
    with both log-probs of the tempered distributions (logits / T), as in PPO's objective/kl
    (best-of-n: log n - (n - 1) / n in closed form); response length and EOS share;
and the judges `evaluate.judges` lists (rlhf/judges/, docs/judges.md): `gold` (the world's judge,
on the world's prompts only), `reward_model` (any local RM: mean score, win rate against SFT),
`refusal` (phrase matching: AdvBench, XSTest) and `llm` (an OpenAI-compatible endpoint). Each mean
comes with its 95% bootstrap interval; a metric whose data are missing (a prompt set, a column) is
left out, and artifacts/evaluate/summary.md says why.
Models and inputs live on the device of the stage's accelerator (CUDA when present), and every
forward pass runs under its autocast (bf16 on CUDA, fp32 on the CPU), as in the other stages.
Only evaluation may call the gold judge (docs/architecture.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.config.evaluate import EvaluateConfig
from rlhf.config.ppo import PPOConfig
from rlhf.errors import UserError
from rlhf.files import atomic_dir, write_jsonl
from rlhf.generation import generate
from rlhf.judges.best_of_n import best_of_n_choice, best_of_n_kl
from rlhf.judges.best_of_n import policy_name as bon_name
from rlhf.judges.llm import LLMJudge, api_key_from_env
from rlhf.judges.panel import grade_rows, policy_metrics, summary
from rlhf.judges.reward_model import check_reward_model_dir
from rlhf.judges.rows import read_eval_prompts
from rlhf.logprobs import logprobs_from_logits, response_logits
from rlhf.paths import Paths
from rlhf.reward import RewardModel
from rlhf.rl import penalise_missing_eos
from rlhf.stage import StageOutput, is_skipped
from rlhf.train import length_order, load_causal_lm, load_tokenizer, make_accelerator
from rlhf.train.checkpoint import STAGE_CONFIG

PROMPT_COLUMNS = ("set", "harmful", "topic", "label", "type")  # eval-prompt columns kept in each sample row


def policy_dirs(paths: Paths) -> dict[str, Path]:
    """{name: model dir} of the policies to evaluate; a stage that wrote SKIPPED (or no model) is left out."""
    found = {}
    for name, stage_dir in (("sft", paths.sft), ("ppo", paths.ppo), ("dpo", paths.dpo)):
        model = stage_dir / "model"
        if not is_skipped(stage_dir) and (model / "config.json").is_file():
            found[name] = model
    if "sft" not in found:
        raise UserError(f"stage 'evaluate' needs the SFT model in {paths.sft / 'model'}, which is missing: "
                        "run the 'sft' stage first (dvc repro sft)")
    return found


def proxy_missing_eos_score(ppo: PPOConfig, policies: dict[str, Path]) -> float:
    """The `missing_eos_score` of the proxy score: the ppo section's, for every policy.

    Every policy is scored under the one proxy so that their scores compare. The PPO stage's saved
    config (stage_config.json beside its model) cannot define it alone: SFT and DPO have none, nor
    has a disabled PPO stage. Where it exists it must agree: a PPO model trained with another value
    (a stale stage) would be reported under a score it did not optimise, so it is refused.
    """
    saved = policies["ppo"] / STAGE_CONFIG if "ppo" in policies else None
    if saved is not None and saved.is_file():
        trained = json.loads(saved.read_text(encoding="utf-8")).get("missing_eos_score")
        if trained is not None and trained != ppo.missing_eos_score:
            raise ValueError(f"the PPO model in {policies['ppo']} was trained with missing_eos_score={trained}, but "
                             f"ppo.missing_eos_score is {ppo.missing_eos_score}: rerun the ppo stage")
    return ppo.missing_eos_score


@torch.no_grad()
def sequence_kl(policy: Any, reference: Any, samples: Any, temperature: float, batch_size: int) -> torch.Tensor:
    """sum_t (log pi - log pi_ref) over each sampled response, on the policy's device. Returns (N,) on the CPU.

    Rows go through in order of length, each batch without the padding its rows share; the
    reference itself (SFT) has KL 0 exactly, with no forward pass."""
    n = len(samples.texts)
    if policy is reference:
        return torch.zeros(n)
    out = torch.zeros(n)
    device = next(policy.parameters()).device
    order = length_order((samples.prompt_mask.sum(dim=1) + samples.response_mask.sum(dim=1)).tolist())
    for i in range(0, n, batch_size):
        idx = order[i: i + batch_size]
        seqs, attn, mask, prompt_len = (t.to(device) if torch.is_tensor(t) else t for t in samples.rows(idx))
        targets = seqs[:, prompt_len:]  # (b, r)
        logp = logprobs_from_logits(response_logits(policy, seqs, attn, prompt_len, temperature), targets)
        ref = logprobs_from_logits(response_logits(reference, seqs, attn, prompt_len, temperature), targets)
        out[torch.tensor(idx)] = ((logp - ref) * mask.float()).sum(dim=1).cpu()  # (b,)
    return out


@dataclass
class Drawn:
    """What a report row needs of each sample, in one order: the text, its response tokens (EOS
    included), whether it ended, and the two proxy scores (`run_evaluate.proxy`), each (N,)."""

    texts: list[str]
    tokens: list[int]
    ended: list[bool]
    rm_score: torch.Tensor
    ppo_score: torch.Tensor

    @classmethod
    def of(cls, samples: Any, rm_score: torch.Tensor, ppo_score: torch.Tensor) -> "Drawn":
        return cls(list(samples.texts), samples.response_mask.sum(dim=1).tolist(), samples.ended.tolist(),
                   rm_score, ppo_score)

    def take(self, index: list[int]) -> "Drawn":
        return Drawn([self.texts[i] for i in index], [self.tokens[i] for i in index], [self.ended[i] for i in index],
                     self.rm_score[index], self.ppo_score[index])


def pool_of(first: Drawn, rest: Drawn, k: int) -> Drawn:
    """K samples per prompt, prompt-major: prompt i's sample in `first` (N of them), then its K - 1
    in `rest` (N * (K - 1), prompt-major). Returns N * K."""
    n = len(first.texts)
    assert len(rest.texts) == n * (k - 1), f"{len(rest.texts)} further samples for {n} prompts, K = {k}"
    both = Drawn(first.texts + rest.texts, first.tokens + rest.tokens, first.ended + rest.ended,
                 torch.cat([first.rm_score, rest.rm_score]), torch.cat([first.ppo_score, rest.ppo_score]))
    return both.take([i if j == 0 else n + i * (k - 1) + j - 1 for i in range(n) for j in range(k)])


def sample_rows(name: str, prompts: list[dict[str, Any]], drawn: Drawn, picks: torch.Tensor, kl: torch.Tensor
                ) -> list[dict[str, Any]]:
    """One row per prompt: the prompt's columns, the sample `picks[i]` of `drawn` and its scores."""
    rows = []
    for i, (row, j) in enumerate(zip(prompts, picks.tolist())):
        rows.append({"policy": name, "prompt": row["prompt"], **{k: row[k] for k in PROMPT_COLUMNS if k in row},
                     "response": drawn.texts[j], "ppo_score": float(drawn.ppo_score[j]),
                     "rm_score": float(drawn.rm_score[j]), "kl_to_ref": float(kl[i]),
                     "response_tokens": int(drawn.tokens[j]), "ended": bool(drawn.ended[j])})
    return rows


def run_evaluate(cfg: EvaluateConfig, paths: Paths, ppo: PPOConfig) -> StageOutput:
    """`ppo` is the ppo section of the same params: the proxy is scored as PPO defines it."""
    # 0. runtime: device and precision chosen as for the training stages ('auto': CUDA with bf16
    #    autocast when present, else fp32 on the CPU). One process: evaluation is not sharded.
    accelerator = make_accelerator(cfg.mixed_precision)
    if accelerator.num_processes != 1:
        raise UserError("evaluate runs in one process (it is not sharded): run it without `accelerate launch`")
    device = accelerator.device

    # 1. what to evaluate: the policies that exist, the eval prompts, the reference, the proxy RM
    #    and the judges' own models (the reward_model judge's RM, the LLM endpoint)
    policies = policy_dirs(paths)
    prompts = read_eval_prompts(paths.eval_prompts, cfg.max_prompts)
    texts = [p["prompt"] for p in prompts]
    missing_eos_score = proxy_missing_eos_score(ppo, policies)
    reference = load_causal_lm(policies["sft"]).to(device).eval()
    reward_model = RewardModel.from_pretrained(paths.reward / "model").to(device).eval()
    judge_rm = reward_model
    if "reward_model" in cfg.judges and cfg.reward_model_path is not None:
        judge_rm_dir = paths.user_path(cfg.reward_model_path)
        check_reward_model_dir(judge_rm_dir, "evaluate.reward_model_path")
        judge_rm = RewardModel.from_pretrained(judge_rm_dir).to(device).eval()
    llm = None
    if "llm" in cfg.judges:
        llm = LLMJudge(cfg.llm.base_url, cfg.llm.model, api_key_from_env(cfg.llm.api_key_env, "evaluate.llm.api_key_env"),
                       cfg.llm.timeout_s, cfg.llm.max_retries)

    def proxy(samples: Any, prompt_texts: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(rm_score, ppo_score), each (B,): the RM's own score, and PPO's with the missing-EOS score."""
        rm_score = torch.tensor(reward_model.score_pairs(prompt_texts, samples.texts))  # (B,)
        return rm_score, penalise_missing_eos(rm_score, samples.ended, missing_eos_score)

    rows: dict[str, list[dict[str, Any]]] = {}
    exact_kl: dict[str, float] = {}  # policies whose KL is known in closed form (best-of-n)
    drawn: dict[str, Drawn] = {}
    for name, model_dir in policies.items():
        # 2. sample: same seed and settings for every policy
        tokenizer = load_tokenizer(model_dir)
        policy = reference if name == "sft" else load_causal_lm(model_dir).to(device).eval()
        with accelerator.autocast():
            samples = generate(policy, tokenizer, texts, max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size,
                               seed=cfg.seed, budget_key="evaluate.max_new_tokens")
            # 3. proxy reward model (through text; also as PPO scores it) and KL to the reference
            drawn[name] = Drawn.of(samples, *proxy(samples, texts))
            kl = sequence_kl(policy, reference, samples, cfg.temperature, cfg.batch_size)  # (N,)
        rows[name] = sample_rows(name, prompts, drawn[name], torch.arange(len(texts)), kl)

    # 4. best-of-n: a pool of K = max(n) SFT samples per prompt, scored by the proxy RM: the SFT
    #    row's sample first, then K - 1 more (seed + 1); bon<n> keeps the best of the pool's first
    #    n. Its KL is analytic, log n - (n - 1) / n.
    if cfg.best_of_n:
        k = max(cfg.best_of_n)
        repeated = [t for t in texts for _ in range(k - 1)]
        with accelerator.autocast():
            more = generate(reference, load_tokenizer(policies["sft"]), repeated, max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size,
                            seed=cfg.seed + 1, budget_key="evaluate.max_new_tokens")
            pool = pool_of(drawn["sft"], Drawn.of(more, *proxy(more, repeated)), k)  # (N * K,) prompt-major
        offsets = torch.arange(len(texts)) * k  # (N,) first pool index of each prompt
        for n in sorted(cfg.best_of_n):
            picks = offsets + best_of_n_choice(pool.rm_score.view(len(texts), k), n)  # (N,)
            exact_kl[bon_name(n)] = best_of_n_kl(n)
            kl = torch.full((len(texts),), exact_kl[bon_name(n)])
            rows[bon_name(n)] = sample_rows(bon_name(n), prompts, pool, picks, kl)

    # 5. judges: every policy's rows graded by each judge, then its metrics with bootstrap intervals
    metrics: dict[str, dict[str, float]] = {}
    missing: dict[str, str] = {}
    with accelerator.autocast():
        for name in rows:
            grade_rows(rows[name], cfg.judges, judge_rm, llm)
    for name, policy_rows in rows.items():
        judged = policy_metrics(policy_rows, rows["sft"], cfg.judges, cfg.bootstrap_samples, cfg.seed,
                                exact_kl.get(name))
        metrics[name], missing = judged.metrics, {**missing, **judged.missing}

    # 6. every sample, for reading and for later analysis, and the summary report
    rm_label = cfg.reward_model_path or "artifacts/reward/model (the pipeline's)"
    report = summary(metrics, missing, prompts, cfg.judges, rm_label, cfg.bootstrap_samples)
    with atomic_dir(paths.evaluate) as tmp:
        write_jsonl(tmp / "samples.jsonl", [r for policy_rows in rows.values() for r in policy_rows])
        (tmp / "summary.md").write_text(report, encoding="utf-8")
    return StageOutput(
        metrics=metrics,
        inputs={"eval_prompts": paths.eval_prompts},
        reports=[paths.evaluate / "samples.jsonl", paths.evaluate / "summary.md"],
        tables={"eval_samples.json": [r for policy_rows in rows.values() for r in policy_rows[: cfg.table_rows]]},
    )
