"""Checkpoints: which are complete, which a kill cut off, and why (adapter folders: helpers.loading)."""
from __future__ import annotations

import re
import shutil
import warnings
import zipfile
from pathlib import Path

from helpers.loading import ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_adapter_files, check_safetensors_file, first_line

TRAINER_STATE = "trainer_state.json"
# Written by Trainer after the weights; without them a resume silently restarts Adam, the
# learning-rate schedule or the dropout random numbers (Trainer only logs that they are missing).
TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt", "rng_state*.pth")
TORN_PREFIX = "torn-"
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")

class IncompleteCheckpointWarning(UserWarning):
    """A checkpoint folder could not be resumed from (it was cut off while being saved)."""


# -- checking files ------------------------------------------------------------------------

def _torch_file_problem(path: Path) -> str | None:
    # torch.save writes a zip archive whose directory comes last: a file cut off anywhere has
    # none, and the stored checksums catch the rest, without unpickling anything.
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"{path.name} is damaged ({first_line(error)}; {path.stat().st_size:,} bytes)"
    return f"{path.name} is damaged ({broken} fails its checksum)" if broken else None


def checkpoint_step(folder) -> int | None:
    match = CHECKPOINT_NAME.fullmatch(Path(folder).name)
    return int(match.group(1)) if match else None


def checkpoint_problem(folder, with_training_state: bool = True) -> str | None:
    """Why the checkpoint `folder` cannot be resumed from, or None when it is complete.

    Complete means: `trainer_state.json` readable and for the folder's step, the weights readable
    (`adapter_config.json` + `adapter_model.safetensors`, or `model*.safetensors`), and, unless
    `with_training_state=False` (`save_only_model`), the optimizer, scheduler and random-number
    states present and whole.
    """
    from transformers import TrainerState

    folder = Path(folder)
    try:
        state = TrainerState.load_from_json(str(folder / TRAINER_STATE))
    except FileNotFoundError:
        return f"{TRAINER_STATE} is missing"
    except (OSError, ValueError, TypeError) as error:
        return f"{TRAINER_STATE} is unreadable ({first_line(error)})"
    step = checkpoint_step(folder)
    if step is not None and state.global_step != step:
        return f"{TRAINER_STATE} is for step {state.global_step}, not {step}"
    try:
        if (folder / ADAPTER_CONFIG).exists() or (folder / ADAPTER_WEIGHTS).exists():
            check_adapter_files(folder)
        else:
            weights = sorted(folder.glob("model*.safetensors"))
            if not weights:
                return "it holds no model weights"
            for file in weights:
                check_safetensors_file(file)
    except (OSError, ValueError) as error:
        return first_line(error)
    if with_training_state:
        for pattern in TRAINING_STATE_FILES:
            if not any(folder.glob(pattern)):
                return f"{pattern.replace('*', '')} is missing"
    # The archives a resume loads (training_args.bin is only written, never read back).
    for file in sorted([*folder.glob("*.pt"), *folder.glob("*.pth")]):
        problem = _torch_file_problem(file)
        if problem:
            return problem
    return None


def checkpoint_folders(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    folders = [p for p in output_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(folders, key=checkpoint_step)


def _set_aside(folder: Path) -> Path:
    aside = folder.with_name(TORN_PREFIX + folder.name)
    if aside.exists():
        shutil.rmtree(aside)
    folder.rename(aside)
    return aside


def last_complete_checkpoint(output_dir, with_training_state: bool = True) -> Path | None:
    """The newest checkpoint in `output_dir` that can be resumed from, or None.

    Newer ones that are torn are renamed `torn-checkpoint-N`, with a warning that names them.
    Moving rather than leaving them: Trainer counts every `checkpoint-*` folder against
    `save_total_limit` (newest by time first), so a torn one would be kept while a complete one
    is deleted, and saving step N again would mix new files with the torn ones. Moving rather
    than deleting: a rename costs nothing and keeps whatever was written for a look.
    """
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    while (newest := get_last_checkpoint(str(output_dir))) is not None:
        newest = Path(newest)
        problem = checkpoint_problem(newest, with_training_state)
        if problem is None:
            return newest
        aside = _set_aside(newest)
        warnings.warn(f"Checkpoint '{newest}' is incomplete ({problem}): training probably stopped while it "
                      f"was being saved. It was moved to '{aside.name}'; training goes on from the checkpoint "
                      "before it.", IncompleteCheckpointWarning, stacklevel=2)
    return None


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def readable_size(num_bytes: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    raise AssertionError("unreachable")
