"""The package's layout: one folder per part, imports running one way, no circles, and no part
reaching into another part's private names (README, "Layout").

The import rules are import-linter contracts in pyproject.toml; these tests run them on the
package as it is, show that they break on a copy with an upward import or a circle, and check
that every part folder is under them.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "orchestrator"
PYPROJECT = ROOT / "pyproject.toml"


def lint_imports(cwd: Path, package_parent: Path) -> subprocess.CompletedProcess:
    """import-linter with the project's contracts, on the `orchestrator` found in `package_parent`."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(PYPROJECT)!r}, no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def contracts() -> list[dict]:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]


def parts() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())


def test_the_package_keeps_its_import_contracts(tmp_path):
    done = lint_imports(tmp_path, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(contracts())} kept, 0 broken" in done.stdout


def test_every_part_folder_is_in_both_contracts_and_says_what_it_may_import():
    layers, acyclic = contracts()[:2]
    layered = sorted(name.strip().removeprefix("orchestrator.") for row in layers["layers"] for name in row.split("|"))
    assert layered == parts()
    assert sorted(a.removeprefix("orchestrator.") for a in acyclic["ancestors"]) == parts()
    for part in parts():
        doc = ast.get_docstring(ast.parse((PACKAGE / part / "__init__.py").read_text()))
        assert doc and ("import" in doc.lower()), f"orchestrator/{part}/__init__.py must say what it may import"


def _copy_with(tmp_path: Path, module: str, extra: str) -> Path:
    """A copy of the package with `extra` appended to one module (a relative path)."""
    parent = tmp_path / "copy"
    shutil.copytree(PACKAGE, parent / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
    target = parent / "orchestrator" / module
    target.write_text(target.read_text() + "\n" + extra + "\n")
    return parent


@pytest.mark.parametrize(("module", "extra", "broken"), [
    ("queue/sqlite/store.py", "from orchestrator.cli import orch  # noqa", "imports run one way"),
    ("judge/rules.py", "from orchestrator.queue.writes import Queue  # noqa", "the judge reads only the JSONL"),
    ("handlers/synthetic.py", "from orchestrator.faults import client  # noqa", "a handler sees only the core"),
    ("soak/pool.py", "from orchestrator.cli.orch import orch  # noqa", "imports run one way"),
    ("web/pages.py", "from orchestrator.soak import control  # noqa", "imports run one way"),
    ("soak/progress.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from orchestrator.soak.supervisor import Supervisor  # noqa", "no import circles"),
    ("drills/base.py", "from orchestrator.drills import operator  # noqa", "no import circles"),
])
def test_the_contracts_break_on_an_upward_import_or_a_circle(tmp_path, module, extra, broken):
    parent = _copy_with(tmp_path, module, extra)
    done = lint_imports(tmp_path, parent)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout


def _part_of(module: str) -> str:
    parts_ = module.split(".")
    return parts_[1] if len(parts_) > 2 else ""


def private_reaches(package: Path) -> list[str]:
    """Places where a module uses a private name (`_x`) of a module of another part: imported by
    name, or read as an attribute of an imported module."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        here = ".".join(rel.parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(), filename=str(path))
        modules: dict[str, str] = {}  # local name -> module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("orchestrator"):
                for alias in node.names:
                    if alias.name.startswith("_") and _part_of(node.module) != _part_of(here):
                        found.append(f"{here}: imports {alias.name} from {node.module}")
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("orchestrator") and alias.asname:
                        modules[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in modules
                    and _part_of(modules[node.value.id]) != _part_of(here)):
                found.append(f"{here}: reads {node.value.id}.{node.attr} of {modules[node.value.id]}")
    return found


def test_no_part_reaches_into_another_parts_private_names():
    assert private_reaches(PACKAGE) == []


def test_the_private_name_check_finds_a_reach(tmp_path):
    parent = _copy_with(tmp_path, "web/pages.py",
                        "from orchestrator.soak.pool import _main_module  # noqa\n"
                        "from orchestrator.judge import figures\nfigures._rate(1, 2)")
    assert private_reaches(parent / "orchestrator") == [
        "orchestrator.web.pages: imports _main_module from orchestrator.soak.pool",
        "orchestrator.web.pages: reads figures._rate of orchestrator.judge.figures",
    ]


# The storage seam (orchestrator/queue/backend.py): only the backend packages talk to a database
# driver. The synthetic downstream's ledger is a handler's own store (a SQLite file, or its own table on
# the queue's PostgreSQL server), not the queue.
BACKENDS = ("orchestrator/queue/sqlite/", "orchestrator/queue/postgres/")
OWN_STORES = {"orchestrator/handlers/ledger.py"}
DRIVERS = {"sqlite3", "sqlite_utils", "psycopg", "psycopg_pool"}
SQL_CALLS = {"execute", "executemany", "executescript", "iterdump"}
SQL_TEXT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK|EXPLAIN)\s")


def sql_reaches(package: Path) -> list[str]:
    """Places outside the backends that import a database driver, call a DB-API statement method
    or hold SQL text."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).as_posix()
        if rel.startswith(BACKENDS) or rel in OWN_STORES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found += [f"{rel}: imports {a.name}" for a in node.names if a.name.split(".")[0] in DRIVERS]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in DRIVERS:
                found.append(f"{rel}: imports from {node.module}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
                found.append(f"{rel}:{node.lineno}: calls .{node.func.attr}()")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_TEXT.match(node.value):
                found.append(f"{rel}:{node.lineno}: SQL text {node.value.split()[0]}")
    return found


def test_only_the_backends_import_a_driver_or_execute_sql():
    assert sql_reaches(PACKAGE) == []


def test_the_sql_check_finds_a_reach(tmp_path):
    parent = _copy_with(tmp_path, "web/diagnose.py",
                        "import sqlite3\n"
                        "def leak(queue):\n    return queue.store.conn.execute('SELECT 1')")
    line = len((PACKAGE / "web" / "diagnose.py").read_text().splitlines()) + 4  # the appended `return`
    assert sql_reaches(parent / "orchestrator") == [
        "orchestrator/web/diagnose.py: imports sqlite3",
        f"orchestrator/web/diagnose.py:{line}: calls .execute()",
        f"orchestrator/web/diagnose.py:{line}: SQL text SELECT",
    ]
