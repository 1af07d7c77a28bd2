"""Google Colab: the notebooks' setup cell, and Google Drive for what must outlive a runtime.

Colab preinstalls torch (a CUDA build matched to its drivers); reinstalling it would waste minutes
and can break CUDA. So `setup` keeps the torch it finds, pins torchcodec to the release that
works with that torch, installs the tutorial's libraries at the versions in the repository's
lock (requirements/colab.txt: transformers, peft, datasets, ... as the tests ran them), adds
bitsandbytes on a GPU runtime (4-bit loading on a T4), installs espeak-ng and ffmpeg, and says
whether the session must restart. This module imports nothing
heavy: it runs before the notebook imports torch.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from importlib import metadata

from helpers.profiles import DRIVE_ENV, TUTORIAL_LOCK_ENV, Profile, outputs_dir

DISTRIBUTION = "voxtral-tutorial-helpers"
SYSTEM_TOOLS = ("espeak-ng", "ffmpeg")
COLAB_LOCK = "requirements/colab.txt"
# torchcodec's compatibility table (its README): each release up to 0.11 works with one torch
# minor; from 0.12 on a release works with every torch >= 2.11, and 0.N matches torch 2.N.
TORCHCODEC_FOR_TORCH = {(2, 4): "0.0.3", (2, 5): "0.1", (2, 6): "0.2", (2, 7): "0.5", (2, 8): "0.7",
                        (2, 9): "0.9", (2, 10): "0.10", (2, 11): "0.11"}
NEWEST_KNOWN_TORCHCODEC = (0, 17)


def in_colab() -> bool:
    return "google.colab" in sys.modules


def torchcodec_requirement(torch_version: str) -> str:
    """The torchcodec release that works with `torch_version` ("2.9.0+cu126" -> "torchcodec==0.9.*")."""
    major, minor = (int(part) for part in torch_version.split("+")[0].split(".")[:2])
    if (major, minor) in TORCHCODEC_FOR_TORCH:
        return f"torchcodec=={TORCHCODEC_FOR_TORCH[major, minor]}.*"
    if (major, minor) < min(TORCHCODEC_FOR_TORCH):
        raise RuntimeError(f"torch {torch_version} is too old for datasets' audio decoding (torchcodec needs torch >= 2.4).")
    if major == 2 and minor <= NEWEST_KNOWN_TORCHCODEC[1]:
        return f"torchcodec==0.{minor}.*"
    return f"torchcodec>={NEWEST_KNOWN_TORCHCODEC[0]}.{NEWEST_KNOWN_TORCHCODEC[1]}"  # newer than we know


def has_nvidia_gpu() -> bool:
    """A CUDA GPU is attached (asked of the driver, so torch need not be imported yet)."""
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _imported_distribution_versions() -> dict[str, str]:
    """Versions of the installed distributions whose modules this Python process has imported."""
    imported = {name.split(".")[0] for name in list(sys.modules)}
    versions = {}
    for module, distributions in metadata.packages_distributions().items():
        if module in imported:
            for distribution in distributions:
                versions[distribution] = _installed(distribution)
    return versions


def lock_location(source: str) -> str:
    """Where the Colab pins live for an install `source`: beside the code it installs, at the same ref.

    "git+https://github.com/OWNER/NAME@REF" -> the raw file on GitHub; "file:///checkout" -> the file there;
    `$VOXTRAL_TUTORIAL_LOCK` names another file or URL.
    """
    if os.environ.get(TUTORIAL_LOCK_ENV):
        return os.environ[TUTORIAL_LOCK_ENV]
    if source.startswith("file://"):
        return os.path.join(source[len("file://"):], COLAB_LOCK)
    match = re.fullmatch(r"git\+https://github\.com/([^/]+)/([^/@]+?)(?:\.git)?@(.+)", source)
    if match:
        owner, name, ref = match.groups()
        return f"https://raw.githubusercontent.com/{owner}/{name}/{ref}/{COLAB_LOCK}"
    raise RuntimeError(f"Cannot tell where the version pins for {source!r} are: set {TUTORIAL_LOCK_ENV} to {COLAB_LOCK}'s "
                       "path or URL.")


def read_pins(location: str) -> dict[str, str]:
    """{name: version} from a file or URL of `name==version` lines."""
    if "://" in location:
        with urllib.request.urlopen(location, timeout=60) as response:
            text = response.read().decode()
    else:
        with open(location) as handle:
            text = handle.read()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.M))
    if not pins:
        raise RuntimeError(f"{location} holds no `name==version` lines.")
    return pins


def _run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def setup(source: str, gpu: bool | None = None) -> bool:
    """Install the tutorial into this runtime; return True when the session must restart.

    `source` is what pip installs `helpers` from (the setup cell passes the GitHub repository, or
    `$VOXTRAL_TUTORIAL_SOURCE`). Prints each step.
    """
    gpu = has_nvidia_gpu() if gpu is None else gpu
    torch_version = _installed("torch")
    before = _imported_distribution_versions()

    # demo: the microphone app; serve: notebook 05's OpenAI-compatible server and client; gpu: 4-bit loading.
    requirement = f"{DISTRIBUTION}[{'demo,serve,gpu' if gpu else 'demo,serve'}] @ {source}"
    packages = [requirement]
    lock = lock_location(source)
    pins = read_pins(lock)
    print("Pinning the tutorial's libraries as tested (" + os.path.basename(lock) + "): "
          + ", ".join(f"{name} {version}" for name, version in pins.items()))
    # As constraints, the pins apply to what the requirement pulls in (bitsandbytes only on a GPU) and
    # replace a preinstalled version that differs; Colab's torch family is pinned to what it has.
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.writelines(f"{name}=={version}\n" for name, version in pins.items())
        for name in ("torch", "torchvision", "torchaudio"):  # keep Colab's CUDA builds as they are
            if _installed(name):
                constraints.write(f"{name}=={_installed(name)}\n")
    if torch_version:
        packages.append(torchcodec_requirement(torch_version))
        print(f"Keeping the installed torch {torch_version}; {packages[-1]} is the torchcodec that matches it.")
    else:
        print("No torch installed: pip will install the default build.")
    print("GPU runtime: adding bitsandbytes for 4-bit loading." if gpu
          else "No GPU: the notebooks will run the offline `tiny` profile (Runtime > Change runtime type for a GPU).")
    try:
        _run([sys.executable, "-m", "pip", "install", "-q", *packages, "-c", constraints.name])
    finally:
        os.unlink(constraints.name)

    missing = [tool for tool in SYSTEM_TOOLS if shutil.which(tool) is None]
    if missing:
        # Colab runs as root; the frontend variable keeps apt from asking questions nobody can answer.
        _run(["apt-get", "-qq", "update"])
        _run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq", "install", "-y", *missing])
    else:
        print(f"{' and '.join(SYSTEM_TOOLS)} already installed.")

    after = {name: _installed(name) for name in before}
    changed = sorted(name for name in before if after[name] != before[name])
    if changed:
        print(f"RESTART NEEDED: {', '.join(changed)} changed after Python had loaded them. "
              "Use Runtime > Restart session, then run the notebook again from the top (this cell will be quick).")
    else:
        print("Setup complete; no restart needed.")
    return bool(changed)


def keep_outputs_on_drive(profile: Profile) -> None:
    """In Colab, mount Google Drive so adapters and checkpoints outlive this runtime (each notebook
    opened from a badge runs in a new one). Elsewhere nothing changes. Prints where outputs go."""
    if in_colab():
        from google.colab import drive

        drive.mount(os.environ.get(DRIVE_ENV) or "/content/drive")
    print(f"Outputs (adapter, checkpoints, merged model) go to: {outputs_dir(profile).resolve()}")
