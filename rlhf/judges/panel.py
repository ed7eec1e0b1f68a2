"""The judges together: grade every policy's sample rows, then one metrics dict per policy.

`grade_rows` adds each judge's per-row grade to the rows (the columns of samples.jsonl);
`policy_metrics` turns one policy's graded rows into its metrics, every mean with its bootstrap
interval, under the same names for every policy (SFT, PPO, DPO and the bon<n> rows); `summary`
writes the stage's Markdown report, with every metric that was left out and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlhf.judges.bootstrap import JudgeMetrics
from rlhf.judges.gold import gold_metrics, is_world_row
from rlhf.judges.gold import judge_rows as gold_grades
from rlhf.judges.llm import Grades, LLMJudge, llm_metrics
from rlhf.judges.refusal import is_refusal, refusal_metrics
from rlhf.judges.reward_model import reward_model_metrics
from rlhf.judges.rows import set_counts

GOLD_FIELDS = ("helpfulness", "safety", "utility")


def grade_rows(rows: list[dict[str, Any]], judges: Sequence[str], judge_rm: Any = None,
               llm: LLMJudge | None = None) -> None:
    """Add the judges' grades to one policy's rows, in place: `helpfulness`/`safety`/`utility`
    (gold; world prompts only), `refused` (refusal), `judge_rm_score` (reward_model), and
    `llm_helpfulness`/`llm_safety` (llm). Call under the accelerator's autocast (the RM runs)."""
    if "gold" in judges:
        for row, grade in zip(rows, gold_grades(rows)):
            row.update(grade or {})
    if "refusal" in judges:
        for row in rows:
            row["refused"] = is_refusal(row["response"])
    if "reward_model" in judges:
        scores = judge_rm.score_pairs([r["prompt"] for r in rows], [r["response"] for r in rows])
        for row, score in zip(rows, scores):
            row["judge_rm_score"] = score
    if "llm" in judges:
        from rlhf.chat import as_messages

        for row in rows:
            grades = llm.grade(as_messages(row["prompt"]), row["response"])
            row.update(llm_helpfulness=grades.helpfulness, llm_safety=grades.safety)


def policy_metrics(rows: Sequence[dict[str, Any]], sft_rows: Sequence[dict[str, Any]], judges: Sequence[str],
                   n_resamples: int, seed: int, exact_kl: float | None = None) -> JudgeMetrics:
    """One policy's metrics (docs/metrics.md) from its graded rows; `sft_rows` (same prompts, same
    order) are the win rate's baseline; `exact_kl` replaces the sampled KL (best-of-n)."""
    out = JudgeMetrics(n_resamples, seed)
    if "gold" in judges:
        grades = [{k: r[k] for k in GOLD_FIELDS} if "utility" in r else None for r in rows]
        out.merge(gold_metrics(rows, grades, n_resamples, seed))
    if "refusal" in judges:
        out.merge(refusal_metrics(rows, [r["refused"] for r in rows], n_resamples, seed))
    if "reward_model" in judges:
        out.merge(reward_model_metrics([r["judge_rm_score"] for r in rows],
                                       [r["judge_rm_score"] for r in sft_rows], n_resamples, seed))
    if "llm" in judges:
        grades = [Grades(r["llm_helpfulness"], r["llm_safety"]) for r in rows]
        out.merge(llm_metrics(rows, grades, n_resamples, seed))
    out.add("eval/proxy/ppo_score", [r["ppo_score"] for r in rows], "no prompt")
    out.add("eval/proxy/rm_score", [r["rm_score"] for r in rows], "no prompt")
    if exact_kl is None:
        out.add("eval/kl_to_ref", [r["kl_to_ref"] for r in rows], "no prompt")
    else:
        out.add_exact("eval/kl_to_ref", exact_kl)
    out.metrics["policy/response_length"] = sum(r["response_tokens"] for r in rows) / len(rows)
    out.metrics["policy/eos_share"] = sum(float(r["ended"]) for r in rows) / len(rows)
    return out


def _cell(metrics: dict[str, float], name: str) -> str:
    if name not in metrics:
        return "-"
    low, high = metrics.get(f"{name}_low"), metrics.get(f"{name}_high")
    value = f"{metrics[name]:.3f}"
    return value if low is None else f"{value} [{low:.3f}, {high:.3f}]"


def summary(metrics: dict[str, dict[str, float]], missing: dict[str, str], prompts: Sequence[dict[str, Any]],
            judges: Sequence[str], judge_rm: str, n_resamples: int) -> str:
    """The Markdown report: prompt sets, judges, each policy's means with 95% intervals, left-out metrics."""
    sets = set_counts(prompts)
    world = sum(is_world_row(p) for p in prompts)
    names = sorted({k for m in metrics.values() for k in m if not k.endswith(("_low", "_high"))})
    policies = list(metrics)
    lines = ["# Evaluation", "",
             "Prompt sets: " + ", ".join(f"{s} ({n} prompts)" for s, n in sets.items()) + ".",
             f"Judges: {', '.join(judges) or 'none'}; the proxy reward model and the KL to SFT always"
             + (f"; reward_model judge: {judge_rm}" if "reward_model" in judges else "") + ".",
             *([f"The gold judge graded the embedded world's {world} of {len(prompts)} prompts."] if "gold" in judges else []),
             f"Each mean with its 95% percentile bootstrap interval over prompts (B = {n_resamples}).", "",
             "| metric | " + " | ".join(policies) + " |", "| --- |" + " --- |" * len(policies)]
    lines += [f"| `{n}` | " + " | ".join(_cell(metrics[p], n) for p in policies) + " |" for n in names]
    lines += ["", "## Left out", ""]
    lines += [f"- `{n}`: {why}" for n, why in sorted(missing.items())] or ["Nothing: every metric had its data."]
    return "\n".join(lines) + "\n"
