"""Every file of `rlhf/` that a stage's command imports is a dep of that stage in dvc.yaml, so that
editing it makes DVC rerun the stage; and no code dep is listed that the stage does not import.

What a stage imports: `rlhf <stage>` (flows/cli.py) builds its config with `rlhf.config.load_config`
and runs `tasks.stages.compute`, which calls `STAGES[stage].run` (then `STAGES[stage].after`, where
the stage has one) with a `Paths` and returns a `StageOutput`. The two tables, `rlhf.config.SECTIONS`
and `tasks.stages.STAGES`, name every stage's config and code, but a stage's command uses only its
own entries, so the walk starts from those modules (and what `compute` itself uses) and does not
follow the tables' other entries. From there it follows every `import` / `from ... import`
statement in `rlhf/`, including those inside functions (the library imports heavy or rarely used
modules lazily), plus the `__init__.py` of every package on the way, since Python runs it. Code in
`tasks/` and `flows/` is not required: it is orchestration (Prefect runs, MLflow logging) that
does not change what a stage writes, and listing it would rerun every stage after a change to
logging.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from rlhf.config import SECTIONS
from tasks.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "rlhf"


def module_file(module: str) -> Path | None:
    """The file of a project module (`rlhf.train` -> rlhf/train/__init__.py), or None."""
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the project modules `path` imports, at any depth of its code."""
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from .x import y` in package p -> p.x
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
    return {m for m in found if m.split(".")[0] == PACKAGE and module_file(m) is not None}


def with_parents(module: str) -> list[str]:
    """`rlhf.losses.sft` -> the modules Python runs to import it: rlhf, rlhf.losses, rlhf.losses.sft."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _own_modules(stage: str) -> set[str]:
    entry = STAGES[stage]
    configs = {SECTIONS[section].__module__ for section in (stage, *entry.reads)}
    return configs | {entry.run.__module__} | ({entry.after.__module__} if entry.after else set())


# the modules the two tables import for all stages; a stage follows only its own
TABLE_ENTRIES = set().union(*(_own_modules(s) for s in STAGES))


def stage_roots(stage: str) -> list[str]:
    """The project modules the command of `stage` imports directly: its own table entries, and
    what `compute` itself uses."""
    stages_py = ROOT / "tasks" / "stages.py"
    return sorted((imported_modules(stages_py) - TABLE_ENTRIES) | {"rlhf.config"} | _own_modules(stage))


def imported_files(stage: str) -> set[str]:
    """Every file under rlhf/ that running `stage` imports, relative to the repository root."""
    own = _own_modules(stage)
    seen: set[str] = set()
    todo = list(stage_roots(stage))
    while todo:
        for module in with_parents(todo.pop()):
            if module in seen:
                continue
            seen.add(module)
            todo.extend(m for m in imported_modules(module_file(module)) if m not in TABLE_ENTRIES or m in own)
    return {module_file(m).relative_to(ROOT).as_posix() for m in seen}


def _covers(dep: str, file: str) -> bool:
    dep = dep.rstrip("/")
    return file == dep or file.startswith(dep + "/")


def _code_deps(spec: dict) -> list[str]:
    return [str(d).rstrip("/") for d in spec.get("deps", []) if _covers(PACKAGE, str(d))]


def uncovered(stages: dict[str, dict]) -> list[str]:
    """One line per (stage, imported file) that no dep of the stage covers."""
    return [
        f"stage '{name}' imports {file}, which none of its deps covers"
        for name, spec in stages.items()
        for file in sorted(imported_files(name))
        if not any(_covers(dep, file) for dep in spec.get("deps", []))
    ]


def loose(stages: dict[str, dict]) -> list[str]:
    """Code deps that are wider than what the stage imports: a file it does not import, or a folder
    holding a Python file it does not import (list the files instead)."""
    problems = []
    for name, spec in stages.items():
        files = imported_files(name)
        for dep in _code_deps(spec):
            path = ROOT / dep
            inside = sorted(p.relative_to(ROOT).as_posix() for p in path.rglob("*.py")) if path.is_dir() else [dep]
            for file in inside:
                if file not in files:
                    problems.append(f"stage '{name}' lists {dep}, but does not import {file}")
    return problems


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_every_imported_project_file_is_a_dep():
    problems = uncovered(_stages())
    assert not problems, "dvc.yaml:\n" + "\n".join(problems)


def test_code_deps_are_only_what_the_stage_imports():
    problems = loose(_stages())
    assert not problems, "dvc.yaml:\n" + "\n".join(problems)


def test_the_walk_follows_imports_inside_functions_and_package_inits():
    sft = imported_files("sft")
    assert "rlhf/ops.py" in sft  # rlhf/stages/sft.py -> rlhf.losses.sft -> rlhf.ops
    assert "rlhf/world/judge.py" in sft  # imported inside a function of rlhf/stages/sft_samples.py (STAGES["sft"].after)
    assert {"rlhf/__init__.py", "rlhf/losses/__init__.py", "rlhf/train/__init__.py"} <= sft
    assert {"rlhf/config/base.py", "rlhf/config/sft.py", "rlhf/paths.py", "rlhf/stage.py"} <= sft
    assert "rlhf/config/ppo.py" not in sft  # only the stage's own config section is imported
    assert "rlhf/train/toy.py" not in sft  # a test helper, not part of any stage


def test_a_missing_dep_is_reported_with_stage_and_file():
    stages = {"sft": {"deps": ["rlhf"]}}
    assert uncovered(stages) == []
    stages["sft"]["deps"] = [f for f in sorted(imported_files("sft")) if f != "rlhf/ops.py"]
    assert uncovered(stages) == ["stage 'sft' imports rlhf/ops.py, which none of its deps covers"]
    assert any("lists rlhf, but does not import rlhf/train/toy.py" in p for p in loose({"sft": {"deps": ["rlhf"]}}))


PROFILES = sorted((ROOT / "profiles").glob("*/dvc.yaml"))


def _profile_stages(path: Path) -> dict[str, dict]:
    """A profile's pipeline stages with their code deps as paths from the repository root."""
    stages = yaml.safe_load(path.read_text(encoding="utf-8"))["stages"]
    prefix = path.parent.relative_to(ROOT)
    out = {}
    for name, spec in stages.items():
        deps = [(path.parent / str(d)).resolve().relative_to(ROOT.resolve()).as_posix()
                if str(d).startswith("..") else f"{prefix}/{d}" for d in spec.get("deps", [])]
        out[name] = {**spec, "deps": deps}
    return out


def test_profiles_exist():
    assert PROFILES, "profiles/real/dvc.yaml is missing"


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.parent.name)
def test_a_profiles_code_deps_are_exactly_what_its_stages_import(path):
    """The same check for each profile's dvc.yaml (stage commands run from the profile's folder, so
    its code deps are ../../rlhf/...); a stage outside the stage table (importing models) lists
    the module its command runs."""
    stages = _profile_stages(path)
    table = {n: s for n, s in stages.items() if n in STAGES}
    problems = uncovered(table) + loose(table)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)
    for name in set(stages) - set(table):
        assert stages[name]["cmd"].startswith("rlhf import-model"), name
        assert _code_deps(stages[name]) == ["rlhf/model_import.py"]


def test_the_gpu_profile_runs_the_same_stages_as_the_cpu_one():
    """profiles/real-gpu differs from profiles/real only in its params (sizes), not in its stages."""
    real, gpu = (yaml.safe_load((ROOT / "profiles" / p / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
                 for p in ("real", "real-gpu"))
    assert gpu == real
