"""One profile object carries every size and name that differs between a real GPU run and CI.

`full` is the real model and dataset from the Hugging Face Hub; `tiny` is an offline, CPU-only
stand-in with the same architecture, processor and dataset schema (see `tutorial_kit.tiny`).

Every notebook starts with `get_profile()` (notebook 00 explains the two profiles).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

# Every environment variable the tutorial reads, in one place.
PROFILE_ENV = "VOXTRAL_PROFILE"  # tiny | full
CACHE_ENV = "VOXTRAL_TUTORIAL_CACHE"  # where the tiny assets and stand-ins are built
OUTPUTS_ENV = "VOXTRAL_OUTPUTS"  # where adapters, checkpoints and merged models go
MODEL_ENV = "VOXTRAL_MODEL"  # full profile: a Hub id or a local folder (a mirror, a snapshot)
DATASET_ENV = "VOXTRAL_DATASET"  # full profile: a Hub id or a local folder
ADAPTER_ENV = "VOXTRAL_ADAPTER"  # notebooks 04-05: a local adapter folder or a Hub repo id
MAX_STEPS_ENV = "VOXTRAL_MAX_STEPS"  # shortens training to this many optimizer steps (rehearsals, CI)
TRAIN_MINUTES_ENV = "VOXTRAL_TRAIN_MINUTES"  # stops training after this many minutes, saved (a workshop's schedule)
DTYPE_ENV = "VOXTRAL_DTYPE"  # float16 | bfloat16 | float32: overrides the choice from the hardware
GPU_MEMORY_ENV = "VOXTRAL_GPU_MEMORY_GIB"  # use at most this much GPU memory (a big GPU rehearsing as a T4)
DRIVE_ENV = "VOXTRAL_DRIVE"  # where Google Drive is mounted in Colab (default /content/drive)
SOURCE_ENV = "VOXTRAL_TUTORIAL_SOURCE"  # what the Colab setup cell installs (default: the GitHub repository)
TUTORIAL_LOCK_ENV = "VOXTRAL_TUTORIAL_LOCK"  # the Colab setup cell's pins (default: requirements/colab.txt at the source)

# One seed for the test split, the LoRA start, shuffling and dropout: notebooks and the training command agree.
SEED = 42

FULL_MODEL_ID = "mistralai/Voxtral-Mini-3B-2507"
FULL_DATASET_ID = "ArtificialAnalysis/big_bench_audio"


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the `full` (GPU, Hub) and `tiny` (CPU, offline) runs."""

    name: str
    model_id: str
    dataset_id: str
    reason: str
    test_per_category: int
    train_epochs: float
    per_device_batch_size: int | None  # None: from the GPU's memory (helpers.hardware.training_plan)
    gradient_accumulation_steps: int | None  # None: effective_batch_size // per-device batch
    max_train_steps: int  # -1: train for `train_epochs`
    learning_rate: float
    logging_steps: int
    eval_steps: int
    eval_batch_size: int
    max_new_tokens: int
    dtype: str  # "auto": bf16/fp16/fp32 from the hardware (helpers.hardware.pick_dtype)
    load_in_4bit: bool | None = None  # None: only on GPUs with 16 GB or less
    effective_batch_size: int = 16
    activation_checkpointing: bool | None = None  # None: only where memory requires
    train_minutes: float | None = None  # stop training after this long, with a checkpoint (helpers.training.TimeBudget)

    @property
    def is_tiny(self) -> bool:
        return self.name == "tiny"

    def describe(self) -> str:
        return (
            f"profile={self.name!r} ({self.reason})\n"
            f"  model:   {self.model_id}\n"
            f"  dataset: {self.dataset_id}\n"
            f"  test split: {self.test_per_category} per category; "
            # Worded without "effective batch" and "micro-batch": notebook 00 prints this before 03 defines them.
            f"train: {self.train_epochs} epochs, {self.effective_batch_size} clips per weight update"
            + self._batch_split()
            + (f", at most {self.max_train_steps} steps" if self.max_train_steps > 0 else "")
            + (f", at most {self.train_minutes:g} minutes at a time" if self.train_minutes else "")
        )

    def _batch_split(self) -> str:
        if self.per_device_batch_size is None:
            return " (in pieces sized to the GPU's memory)"
        if self.per_device_batch_size < self.effective_batch_size:
            return f" (in pieces of {self.per_device_batch_size})"
        return ""


def drive_folder() -> Path | None:
    """The tutorial's folder on Google Drive when this is Colab and Drive is mounted, else None."""
    import sys

    mount = Path(os.environ.get(DRIVE_ENV) or "/content/drive")
    if "google.colab" in sys.modules and (mount / "MyDrive").is_dir():
        return mount / "MyDrive" / "voxtral-tutorial"
    return None


def outputs_dir(profile: Profile, on_drive: bool = True) -> Path:
    """Where notebooks write adapters, checkpoints and merged models, one folder per profile.

    `$VOXTRAL_OUTPUTS/<profile>` when set; in Colab with Google Drive mounted,
    `MyDrive/voxtral-tutorial/outputs/<profile>`, so the next notebook (a new runtime) finds what
    this one saved; else `./outputs/<profile>`. `on_drive=False` keeps what is too big for Drive
    (a 9.4 GB merged model) on this machine.
    """
    if os.environ.get(OUTPUTS_ENV):
        chosen = Path(os.environ[OUTPUTS_ENV]).expanduser()
    else:
        drive = drive_folder() if on_drive else None
        chosen = drive / "outputs" if drive else Path("outputs")
    # Absolute, so a printed path says where the files are, and stays right if the directory changes.
    return chosen.absolute() / profile.name


KEY_PACKAGES = ("torch", "transformers", "peft", "datasets", "accelerate", "mistral_common", "torchcodec")


def environment_report(profile: Profile) -> str:
    """Versions of the packages that matter, the hardware, and which profile runs and why."""
    from importlib.metadata import PackageNotFoundError, version

    lines = []
    for name in KEY_PACKAGES:
        try:
            lines.append(f"{name:<15} {version(name.replace('_', '-'))}")
        except PackageNotFoundError:
            lines.append(f"{name:<15} not installed")
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    lines += [f"{'python':<15} {platform.python_version()}", f"{'device':<15} {device}", "", profile.describe()]
    return "\n".join(lines)


def cache_dir() -> Path:
    """Where the tiny assets and outputs live: $VOXTRAL_TUTORIAL_CACHE or ~/.cache/voxtral-tutorial."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "voxtral-tutorial")


# Bump when tutorial_kit/tiny/__init__.py or tutorial_kit/tiny/synthetic.py build something different: a new folder is built.
TINY_ASSETS_VERSION = "6"


def tiny_assets_dir() -> Path:
    """Where the tiny profile's model and dataset are built (once) and loaded from."""
    return cache_dir() / f"tiny-v{TINY_ASSETS_VERSION}"


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return torch.cuda.is_available()


def _choose(name: str | None) -> tuple[str, str]:
    if name:
        return name, "asked for by name"
    from_env = os.environ.get(PROFILE_ENV, "").strip().lower()
    if from_env:
        return from_env, f"set by ${PROFILE_ENV}"
    if cuda_available():
        return "full", f"a CUDA GPU is present and ${PROFILE_ENV} is unset"
    return "tiny", f"no CUDA GPU and ${PROFILE_ENV} is unset"


def _from_environment() -> dict:
    """Profile fields set through the environment (the same for both profiles)."""
    fields: dict = {}
    steps = os.environ.get(MAX_STEPS_ENV, "").strip()
    if steps:
        if not steps.isdigit() or int(steps) < 1:
            raise ValueError(f"${MAX_STEPS_ENV}={steps!r}: expected a positive number of training steps.")
        fields["max_train_steps"] = int(steps)
    minutes = os.environ.get(TRAIN_MINUTES_ENV, "").strip()
    if minutes:
        try:
            fields["train_minutes"] = float(minutes)
        except ValueError:
            raise ValueError(f"${TRAIN_MINUTES_ENV}={minutes!r}: expected a number of minutes.") from None
        if fields["train_minutes"] <= 0:
            raise ValueError(f"${TRAIN_MINUTES_ENV}={minutes!r}: expected a positive number of minutes.")
    dtype = os.environ.get(DTYPE_ENV, "").strip()
    if dtype:
        if dtype not in ("float16", "bfloat16", "float32", "auto"):
            raise ValueError(f"${DTYPE_ENV}={dtype!r}: expected float16, bfloat16, float32 or auto.")
        fields["dtype"] = dtype
    return fields


def get_profile(name: str | None = None, **overrides) -> Profile:
    """Return the `tiny` or `full` profile.

    With no name, ``$VOXTRAL_PROFILE`` decides; when that is unset too, `full` on a CUDA GPU,
    else `tiny`. The full profile reads its model and dataset from ``$VOXTRAL_MODEL`` and
    ``$VOXTRAL_DATASET`` (a Hub id or a local folder) when they are set; ``$VOXTRAL_MAX_STEPS``
    shortens training and ``$VOXTRAL_DTYPE`` fixes the dtype, in either profile.
    A pure configuration call: the loaders build the tiny profile's model and dataset on first use.
    Keyword overrides replace profile fields, e.g. ``get_profile("tiny", test_per_category=4)``.
    """
    chosen, reason = _choose(name)
    if chosen == "full":
        profile = Profile(
            name="full",
            model_id=os.environ.get(MODEL_ENV, "").strip() or FULL_MODEL_ID,
            dataset_id=os.environ.get(DATASET_ENV, "").strip() or FULL_DATASET_ID,
            reason=reason,
            test_per_category=25,
            train_epochs=3,
            per_device_batch_size=None,  # the published recipe's 2 x 8 is 6-8x slower on an H100
            gradient_accumulation_steps=None,
            max_train_steps=-1,
            learning_rate=2e-4,
            logging_steps=5,
            eval_steps=20,
            eval_batch_size=16,
            max_new_tokens=16,
            dtype="auto",
        )
    elif chosen == "tiny":
        profile = Profile(
            name="tiny",
            model_id=str(tiny_assets_dir() / "model"),
            dataset_id=str(tiny_assets_dir() / "big_bench_audio_tiny"),
            reason=reason,
            test_per_category=8,
            train_epochs=2,
            per_device_batch_size=8,
            gradient_accumulation_steps=None,
            effective_batch_size=8,
            activation_checkpointing=False,
            max_train_steps=-1,
            learning_rate=3e-3,  # a random tiny model needs big steps to learn the format quickly
            logging_steps=2,
            eval_steps=10,
            eval_batch_size=16,
            max_new_tokens=6,
            dtype="float32",
            load_in_4bit=False,
        )
    else:
        raise ValueError(f"Unknown profile {chosen!r} ({reason}); use 'tiny' or 'full'.")
    return replace(profile, **{**_from_environment(), **overrides})


def ensure_assets(profile: Profile) -> None:
    """Build what the profile loads from the tutorial's cache (the tiny model and dataset) if it is not there
    yet: the loaders call this, so asking for a profile never builds anything."""
    if profile.is_tiny:
        # The one call from helpers into tutorial_kit: building the offline assets is machinery, not a lesson.
        from tutorial_kit.tiny import ensure_tiny_assets

        ensure_tiny_assets()
