"""How `helpers` hangs together: no import circles, configuration without side effects."""
import ast
from pathlib import Path

import pytest

from helpers import profiles

HELPERS = Path(__file__).resolve().parent.parent / "helpers"


def helpers_imported_by(path: Path) -> set[str]:
    """Every helpers module `path` imports, at the top or inside a function."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "helpers":
            if node.module == "helpers":
                imported |= {alias.name for alias in node.names}
            else:
                imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("helpers.")}
    return imported - {path.stem}


def import_graph(folder: Path = HELPERS) -> dict[str, set[str]]:
    modules = {path.stem: path for path in folder.glob("*.py") if path.stem != "__init__"}
    modules |= {path.name: path / "__init__.py" for path in folder.iterdir() if (path / "__init__.py").exists()}
    return {name: helpers_imported_by(path) & set(modules) for name, path in modules.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(module, path):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            circle = visit(imported, path + [module])
            if circle:
                return circle
        done.add(module)
        return None

    for module in sorted(graph):
        circle = visit(module, [])
        if circle:
            return circle
    return None


def test_helpers_modules_import_each_other_without_circles():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_circle_finder_finds_a_circle(tmp_path):
    (tmp_path / "a.py").write_text("from helpers.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from helpers import c\n")
    (tmp_path / "c.py").write_text("import helpers.a\n")
    assert find_circle(import_graph(tmp_path)) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("name", ["tiny", "full"])
def test_get_profile_builds_nothing(name, tmp_path, monkeypatch):
    monkeypatch.setenv(profiles.CACHE_ENV, str(tmp_path / "cache"))
    profile = profiles.get_profile(name)
    assert not (tmp_path / "cache").exists()
    assert profile.name == name


def test_environment_variables_are_named_in_one_place():
    """Every VOXTRAL_* variable the package reads is a constant of helpers.profiles."""
    declared = {value for key, value in vars(profiles).items() if key.endswith("_ENV")}
    for path in HELPERS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("VOXTRAL_"):
                assert path.name == "profiles.py" or node.value in declared, f"{path.name}: {node.value!r}"


def test_the_code_is_clean_for_ruff():
    """`ruff check` (configured in pyproject.toml, installed with the test extra) finds nothing."""
    import subprocess
    import sys

    root = HELPERS.parent
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", str(root)],
                            capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wheel_ships_every_helpers_module(tmp_path):
    """A non-editable install (Colab's setup cell) ships only the packages pyproject.toml names:
    `packages = ["helpers"]` alone once left `helpers.exercises` out."""
    import shutil
    import subprocess
    import sys
    import zipfile

    # A clean copy: an editable install's *.egg-info in the checkout would list the files itself.
    source = tmp_path / "source"
    shutil.copytree(HELPERS, source / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (HELPERS.parent / name).exists():
            shutil.copy(HELPERS.parent / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    str(source)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("*.whl"))
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    on_disk = {str(path.relative_to(HELPERS.parent)) for path in HELPERS.rglob("*.py")}
    assert on_disk <= shipped, f"not in the wheel: {sorted(on_disk - shipped)}"
