"""The install scripts run for real, with apt-get, sudo and id replaced by recording stand-ins.

tools/install_browser.sh once wrote `$SUDO DEBIAN_FRONTEND=noninteractive apt-get install ...`: as a
user that is `sudo VAR=value apt-get ...` and works, but as root (CI, containers) $SUDO is empty and bash
takes the assignment for a command name. apt-get never ran, the script went on to Playwright's own
download, and CI passed only on machines that already had Chromium. So each script runs here both as
root (`id -u` prints 0) and as a user (1000, through a sudo that drops inherited variables as real sudo's
env_reset does), and the tests compare the exact apt-get command lines, and the DEBIAN_FRONTEND apt-get
saw, with what a fresh machine needs.

PATH holds only the stand-ins and links to the few real programs the scripts use (bash, env, ...), so
whether chromium, ffmpeg or espeak-ng "is installed" is up to each test, whatever this machine has.
Each script runs from a copy in a temporary folder, beside a stand-in .venv: the checkout's own is
never touched.
"""
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
BASH = shutil.which("bash")
REAL_PROGRAMS = ("bash", "env", "dirname", "cat", "chmod")
AS_ROOT_AND_AS_A_USER = pytest.mark.parametrize("uid", [0, 1000], ids=["as-root", "as-a-user"])


def write_program(path: Path, body: str):
    path.write_text(f"#!{BASH}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class Machine:
    """A temporary folder laid out as the checkout is (tools/, .venv/bin/python) and a PATH of stand-ins.

    Every stand-in appends what it was asked to do to `log`; apt-get also writes the DEBIAN_FRONTEND it
    received. A successful `apt-get install` puts a stand-in of each package on PATH, as the real one would.
    """

    def __init__(self, root: Path, uid: int, installed=(), with_sudo=True, apt_install_works=True,
                 playwright_importable=True, playwright_download_works=True, python_has_venv=True):
        self.root, self.log = root, root / "log"
        self.bin, self.system = root / "bin", root / "system"
        self.bin.mkdir()
        self.system.mkdir()
        for name in REAL_PROGRAMS:
            (self.system / name).symlink_to(shutil.which(name))
        self.log.touch()
        for name in installed:
            write_program(self.bin / name, f'echo "{name} $*" >> {self.log}\n')
        write_program(self.bin / "id", f'[ "$1" = -u ] && echo {uid} || echo "uid={uid}"\n')
        if with_sudo:
            write_program(self.bin / "sudo", f'echo "sudo $*" >> {self.log}\n'
                          "unset DEBIAN_FRONTEND  # env_reset: only what the command line sets gets through\n"
                          'while [[ $# -gt 0 && $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do export "$1"; shift; done\n'
                          'exec "$@"\n')
        write_program(self.bin / "apt-get", (
            f'echo "apt-get $* (DEBIAN_FRONTEND=${{DEBIAN_FRONTEND-unset}})" >> {self.log}\n'
            '[ "$1" = install ] || exit 0\n'
            + ("" if apt_install_works else 'echo "E: Unable to locate package chromium" >&2; exit 100\n')
            + 'for package in "$@"; do\n'
            '  [[ $package == -* ]] && continue\n'
            f'  printf "#!{BASH}\\necho \\"$package \\$*\\" >> {self.log}\\n" > "{self.bin}/$package"\n'
            f'  chmod +x "{self.bin}/$package"\n'
            'done\n'))
        (root / "tools").mkdir()
        for script in ("install_browser.sh", "install_system_packages.sh"):
            shutil.copy(TOOLS / script, root / "tools" / script)
        (root / ".venv" / "bin").mkdir(parents=True)
        write_program(root / ".venv" / "bin" / "python", (
            f'echo "python $*" >> {self.log}\n'
            'case "$1 $2" in\n'
            f'  "-c import playwright") exit {0 if playwright_importable else 1};;\n'
            f'  "-m playwright") exit {0 if playwright_download_works else 1};;\n'
            '  "-m pip") exit 0;;\n'
            'esac\n'
            '[[ $1 == -c && $2 == *version* ]] && echo 1.50.0\n'
            'exit 0\n'))
        write_program(root / "python3", f'exit {0 if python_has_venv else 1}\n')  # `import ensurepip, venv`

    def run(self, script: str) -> subprocess.CompletedProcess:
        # A clean environment: a DEBIAN_FRONTEND from outside would hide a script that never sets it.
        environment = {"PATH": f"{self.bin}:{self.system}", "HOME": str(self.root), "PYTHON": str(self.root / "python3")}
        return subprocess.run([BASH, str(self.root / "tools" / script)], cwd=self.root, env=environment,
                              capture_output=True, text=True, timeout=60)

    def lines(self, tool: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.split(" ")[0] == tool]

    def commands_given_to_sudo(self) -> list[str]:
        """What sudo was asked to run, less the `env` and VAR=value words that only set its environment."""
        return [re.sub(r"^(env )?([A-Za-z_][A-Za-z0-9_]*=\S* )*", "", line.removeprefix("sudo "))
                for line in self.lines("sudo")]


def assert_ran_through_sudo_only_as_a_user(machine: Machine, uid: int, apt_lines: list[str]):
    """As root nothing goes through sudo; as a user every apt-get call does."""
    expected = [line.rsplit(" (DEBIAN_FRONTEND=", 1)[0] for line in apt_lines] if uid else []
    assert machine.commands_given_to_sudo() == expected


@AS_ROOT_AND_AS_A_USER
def test_browser_install_on_a_machine_without_chromium_takes_debians_with_a_noninteractive_apt_get(tmp_path, uid):
    machine = Machine(tmp_path, uid)
    done = machine.run("install_browser.sh")
    assert done.returncode == 0, done.stderr
    expected = ["apt-get update -qq (DEBIAN_FRONTEND=unset)",
                "apt-get install -y -qq chromium (DEBIAN_FRONTEND=noninteractive)"]
    assert machine.lines("apt-get") == expected
    assert_ran_through_sudo_only_as_a_user(machine, uid, expected)
    assert "command not found" not in done.stderr
    # Debian's chromium installed: no Playwright download, and no pip (playwright is the environment's own).
    assert not [line for line in machine.lines("python") if line.startswith("python -m")]
    assert f"Browser test tools: {machine.bin}/chromium, playwright 1.50.0" in done.stdout


def test_browser_install_with_chromium_already_there_installs_nothing(tmp_path):
    machine = Machine(tmp_path, uid=0, installed=["chromium"])
    done = machine.run("install_browser.sh")
    assert done.returncode == 0, done.stderr
    assert machine.lines("apt-get") == [] and machine.lines("sudo") == []
    assert not [line for line in machine.lines("python") if line.startswith("python -m")]


def test_browser_install_without_playwright_in_the_environment_asks_for_make_setup_and_installs_nothing(tmp_path):
    """Playwright comes from the project's environment: a copy pip-installed beside it would be untested."""
    machine = Machine(tmp_path, uid=0, playwright_importable=False)
    done = machine.run("install_browser.sh")
    assert done.returncode != 0
    assert "cannot import playwright" in done.stderr and "make setup" in done.stderr
    assert machine.lines("apt-get") == []
    assert machine.lines("python") == ["python -c import playwright"]


def test_browser_install_where_apt_get_has_no_chromium_takes_playwrights_own(tmp_path):
    """Ubuntu's chromium is a snap, which containers cannot run: Playwright's download is the way there."""
    machine = Machine(tmp_path, uid=0, apt_install_works=False)
    done = machine.run("install_browser.sh")
    assert done.returncode == 0, done.stderr
    assert machine.lines("apt-get")[-1] == "apt-get install -y -qq chromium (DEBIAN_FRONTEND=noninteractive)"
    assert [line for line in machine.lines("python") if line.startswith("python -m")] == [
        "python -m playwright install --with-deps chromium"]
    assert "Browser test tools: Playwright's Chromium" in done.stdout


@AS_ROOT_AND_AS_A_USER
def test_browser_install_when_apt_get_and_playwrights_download_both_fail_says_what_failed_and_how_to_fix_it(tmp_path,
                                                                                                           uid):
    machine = Machine(tmp_path, uid, apt_install_works=False, playwright_download_works=False)
    done = machine.run("install_browser.sh")
    assert done.returncode != 0
    assert machine.lines("apt-get")[-1] == "apt-get install -y -qq chromium (DEBIAN_FRONTEND=noninteractive)"
    assert [line for line in machine.lines("python") if line.startswith("python -m")] == [
        "python -m playwright install --with-deps chromium"]  # and no pip install
    message = done.stderr
    assert "no Chromium could be installed" in message
    assert "`apt-get install chromium` failed" in message and "playwright install --with-deps chromium" in message
    assert "sudo apt-get install chromium" in message and "VOXTRAL_CHROMIUM" in message


@AS_ROOT_AND_AS_A_USER
def test_system_packages_on_a_fresh_machine_installs_all_three_with_a_noninteractive_apt_get(tmp_path, uid):
    machine = Machine(tmp_path, uid, python_has_venv=False)
    done = machine.run("install_system_packages.sh")
    assert done.returncode == 0, done.stderr
    expected = ["apt-get update -qq (DEBIAN_FRONTEND=unset)",
                "apt-get install -y -qq ffmpeg espeak-ng python3-venv (DEBIAN_FRONTEND=noninteractive)"]
    assert machine.lines("apt-get") == expected
    assert_ran_through_sudo_only_as_a_user(machine, uid, expected)
    assert "Installing system packages: ffmpeg espeak-ng python3-venv" in done.stdout


def test_system_packages_installs_only_the_missing_ones(tmp_path):
    machine = Machine(tmp_path, uid=0, installed=["ffmpeg"])
    done = machine.run("install_system_packages.sh")
    assert done.returncode == 0, done.stderr
    assert machine.lines("apt-get") == ["apt-get update -qq (DEBIAN_FRONTEND=unset)",
                                        "apt-get install -y -qq espeak-ng (DEBIAN_FRONTEND=noninteractive)"]


def test_system_packages_all_present_runs_no_apt_get(tmp_path):
    machine = Machine(tmp_path, uid=1000, installed=["ffmpeg", "espeak-ng"])
    done = machine.run("install_system_packages.sh")
    assert done.returncode == 0, done.stderr
    assert machine.log.read_text() == ""
    assert done.stdout == ""


def test_system_packages_as_a_user_without_sudo_names_the_packages_and_the_way_out(tmp_path):
    machine = Machine(tmp_path, uid=1000, with_sudo=False, installed=["ffmpeg"])
    done = machine.run("install_system_packages.sh")
    assert done.returncode != 0
    assert "espeak-ng missing" in done.stderr and "needs root" in done.stderr
    assert machine.lines("apt-get") == []


@pytest.mark.parametrize("script", ["install_browser.sh", "install_system_packages.sh"])
def test_install_scripts_are_executable_as_the_makefile_calls_them(script):
    assert os.access(TOOLS / script, os.X_OK)
