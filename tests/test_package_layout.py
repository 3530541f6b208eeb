"""The folder layout is the architecture: no module imports itself back
through others, and the stage wiring knows no task kind by name."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("preprocess", "predictor", "submit", "scripts")
TOP_MODULES = ("pipeline", "worker_processes")


def project_modules() -> dict[str, Path]:
    modules = {name: REPO / f"{name}.py" for name in TOP_MODULES}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `path` imports anywhere in it (inside functions too):
    `from a.b import c` counts as a.b.c when that is a module, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
    return {name for name in found if name in modules}


def test_no_module_imports_itself_through_others():
    modules = project_modules()
    graph = {name: imported_modules(path, modules) - {name} for name, path in modules.items()}
    cycles, done = [], set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, path + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


def test_the_stage_wiring_names_no_task_kind():
    from predictor.tasks import TASK_KINDS

    kinds = set(TASK_KINDS) | {kind.__name__ for kind in TASK_KINDS.values()}
    tree = ast.parse((REPO / "pipeline.py").read_text(encoding="utf-8"))
    named = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            named.add(node.id)
        elif isinstance(node, ast.Attribute):
            named.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module:
            named |= set(node.module.split(".")) | {alias.name for alias in node.names}
        elif isinstance(node, ast.Compare):  # task == "generate" and the like
            named |= {c.value for c in node.comparators if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    assert kinds.isdisjoint(named), kinds & named
