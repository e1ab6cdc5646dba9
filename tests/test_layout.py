"""The source tree as the architecture promises it: stages as packages, no import cycles, lint clean, one façade."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import relmail

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "relmail"


def _module_name(path: Path, package: Path = PACKAGE) -> tuple[str, bool]:
    parts = path.relative_to(package.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """relmail module → the relmail modules it imports: at module level, inside functions and for annotations alike.

    Counted as ``../shared/tools/import_cycles.py`` counts them: an import made
    only for annotations still ties the two modules together.
    """
    modules = {_module_name(p, package)[0]: p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        base = name if is_package else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = base.split(".")
                    anchor = ".".join(parts[: len(parts) - node.level + 1])
                    module = f"{anchor}.{node.module}" if node.module else anchor
                else:
                    module = node.module or ""
                targets = [module, *(f"{module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # A package and its own submodules (a lazy re-export) are one unit, not a cycle.
                if target and target != name and not (target.startswith(name + ".") or name.startswith(target + ".")):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_relmail_module_imports_another_in_a_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import():
    graph = {"relmail.a": {"relmail.b"}, "relmail.b": {"relmail.c"}, "relmail.c": {"relmail.a"}, "relmail.d": set()}
    assert cycles(graph) == [["relmail.a", "relmail.b", "relmail.c"]]


@pytest.mark.parametrize("guard", ["if TYPE_CHECKING:\n    from .a import A\n", "def f():\n    from .a import A\n"])
def test_imports_for_annotations_and_inside_functions_count_as_a_cycle(tmp_path, guard):
    package = tmp_path / "relmail"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import B\n\nA = B\n")
    (package / "b.py").write_text(f"from typing import TYPE_CHECKING\n\nB = 1\n{guard}")
    assert cycles(import_graph(package)) == [["relmail.a", "relmail.b"]]


def test_the_pipeline_stages_are_packages_and_few_modules_stay_at_the_top():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert {"store", "features", "score", "rules", "planning", "render", "delivery", "sending", "feedback"} <= packages
    top_modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(top_modules) <= 6, top_modules


def test_the_facade_exports_the_public_api():
    for name in relmail.__all__:
        assert getattr(relmail, name) is not None, name
    assert relmail.plan.__module__ == "relmail.planning.run"
    assert relmail.send.__module__ == "relmail.sending.run"
    assert issubclass(relmail.ConfigError, relmail.RelmailError)


def test_importing_relmail_does_not_import_the_pipeline():
    code = "import sys, relmail; print(sorted(m for m in sys.modules if m.startswith(('relmail.', 'numpy', 'sqlalchemy'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff is part of the test extra")
def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    done = subprocess.run([ruff, "check", "src", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_plan_without_trained_models_never_imports_scikit_learn(tmp_path):
    # scikit-learn costs seconds and about 100 MB per process: a project
    # without models (the common case) must not pay it in its weekly plan.
    code = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from relmail.demo import MIN_CUSTOMERS, generate\n"
        "from relmail.planning.run import plan\n"
        "from relmail.project import init_project\n"
        "from relmail.store.db import make_engine, upgrade\n"
        f"p = init_project({str(tmp_path / 'shop')!r})\n"
        "e = make_engine(p.database_url)\n"
        "upgrade(e)\n"
        "generate(e, customers=max(300, MIN_CUSTOMERS), seed=3, as_of=datetime(2026, 11, 23, 9, tzinfo=UTC))\n"
        "r = plan(p, e, 'weekly', '2026-W48', dry_run=True, workers=1)\n"
        "print(sum(m.send for m in r.messages) > 0, 'sklearn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]
