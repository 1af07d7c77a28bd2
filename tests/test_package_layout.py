"""How the two packages hang together: `helpers` (what the notebooks teach) and `tutorial_kit` (the machinery
around it). No import circles, no module importing itself, dependencies one way only (the kit uses helpers,
never the reverse but for one lazy call that builds the tiny assets), configuration without side effects."""
import ast
from pathlib import Path

import pytest

from helpers import profiles

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "helpers"
KIT = ROOT / "tutorial_kit"
PACKAGES = (HELPERS, KIT)


def imports_of(path: Path, package: str) -> list[tuple[str, ast.AST]]:
    """(module of `package`, import node) for every import of `package` in `path`, at the top or in a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            parts = node.module.split(".")
            if len(parts) == 1:  # `from helpers import audio, data`
                found += [(alias.name, node) for alias in node.names]
            else:
                found.append((parts[1], node))
        elif isinstance(node, ast.Import):
            found += [(alias.name.split(".")[1], node) for alias in node.names if alias.name.startswith(package + ".")]
    return found


def module_name(path: Path, folder: Path) -> str:
    """`collator` for helpers/collator.py, `tiny` for tutorial_kit/tiny/__init__.py or tutorial_kit/tiny/synthetic.py."""
    relative = path.relative_to(folder)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def import_graph(folder: Path) -> dict[str, set[str]]:
    """Module -> the modules of its own package it imports (sub-packages count as one module)."""
    package = folder.name
    graph: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        if path == folder / "__init__.py":
            continue
        name = module_name(path, folder)
        graph.setdefault(name, set()).update(module for module, _ in imports_of(path, package))
    return {name: {m for m in imported if m in graph and m != name} for name, imported in graph.items()}


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


@pytest.mark.parametrize("folder", PACKAGES, ids=lambda folder: folder.name)
def test_modules_import_each_other_without_circles(folder):
    circle = find_circle(import_graph(folder))
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_circle_finder_finds_a_circle(tmp_path):
    folder = tmp_path / "helpers"
    folder.mkdir()
    (folder / "a.py").write_text("from helpers.b import x\n")
    (folder / "b.py").write_text("def f():\n    from helpers import c\n")
    (folder / "c.py").write_text("import helpers.a\n")
    assert find_circle(import_graph(folder)) == ["a", "b", "c", "a"]


def self_imports(folder: Path) -> list[str]:
    package = folder.name
    return [f"{path.relative_to(folder.parent).as_posix()}:{node.lineno}" for path in folder.rglob("*.py")
            for module, node in imports_of(path, package)
            if path.stem != "__init__" and path.parent == folder and module == path.stem]


@pytest.mark.parametrize("folder", PACKAGES, ids=lambda folder: folder.name)
def test_no_module_imports_itself(folder):
    """`from helpers.training import AnswerLossTrainer` inside helpers/training.py works, and says the
    module does not know its own names."""
    assert self_imports(folder) == []


def test_the_self_import_finder_finds_one(tmp_path):
    folder = tmp_path / "helpers"
    folder.mkdir()
    (folder / "training.py").write_text("class A: pass\ndef f():\n    from helpers.training import A\n")
    assert self_imports(folder) == ["helpers/training.py:3"]


def test_helpers_imports_nothing_from_the_kit_but_the_tiny_assets_builder():
    """The lessons' package stands alone: the one call into tutorial_kit builds the tiny profile's assets,
    lazily, inside `profiles.ensure_assets`."""
    calls = [(path.relative_to(ROOT).as_posix(), node) for path in HELPERS.rglob("*.py")
             for _, node in imports_of(path, "tutorial_kit")]
    assert [(path, node.module, [a.name for a in node.names]) for path, node in calls] == [
        ("helpers/profiles.py", "tutorial_kit.tiny", ["ensure_tiny_assets"])]
    top_level = ast.parse((HELPERS / "profiles.py").read_text()).body
    assert calls[0][1] not in top_level  # inside a function: importing helpers imports nothing of the kit


@pytest.mark.parametrize("name", ["tiny", "full"])
def test_get_profile_builds_nothing(name, tmp_path, monkeypatch):
    monkeypatch.setenv(profiles.CACHE_ENV, str(tmp_path / "cache"))
    profile = profiles.get_profile(name)
    assert not (tmp_path / "cache").exists()
    assert profile.name == name


def test_environment_variables_are_named_in_one_place():
    """Every VOXTRAL_* variable either package reads is a constant of helpers.profiles."""
    declared = {value for key, value in vars(profiles).items() if key.endswith("_ENV")}
    for path in [*HELPERS.rglob("*.py"), *KIT.rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("VOXTRAL_"):
                assert path.name == "profiles.py" or node.value in declared, f"{path.name}: {node.value!r}"


def test_the_code_is_clean_for_ruff():
    """`ruff check` (configured in pyproject.toml, installed with the test extra) finds nothing."""
    import subprocess
    import sys

    root = ROOT
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", str(root)],
                            capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wheel_ships_every_module_of_both_packages(tmp_path):
    """A non-editable install (Colab's setup cell) ships only the packages pyproject.toml names:
    `packages = ["helpers"]` alone once left `helpers.exercises` out."""
    import shutil
    import subprocess
    import sys
    import zipfile

    # A clean copy: an editable install's *.egg-info in the checkout would list the files itself.
    source = tmp_path / "source"
    for folder in PACKAGES:
        shutil.copytree(folder, source / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    str(source)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("*.whl"))
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    on_disk = {str(path.relative_to(ROOT)) for folder in PACKAGES for path in folder.rglob("*.py")}
    assert on_disk <= shipped, f"not in the wheel: {sorted(on_disk - shipped)}"


def test_every_test_file_the_docs_name_exists():
    """README.md and the guides name the test that covers each claim: each must exist, under tests/."""
    import re

    root = Path(__file__).resolve().parent.parent
    existing = {path.name for path in (root / "tests").rglob("test_*.py")}
    for doc in ("README.md", "benchmarks/README.md", "workshop/README.md"):
        named = set(re.findall(r"\btest_\w+\.py\b", (root / doc).read_text()))
        assert named <= existing, (doc, sorted(named - existing))
