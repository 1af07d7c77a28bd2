"""Set up .venv from the lock: the exact versions in requirements/*.txt, for this machine.

    python3 tools/setup_env.py            # what `make setup` runs
    python3 tools/setup_env.py --dry-run  # print and resolve the commands, install nothing

What it does, in order:
1. Checks the Python: it must be at least pyproject.toml's `requires-python`, else it stops and says how to
   get a newer one.
2. Picks the lock: requirements/cuda.txt where an NVIDIA GPU answers `nvidia-smi -L`, requirements/cpu.txt
   elsewhere ($VOXTRAL_LOCK=cpu|cuda chooses by hand).
3. On a CPU machine, finds torch's CPU build: PyTorch's CPU index, or else a folder of wheels pip is configured
   with (find-links); with neither it installs the registry's build (CUDA, gigabytes) and says so in one line.
4. Installs with uv (itself pinned in the lock, installed into .venv by pip): torch first, from where it was
   found, then `uv pip sync` of the lock, which also removes what the lock does not list, then `helpers` itself
   (editable). $VOXTRAL_INSTALLER=pip uses pip for all of it instead (it leaves extra packages in place).
5. Writes .venv/.installed: a fingerprint of the lock, pyproject.toml and these choices. When it matches, a
   second run does nothing and says so; when the lock changes, the next run brings .venv in line.

Standard library only, and no syntax newer than Python 3.6 before the version check: it must be able to tell an
old Python that it is too old.
"""
from __future__ import print_function

import argparse
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK_DIRECTORY = "requirements"
# The machines the lock is resolved for: Linux on x86-64 (glibc 2.28 or newer, as torch's wheels need).
LOCK_PLATFORM = "x86_64-manylinux_2_28"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
STAMP = ".installed"
# The download torch's CUDA build brings (wheel sizes of requirements/cuda.txt on the registry).
TORCH_CUDA_DOWNLOAD = "about 2.7 GB with its NVIDIA libraries"


def required_python(pyproject=None):
    """(3, 11) from `requires-python = ">=3.11"`; read with a regex, as an old Python has no tomllib."""
    with open(pyproject or os.path.join(ROOT, "pyproject.toml")) as handle:
        match = re.search(r'requires-python\s*=\s*">=\s*(\d+)\.(\d+)', handle.read())
    return int(match.group(1)), int(match.group(2))


def python_problem(version_info, executable, floor):
    """None when the Python is new enough, else the message that says how to get one that is."""
    if tuple(version_info[:2]) >= floor:
        return None
    want = "{}.{}".format(*floor)
    have = "{}.{}.{}".format(*version_info[:3])
    return ("Python {want} or newer is needed; {executable} is Python {have}.\n"
            "transformers 5.24+ and accelerate 1.16 require it, so nothing older can install the tutorial.\n"
            "Get a newer Python, then run make again with it:\n"
            "  Debian/Ubuntu:  sudo apt-get install python{want} python{want}-venv   (Ubuntu 22.04: from its updates;\n"
            "                  or the deadsnakes PPA) then:  make setup PYTHON=python{want}\n"
            "  uv:             pip install uv && uv python install {want}\n"
            "                  then:  make setup PYTHON=\"$(uv python find {want})\"\n"
            "  conda:          conda env create -f environment.yml (it brings its own Python)").format(
                want=want, have=have, executable=executable)


def has_nvidia_gpu():
    """A CUDA GPU answers (asked of the driver, so nothing needs to be installed yet)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def cpu_index_reachable(timeout=5.0):
    """PyTorch's CPU index answers within `timeout` seconds (a machine may reach only the package registry)."""
    from urllib.request import Request, urlopen

    try:
        with urlopen(Request(CPU_INDEX + "/torch/", method="HEAD"), timeout=timeout) as response:
            return response.status < 400
    except Exception:  # no DNS, refused, a proxy's error page: all mean "take another route"
        return False


def pip_find_links():
    """The find-links folders and pages pip is configured with ($PIP_FIND_LINKS and pip's config files)."""
    found = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith("find-links"):
            found += value.strip().strip("'\"").split()
    return list(dict.fromkeys(found))


def local_cpu_torch_folders(torch_version):
    """pip's find-links folders that hold a CPU build of this torch for some Python."""
    folders = []
    for location in pip_find_links():
        folder = location[len("file://"):] if location.startswith("file://") else location
        if os.path.isdir(folder) and glob.glob(os.path.join(folder, "torch-{}+cpu-*.whl".format(torch_version))):
            folders.append(folder)
    return folders


def normalise(name):
    """A package's name as the registries compare it: `Mistral_Common` and `mistral-common` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_text(path):
    with open(path) as handle:
        return handle.read()


def read_lock(text):
    """{normalised name: version} from a requirements text of `name==version` lines."""
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            pins[normalise(match.group(1))] = match.group(3)
    return pins


class Plan(object):
    """What to install on this machine, and from where."""

    def __init__(self, lock, notice, torch_source=None):
        self.lock = lock                  # path relative to the repository
        self.notice = notice              # one line for the person running it
        self.torch_source = torch_source  # extra pip/uv arguments that find torch's build, or None

    def describe(self):
        return {"lock": self.lock, "torch_source": self.torch_source}


def choose_plan(gpu=None, reachable=None, local_folders=None):
    """The lock and torch's source for this machine ($VOXTRAL_LOCK overrides the GPU detection)."""
    chosen = os.environ.get("VOXTRAL_LOCK")
    if chosen not in (None, "", "cpu", "cuda"):
        sys.exit("VOXTRAL_LOCK is {!r}: use cpu or cuda.".format(chosen))
    gpu = has_nvidia_gpu() if gpu is None and not chosen else gpu
    cuda_lock = os.path.join(LOCK_DIRECTORY, "cuda.txt")
    if chosen == "cuda" or (not chosen and gpu):
        why = "VOXTRAL_LOCK=cuda" if chosen else "an NVIDIA GPU answers"
        return Plan(cuda_lock, "{}: installing {} (torch's CUDA build, bitsandbytes).".format(why, cuda_lock))
    cpu_lock = os.path.join(LOCK_DIRECTORY, "cpu.txt")
    torch_version = read_lock(read_text(os.path.join(ROOT, cpu_lock)))["torch"]
    if reachable if reachable is not None else cpu_index_reachable():
        return Plan(cpu_lock, "No NVIDIA GPU: installing {} with torch {} from PyTorch's CPU index.".format(
            cpu_lock, torch_version), ["--index-url", CPU_INDEX])
    folders = local_cpu_torch_folders(torch_version.split("+")[0]) if local_folders is None else local_folders
    if folders:
        return Plan(cpu_lock, "No NVIDIA GPU; PyTorch's CPU index is unreachable, so torch {} comes from pip's "
                    "find-links ({}).".format(torch_version, ", ".join(folders)),
                    [argument for folder in folders for argument in ("--find-links", folder)])
    return Plan(cuda_lock, "No NVIDIA GPU, but PyTorch's CPU index is unreachable and pip knows no CPU build: "
                "installing {} instead (torch's CUDA build from the package registry, {}).".format(
                    cuda_lock, TORCH_CUDA_DOWNLOAD))


def fingerprint(plan, python):
    digest = hashlib.sha256()
    for name in (plan.lock, "pyproject.toml"):
        with open(os.path.join(ROOT, name), "rb") as handle:
            digest.update(handle.read())
    digest.update(json.dumps([plan.describe(), python]).encode())
    return digest.hexdigest()


def install_commands(plan, venv, installer="uv", dry_run=False):
    """The commands that bring `venv` to the lock, in order (each a list of arguments)."""
    python = os.path.join(venv, "bin", "python")
    lock = os.path.join(ROOT, plan.lock)
    pins = read_lock(read_text(lock))
    dry = ["--dry-run"] if dry_run else []
    torch_first = None
    if plan.torch_source:
        torch_first = ["torch=={}".format(pins["torch"]), "--no-deps"] + plan.torch_source
    if installer == "pip":
        pip = [python, "-m", "pip", "install", "-q"] + dry
        commands = [pip + torch_first] if torch_first else []
        return commands + [pip + ["--no-deps", "-r", lock], pip + ["--no-deps", "-e", ROOT]]
    uv = [os.path.join(venv, "bin", "uv"), "pip"]
    target = ["--python", python]
    # The installer itself is installed even in a dry run: it is what resolves the rest.
    commands = [[python, "-m", "pip", "install", "-q", "uv=={}".format(pins["uv"])]]
    if torch_first:
        commands.append(uv + ["install"] + target + dry + torch_first)
    commands.append(uv + ["sync"] + target + dry + [lock])
    commands.append(uv + ["install"] + target + dry + ["--no-deps", "-e", ROOT])
    return commands


def ensure_venv(venv, floor):
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(python):
        version = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                                 text=True).stdout.split()
        if version and tuple(int(part) for part in version) >= floor:
            return
        print("{} is Python {}, older than {}.{}: making it again.".format(venv, ".".join(version) or "?", *floor))
        shutil.rmtree(venv)
    print("Creating {} with {} (Python {}.{}.{})".format(venv, sys.executable, *sys.version_info[:3]), flush=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)


def run(command):
    print("$ " + " ".join(shlex.quote(part) for part in command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=os.path.join(ROOT, ".venv"))
    parser.add_argument("--check-python", action="store_true", help="only check this Python's version")
    parser.add_argument("--dry-run", action="store_true",
                        help="create the venv and resolve every install command with --dry-run; install nothing else")
    args = parser.parse_args(argv)

    floor = required_python()
    problem = python_problem(sys.version_info, sys.executable, floor)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    if args.check_python:
        return 0

    plan = choose_plan()
    installer = os.environ.get("VOXTRAL_INSTALLER", "uv")
    if installer not in ("uv", "pip"):
        sys.exit("VOXTRAL_INSTALLER is {!r}: use uv or pip.".format(installer))
    stamp = os.path.join(args.venv, STAMP)
    wanted = fingerprint(plan, [sys.version_info[:2], installer])
    if not args.dry_run and os.path.exists(stamp) and read_text(stamp).strip() == wanted:
        print("{} is up to date with {} (nothing to install).".format(os.path.relpath(args.venv, ROOT), plan.lock))
        return 0

    print(plan.notice, flush=True)
    ensure_venv(args.venv, floor)
    if os.path.exists(stamp):
        os.remove(stamp)  # an interrupted install must not look finished
    for command in install_commands(plan, args.venv, installer, args.dry_run):
        run(command)
    if not args.dry_run:
        with open(stamp, "w") as handle:
            handle.write(wanted + "\n")
        print("{} now matches {}.".format(os.path.relpath(args.venv, ROOT), plan.lock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
