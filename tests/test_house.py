"""House rules checked on every change: short functions, short modules, run-layout names in one place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import xinstruct

PACKAGE = Path(xinstruct.__file__).parent
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 420


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_is_over_60_lines_unless_its_docstring_says_why():
    """A function over 60 lines (decorators excluded, docstring included) must say in its docstring why it is long
    ("Long because ...")."""
    long = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted(PACKAGE.rglob("*.py")) for node in _functions(path)
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
            and "long because" not in (ast.get_docstring(node) or "").lower()]
    assert long == []


def test_no_module_is_over_the_size_limit():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_iteration_folder_names_are_spelled_only_in_rundir():
    """``iter-k`` (an iteration's folder, branch and dataset config) is written in one place:
    :func:`xinstruct.rundir.iteration_name`."""
    spelled = [f"{p.relative_to(PACKAGE)}:{n}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "rundir.py"
               for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
               if re.search(r"""f["']iter-\{""", line)]
    assert spelled == []
