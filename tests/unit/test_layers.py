"""The layering of docs/architecture.md, checked on every import statement (inside functions too):
stages sit on top, the building blocks below never import them, configs import only configs, and
the library never imports the orchestration (Prefect, MLflow, DVC, tasks, flows)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY_FILES = sorted((ROOT / "rlhf").rglob("*.py"))


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=rel)
def test_the_library_never_imports_orchestration(path):
    bad = {m for m in imports(path) if m.split(".")[0] in ("prefect", "mlflow", "dvc", "tasks", "flows")}
    assert not bad, f"{rel(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", [p for p in LIBRARY_FILES if "stages" not in p.parts], ids=rel)
def test_building_blocks_never_import_a_stage(path):
    bad = {m for m in imports(path) if m == "rlhf.stages" or m.startswith("rlhf.stages.")}
    assert not bad, f"{rel(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((ROOT / "rlhf" / "config").glob("*.py")), ids=rel)
def test_configs_import_only_configs(path):
    # and rlhf.errors, the leaf module of the user-facing error class (it imports nothing of rlhf)
    bad = {m for m in imports(path) if m.startswith("rlhf.") and not m.startswith("rlhf.config") and m != "rlhf.errors"}
    assert not bad, f"{rel(path)} imports {sorted(bad)}"
