"""The shape of `lib` and of its tests: stages as packages, imports that only go down, modules of one idea, tests
in folders that mirror the packages.

Read from the source (every import, including those inside functions), so that a circle or a
climb back up is caught before it is hidden by an import placed inside a function.
"""

import ast
from pathlib import Path

import pytest

from lib.core.paths import PROJECT_ROOT

LIB = PROJECT_ROOT / "lib"

# The floors, bottom first: a module may import from its own floor or any below it, never above.
FLOORS = ("core", "data", "training", "analysis", "report", "deploy", "pipeline", "run")
MAX_LINES = 500


def floor_of(module: str) -> int:
    """``lib.data.audit`` -> the index of ``data``; ``lib.run`` -> that of ``run``."""
    return FLOORS.index(module.split(".")[1])


def lib_modules() -> dict[str, Path]:
    return {".".join(p.relative_to(LIB.parent).with_suffix("").parts): p
            for p in sorted(LIB.rglob("*.py")) if p.name != "__init__.py"}


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported lib module, line, whether the import sits inside a function) for each ``lib`` import."""
    tree = ast.parse(path.read_text())
    inside = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn)}
    found, modules = [], lib_modules()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lib"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("lib.")]
        for name in names:
            # "lib.data.audit.inspect_image" -> "lib.data.audit"; "lib.data.audit" (a module) stays
            module = name if name in modules else name.rpartition(".")[0]
            found.append((module, node.lineno, id(node) in inside))
    return found


def test_lib_is_laid_out_in_stage_packages():
    packages = {p.parent.name for p in LIB.glob("*/__init__.py")}
    assert {"core", "data", "training", "analysis", "report", "deploy"} <= packages
    assert {p.name for p in LIB.glob("*.py")} <= {"__init__.py", "run.py"}, "only the runner lives at the top"


@pytest.mark.parametrize("module", sorted(lib_modules()))
def test_imports_only_go_down_the_floors(module):
    path = lib_modules()[module]
    upward = [(other, line) for other, line, _ in imports_of(path)
              if other.startswith("lib.") and floor_of(other) > floor_of(module)]
    assert not upward, f"{path.relative_to(LIB.parent)} imports from a higher floor: {upward}"


def test_no_import_circle_between_modules():
    modules = lib_modules()
    graph = {m: {o for o, _, _ in imports_of(p) if o in modules and o != m} for m, p in modules.items()}
    state: dict[str, str] = {}

    def visit(module, trail):
        state[module] = "open"
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                raise AssertionError(f"import circle: {' -> '.join(trail[trail.index(other):] + [other])}")
            if other not in state:
                visit(other, trail + [other])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(lib_modules()))
def test_a_lib_import_inside_a_function_says_why(module):
    """Only an import that loads an optional heavy package (Keras for an ONNX-only path, say) may wait
    inside a function, with the reason in a comment on the line above."""
    path = lib_modules()[module]
    lines = path.read_text().splitlines()
    unexplained = [line for _, line, inside in imports_of(path)
                   if inside and not lines[line - 2].strip().startswith("#")]
    assert not unexplained, f"{path.relative_to(LIB.parent)}: lib imports inside functions at lines {unexplained}"


@pytest.mark.parametrize("module", sorted(lib_modules()))
def test_modules_stay_small_enough_to_read_in_one_sitting(module):
    path = lib_modules()[module]
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.relative_to(LIB.parent)} holds several ideas"


MAX_FUNCTION_LINES = 60
# The runner's two loops, still longer than that: (module, function).
LONGER_FUNCTIONS: set[tuple[str, str]] = set()  # (module, function) allowed past the limit: none


@pytest.mark.parametrize("module", sorted(lib_modules()))
def test_functions_stay_short_enough_to_hold_one_idea(module):
    tree = ast.parse(lib_modules()[module].read_text())
    long = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and (module, node.name) not in LONGER_FUNCTIONS}
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_package_maps_name_every_module():
    """Each package's docstring is its map: every module of the package is named in it."""
    for init in LIB.glob("*/__init__.py"):
        text = ast.get_docstring(ast.parse(init.read_text())) or ""
        missing = [p.stem for p in init.parent.glob("*.py") if p.name != "__init__.py" and p.stem not in text]
        assert not missing, f"{init.relative_to(LIB.parent)} does not name {missing}"


def string_constants(path: Path) -> list[tuple[str, int]]:
    """Every string constant of a module's code (docstrings and f-string text included), with its line."""
    return [(node.value, node.lineno) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_the_study_models_are_named_in_one_module():
    """A model's name, title and notebook are written in `lib.core.study` alone (its params section also names
    the schema's field in `lib.core.config`): every other module reads the registry."""
    from lib.core.study import MODELS

    home, schema = LIB / "core" / "study.py", LIB / "core" / "config.py"
    named = {text for model in MODELS.values() for text in (model.name, model.title, model.notebook)}
    sections = {model.params_section for model in MODELS.values()}
    for path in sorted(LIB.rglob("*.py")):
        allowed = set() if path != schema else sections
        found = [(text, line) for text, line in string_constants(path) if text in named - allowed]
        assert path == home or not found, f"{path.relative_to(LIB.parent)} names a model: {found}"


def test_the_tests_mirror_lib_one_folder_per_package():
    """Each test sits in the folder of what it tests: one folder per `lib` package (and `study/` for the whole
    study, `benchmarks/` and `project/` for the scripts and pages beside `lib`); no test file at the top."""
    tests = PROJECT_ROOT / "tests"
    packages = {floor for floor in FLOORS if (LIB / floor).is_dir()}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert packages <= folders, f"lib packages without a tests folder: {sorted(packages - folders)}"
    assert folders - packages <= {"study", "benchmarks", "project"}, sorted(folders - packages)
    assert not sorted(tests.glob("test_*.py")), "a test file outside the folders"
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), "two test files of one name: pytest imports them by name"
