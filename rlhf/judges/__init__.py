"""Judges of the `evaluate` stage: pure functions from sampled rows to metrics with intervals.

`bootstrap` (percentile intervals and the `JudgeMetrics` collector), `gold` (the embedded world's
judge), `reward_model` (mean score and win rate against SFT under any local reward model),
`refusal` (refusal-phrase matching, AdvBench / XSTest style), `llm` (an LLM judge behind an
OpenAI-compatible endpoint) and `best_of_n` (the best-of-n baseline). docs/judges.md describes
each one; docs/metrics.md lists the names they report.
"""
