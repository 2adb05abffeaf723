"""House rules of the code layout that can be checked without running it.

Read from the source with ``ast`` (nothing is imported): no import circle among the modules of
``annotator/`` and ``detector/`` (imports inside functions count; those under
``if TYPE_CHECKING:`` do not, as they never run); no module of ``annotator/`` over 400 lines; no
module uses another module's underscore name; ``detector/`` stands alone, without Flask or the
web app; tests share helpers through helpers.py, never by importing a test file or conftest.py.
Each rule is also run on a small made-up package to show that it can fail.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("annotator", "detector")
MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    """One import statement's target as seen from ``module``: ``target`` is the dotted name
    imported from (``from target import names``) or imported (``import target``)."""
    module: str
    line: int
    target: str
    names: tuple[str, ...]  # empty for ``import target``
    type_checking: bool


@dataclass
class Module:
    name: str
    path: Path
    rel: str  # the path from the root, for messages
    tree: ast.Module
    lines: int


def load_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    """Every ``.py`` under the packages, by dotted name (a package is its ``__init__``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            text = path.read_text(encoding="utf-8")
            modules[".".join(parts)] = Module(".".join(parts), path, path.relative_to(root).as_posix(),
                                              ast.parse(text, str(path)), len(text.splitlines()))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: Module) -> list[Import]:
    """Every import in the module, at any depth, relative ones made absolute."""
    is_package = module.path.name == "__init__.py"
    package = module.name if is_package else module.name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_checking)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module.name, node.lineno, alias.name, (), type_checking))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(Import(module.name, node.lineno, target,
                                tuple(alias.name for alias in node.names), type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(module.tree, False)
    return found


def import_edges(modules: dict[str, Module]) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line}, among ``modules`` only, TYPE_CHECKING imports left
    out. ``from pkg import sub`` is an edge to ``pkg.sub`` when that is a module, else to ``pkg``;
    ``import a.b.c`` is an edge to the longest of ``a.b.c``, ``a.b``, ``a`` that is a module."""
    edges: dict[str, dict[str, int]] = {name: {} for name in modules}

    def longest_module(dotted: str) -> str | None:
        parts = dotted.split(".")
        while parts:
            if ".".join(parts) in modules:
                return ".".join(parts)
            parts.pop()
        return None

    for name, module in modules.items():
        for imp in imports_of(module):
            if imp.type_checking:
                continue
            targets = []
            if imp.names:
                for imported in imp.names:
                    sub = f"{imp.target}.{imported}"
                    targets.append(sub if sub in modules else longest_module(imp.target))
            else:
                targets.append(longest_module(imp.target))
            for target in targets:
                if target and target != name:
                    edges[name].setdefault(target, imp.line)
    return edges


def import_cycles(modules: dict[str, Module]) -> list[str]:
    """One readable chain per strongly connected group of modules, e.g.
    ``a (a.py:3) -> b (b.py:7) -> a``: each step names the line that makes it."""
    edges = import_edges(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's; recursion is fine for a few hundred modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            connect(node)

    chains = []
    for group in sorted(groups):
        members = set(group)
        start = group[0]
        # Shortest way round from ``start`` back to itself inside the group.
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            following = []
            for node in frontier:
                for nxt in sorted(edges[node]):
                    if nxt in members and nxt not in previous:
                        previous[nxt] = node
                        following.append(nxt)
            frontier = following
        path = [start]
        while True:
            path.append(previous[path[-1]])
            if path[-1] == start:
                break
        path.reverse()
        steps = [f"{a} ({modules[a].rel}:{edges[a][b]})" for a, b in zip(path, path[1:])]
        extra = f"  [all in this circle: {', '.join(group)}]" if len(group) > len(path) - 1 else ""
        chains.append(" -> ".join(steps + [start]) + extra)
    return chains


def long_modules(modules: dict[str, Module], package: str = "annotator",
                 limit: int = MAX_LINES) -> list[str]:
    return [f"{name}: {module.lines} lines" for name, module in sorted(modules.items())
            if (name == package or name.startswith(package + ".")) and module.lines > limit]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_name_uses(modules: dict[str, Module]) -> list[str]:
    """``from .x import _y`` and ``x._y`` where ``x`` is another of our modules."""
    found: set[tuple[str, int, str]] = set()
    for name, module in modules.items():
        bound: dict[str, str] = {}  # local name -> our module it refers to
        for imp in imports_of(module):
            if imp.names:
                for imported in imp.names:
                    if f"{imp.target}.{imported}" in modules:
                        bound[imported] = f"{imp.target}.{imported}"
                    elif imp.target in modules and _private(imported) and imp.target != name:
                        found.add((name, imp.line, f"from {imp.target} import {imported}"))
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in modules:
                        bound[alias.asname] = alias.name
            if isinstance(node, ast.Attribute) and _private(node.attr):
                dotted = _dotted(node.value)
                target = bound.get(dotted) if dotted and "." not in dotted else (
                    dotted if dotted in modules else None)
                if target and target != name:
                    found.add((name, node.lineno, f"{dotted}.{node.attr}"))
    return [f"{name} (line {line}): {what}" for name, line, what in sorted(found)]


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def forbidden_imports(modules: dict[str, Module], package: str = "detector",
                      banned: tuple[str, ...] = ("flask", "annotator")) -> list[str]:
    """Imports in ``package`` of any of ``banned`` (``flask_*`` counts as Flask)."""
    found = []
    for name, module in sorted(modules.items()):
        if not (name == package or name.startswith(package + ".")):
            continue
        for imp in imports_of(module):
            top = imp.target.split(".")[0]
            if top in banned or ("flask" in banned and top.startswith("flask_")):
                what = f"from {imp.target} import ..." if imp.names else f"import {imp.target}"
                found.append(f"{name} (line {imp.line}): {what}")
    return found


def imports_between_tests(tests_dir: Path) -> list[str]:
    """Imports of a test file or of conftest.py, from any file in ``tests_dir``."""
    found = []
    for path in sorted(tests_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "conftest" or top.startswith("test_") or top == tests_dir.name:
                    found.append(f"{path.name} (line {node.lineno}): {name}")
    return found


# --- the rules, on the real code --------------------------------------------------------------

@functools.cache
def real_modules() -> dict[str, Module]:
    found = load_modules(ROOT)
    assert "annotator" in found and "detector" in found, "packages not found beside tests/"
    return found


def test_no_import_cycle():
    cycles = import_cycles(real_modules())
    assert not cycles, "import circles:\n  " + "\n  ".join(cycles)


def test_no_annotator_module_over_400_lines():
    long = long_modules(real_modules())
    assert not long, f"modules of annotator/ over {MAX_LINES} lines:\n  " + "\n  ".join(long)


def test_no_module_uses_another_modules_underscore_name():
    uses = private_name_uses(real_modules())
    assert not uses, "underscore names used across modules:\n  " + "\n  ".join(uses)


def test_detector_imports_neither_flask_nor_annotator():
    bad = forbidden_imports(real_modules())
    assert not bad, "detector/ imports the web side:\n  " + "\n  ".join(bad)


def test_tests_share_helpers_only_through_helpers_py():
    bad = imports_between_tests(ROOT / "tests")
    assert not bad, "tests importing a test file or conftest.py:\n  " + "\n  ".join(bad)


# --- each rule catches a made-up breach -------------------------------------------------------

def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return load_modules(tmp_path)


def test_a_circle_through_a_function_level_relative_import_is_found(tmp_path):
    modules = _package(tmp_path, {
        "annotator/__init__.py": "",
        "annotator/a.py": "from .services import b\n",
        "annotator/services/__init__.py": "",
        "annotator/services/b.py": "import os\n\n\ndef f():\n    from ..c import g\n",
        "annotator/c.py": "from annotator.services.b import f as g2\n\n\ndef g():\n    pass\n",
        "annotator/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n",
        "detector/__init__.py": "",
    })
    assert import_cycles(modules) == [
        "annotator.c (annotator/c.py:1) -> annotator.services.b (annotator/services/b.py:5) -> annotator.c"]
    modules["annotator.c"].tree = ast.parse("")
    assert import_cycles(modules) == []


def test_a_type_checking_import_makes_no_circle(tmp_path):
    modules = _package(tmp_path, {
        "annotator/__init__.py": "",
        "annotator/a.py": "from .b import y\nx = 1\n",
        "annotator/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\ny = 2\n",
        "detector/__init__.py": "",
    })
    assert import_cycles(modules) == []


def test_a_long_module_is_named(tmp_path):
    modules = _package(tmp_path, {"annotator/__init__.py": "", "annotator/big.py": "x = 1\n" * 401,
                                  "annotator/ok.py": "x = 1\n" * 400, "detector/__init__.py": "",
                                  "detector/big.py": "x = 1\n" * 900})
    assert long_modules(modules) == ["annotator.big: 401 lines"]


def test_underscore_imports_and_attributes_are_named(tmp_path):
    modules = _package(tmp_path, {
        "annotator/__init__.py": "",
        "annotator/a.py": "_secret = 1\n__version__ = 2\n",
        "annotator/b.py": "from .a import _secret, __version__\n",
        "annotator/c.py": "from . import a\nimport annotator.a as aa\nimport annotator.a\n"
                          "def f():\n    return a._secret + aa._secret + annotator.a._secret + a.__version__\n",
        "annotator/d.py": "import os\n_own = os._exit\n\ndef f():\n    return _own\n",
        "detector/__init__.py": "",
    })
    assert private_name_uses(modules) == [
        "annotator.b (line 1): from annotator.a import _secret",
        "annotator.c (line 5): a._secret",
        "annotator.c (line 5): aa._secret",
        "annotator.c (line 5): annotator.a._secret",
    ]


def test_detector_importing_flask_or_annotator_is_named(tmp_path):
    modules = _package(tmp_path, {
        "annotator/__init__.py": "import flask\n",
        "detector/__init__.py": "",
        "detector/a.py": "def f():\n    from annotator.models import Box\n",
        "detector/b.py": "import flask_login\nimport torch\n",
    })
    assert forbidden_imports(modules) == [
        "detector.a (line 2): from annotator.models import ...",
        "detector.b (line 1): import flask_login",
    ]


def test_a_test_importing_another_test_or_conftest_is_named(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_a.py").write_text("import pytest\nfrom helpers import seed\nfrom conftest import X\n")
    (tests / "test_b.py").write_text("def test_x():\n    from test_a import y\n    import tests.helpers\n")
    assert imports_between_tests(tests) == ["test_a.py (line 3): conftest", "test_b.py (line 2): test_a",
                                        "test_b.py (line 3): tests.helpers"]
