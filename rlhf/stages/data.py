"""The `data` stage: write the six datasets, from the embedded world (`source: world`, the
default) or from the user's own files (`source: files`, `run_files`; docs/data.md).

Steps of `run_world`:
  1. enumerate every prompt string and split the strings, by a seeded shuffle, into a training
     pool and a held-out pool (so no split of one side can share a prompt with the other);
  2. sample each split's prompts from its pool with the configured harmful share;
  3. write mediocre SFT demonstrations (styles drawn from the configured mix);
  4. write preference pairs: two responses of uniformly drawn styles with different gold utility,
     labelled by sampling a Bradley-Terry rater, P(a preferred) = sigmoid((u_a - u_b) / T);
  5. check the split, write every file atomically, and return the datasets' gold statistics.

Steps of `run_files`:
  1. read each configured file or folder (`rlhf.userdata.read`: the `datasets` library, the layout
     detected or forced, every row checked; a problem stops the stage naming file, row and field);
  2. split the distinct prompts into train and held-out, and derive the SFT demonstrations (when no
     SFT file is given), RL prompts and evaluation prompt sets (`rlhf.userdata.split`);
  3. check that no held-out prompt is a train prompt, write every file atomically, and report the
     formats read (summary.md, sources.json) and the row counts.

The builders live in `rlhf.world.generate` and `rlhf.userdata`; this file wires them to the config
and the files.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from rlhf.config.base import ConfigError
from rlhf.config.data import DataConfig, FileSpec
from rlhf.files import write_json, write_jsonl, write_text
from rlhf.paths import Paths
from rlhf.stage import StageOutput
from rlhf.userdata.read import Source, read_source
from rlhf.userdata.split import Splits, build_splits
from rlhf.validation.formats import FORMATS
from rlhf.validation.readers import frame_of
from rlhf.validation.validate import overlap_report
from rlhf.world.generate import (
    base_row,
    bayes_optimal_accuracy,
    check_disjoint,
    demo_gold,
    gold_agreement,
    make_demos,
    make_pair,
    sample_prompts,
    split_pools,
)
from rlhf.world.harms import HARMS
from rlhf.world.judge import VOCABULARY
from rlhf.world.prompts import PromptRecord
from rlhf.world.responses import BENIGN_STYLES, HARMFUL_STYLES
from rlhf.world.topics import TOPICS


def check_styles(cfg: DataConfig) -> None:
    """Every style of the two mixes is one the world can write (a ConfigError naming the key)."""
    for key, mix, styles in (("benign_mix", cfg.benign_mix, BENIGN_STYLES),
                             ("harmful_mix", cfg.harmful_mix, HARMFUL_STYLES)):
        unknown = sorted(set(mix) - set(styles))
        if unknown:
            raise ConfigError(f"data.{key}: unknown style(s) {unknown}; expected some of {sorted(styles)}")


def summary_markdown(metrics: dict[str, float], splits: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["# Embedded world datasets", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    pair = splits["pref_heldout"][0]
    lines += ["", "## An example preference pair (held-out)", "",
              f"- prompt: {pair['prompt']}",
              f"- chosen (u = {pair['chosen_gold']:.1f}): {pair['chosen']}",
              f"- rejected (u = {pair['rejected_gold']:.1f}): {pair['rejected']}",
              f"- P(rater picks chosen) = {pair['p_chosen']:.3f}", ""]
    return "\n".join(lines)


def run_data(cfg: DataConfig, paths: Paths) -> StageOutput:
    return run_files(cfg, paths) if cfg.source == "files" else run_world(cfg, paths)


def run_world(cfg: DataConfig, paths: Paths) -> StageOutput:
    check_styles(cfg)
    mixes = (cfg.benign_mix, cfg.harmful_mix)
    # 1. split the prompt universe by string
    train_pool, heldout_pool = split_pools(cfg.seed, cfg.heldout_fraction)

    # 2-4. sample prompts and build every split; each split has its own random stream, so changing
    # one split's size leaves the others as they were
    def rng(name: str) -> random.Random:
        return random.Random(f"{cfg.seed}/{name}")

    def prompts(name: str, pool: list[PromptRecord], n: int) -> list[PromptRecord]:
        return sample_prompts(pool, n, cfg.harmful_share, rng(name + "/prompts"))

    splits = {
        "sft_train": make_demos(prompts("sft_train", train_pool, cfg.n_sft_train), *mixes, rng("sft_train")),
        "sft_heldout": make_demos(prompts("sft_heldout", heldout_pool, cfg.n_sft_heldout), *mixes, rng("sft_heldout")),
    }
    for name, pool, n in (("pref_train", train_pool, cfg.n_pref_train),
                          ("pref_heldout", heldout_pool, cfg.n_pref_heldout)):
        r = rng(name)
        splits[name] = [make_pair(p, cfg.bt_temperature, r) for p in prompts(name, pool, n)]
    splits["rl_prompts"] = [base_row(p) for p in prompts("rl_prompts", train_pool, cfg.n_rl_prompts)]
    splits["eval_prompts"] = [base_row(p) for p in prompts("eval_prompts", heldout_pool, cfg.n_eval_prompts)]

    # 5. check, write, measure
    overlap = check_disjoint(splits)
    for name, rows in splits.items():
        write_jsonl(getattr(paths, name), rows)

    gold = demo_gold(splits["sft_train"])
    demos = splits["sft_train"]
    metrics: dict[str, float] = {
        "data/bayes_optimal_accuracy": bayes_optimal_accuracy(splits["pref_heldout"]),
        "data/bayes_optimal_accuracy_train": bayes_optimal_accuracy(splits["pref_train"]),
        "data/label_gold_agreement": gold_agreement(splits["pref_heldout"]),
        "data/label_gold_agreement_train": gold_agreement(splits["pref_train"]),
        **{f"data/sft_demos/{k}": v for k, v in gold.items()},
        "data/sft_demos/harmful_share": sum(d["harmful"] for d in demos) / len(demos),
        **{f"rows/{name}": float(len(rows)) for name, rows in splits.items()},
        "data/prompt_overlap": float(overlap),
        "world/topics": float(len(TOPICS)),
        "world/harm_categories": float(len(HARMS)),
        "world/prompt_strings": float(len(train_pool) + len(heldout_pool)),
        "world/vocabulary_words": float(len(VOCABULARY)),
    }
    # a split without harmful (or benign) prompts has no safety (or helpfulness) mean: leave it out
    # rather than write NaN into metrics/data.json
    metrics = {k: v for k, v in metrics.items() if not math.isnan(v)}
    summary = paths.data / "summary.md"
    write_text(summary, summary_markdown(metrics, splits))
    return StageOutput(metrics=metrics, inputs={}, reports=[summary],
                       tables={"pref_heldout_sample.json": splits["pref_heldout"][:20]})


# --- source: files ---
def check_formats(cfg: DataConfig) -> None:
    """Every forced format is one of its kind's (a ConfigError naming the key)."""
    for key, kind, spec in entries(cfg):
        if spec.format != "auto" and spec.format not in FORMATS[kind]:
            raise ConfigError(f"data.files.{key}.format: unknown {kind} format {spec.format!r}; "
                              f"expected auto or one of {', '.join(FORMATS[kind])}")


def entries(cfg: DataConfig) -> list[tuple[str, str, FileSpec]]:
    """(params key under data.files, dataset kind, spec) of every configured file."""
    files = cfg.files
    out = [(name, kind, spec) for name, kind, spec in (
        ("preference", "preference", files.preference), ("sft", "sft", files.sft),
        ("rl_prompts", "prompts", files.rl_prompts)) if spec is not None]
    return out + [(f"eval_prompts.{s.name}", "prompts", s) for s in files.eval_prompts]


def run_files(cfg: DataConfig, paths: Paths) -> StageOutput:
    check_formats(cfg)
    # 1. read every configured file (a relative path is read from the folder the stage runs in)
    sources = {key: read_source(paths.root / spec.path, kind, key, paths.state / "datasets", spec.format,
                                spec.max_rows)
               for key, kind, spec in entries(cfg)}

    # 2. split by prompt; derive what was not given
    def rows(key: str) -> list[dict[str, Any]] | None:
        return sources[key].rows if key in sources else None

    eval_sets = {s.name: sources[f"eval_prompts.{s.name}"].rows for s in cfg.files.eval_prompts}
    splits = build_splits(rows("preference"), rows("sft"), rows("rl_prompts"), eval_sets,
                          cfg.heldout_fraction, cfg.seed)

    # 3. check, write, report
    frames = {name: frame_of(r, range(1, len(r) + 1)) for name, r in splits.datasets.items()}
    overlap = overlap_report({n: frames[n] for n in TRAIN}, {n: frames[n] for n in HELDOUT})
    if not overlap.ok:  # the split is built to prevent it: a bug, not a data problem
        raise AssertionError(overlap.summary())
    for name, data in splits.datasets.items():
        write_jsonl(getattr(paths, name), data)
    metrics = files_metrics(sources, splits)
    table = [{"entry": s.entry, "file": file, "format": fmt} for s in sources.values() for file, fmt in s.formats.items()]
    reports = [paths.data / "summary.md", paths.data / "sources.json"]
    write_text(reports[0], files_summary(metrics, sources, splits))
    write_json(reports[1], table)
    inputs = {f"{s.entry}/{Path(file).name}": Path(file) for s in sources.values() for file in s.formats}
    return StageOutput(metrics=metrics, inputs=inputs, reports=reports,
                       tables={"sources.json": table, "pref_heldout_sample.json": splits.datasets["pref_heldout"][:20]})


TRAIN = ("sft_train", "pref_train", "rl_prompts")
HELDOUT = ("sft_heldout", "pref_heldout", "eval_prompts")


def files_metrics(sources: dict[str, Source], splits: Splits) -> dict[str, float]:
    def read(key: str) -> float:
        return float(sum(s.n_read for k, s in sources.items() if k == key or k.startswith(key + ".")))

    metrics = {f"rows/{name}": float(len(r)) for name, r in splits.datasets.items()}
    metrics |= {f"data/rows_read/{key}": read(key) for key in ("sft", "preference", "rl_prompts", "eval_prompts")}
    metrics |= {
        "data/heldout_prompt_share": splits.heldout_share,
        "data/prompt_overlap": 0.0,
        "data/dropped/duplicates": float(sum(s.duplicates for s in sources.values())),
        **{f"data/dropped/{k}": float(v) for k, v in splits.dropped.items()},
        "data/warnings": float(sum(len(s.warnings) for s in sources.values())),
    }
    return metrics


def files_summary(metrics: dict[str, float], sources: dict[str, Source], splits: Splits) -> str:
    lines = ["# User datasets", "", "| entry | file | format | rows read | duplicates dropped |",
             "| --- | --- | --- | ---: | ---: |"]
    for s in sources.values():
        for file, fmt in s.formats.items():
            lines.append(f"| {s.entry} | {file} | {fmt} | {s.n_read} | {s.duplicates} |")
    lines += ["", "| metric | value |", "| --- | --- |", *(f"| {k} | {v:.4g} |" for k, v in metrics.items())]
    warnings = [w for s in sources.values() for w in s.warnings]
    if warnings:
        lines += ["", f"## Warnings ({len(warnings)})", "", *(f"- {w}" for w in warnings[:10])]
    pair = splits.datasets["pref_heldout"][0]
    lines += ["", "## An example preference pair (held-out)", "", f"- prompt: {pair['prompt']!r:.500}",
              f"- chosen: {pair['chosen']!r:.500}", f"- rejected: {pair['rejected']!r:.500}", ""]
    return "\n".join(lines)
