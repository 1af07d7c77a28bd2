"""`make setup` (tools/setup_env.py): the Python check, the lock each machine gets, torch's CPU build, the no-op rerun.

The GPU route cannot run here (no NVIDIA GPU): the extended test fakes the detection with an `nvidia-smi` on
PATH and resolves exactly the commands `make setup` would run there, with --dry-run, against the registry.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools import setup_env

ROOT = Path(__file__).resolve().parents[1]


def test_the_python_floor_is_read_from_pyproject():
    assert setup_env.required_python() == (3, 11)


@pytest.mark.parametrize("version", [(3, 10, 12), (3, 9, 2)])
def test_an_old_python_is_told_how_to_get_a_new_one(version):
    message = setup_env.python_problem(version, "/usr/bin/python3", (3, 11))
    assert message.startswith(f"Python 3.11 or newer is needed; /usr/bin/python3 is Python {'.'.join(map(str, version))}.")
    assert "apt-get install python3.11 python3.11-venv" in message and "make setup PYTHON=python3.11" in message
    assert "uv python install 3.11" in message and "environment.yml" in message


@pytest.mark.parametrize("version", [(3, 11, 0), (3, 12, 4), (4, 0, 0)])
def test_a_new_enough_python_passes(version):
    assert setup_env.python_problem(version, "python3", (3, 11)) is None


def test_make_setup_stops_on_an_old_python_before_installing_anything(tmp_path):
    """`make setup PYTHON=...` with a Python that reports 3.10: the first thing it prints is the way out."""
    old_python = tmp_path / "python3.10"
    old_python.write_text(
        "#!/bin/sh\n"
        f'exec {sys.executable} -c "import runpy, sys; sys.version_info = (3, 10, 12, \'final\', 0); '
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')\" \"$@\"\n")
    old_python.chmod(0o755)
    result = subprocess.run(["make", "-s", "setup", f"PYTHON={old_python}"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "Python 3.11 or newer is needed" in result.stderr and "Python 3.10.12" in result.stderr
    assert "Installing" not in result.stdout + result.stderr and "apt-get update" not in result.stdout


def test_a_gpu_machine_gets_the_cuda_lock(monkeypatch):
    monkeypatch.delenv("VOXTRAL_LOCK", raising=False)
    plan = setup_env.choose_plan(gpu=True)
    assert plan.lock == "requirements/cuda.txt" and plan.torch_source is None


def test_a_cpu_machine_takes_torch_from_pytorchs_cpu_index_when_it_answers(monkeypatch):
    monkeypatch.delenv("VOXTRAL_LOCK", raising=False)
    plan = setup_env.choose_plan(gpu=False, reachable=True)
    assert plan.lock == "requirements/cpu.txt"
    assert plan.torch_source == ["--index-url", "https://download.pytorch.org/whl/cpu"]
    assert "torch 2.13.0+cpu from PyTorch's CPU index" in plan.notice


def test_a_cpu_machine_without_the_index_takes_a_cpu_build_pip_knows(monkeypatch):
    monkeypatch.delenv("VOXTRAL_LOCK", raising=False)
    plan = setup_env.choose_plan(gpu=False, reachable=False, local_folders=["/opt/wheels"])
    assert plan.lock == "requirements/cpu.txt" and plan.torch_source == ["--find-links", "/opt/wheels"]
    assert "PyTorch's CPU index is unreachable" in plan.notice and "/opt/wheels" in plan.notice


def test_a_cpu_machine_with_no_cpu_build_in_reach_says_it_downloads_the_cuda_one(monkeypatch):
    monkeypatch.delenv("VOXTRAL_LOCK", raising=False)
    plan = setup_env.choose_plan(gpu=False, reachable=False, local_folders=[])
    assert plan.lock == "requirements/cuda.txt"
    assert "CUDA build" in plan.notice and "GB" in plan.notice and "\n" not in plan.notice


def test_local_cpu_builds_are_found_through_pips_find_links(tmp_path, monkeypatch):
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    monkeypatch.setenv("PIP_FIND_LINKS", f"file://{tmp_path} /nowhere")
    assert str(tmp_path) in setup_env.local_cpu_torch_folders("2.13.0")
    assert str(tmp_path) not in setup_env.local_cpu_torch_folders("2.14.0")


def test_the_lock_can_be_chosen_by_hand(monkeypatch):
    monkeypatch.setenv("VOXTRAL_LOCK", "cuda")
    assert setup_env.choose_plan(gpu=False, reachable=True).lock == "requirements/cuda.txt"
    monkeypatch.setenv("VOXTRAL_LOCK", "rocm")
    with pytest.raises(SystemExit, match="use cpu or cuda"):
        setup_env.choose_plan()


def test_uv_installs_torch_from_its_source_then_syncs_the_lock_then_helpers():
    plan = setup_env.Plan("requirements/cpu.txt", "", ["--find-links", "/opt/wheels"])
    commands = setup_env.install_commands(plan, "/v")
    assert commands[0] == ["/v/bin/python", "-m", "pip", "install", "-q", "uv==0.13.9"]
    assert commands[1] == ["/v/bin/uv", "pip", "install", "--python", "/v/bin/python", "torch==2.13.0+cpu", "--no-deps",
                           "--find-links", "/opt/wheels"]
    assert commands[2] == ["/v/bin/uv", "pip", "sync", "--python", "/v/bin/python", str(ROOT / "requirements/cpu.txt")]
    assert commands[3] == ["/v/bin/uv", "pip", "install", "--python", "/v/bin/python", "--no-deps", "-e", str(ROOT)]
    # The project is named once, with no extras: its dependencies all come from the lock.
    assert sum(str(ROOT) in part for command in commands for part in command) == 2


def test_pip_can_do_the_same_without_uv():
    plan = setup_env.Plan("requirements/cuda.txt", "")
    commands = setup_env.install_commands(plan, "/v", installer="pip", dry_run=True)
    assert commands == [
        ["/v/bin/python", "-m", "pip", "install", "-q", "--dry-run", "--no-deps", "-r", str(ROOT / "requirements/cuda.txt")],
        ["/v/bin/python", "-m", "pip", "install", "-q", "--dry-run", "--no-deps", "-e", str(ROOT)],
    ]


@pytest.fixture()
def recorded_setup(tmp_path, monkeypatch):
    """main() on a copy of the lock, with the venv made and the install commands recorded instead of run."""
    (tmp_path / "requirements").mkdir()
    for name in ("cpu.txt", "pyproject.toml"):
        source = ROOT / ("requirements/" + name if name.endswith(".txt") else name)
        (tmp_path / ("requirements/" + name if name.endswith(".txt") else name)).write_text(source.read_text())
    monkeypatch.setattr(setup_env, "ROOT", str(tmp_path))
    monkeypatch.setattr(setup_env, "choose_plan", lambda: setup_env.Plan("requirements/cpu.txt", "CPU machine."))
    monkeypatch.setattr(setup_env, "ensure_venv", lambda venv, floor: Path(venv).mkdir(exist_ok=True))
    monkeypatch.delenv("VOXTRAL_INSTALLER", raising=False)
    ran = []
    monkeypatch.setattr(setup_env, "run", ran.append)
    return tmp_path, ran


def test_a_second_setup_with_nothing_changed_installs_nothing(recorded_setup, capsys):
    root, ran = recorded_setup
    venv = str(root / ".venv")
    assert setup_env.main(["--venv", venv]) == 0 and len(ran) == 3
    assert setup_env.main(["--venv", venv]) == 0 and len(ran) == 3
    assert ".venv is up to date with requirements/cpu.txt (nothing to install)." in capsys.readouterr().out


def test_an_edited_lock_reinstalls(recorded_setup):
    root, ran = recorded_setup
    venv = str(root / ".venv")
    setup_env.main(["--venv", venv])
    lock = root / "requirements" / "cpu.txt"
    lock.write_text(lock.read_text().replace("peft==", "peft==0.0.1\n# was "))
    setup_env.main(["--venv", venv])
    assert len(ran) == 6


def test_an_interrupted_install_is_not_taken_for_a_finished_one(recorded_setup):
    root, ran = recorded_setup
    venv = str(root / ".venv")
    setup_env.main(["--venv", venv])

    def fail(command):
        raise subprocess.CalledProcessError(1, command)

    setup_env.run = fail
    (root / "requirements" / "cpu.txt").write_text((root / "requirements" / "cpu.txt").read_text() + "\n")
    with pytest.raises(subprocess.CalledProcessError):
        setup_env.main(["--venv", venv])
    assert not (root / ".venv" / setup_env.STAMP).exists()


@pytest.mark.extended
def test_make_setup_on_a_gpu_machine_resolves(tmp_path):
    """The exact commands `make setup` runs where `nvidia-smi -L` answers, resolved against the registry.

    Catches what only a GPU machine meets: the CUDA lock's pins for Linux (torch's CUDA build, its NVIDIA
    libraries, bitsandbytes) and the install lines themselves (two requirements naming the project once broke
    every GPU machine's setup with ResolutionImpossible)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: Tesla T4 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    env.pop("VOXTRAL_LOCK", None)
    result = subprocess.run(["make", "-s", "setup", f"SETUP_ARGS=--dry-run --venv {tmp_path / 'venv'}"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "an NVIDIA GPU answers: installing requirements/cuda.txt" in out
    assert f"uv pip sync --python {tmp_path / 'venv'}/bin/python --dry-run {ROOT}/requirements/cuda.txt" in out
    for package in ("torch==2.13.0", "bitsandbytes==", "nvidia-cublas", "transformers=="):
        assert f" + {package}" in out, package
    assert "+cpu" not in out  # the registry's CUDA build, not a CPU one from a local folder
    assert "Would install 1 package\n + voxtral-tutorial-helpers" in out
    assert not (tmp_path / "venv" / setup_env.STAMP).exists()
