"""The package's imports point down, and reading a recipe stays light.

Layers, each importing only the ones below it: ``errors``, ``languages``, ``hardware`` and ``schema`` (recipe-block
helpers); the engine interface and registry (``inference.base``); engine configs (``inference.local_config``,
``inference.endpoint_config``); engines (``inference.local``, ``pool``, ``endpoint``...); ``inference``; the recipe
(``config``) and its loader (``config_loader``); then the stages, the pipeline and the CLI.

The circle test reads every module of ``src/xinstruct`` with :mod:`ast` (nothing is imported) and counts its
module-level imports: the ones that run when the module is imported, including those in class bodies and in
module-level ``if``/``try`` blocks. It does not count imports inside functions (they run when the function is called,
after every module has finished importing) nor those under ``if TYPE_CHECKING:`` (they never run). Importing ``a.b.c``
also imports the packages ``a.b`` and ``a``, so those count too, except the importer's own packages, which are already
importing; an explicit ``from . import name`` of a name defined in the package still counts as importing the package.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import xinstruct

PACKAGE = Path(xinstruct.__file__).parent
ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "peft", "datasets")


def package_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (see the module docstring)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(nodes: list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            else:  # class bodies, if / try / with / for blocks, except handlers, match cases
                visit([child for child in ast.iter_child_nodes(node)
                       if isinstance(child, ast.stmt | ast.ExceptHandler | ast.match_case)])

    visit(tree.body)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules its module-level imports load (see the module docstring)."""

    def with_packages(name: str, importer: str) -> set[str]:
        out, parent = {name}, name.rpartition(".")[0]
        while parent:
            if not (importer == parent or importer.startswith(parent + ".")):
                out.add(parent)
            parent = parent.rpartition(".")[0]
        return out

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
                names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                         for alias in node.names]
            else:
                names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                         for alias in node.names]
            for name in names:
                while name and name not in modules:  # ``import a.b.x`` where x is a name, not a module
                    name = name.rpartition(".")[0]
                if name:
                    targets |= with_packages(name, module)
        targets.discard(module)
        graph[module] = targets
    return graph


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules, as a path ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    circles = []
    for group in groups:  # a shortest way from the group's first module back to it
        start, members = group[0], set(group)
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            nxt = sorted(graph[path[-1]] & members)
            if start in nxt:
                circles.append([*path, start])
                break
            for node in nxt:
                if node not in seen:
                    seen.add(node)
                    paths.append([*path, node])
    return circles


def test_the_circle_finder_names_a_circle():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a", "p.d"}, "p.d": set()}
    assert find_circles(graph) == [["p.a", "p.b", "p.c", "p.a"]]
    assert find_circles({"p.a": {"p.b"}, "p.b": set()}) == []


def test_the_graph_sees_relative_imports_and_skips_deferred_ones():
    tree = ast.parse(textwrap.dedent("""
        from typing import TYPE_CHECKING
        from .errors import RecipeError
        if TYPE_CHECKING:
            from .config import Recipe
        try:
            import yaml
        except ImportError:
            from . import languages
        def later():
            from .pipeline import run
    """))
    names = [ast.unparse(node) for node in _module_level_imports(tree)]
    assert names == ["from typing import TYPE_CHECKING", "from .errors import RecipeError", "import yaml",
                     "from . import languages"]
    graph = import_graph(package_modules())
    assert {"xinstruct.config", "xinstruct.inference", "xinstruct.schema"} <= graph["xinstruct.config_loader"]
    assert {"xinstruct.inference.local", "xinstruct.inference"} <= graph["xinstruct.bench"]  # the package too
    assert "xinstruct.inference" not in graph["xinstruct.inference.local"]  # its own package is already importing


def test_no_module_imports_itself_back():
    circles = find_circles(import_graph(package_modules()))
    assert not circles, "import circles (module-level imports): " + "; ".join(" -> ".join(c) for c in circles)


# Every module is imported in a fresh interpreter of its own. Importing torch & co. takes seconds per process, so a
# helper process imports the third-party packages the package imports at module level once (never a module of
# xinstruct), then forks one child per module: each child starts with no xinstruct module loaded, which is all an
# import circle of the package depends on.
_FORK_IMPORTS = """
import importlib, json, os, sys, traceback
modules, preload = json.loads(sys.stdin.read())
for name in preload:
    try:
        importlib.import_module(name)
    except Exception:
        pass  # the child that needs it reports the error
assert not [m for m in sys.modules if m.split(".")[0] == "xinstruct"], "the helper must not import xinstruct"
failures, running, width = {}, {}, max(2, os.cpu_count() or 2)
def reap():
    pid, status = os.wait()
    module, read = running.pop(pid)
    message = os.read(read, 1 << 16).decode(errors="replace")
    os.close(read)
    if status:
        failures[module] = message or f"exit status {status}"
for module in modules:
    if len(running) >= width:
        reap()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
        except BaseException:
            os.write(write, traceback.format_exc()[-4000:].encode())
            os._exit(1)
        os._exit(0)
    os.close(write)
    running[pid] = (module, read)
while running:
    reap()
print(json.dumps(failures))
"""


def _third_party_imports(modules: dict[str, Path]) -> list[str]:
    names = set()
    for path in modules.values():
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif not node.level and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] not in (*sys.stdlib_module_names, "xinstruct", "__future__"))


def test_every_module_imports_on_its_own():
    modules = package_modules()
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _FORK_IMPORTS], input=json.dumps([list(modules),
                          _third_party_imports(modules)]), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "modules that fail to import on their own:\n" + "\n".join(
        f"--- {module}\n{message}" for module, message in failures.items())
    assert time.monotonic() - started < 120  # about 15 s on 2 cores, most of it importing torch once


def _run_fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_loading_and_checking_recipes_imports_no_torch():
    done = _run_fresh(f"""
        import sys
        from pathlib import Path
        from xinstruct.config_loader import load_recipe
        from xinstruct.errors import RecipeError
        recipes = [p for p in sorted(Path("recipes").rglob("*.yaml")) if "accelerate_configs" not in p.parts]
        assert len(recipes) >= 5, recipes
        for path in recipes:
            recipe = load_recipe(path)
            for role in (recipe.generator, recipe.refinement.follower, recipe.refinement.evaluator, recipe.final):
                recipe.engine_for(role)
        load_recipe(None, ["generator.training.learning_rate=1e-4", "generator.lora.r=8"])
        try:
            load_recipe("recipes/default.yaml", ["generator.training.learning_rat=1e-4"])
        except RecipeError as e:
            assert "Did you mean 'learning_rate'" in str(e), e
        else:
            raise AssertionError("a misspelt training key passed")
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        assert not heavy, f"loading recipes imported {{heavy}}"
    """)
    assert done.returncode == 0, done.stderr[-4000:]


def test_a_recipe_error_on_the_command_line_imports_no_torch():
    done = _run_fresh(f"""
        import sys
        from xinstruct.cli import main
        assert main(["plan", "recipes/default.yaml", "--set", "seed=abc"]) == 2
        assert main(["run", "recipes/default.yaml", "--set", "refinement.iterations=0"]) == 2
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        assert not heavy, f"a recipe error imported {{heavy}}"
    """)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "error: seed must be of type int" in done.stderr and "refinement.iterations is 0" in done.stderr


def test_training_and_lora_keys_read_from_source_are_the_classes_fields():
    import dataclasses

    from peft import LoraConfig
    from trl import SFTConfig

    from xinstruct.config_loader import PASSED_TO, _source_fields, passed_keys

    assert _source_fields(PASSED_TO["training"][1]) is not None, "SFTConfig's source changed: update PASSED_TO"
    assert _source_fields(PASSED_TO["lora"][1]) is not None, "LoraConfig's source changed: update PASSED_TO"
    assert list(passed_keys("training")) == [f.name for f in dataclasses.fields(SFTConfig)]
    assert list(passed_keys("lora")) == [f.name for f in dataclasses.fields(LoraConfig)]
