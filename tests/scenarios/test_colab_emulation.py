"""The six notebooks as a Colab user runs them: one fresh runtime each, in order, with Drive.

Emulated here: `google.colab` is importable and imported at kernel start (as in Colab), with a
`drive.mount` that makes a folder stand in for Google Drive; the kernel's Python is a new
virtual environment that sees this repository's environment as its preinstalled packages (like
Colab's torch) but not the `helpers` package, so the notebooks' real setup cell must install it,
from a copy of this checkout. Each notebook runs in a fresh kernel and a fresh working
directory, so the only way notebooks 04 and 05 can find notebook 03's adapter is through Drive.
Like Colab, the runtime comes with a transformers other than the one the tutorial was tested with: the
setup cell must replace it with requirements/colab.txt's.
"""
import json
import re
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tools.rehearsal import checked_outputs

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))

FAKE_DRIVE = '''
import os, pathlib

def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    pathlib.Path(mountpoint, "MyDrive").mkdir(parents=True, exist_ok=True)
    print(f"Mounted at {mountpoint}")
'''


# A release other than the lock's, standing in for the transformers Colab ships.
PREINSTALLED_TRANSFORMERS = "5.24.0"


def locked_version(name: str) -> str:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements" / "colab.txt").read_text(), re.M))[name]


def colab_like_python(root: Path) -> Path:
    """A venv whose site sees this environment's packages (Colab's preinstalled ones) except `helpers`,
    with an older transformers in front of them."""
    # No pip or setuptools of its own: like Colab's, they come with the preinstalled packages.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    own_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    older = root / "preinstalled-older"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(older),
                    f"transformers=={PREINSTALLED_TRANSFORMERS}"], check=True)
    # Plain path lines: the packages are importable, but the editable `helpers` install's hook is not run.
    (own_site / "preinstalled.pth").write_text("\n".join([str(older), *site.getsitepackages()]) + "\n")
    probe = subprocess.run([str(python), "-c", "import torch, transformers; print(transformers.__version__); import helpers"],
                           capture_output=True, text=True, cwd=root)
    assert "No module named 'helpers'" in probe.stderr, probe.stderr  # the setup cell has something to do
    assert probe.stdout.strip() == PREINSTALLED_TRANSFORMERS != locked_version("transformers")
    return python


def fake_colab(root: Path) -> dict:
    """`google.colab` on the path and imported at kernel start; a folder for Drive."""
    package = root / "fake" / "google" / "colab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from . import drive\n")
    (package / "drive.py").write_text(textwrap.dedent(FAKE_DRIVE))
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab\n")
    return {"PYTHONPATH": str(root / "fake"), "IPYTHONDIR": str(root / "ipython"), "VOXTRAL_DRIVE": str(root / "drive")}


def kernel_spec(root: Path, python: Path) -> str:
    spec = root / "jupyter" / "kernels" / "colab-emulation"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab emulation", "language": "python"}))
    return "colab-emulation"


def source_copy(root: Path) -> str:
    """What the setup cell installs from: this checkout's package, as pip would get it from GitHub."""
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "requirements", source / "requirements")
    for package in ("helpers", "tutorial_kit"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    return source.as_uri()


@pytest.mark.extended
def test_notebooks_run_one_runtime_each_like_colab(tmp_path, monkeypatch):
    python = colab_like_python(tmp_path)
    environment = fake_colab(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    kernel = kernel_spec(tmp_path, python)
    for name, value in {**environment, "VOXTRAL_PROFILE": "tiny", "VOXTRAL_TUTORIAL_SOURCE": source_copy(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    for name in ("VOXTRAL_OUTPUTS", "VOXTRAL_ADAPTER"):
        monkeypatch.delenv(name, raising=False)

    setup_outputs = {}
    for path in NOTEBOOKS:
        runtime = tmp_path / "runtimes" / path.stem  # a new machine: nothing from the previous notebook
        runtime.mkdir(parents=True)
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=900, kernel_name=kernel,
                       resources={"metadata": {"path": str(runtime)}}).execute()
        # What nbval checks in `make test`, checked here: every tagged cell printed its stored output.
        expected = checked_outputs(nbformat.read(path, as_version=4))
        assert expected, f"{path.stem} has no checked cells"
        printed = checked_outputs(notebook)
        for cell_id, text in expected.items():
            assert printed[cell_id] == text, f"{path.stem}, cell {cell_id}:\n{printed[cell_id]}\n!= stored:\n{text}"
        setup = next(c for c in notebook.cells if c.cell_type == "code" and "google.colab" in c.source)
        setup_outputs[path.stem] = "".join(o.get("text", "") for o in setup.outputs)
        if path.stem.startswith("03"):
            adapter = tmp_path / "drive" / "MyDrive" / "voxtral-tutorial" / "outputs" / "tiny" / "adapter"
            assert (adapter / "adapter_model.safetensors").exists()
            assert not (runtime / "outputs" / "tiny" / "adapter").exists()

    for stem, text in setup_outputs.items():
        assert "torchcodec==" in text and "Setup complete; no restart needed." in text, (stem, text)
        assert f"transformers {locked_version('transformers')}" in text, (stem, text)
    # The setup cell replaced the runtime's transformers with the tested one.
    installed = subprocess.run([str(python), "-c", "import transformers; print(transformers.__version__)"],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert installed == locked_version("transformers")
    # 04 and 05 found 03's adapter on Drive without being told where: they ran to the end.
    assert (tmp_path / "runtimes" / "05_pipeline" / "outputs" / "tiny" / "merged" / "config.json").exists()
