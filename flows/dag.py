"""The stage order, read from `dvc.yaml`: the one place where the pipeline's DAG is declared.

Stage B depends on stage A when one of B's `deps` is one of A's `outs` (or lies inside it). The
order is a topological sort that keeps `dvc.yaml`'s declaration order among independent stages.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def _out_path(out) -> str:
    return next(iter(out)) if isinstance(out, dict) else str(out)


def _inside(dep: str, out: str) -> bool:
    dep, out = dep.rstrip("/"), out.rstrip("/")
    return dep == out or dep.startswith(out + "/")


def read_stages(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, dict]:
    data = yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8"))
    return data["stages"]


def dependencies(stages: dict[str, dict]) -> dict[str, set[str]]:
    """stage -> the stages whose outputs it reads."""
    produced = {
        name: [_out_path(o) for key in ("outs", "metrics") for o in spec.get(key, [])]
        for name, spec in stages.items()
    }
    needs: dict[str, set[str]] = {name: set() for name in stages}
    for name, spec in stages.items():
        for dep in spec.get("deps", []):
            for other, outs in produced.items():
                if other != name and any(_inside(str(dep), out) for out in outs):
                    needs[name].add(other)
    return needs


def stage_order(dvc_yaml: str | Path = "dvc.yaml") -> list[str]:
    stages = read_stages(dvc_yaml)
    needs = dependencies(stages)
    order: list[str] = []
    while len(order) < len(stages):
        ready = [s for s in stages if s not in order and needs[s] <= set(order)]
        if not ready:
            raise ValueError(f"{dvc_yaml}: the stages form a cycle: {sorted(set(stages) - set(order))}")
        order.append(ready[0])
    return order
