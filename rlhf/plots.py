"""Figures of a stage's results, as PNG files (matplotlib, no display needed).

- `training_curves(history, path)`: loss, reward, KL, clip fraction and accuracy against the step,
  one panel per group that the history holds.
- `evaluation_bars(metrics, path)`: for each judge's figure (a metric with `_low`/`_high`
  siblings: its 95% bootstrap interval), one bar per policy with its interval.
- `reward_vs_kl(metrics, path)`: each policy's proxy reward against its KL to the reference, with
  both intervals: what the reward was bought with.
Each returns the path written, or None when the data hold nothing to draw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhf.files import atomic_file

# (panel title, which history keys it draws)
CURVE_GROUPS: list[tuple[str, Callable[[str], bool]]] = [
    ("loss", lambda k: k.startswith("loss/")),
    ("reward", lambda k: k in ("objective/scores", "objective/rlhf_reward") or k.startswith("rewards/margins")),
    ("KL", lambda k: k in ("objective/kl", "policy/approxkl")),
    ("clip fraction", lambda k: k.endswith("clipfrac")),
    ("accuracy", lambda k: k.startswith("rewards/accuracies")),
]


def _figure(panels: int, width: float = 4.2, height: float = 3.2, columns: int = 5):
    """A grid of `panels` axes (at most `columns` a row), the unused ones hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(panels, columns)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.set_visible(False)
    return plt, fig, flat[:panels]


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def training_curves(history: Sequence[Mapping[str, float]], path: str | Path, title: str = "") -> Path | None:
    keys = sorted({k for row in history for k in row if k != "step"})
    groups = [(name, [k for k in keys if pick(k)]) for name, pick in CURVE_GROUPS]
    groups = [(name, ks) for name, ks in groups if ks]
    if not history or not groups:
        return None
    plt, fig, axes = _figure(len(groups))
    for ax, (name, ks) in zip(axes, groups):
        for key in ks:
            points = [(row["step"], row[key]) for row in history if key in row]
            ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=key)
        ax.set_title(f"{title} {name}".strip())
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(plt, fig, Path(path))


def _judged(metrics: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Names with an interval (`<name>_low`, `<name>_high`) in some policy's metrics."""
    names = {k for values in metrics.values() for k in values
             if f"{k}_low" in values and f"{k}_high" in values}
    return sorted(names)


def evaluation_bars(metrics: Mapping[str, Mapping[str, float]], path: str | Path) -> Path | None:
    policies = sorted((p for p, values in metrics.items() if isinstance(values, Mapping)), key=lambda p: p != "sft")
    names = _judged({p: metrics[p] for p in policies})
    if not names:
        return None
    plt, fig, axes = _figure(len(names), width=2.6 + 0.45 * len(policies), columns=4)
    for ax, name in zip(axes, names):
        shown = [p for p in policies if name in metrics[p]]
        means = [metrics[p][name] for p in shown]
        errors = [[m - metrics[p][f"{name}_low"] for p, m in zip(shown, means)],
                  [metrics[p][f"{name}_high"] - m for p, m in zip(shown, means)]]
        ax.bar(shown, means, yerr=errors, capsize=3, color="#4c72b0")
        ax.set_title(name.removeprefix("eval/"), fontsize=9)
        ax.tick_params(axis="x", labelsize=8, rotation=45)
        ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, Path(path))


def reward_vs_kl(metrics: Mapping[str, Mapping[str, float]], path: str | Path, reward: str = "eval/proxy/rm_score",
                 kl: str = "eval/kl_to_ref") -> Path | None:
    shown = [p for p, values in metrics.items() if isinstance(values, Mapping) and reward in values and kl in values]
    if not shown:
        return None
    plt, fig, (ax,) = _figure(1, width=5.0, height=4.0)
    for policy in shown:
        v = metrics[policy]
        xerr = [[v[kl] - v.get(f"{kl}_low", v[kl])], [v.get(f"{kl}_high", v[kl]) - v[kl]]]
        yerr = [[v[reward] - v.get(f"{reward}_low", v[reward])], [v.get(f"{reward}_high", v[reward]) - v[reward]]]
        ax.errorbar([v[kl]], [v[reward]], xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=policy)
        ax.annotate(policy, (v[kl], v[reward]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"{kl} (nats)")
    ax.set_ylabel(reward)
    ax.set_title("reward against KL to the reference")
    ax.grid(alpha=0.3)
    return _save(plt, fig, Path(path))


def stage_figures(stage: str, history: Sequence[Mapping[str, float]], metrics: Mapping[str, Any],
                  folder: str | Path) -> list[Path]:
    """Every figure for a stage's result, written into `folder`."""
    folder = Path(folder)
    made = [training_curves(history, folder / f"{stage}_curves.png", stage)]
    if stage == "evaluate":
        made += [evaluation_bars(metrics, folder / "evaluation_bars.png"),
                 reward_vs_kl(metrics, folder / "reward_vs_kl.png")]
    return [p for p in made if p is not None]
