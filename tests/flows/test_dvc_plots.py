"""`dvc plots show` renders offline: the curves a training stage writes to plots/<stage>.json,
drawn by dvc.yaml's plot definitions into a page whose vega is inlined from the npm registry
(`rlhf plots-template`), with no script loaded from the network."""

import json
import re
import subprocess
import sys

import pytest

from tests.flows.test_dvc import _clone

pytestmark = pytest.mark.slow


def test_dvc_plots_show_renders_the_curves_without_network(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    _clone(clone)
    history = {
        "sft": [{"step": s, "loss/sft": 3.0 / s} for s in (1, 2, 3)],
        "reward": [{"step": s, "loss/reward": 0.7 / s, "rewards/accuracies": 0.5 + 0.1 * s} for s in (1, 2)],
        "ppo": [{"step": s, "objective/scores": 0.1 * s, "objective/kl": 0.01 * s, "policy/clipfrac": 0.02} for s in (1, 2)],
        "dpo": [{"step": s, "loss/dpo": 0.69 - 0.01 * s, "rewards/accuracies": 0.6, "rewards/margins": 0.1 * s}
                for s in (1, 2)],
    }
    (clone / "plots").mkdir(exist_ok=True)  # the repository ships the root pipeline's curves
    for stage, rows in history.items():
        (clone / "plots" / f"{stage}.json").write_text(json.dumps(rows))
    made = subprocess.run([sys.executable, "-m", "flows.cli", "plots-template"], cwd=clone, capture_output=True,
                          text=True, env={"PYTHONPATH": str(clone), "PATH": "/usr/bin:/bin"})
    assert made.returncode == 0, made.stderr
    shown = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--out", "page"], cwd=clone,
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    page = (clone / "page" / "index.html").read_text()
    assert not re.search(r"<script[^>]+src=", page)  # nothing fetched: vega, vega-lite and vega-embed are inline
    assert "vegaEmbed(" in page and page.count("var spec =") >= 4  # the root dvc.yaml's four, and the profiles'
    for name in ("loss/sft", "rewards/accuracies", "objective/kl", "rewards/margins"):
        assert name in page
