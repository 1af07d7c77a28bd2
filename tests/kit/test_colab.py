"""The Colab setup cell's logic, and the notebooks' setup cells and repository links."""
import json
import re
import sys
import types
from pathlib import Path

import pytest

from tutorial_kit import colab

ROOT = Path(__file__).resolve().parents[2]
# The lessons and their solutions: a learner opens either in Colab.
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")) + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("torch_version, expected", [
    ("2.5.1+cu121", "torchcodec==0.1.*"),
    ("2.8.0+cu126", "torchcodec==0.7.*"),
    ("2.9.0+cu126", "torchcodec==0.9.*"),
    ("2.11.0", "torchcodec==0.11.*"),
    ("2.13.0+cpu", "torchcodec==0.13.*"),  # what this repository's CPU route installs
    ("2.15.0", "torchcodec==0.15.*"),
    ("2.30.0", "torchcodec>=0.17"),
])
def test_torchcodec_matches_the_torch_it_finds(torch_version, expected):
    assert colab.torchcodec_requirement(torch_version) == expected


def test_torchcodec_for_a_torch_too_old():
    with pytest.raises(RuntimeError, match="too old"):
        colab.torchcodec_requirement("2.3.1")


@pytest.fixture()
def recorded(monkeypatch):
    """setup() with pip and apt-get recorded instead of run; the constraints file is read as pip would."""
    commands = []

    def run(command, check=True, **kwargs):
        if "-c" in command:
            command = [*command, "<constraints: " + Path(command[command.index("-c") + 1]).read_text().strip() + ">"]
        commands.append(command)
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr(colab.subprocess, "run", run)
    return commands


@pytest.fixture()
def pins(tmp_path, monkeypatch):
    """A stand-in for requirements/colab.txt."""
    lock = tmp_path / "colab.txt"
    lock.write_text("# generated\ntransformers==5.25.0\npeft==0.21.2\nbitsandbytes==0.50.2\n")
    monkeypatch.setenv(colab.TUTORIAL_LOCK_ENV, str(lock))
    return lock


@pytest.mark.parametrize("source, expected", [
    ("git+https://github.com/fork/tutorial@main", "https://raw.githubusercontent.com/fork/tutorial/main/requirements/colab.txt"),
    ("git+https://github.com/fork/tutorial.git@v2", "https://raw.githubusercontent.com/fork/tutorial/v2/requirements/colab.txt"),
    ("file:///content/checkout", "/content/checkout/requirements/colab.txt"),
])
def test_the_pins_come_from_where_the_code_comes_from(source, expected, monkeypatch):
    monkeypatch.delenv(colab.TUTORIAL_LOCK_ENV, raising=False)
    assert colab.lock_location(source) == expected


def test_a_source_without_known_pins_is_refused_clearly(monkeypatch):
    monkeypatch.delenv(colab.TUTORIAL_LOCK_ENV, raising=False)
    with pytest.raises(RuntimeError, match="VOXTRAL_TUTORIAL_LOCK"):
        colab.lock_location("git+https://example.org/fork@main")


def test_the_repository_pins_are_read(tmp_path):
    pinned = colab.read_pins(str(ROOT / "requirements" / "colab.txt"))
    assert {"transformers", "peft", "datasets", "accelerate", "bitsandbytes"} <= set(pinned)
    assert not {"torch", "torchvision", "torchaudio", "numpy"} & set(pinned)  # Colab keeps its own
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(RuntimeError, match="no `name==version`"):
        colab.read_pins(str(tmp_path / "empty.txt"))


def test_setup_on_a_gpu_runtime_keeps_torch_and_adds_bitsandbytes(recorded, pins, monkeypatch, capsys):
    versions = {"torch": "2.9.0+cu126", "torchvision": "0.24.0+cu126"}
    monkeypatch.setattr(colab, "_installed", lambda name: versions.get(name))
    monkeypatch.setattr(colab.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    restart = colab.setup("git+https://example.org/fork@main", gpu=True)
    pip = recorded[0]
    assert pip[:4] == [sys.executable, "-m", "pip", "install"]
    assert "voxtral-tutorial-helpers[demo,serve,gpu] @ git+https://example.org/fork@main" in pip
    assert "torchcodec==0.9.*" in pip
    # The tested versions of the tutorial's libraries; Colab's torch builds never reinstalled.
    assert ("<constraints: transformers==5.25.0\npeft==0.21.2\nbitsandbytes==0.50.2\n"
            "torch==2.9.0+cu126\ntorchvision==0.24.0+cu126>") in pip
    assert len(recorded) == 1  # espeak-ng and ffmpeg present: no apt-get
    assert restart is False
    out = capsys.readouterr().out
    assert "Keeping the installed torch 2.9.0+cu126" in out and "no restart needed" in out
    assert "transformers 5.25.0, peft 0.21.2" in out


def test_setup_without_a_gpu_installs_system_tools_and_says_when_to_restart(recorded, pins, monkeypatch, capsys):
    versions = {"torch": "2.13.0", "numpy": "2.1.0"}
    monkeypatch.setattr(colab, "_installed", lambda name: versions.get(name))
    monkeypatch.setattr(colab, "_imported_distribution_versions", lambda: {"numpy": "2.1.0"})
    monkeypatch.setattr(colab.shutil, "which", lambda tool: None if tool == "espeak-ng" else f"/usr/bin/{tool}")

    def pip_upgrades_numpy(command, check=True, **kwargs):
        if "pip" in command:
            versions["numpy"] = "2.3.0"
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr(colab.subprocess, "run", pip_upgrades_numpy)
    assert colab.setup("file:///checkout", gpu=False) is True
    out = capsys.readouterr().out
    # As root, with no questions asked: the frontend variable goes through `env`, not as a command name.
    assert "$ apt-get -qq update\n$ env DEBIAN_FRONTEND=noninteractive apt-get -qq install -y espeak-ng\n" in out
    assert "RESTART NEEDED: numpy" in out and "tiny" in out


def test_drive_keeps_outputs_in_colab(monkeypatch, tmp_path, capsys):
    from helpers.profiles import get_profile

    mounted = []
    fake_drive = types.SimpleNamespace(mount=lambda path: (mounted.append(path), Path(path, "MyDrive").mkdir(parents=True)))
    google = types.ModuleType("google")
    fake_colab = types.ModuleType("google.colab")
    fake_colab.drive = fake_drive
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", fake_colab)
    monkeypatch.setenv("VOXTRAL_DRIVE", str(tmp_path / "drive"))
    monkeypatch.delenv("VOXTRAL_OUTPUTS", raising=False)
    colab.keep_outputs_on_drive(get_profile("full"))
    assert mounted == [str(tmp_path / "drive")]
    assert str(tmp_path / "drive" / "MyDrive" / "voxtral-tutorial" / "outputs" / "full") in capsys.readouterr().out


def setup_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return next("".join(c["source"]) for c in cells if c["cell_type"] == "code" and "google.colab" in "".join(c["source"]))


def repository_and_ref() -> tuple[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    repository = re.search(r'Repository = "https://github.com/([^"]+)"', text).group(1)
    ref = re.search(r'^ref = "([^"]+)"', text, re.M).group(1)
    return repository, ref


def test_one_setup_cell_in_every_notebook():
    cells = {path.name: setup_cell(path) for path in NOTEBOOKS}
    assert len(set(cells.values())) == 1, "the setup cells differ: run tools/set_repository.py"
    repository, ref = repository_and_ref()
    cell = next(iter(cells.values()))
    assert f'REPOSITORY, REF = "{repository}", "{ref}"' in cell
    assert "VOXTRAL_TUTORIAL_SOURCE" in cell


def test_every_link_to_the_repository_names_the_one_in_pyproject():
    repository, ref = repository_and_ref()
    texts = {path.name: path.read_text() for path in [*NOTEBOOKS, ROOT / "README.md"]}
    for name, text in texts.items():
        for found, found_ref in re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/([^/]+)/", text):
            assert (found, found_ref) == (repository, ref), name
        assert "voxtral-tutorial/voxtral-lora-tutorial" not in text or repository == "voxtral-tutorial/voxtral-lora-tutorial"
