"""The stage order, read from `dvc.yaml`: the one place where the pipeline's DAG is declared.

Stage B depends on stage A when one of B's `deps` is one of A's `outs` (or lies inside it). The
order is a topological sort that keeps `dvc.yaml`'s declaration order among independent stages.
"""

from __future__ import annotations

import os
from collections.abc import Collection
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


def upstream_inputs(stages: dict[str, dict], name: str) -> list[tuple[str, str]]:
    """(dep, the stage that writes it) for each of `name`'s deps that another stage outputs."""
    found = []
    for dep in stages[name].get("deps", []):
        for other, spec in stages.items():
            outs = [_out_path(o) for key in ("outs", "metrics") for o in spec.get(key, [])]
            if other != name and any(_inside(str(dep), out) for out in outs):
                found.append((str(dep), other))
    return found


def tracked_inputs(stages: dict[str, dict], name: str, folder: Path = Path(".")) -> list[str]:
    """The `.dvc` files under `folder` (the project of `stages`) that track one of `name`'s deps: inputs
    no stage writes, versioned with `dvc add` (a profile's raw datasets), which a worker pulls."""
    deps = [str(d) for d in stages[name].get("deps", [])]
    made = {_out_path(o).split("/")[0] for spec in stages.values() for key in ("outs", "metrics", "plots")
            for o in spec.get(key, [])}  # stage outputs hold no .dvc files: not walked
    files = []
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")) and not (Path(top) == folder and d in made))
        files += [Path(top) / n for n in sorted(names) if n.endswith(".dvc")]
    found = []
    for dvc_file in files:
        base = dvc_file.parent.relative_to(folder)
        outs = [(base / o["path"]).as_posix() for o in (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("outs", [])
                if isinstance(o, dict) and "path" in o]
        if any(_inside(dep, out) for dep in deps for out in outs):
            found.append(dvc_file.relative_to(folder).as_posix())
    return found


def dependencies(stages: dict[str, dict]) -> dict[str, set[str]]:
    """stage -> the stages whose outputs it reads."""
    return {name: {other for _, other in upstream_inputs(stages, name)} for name in stages}


def check_inputs(stage: str, root: Path = Path("."), makers: Collection[str] | None = None) -> None:
    """Every input of `stage` that another stage writes (one of `makers`, if given) must exist (a
    UserError naming the stage to run otherwise), so a missing upstream output is one clear
    message, not a loader's traceback."""
    from rlhf.errors import require_input

    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.is_file():
        return
    stages = read_stages(dvc_yaml)
    for dep, made_by in upstream_inputs(stages, stage) if stage in stages else []:
        if makers is None or made_by in makers:
            require_input(root / dep, stage, made_by)


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
