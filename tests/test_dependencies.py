"""The lock (requirements/*.txt) against pyproject.toml, the installed environment and helpers' imports.

`make lock` writes the lock; these tests keep it honest between regenerations: every package helpers imports
is declared, every floor is a locked (so tested) version, the two machine locks agree, Colab's pins are the
GPU lock's, environment.yml installs the same lock, and the environment under test is the locked one.
"""
import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from tools.lock import COLAB_PINNED, EXTRAS
from tools.setup_env import normalise, read_lock

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = {name: read_lock((ROOT / "requirements" / f"{name}.txt").read_text()) for name in ("cpu", "cuda", "colab")}
# Imported by helpers but not installed by it, each for its reason.
NOT_INSTALLED = {"google": "google.colab exists only inside Colab, which provides it"}


def requirement_names(requirements):
    return {normalise(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in requirements}


def declared(extras=()):
    names = requirement_names(PROJECT["dependencies"])
    for extra in extras:
        names |= requirement_names(PROJECT["optional-dependencies"][extra])
    return names


def modules_imported_by_the_packages() -> set[str]:
    """Top-level modules imported anywhere in the two packages the wheel ships (helpers and tutorial_kit)."""
    found = set()
    for path in [*(ROOT / "helpers").rglob("*.py"), *(ROOT / "tutorial_kit").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"helpers", "tutorial_kit", "__future__"}


def test_every_package_the_code_imports_is_declared():
    distributions = metadata.packages_distributions()
    undeclared = []
    for module in sorted(modules_imported_by_the_packages()):
        if module in NOT_INSTALLED:
            continue
        # Not installed here (bitsandbytes without a GPU): its distribution is named after the module.
        names = {normalise(d) for d in distributions.get(module, [])} or {normalise(module)}
        if not names & declared(PROJECT["optional-dependencies"]):
            undeclared.append(f"{module} (from {', '.join(sorted(names))})")
    assert not undeclared, "imported, missing from pyproject.toml: " + "; ".join(undeclared)


def test_the_import_walk_finds_what_a_module_imports():
    assert {"torch", "transformers", "pandas", "IPython", "safetensors", "huggingface_hub"} <= modules_imported_by_the_packages()


@pytest.mark.parametrize("lock", ["cpu", "cuda"])
def test_each_machine_lock_holds_every_declared_package(lock):
    assert declared(EXTRAS[lock]) <= set(LOCKS[lock]), declared(EXTRAS[lock]) - set(LOCKS[lock])


def test_the_cpu_lock_has_torchs_cpu_build_and_no_cuda_libraries():
    assert LOCKS["cpu"]["torch"].endswith("+cpu")
    assert not [name for name in LOCKS["cpu"] if name.startswith(("nvidia-", "triton", "cuda-"))]
    assert "bitsandbytes" not in LOCKS["cpu"]


def test_both_machine_locks_agree_on_every_package_they_share():
    cpu, cuda = LOCKS["cpu"], LOCKS["cuda"]
    assert cpu["torch"].split("+")[0] == cuda["torch"] == tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["tool"]["voxtral-tutorial"]["torch"]
    differ = {name: (cpu[name], cuda[name]) for name in set(cpu) & set(cuda) if name != "torch" and cpu[name] != cuda[name]}
    assert not differ


def test_colab_pins_are_the_gpu_locks_and_leave_colabs_torch_alone():
    assert LOCKS["colab"] == {name: LOCKS["cuda"][name] for name in COLAB_PINNED if name in LOCKS["cuda"]}
    assert {"transformers", "peft", "datasets", "accelerate", "gradio", "bitsandbytes"} <= set(LOCKS["colab"])
    assert not {"torch", "torchvision", "torchaudio", "torchcodec", "numpy"} & set(LOCKS["colab"])


def test_every_floor_is_a_locked_version():
    """A floor below the locked version promises a version nobody tested (torch's floor is Colab's, by design)."""
    requirements = PROJECT["dependencies"] + [r for group in PROJECT["optional-dependencies"].values() for r in group]
    wrong = []
    for requirement in requirements:
        floor = re.search(r">=\s*([0-9][^,;\s]*)", requirement)
        name = normalise(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0))
        if floor and name != "torch" and floor.group(1) != LOCKS["cuda"][name].split("+")[0]:
            wrong.append(f"{requirement} (locked {LOCKS['cuda'][name]})")
    assert not wrong, "floors that are not the locked version (run `make lock`): " + "; ".join(wrong)


def test_the_python_floor_is_the_same_everywhere():
    floor = re.search(r">=\s*([0-9.]+)", PROJECT["requires-python"]).group(1)
    assert floor == "3.11"
    for lock in ("cpu", "cuda"):
        assert f"for Python {floor}," in (ROOT / "requirements" / f"{lock}.txt").read_text()
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["target-version"] == "py311"
    assert f"python={floor}" in (ROOT / "environment.yml").read_text()
    assert f"Python >= {floor}" in (ROOT / "README.md").read_text()


def test_environment_yml_installs_the_cpu_lock_and_the_same_system_tools():
    text = (ROOT / "environment.yml").read_text()
    pip_lines = [line.strip()[2:] for line in text.splitlines() if line.startswith("      - ")]
    assert pip_lines == ["--extra-index-url https://download.pytorch.org/whl/cpu", "-r requirements/cpu.txt",
                         "-e .           # the helpers package itself (its dependencies all come from the lock above)"]
    system = (ROOT / "tools" / "install_system_packages.sh").read_text()
    for tool in ("ffmpeg", "espeak-ng"):
        assert f"  - {tool}" in text and tool in system


def test_the_environment_under_test_is_the_locked_one():
    """pytest runs in .venv as make setup left it: every locked package at its locked version."""
    lock = LOCKS["cpu"] if metadata.version("torch").endswith("+cpu") else LOCKS["cuda"]
    wrong = {}
    for name, version in lock.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, "installed vs locked (run make setup): " + str(wrong)


DEPRECATED_IN_TRANSFORMERS_6 = re.compile(r"\.(gradient_checkpointing_(enable|disable)|is_gradient_checkpointing)\b")


def test_our_code_uses_none_of_the_names_transformers_6_removes():
    """pytest's filter has to let transformers' own warning about these through (peft reads one of them):
    so our code is searched for them instead."""
    places = [path for folder in ("helpers", "tests", "benchmarks", "tools", "notebooks")
              for path in (ROOT / folder).rglob("*") if path.suffix in (".py", ".ipynb")]
    found = [f"{path.relative_to(ROOT)}" for path in places
             if path != Path(__file__) and DEPRECATED_IN_TRANSFORMERS_6.search(path.read_text())]
    assert not found, "use activation_checkpointing_* / is_activation_checkpointing in: " + ", ".join(found)
