"""Is this machine ready for the tutorial? Checks to run before a workshop, or before your first run.

    python -m tutorial_kit.preflight [--profile tiny|full]     (make preflight; notebook 00 runs the same checks)

Each check prints PASS, FAIL with what to do about it, or INFO where it does not apply here (no GPU,
the tiny profile). The command exits with 1 when a check fails, so a script can stop on it; the
notebook only reports. Nothing is installed or changed: the checks write temporary files only.

The checks follow the profile that will run (`helpers.profiles.get_profile`): in the `tiny`
profile the Hub, the GPU and 4-bit loading are reported as INFO, since the tiny profile needs none
of them, and still say whether the `full` profile would work here.
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from helpers.loading import first_line, is_repo_id
from helpers.profiles import (
    DATASET_ENV,
    MODEL_ENV,
    PROFILE_ENV,
    Profile,
    cache_dir,
    get_profile,
)
from helpers.tasks import CATEGORIES
from tutorial_kit.checkpoints import folder_size
from tutorial_kit.mirror import (
    MODEL_IGNORE_PATTERNS,
    PROCESSOR_CONFIGS,
    missing_dataset_files,
    missing_model_files,
)

# The checks, in the order they run, and what each one looks at.
CHECKS = {
    "gpu": "a CUDA GPU: its name, its memory, and whether it computes in bf16 natively",
    "bitsandbytes": "4-bit loading, which the full model needs on GPUs of 16 GB or less",
    "ffmpeg": "the ffmpeg program (makes and converts audio files)",
    "torchcodec": "decoding an MP3 the way the notebooks decode the dataset",
    "disk": "free disk for the model, the dataset, the feature cache and the merged model",
    "model files": "the model's files, on the Hugging Face Hub or in a local mirror",
    "dataset files": "the dataset's files, on the Hugging Face Hub or in a local mirror",
    "training time": "how long notebook 03 will train on this machine (a projection)",
}

HUB_TIMEOUT_S = 5.0  # per request: an offline machine answers in seconds, not minutes

# Below this the full profile cannot train: the 4-bit training step peaked at 10.7 GiB on an H100
# with the audio tower quantized too (benchmarks/README.md); keeping the tower and projector in
# fp16, as the tutorial does, adds about 1.1 GiB (same section). A T4 reports 14.7 GiB.
MIN_GPU_GIB = 12.0

# Disk, in GB (1e9 bytes).
# The model's two safetensors shards: 4.68B parameters in bf16 (9.36 GB, the size
# `tools.standin.model_plan("full")` computes for the architecture; tested) plus tekken.json.
MODEL_GB = 9.4
# Big Bench Audio's MP3 files (README.md, notebook table: "download ~320 MB"), and about as much
# again for the Arrow copy `datasets` prepares from them.
DATASET_GB = 0.32
# One 30-s chunk of log-mel features: 128 mel bins x 3000 frames x 4 bytes (README.md: 1.5 MB per row);
# notebook 04 stores them for the test rows.
FEATURES_GB_PER_ROW = 128 * 3000 * 4 / 1e9
# One 30-s chunk of the frozen audio tower's output, which training stores once per row
# (helpers.frozen_tower): 1500 positions x the tower's width, in float16 where the tower computes in
# fp16 (a T4), else float32 (bf16 has no Arrow type). Full size: 1280 wide (3.84 MB or 7.68 MB).
TOWER_POSITIONS = 1500
FULL_TOWER_WIDTH = 1280
TINY_TOWER_WIDTH = 64
FULL_DATASET_ROWS = 1000
TINY_DATASET_ROWS = 192
TINY_ASSETS_GB = 0.04  # README.md: the tiny profile's assets, 40 MB
# Notebook 05 saves the merged model in fp16 or bf16 on this machine's disk: as large as the model.
MERGED_GB = MODEL_GB

# Projection of notebook 03's training time. The H100 measurements (benchmarks/README.md,
# "Training on the GPU" and "Projected training time on other GPUs"): training samples per second
# for the plan `helpers.hardware.training_plan` picks, keyed by (4-bit, micro-batch, checkpointing).
H100_SAMPLES_PER_S = {
    (False, 8, False): (22.8, "8 x 2 without checkpointing"),
    (False, 16, True): (14.8, "16 x 1 with checkpointing"),
    (False, 4, True): (6.6, "4 x 4 with checkpointing, batches of two 30-s chunks: pessimistic"),
    (True, None, None): (8.4, "4-bit, 8 x 2 with checkpointing, measured with the audio tower quantized too"),
}
# Those rates ran the frozen audio tower in every step; training now runs it once per row when it
# reads each row more than once. Its share of a training sample's FLOPs at full size, by activation
# checkpointing (benchmarks.tower_once.tower_share_full_size, tied by a test): epochs E then cost
# (1 - share + share / E) of the time measured.
TOWER_SHARE = {False: 0.28, True: 0.21}
# The same H100's matrix-product throughput: an 8192 x 8192 x 8192 bf16 product on random data,
# the mean of ten after three warm-ups, 798 TFLOP/s (an H100 80GB HBM3 with PyTorch 2.11.0+cu130).
# `python -m tutorial_kit.preflight --matmul` measures this machine the same way.
H100_MATMUL_TFLOPS = 798.0
MATMUL_SIZE = 8192
# The tiny profile's notebook 03 on a 2-core AMD EPYC virtual machine, as tools/store_notebooks.py
# last measured it (benchmarks/results/notebook_times.json; tied by a test).
TINY_NOTEBOOK_03_S = 35.0
SHORT_ROUTE_STEPS = 30  # VOXTRAL_MAX_STEPS for a workshop's short route


@dataclass(frozen=True)
class Check:
    """One check's outcome: PASS, FAIL (with the fix) or INFO (does not apply here)."""

    name: str
    status: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.status:<5} {self.name:<14} {self.message}"
        # An INFO line's advice is for later, when the full profile runs; a FAIL's is for now.
        label = "fix" if self.status == "FAIL" else "for the full profile"
        return text + (f"\n{'':<20} {label}: {self.fix}" if self.fix else "")

    def _repr_pretty_(self, printer, cycle) -> None:  # how Jupyter shows a cell's last value
        printer.text(str(self))


# --------------------------------------------------------------------------- pure helpers
def tower_output_gb_per_chunk(profile: Profile) -> float:
    """Disk for one 30-s chunk of the stored tower output: float16 where the model computes in fp16."""
    import torch

    from helpers.hardware import pick_dtype

    width = TINY_TOWER_WIDTH if profile.is_tiny else FULL_TOWER_WIDTH
    return TOWER_POSITIONS * width * (2 if pick_dtype(profile) == torch.float16 else 4) / 1e9


def training_rows(profile: Profile) -> int:
    """Rows of the full dataset's training split: what is left after the test rows of each category (900)."""
    return FULL_DATASET_ROWS - len(CATEGORIES) * profile.test_per_category


def training_samples(profile: Profile) -> int:
    """Samples notebook 03 trains on: `VOXTRAL_MAX_STEPS` x the effective batch when set, else
    the epochs over the training split (3 x 900 = 2700 in the full profile)."""
    if profile.max_train_steps > 0:
        return profile.max_train_steps * profile.effective_batch_size
    return round(profile.train_epochs * training_rows(profile))


def h100_rate(four_bit: bool, micro_batch: int, checkpointing: bool) -> tuple[float, str] | None:
    """The H100 measurement for a training plan, or None where none was measured."""
    return H100_SAMPLES_PER_S.get((True, None, None) if four_bit else (False, micro_batch, checkpointing))


def projected_seconds(samples: int, h100_samples_per_s: float, tflops_here: float,
                      h100_tflops: float = H100_MATMUL_TFLOPS, tower_share: float = 0.0, passes: float = 1.0) -> float:
    """Training time here, assuming training scales with matrix-product throughput; with the tower's
    output computed once, `passes` over the rows pay for the tower's `tower_share` once."""
    once = tower_share / passes if passes > 1 else tower_share
    return samples / (h100_samples_per_s * tflops_here / h100_tflops) * (1 - tower_share + once)


def measure_matmul_tflops(dtype=None, size: int = MATMUL_SIZE, repeats: int = 10) -> float:
    """TFLOP/s of a size x size x size matrix product on this GPU (mean of `repeats` after three warm-ups)."""
    import torch

    dtype = dtype or torch.bfloat16
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del a, b
    torch.cuda.empty_cache()
    return 2 * size**3 * repeats / seconds / 1e12


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _size(gb: float) -> str:
    return f"{gb * 1000:.0f} MB" if gb < 1 else f"{gb:.1f} GB"


def _first_line(error: BaseException) -> str:
    """The error's kind and the start of its message, for a one-line check result."""
    return f"{type(error).__name__}: {first_line(error)[:160]}"


def _test_mp3(seconds: float = 1.0, rate: int = 22050) -> bytes:
    """A short 440 Hz tone as MP3 bytes at Big Bench Audio's rate: made by ffmpeg, or by torchcodec's
    own encoder where the ffmpeg program is missing."""
    if shutil.which("ffmpeg"):
        made = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                               f"sine=frequency=440:sample_rate={rate}:duration={seconds}", "-c:a", "libmp3lame",
                               "-b:a", "64k", "-f", "mp3", "-"], capture_output=True, timeout=60)
        if made.returncode == 0 and made.stdout:
            return made.stdout
    import math

    import torch
    from torchcodec.encoders import AudioEncoder

    tone = 0.3 * torch.sin(2 * math.pi * 440 * torch.arange(int(seconds * rate)) / rate)
    return AudioEncoder(tone[None], sample_rate=rate).to_tensor("mp3").numpy().tobytes()


def _existing(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists():
        path = path.parent
    return path


# --------------------------------------------------------------------------- the checks
def _reported(name: str):
    """Make a check method record its outcome and, if the check itself breaks, report a FAIL that says how
    instead of a traceback: a preflight reports, it does not crash."""
    def decorate(method):
        @functools.wraps(method)
        def run(self) -> Check:
            try:
                check = method(self)
            except Exception as error:  # noqa: BLE001
                check = Check(name, "FAIL", f"the check itself failed ({_first_line(error)})",
                              "run it again; if it fails again, the message above names what broke")
            return self._record(check)
        return run
    return decorate


class Preflight:
    """Runs the checks for a profile and keeps their outcomes. Each method returns its `Check`.

    `echo=True` (the command line) prints each outcome as it comes; in a notebook the cell shows it.
    """

    def __init__(self, profile: Profile | None = None, echo: bool = False):
        self.profile = profile or get_profile()
        self.echo = echo
        self.results: list[Check] = []
        self._offline: str | None = None  # why the Hub is unreachable, once found out
        self.measure_matmul = measure_matmul_tflops

    # ------------------------------------------------------------------ bookkeeping
    @property
    def full(self) -> Profile:
        """The full profile's settings (its model and dataset), whichever profile runs."""
        return self.profile if self.profile.name == "full" else get_profile("full")

    def _record(self, check: Check) -> Check:
        self.results = [r for r in self.results if r.name != check.name] + [check]
        if self.echo:
            print(check, flush=True)
        return check

    def _unavailable(self, name: str, message: str, fix: str) -> Check:
        """What the full profile lacks: a FAIL in the full profile, INFO in the tiny one."""
        if self.profile.is_tiny:
            return Check(name, "INFO", f"{message} (the tiny profile does not need it)", fix)
        return Check(name, "FAIL", message, fix)

    def run(self, name: str) -> Check:
        """Run one check by its name in `CHECKS` (`checks.run("model files")` is `checks.model_files()`)."""
        return getattr(self, name.replace(" ", "_"))()

    def run_all(self) -> list[Check]:
        for name in CHECKS:
            self.run(name)
        return self.results

    @property
    def failed(self) -> list[Check]:
        return [r for r in self.results if r.status == "FAIL"]

    def summary(self) -> str:
        counts = {status: sum(r.status == status for r in self.results) for status in ("PASS", "FAIL", "INFO")}
        head = f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['INFO']} for information " \
               f"({self.profile.name} profile)."
        if not self.failed:
            return head + f" This machine is ready for the {self.profile.name} profile."
        return head + "\nFix these first:\n" + "\n".join(f"  {r.name}: {r.fix}" for r in self.failed)

    # ------------------------------------------------------------------ gpu and libraries
    @_reported("gpu")
    def gpu(self) -> Check:
        import torch

        from helpers.hardware import gpu_memory_gib, native_bf16, pick_dtype, wants_4bit

        if not torch.cuda.is_available():
            if self.profile.is_tiny:
                return Check("gpu", "INFO", f"no CUDA GPU: the tiny profile runs on the CPU ({os.cpu_count()} cores). "
                                            "The real model needs a GPU (Colab: Runtime > Change runtime type > T4 GPU)")
            return Check("gpu", "FAIL", "no CUDA GPU, and the full profile needs one",
                         "in Colab: Runtime > Change runtime type > T4 GPU, then run from the top; "
                         f"without a GPU, run the offline tiny profile ({PROFILE_ENV}=tiny)")
        name = torch.cuda.get_device_name(0)
        major, minor = torch.cuda.get_device_capability(0)
        memory = gpu_memory_gib()
        # Not torch.cuda.is_bf16_supported(): it answers True on a T4 too, where bf16 is emulated and slow.
        precision = ("native bf16" if native_bf16()
                     else "no native bf16 (that needs 8.0), so fp16")
        dtype = str(pick_dtype(self.full)).replace("torch.", "")
        loading = "the model loads in 4 bits" if wants_4bit(self.full) else "the model loads unquantized"
        text = f"{name}, {memory:.1f} GiB, compute capability {major}.{minor}: {precision}; full profile: {dtype}, {loading}"
        if memory < MIN_GPU_GIB and not self.profile.is_tiny:
            return Check("gpu", "FAIL", f"{text}; under {MIN_GPU_GIB:.0f} GiB the full profile cannot train",
                         "choose a GPU with more memory (a T4 has 15 GB)")
        return Check("gpu", "PASS", text)

    @_reported("bitsandbytes")
    def bitsandbytes(self) -> Check:
        import torch

        from helpers.hardware import wants_4bit

        if not torch.cuda.is_available():
            return Check("bitsandbytes", "INFO", "no GPU: 4-bit loading does not apply here")
        needed = wants_4bit(self.full)
        why = "needed here (16 GB or less)" if needed else "not needed on this GPU"
        try:
            import bitsandbytes
        except Exception as error:  # noqa: BLE001 - ImportError, or its CUDA setup failing at import
            fix = ("in Colab run the setup cell (it adds bitsandbytes on a GPU runtime) and restart if it says so; "
                   "elsewhere: pip install bitsandbytes")
            if needed and not self.profile.is_tiny:
                return Check("bitsandbytes", "FAIL", f"cannot import bitsandbytes ({_first_line(error)}); {why}", fix)
            return Check("bitsandbytes", "INFO", f"cannot import bitsandbytes ({_first_line(error)}); {why}")
        return Check("bitsandbytes", "PASS", f"bitsandbytes {bitsandbytes.__version__}, 4-bit loading {why}")

    @_reported("ffmpeg")
    def ffmpeg(self) -> Check:
        fix = "sudo apt-get install ffmpeg (in Colab the setup cell installs it; `make setup` does elsewhere)"
        found = shutil.which("ffmpeg")
        if found is None:
            return Check("ffmpeg", "FAIL", "the ffmpeg program is not installed", fix)
        version = subprocess.run([found, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30)
        if version.returncode != 0:
            return Check("ffmpeg", "FAIL", f"{found} does not run: {version.stderr.strip()[:160]}", fix)
        first = version.stdout.splitlines()[0] if version.stdout else "ffmpeg"
        return Check("ffmpeg", "PASS", f"{first.split(' Copyright')[0]} ({found})")

    @_reported("torchcodec")
    def torchcodec(self) -> Check:
        from importlib.metadata import PackageNotFoundError, version

        import torch

        from tutorial_kit.colab import torchcodec_requirement

        fix = (f"pip install '{torchcodec_requirement(torch.__version__)}' (the torchcodec for torch "
               f"{torch.__version__}), and ffmpeg's libraries (sudo apt-get install ffmpeg); in Colab: run the setup "
               "cell, then Runtime > Restart session")
        try:
            installed = version("torchcodec")
        except PackageNotFoundError:
            return Check("torchcodec", "FAIL", "torchcodec is not installed: datasets cannot decode audio", fix)
        try:
            from helpers.audio import SAMPLING_RATE, load_audio

            audio = load_audio(_test_mp3(seconds=1.0))
        except Exception as error:  # noqa: BLE001 - import and decoder errors vary by platform
            return Check("torchcodec", "FAIL", f"torchcodec {installed} could not decode an MP3 ({_first_line(error)})", fix)
        seconds = len(audio) / SAMPLING_RATE
        if not 0.9 <= seconds <= 1.2:
            return Check("torchcodec", "FAIL", f"torchcodec {installed} decoded a 1-s MP3 as {seconds:.2f} s", fix)
        return Check("torchcodec", "PASS", f"torchcodec {installed} decoded a 1-s MP3 (22.05 kHz) and it was resampled "
                                           "to 16 kHz, as the notebooks read the dataset")

    # ------------------------------------------------------------------ disk
    def disk_needs(self, profile: Profile | None = None) -> list[tuple[str, Path, float]]:
        """(what, where, GB) that the profile writes on this machine."""
        import datasets.config
        from huggingface_hub import constants

        profile = profile or self.profile
        datasets_cache = Path(datasets.config.HF_DATASETS_CACHE)
        if profile.is_tiny:
            return [("tiny assets", cache_dir(), TINY_ASSETS_GB),
                    ("audio tower output cache", datasets_cache, TINY_DATASET_ROWS * tower_output_gb_per_chunk(profile)),
                    ("log-mel feature cache", datasets_cache, TINY_DATASET_ROWS * FEATURES_GB_PER_ROW)]
        hub_cache = Path(constants.HF_HUB_CACHE)
        needs = []
        if not Path(profile.model_id).expanduser().is_dir():
            needs.append(("model download", hub_cache, MODEL_GB))
        if not Path(profile.dataset_id).expanduser().is_dir():
            needs.append(("dataset download", hub_cache, DATASET_GB))
        needs += [("dataset's Arrow copy", datasets_cache, DATASET_GB),
                  ("audio tower output cache", datasets_cache, FULL_DATASET_ROWS * tower_output_gb_per_chunk(profile)),
                  ("log-mel feature cache", datasets_cache, len(CATEGORIES) * profile.test_per_category * FEATURES_GB_PER_ROW),
                  ("notebook 05's merged model", Path("outputs"), MERGED_GB)]
        return needs

    def _shortfalls(self, needs) -> tuple[list[str], list[str]]:
        """Per file system: what it holds, and what does not fit."""
        by_device: dict[int, dict] = {}
        for what, where, gb in needs:
            existing = _existing(where)
            entry = by_device.setdefault(os.stat(existing).st_dev, {"path": existing, "needs": [], "gb": 0.0})
            entry["needs"].append(f"{what} {_size(gb)}")
            entry["gb"] += gb
        lines, short = [], []
        for entry in by_device.values():
            free = shutil.disk_usage(entry["path"]).free / 1e9
            lines.append(f"{_size(free)} free at {entry['path']}, {_size(entry['gb'])} needed ({', '.join(entry['needs'])})")
            if free < entry["gb"]:
                short.append(f"{_size(entry['gb'] - free)} more at {entry['path']}")
        return lines, short

    @_reported("disk")
    def disk(self) -> Check:
        lines, short = self._shortfalls(self.disk_needs())
        text = "; ".join(lines)
        if self.profile.is_tiny:
            _, full_short = self._shortfalls(self.disk_needs(self.full))
            text += "; the full profile would " + ("not fit: it needs " + ", ".join(full_short) if full_short
                                                    else "fit too")
        if short:
            return Check("disk", "FAIL", text,
                         f"free {', '.join(short)}; or put the caches on a larger disk (HF_HOME), or read the model "
                         f"from a mirror elsewhere (${MODEL_ENV}, see workshop/README.md)")
        return Check("disk", "PASS", text)

    # ------------------------------------------------------------------ model and dataset
    @_reported("model files")
    def model_files(self) -> Check:
        return self._source("model files", self.full.model_id, "model", MODEL_ENV)

    @_reported("dataset files")
    def dataset_files(self) -> Check:
        return self._source("dataset files", self.full.dataset_id, "dataset", DATASET_ENV)

    def _missing(self, repo_type: str, folder: Path) -> list[str]:
        return missing_model_files(folder) if repo_type == "model" else missing_dataset_files(folder)

    def _source(self, name: str, source: str, repo_type: str, variable: str) -> Check:
        folder = Path(source).expanduser()
        if folder.is_dir():
            missing = self._missing(repo_type, folder)
            if missing:
                shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                return Check(name, "FAIL", f"the local folder {folder} (${variable}) lacks {shown}",
                             "copy it again with `python -m tutorial_kit.mirror DIR` (workshop/README.md), "
                             f"or unset ${variable} to download from the Hub")
            return Check(name, "PASS", f"local folder {folder} (${variable}): every file the tutorial loads is there "
                                       f"({_size(folder_size(folder) / 1e9)})")
        if not is_repo_id(source):
            return Check(name, "FAIL", f"${variable}={source!r} is neither a folder on this machine nor a Hub "
                                       "repository id (owner/name)",
                         f"point ${variable} at a mirror folder that exists here, or unset it")
        return self._hub_source(name, source, repo_type)

    def _offline_setting(self) -> str | None:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return "HF_HUB_OFFLINE=1 is set"
        return None

    def _late_offline_note(self) -> str:
        """HF_HUB_OFFLINE set after huggingface_hub was imported is silently ignored by this process."""
        from huggingface_hub import constants

        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") \
                and not constants.HF_HUB_OFFLINE:
            return ("; note: HF_HUB_OFFLINE=1 was set after huggingface_hub was imported, so this Python process "
                    "ignores it: restart, and set it first (the very first cell, or the shell)")
        return ""

    def _hub_source(self, name: str, repo_id: str, repo_type: str) -> Check:
        from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        self._offline = self._offline or self._offline_setting()
        if self._offline is None:
            api = HfApi()
            try:
                info = (api.model_info if repo_type == "model" else api.dataset_info)(repo_id, timeout=HUB_TIMEOUT_S)
            except (RepositoryNotFoundError, GatedRepoError) as error:
                return self._unavailable(name, f"{repo_id} ({repo_type}) is not on the Hub or not open to you "
                                               f"({_first_line(error)})",
                                         "check the name; for a gated repository accept its terms on its Hub page "
                                         "and log in with `hf auth login`")
            except Exception as error:  # noqa: BLE001 - DNS, connection, proxy and timeout errors all mean offline
                self._offline = f"huggingface.co cannot be reached ({_first_line(error)})"
            else:
                return self._listed(name, repo_id, repo_type, {s.rfilename for s in info.siblings or []},
                                    get_hf_file_metadata, hf_hub_url)
        cached = self._cached(repo_id, repo_type)
        if cached is not None and not self._missing(repo_type, cached):
            return Check(name, "PASS", f"offline ({self._offline}), but {repo_id} is complete in the Hub cache "
                                       f"({cached}){self._late_offline_note()}")
        return self._unavailable(
            name, f"offline: {self._offline}, and {repo_id} is not in this machine's Hub cache{self._late_offline_note()}",
            "connect to the internet, or use a mirror: VOXTRAL_MODEL and VOXTRAL_DATASET pointing at its folders and "
            "HF_HUB_OFFLINE=1 (make one with `python -m tutorial_kit.mirror DIR`; workshop/README.md)")

    def _listed(self, name, repo_id, repo_type, names, get_hf_file_metadata, hf_hub_url) -> Check:
        if repo_type == "model":
            needed = ["config.json", "tekken.json"]
            missing = [n for n in needed if n not in names]
            if not any(n in names for n in PROCESSOR_CONFIGS):
                missing.append(" or ".join(PROCESSOR_CONFIGS))
            if not ({"model.safetensors.index.json"} <= names and any(n.startswith("model-") for n in names)) \
                    and "model.safetensors" not in names:
                missing.append("model.safetensors.index.json and its shards")
            probe = "config.json"
        else:
            data = sorted(n for n in names if n not in ("README.md", ".gitattributes"))
            missing = [] if data else ["any data file"]
            probe = "metadata.jsonl" if "metadata.jsonl" in names else (data[0] if data else "README.md")
        if missing:
            return Check(name, "FAIL", f"{repo_id} on the Hub lacks {', '.join(missing)}",
                         f"check ${MODEL_ENV if repo_type == 'model' else DATASET_ENV}: is it the right repository?")
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, probe, repo_type=repo_type), timeout=HUB_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 - the listing worked; the download route did not
            return self._unavailable(name, f"the Hub lists {repo_id}'s files, but {probe} cannot be downloaded "
                                           f"({_first_line(error)})",
                                     "a proxy or firewall may block downloads from huggingface.co; try another "
                                     "network, or use a mirror (workshop/README.md)")
        kept = [n for n in names if n not in MODEL_IGNORE_PATTERNS] if repo_type == "model" else names
        return Check(name, "PASS", f"{repo_id} on the Hub: {len(kept)} files the tutorial can download, "
                                   f"and {probe} resolves")

    def _cached(self, repo_id: str, repo_type: str) -> Path | None:
        """The repository's folder in the local Hub cache, if it was downloaded before (no network)."""
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id, repo_type=repo_type, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached (or a broken cache): nothing to offer
            return None

    # ------------------------------------------------------------------ time
    @_reported("training time")
    def training_time(self) -> Check:
        import torch

        from helpers.hardware import pick_dtype, training_plan, wants_4bit

        if self.profile.is_tiny:
            return Check("training time", "INFO",
                         f"tiny profile: notebook 03 took {TINY_NOTEBOOK_03_S:.0f} s on a 2-core CPU (measured: "
                         f"the README's table); this machine has {os.cpu_count()} cores")
        if not torch.cuda.is_available():
            return Check("training time", "INFO", "not projected: the full profile needs a CUDA GPU (see 'gpu')")
        plan = training_plan(self.profile)
        four_bit = wants_4bit(self.profile)
        reference = h100_rate(four_bit, plan.micro_batch, plan.activation_checkpointing)
        if reference is None:
            return Check("training time", "INFO", f"not projected: no H100 measurement for micro-batch "
                                                  f"{plan.micro_batch} x {plan.accumulation}")
        rate, what = reference
        dtype = pick_dtype(self.profile)
        tflops = self.measure_matmul(dtype)
        samples = training_samples(self.profile)
        passes = samples / training_rows(self.profile)
        seconds = projected_seconds(samples, rate, tflops, tower_share=TOWER_SHARE[plan.activation_checkpointing],
                                    passes=passes)
        here = rate * tflops / H100_MATMUL_TFLOPS
        steps = f"{self.profile.max_train_steps} steps" if self.profile.max_train_steps > 0 else \
            f"{self.profile.train_epochs:g} epochs"
        text = (f"projected {_minutes(seconds)} of training for {steps} ({samples} samples) at {here:.2f} samples/s: "
                f"the H100's {rate} samples/s ({what}; benchmarks/README.md) scaled by this GPU's measured "
                f"{str(dtype).replace('torch.', '')} matrix products, {tflops:.0f} TFLOP/s, against the H100's "
                f"{H100_MATMUL_TFLOPS:.0f}, with the frozen audio tower run once per row. A projection, not a measurement: "
                "loading and evaluation add minutes")
        if self.profile.max_train_steps <= 0:
            short = SHORT_ROUTE_STEPS * self.profile.effective_batch_size
            text += f". A shorter run: VOXTRAL_MAX_STEPS={SHORT_ROUTE_STEPS} ({short} samples, ~{_minutes(short / here)})"
        return Check("training time", "PASS", text)


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_kit.preflight", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("tiny", "full"),
                        help=f"check for this profile (default: ${PROFILE_ENV}, else full with a CUDA GPU, tiny without)")
    parser.add_argument("--matmul", action="store_true",
                        help=f"only measure this GPU's bf16 matrix products ({MATMUL_SIZE}^3), as the projection does")
    arguments = parser.parse_args(argv)
    if arguments.matmul:
        import torch

        if not torch.cuda.is_available():
            parser.error("--matmul measures a CUDA GPU, and there is none here")
        print(f"{torch.cuda.get_device_name(0)}: {measure_matmul_tflops():.0f} TFLOP/s "
              f"(bf16, {MATMUL_SIZE}^3, mean of ten after three warm-ups)")
        return 0
    checks = Preflight(get_profile(arguments.profile), echo=True)
    print(f"Preflight for the {checks.profile.name} profile ({checks.profile.reason})", flush=True)
    checks.run_all()
    print(checks.summary())
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
