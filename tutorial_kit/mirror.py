"""Copy the model and the dataset once, for a room without (good) internet: a USB stick, a shared drive.

    python -m tutorial_kit.mirror DIR [--model ID_OR_FOLDER] [--dataset ID_OR_FOLDER]     (make mirror DIR=...)

Writes ``DIR/Voxtral-Mini-3B-2507`` and ``DIR/big_bench_audio``, each laid out like its Hub
repository, then prints how to use them: ``VOXTRAL_MODEL`` and ``VOXTRAL_DATASET`` pointing there,
and ``HF_HUB_OFFLINE=1`` set before anything imports ``huggingface_hub``.

From the model repository it skips Mistral's native format (``consolidated.safetensors`` and
``params.json``: 9.4 GB that transformers never reads). A source may be a Hub repository id or a
local folder, such as an earlier mirror (copying one stick to the next). Copying again resumes:
files already there with the right size are kept.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers.loading import is_repo_id, repo_name
from helpers.profiles import DATASET_ENV, FULL_DATASET_ID, FULL_MODEL_ID, MODEL_ENV
from tutorial_kit.checkpoints import folder_size

# Mistral's own checkpoint format, for vLLM and mistral-inference; `from_pretrained` reads the
# model-0000N-of-00002.safetensors shards instead. Same pattern syntax as `snapshot_download`.
MODEL_IGNORE_PATTERNS = ("consolidated.safetensors", "params.json")
# huggingface_hub's download bookkeeping inside a folder it downloaded into, and files an interrupted
# copy left half-written: not part of the repository.
BOOKKEEPING_PATTERNS = (".cache/*", "*.partial", "*.incomplete")
PROCESSOR_CONFIGS = ("preprocessor_config.json", "processor_config.json")
DATASET_DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".csv")


class MirrorError(RuntimeError):
    """A source that cannot be copied, or a copy that is not complete; the message says what to do."""


@dataclass(frozen=True)
class Mirror:
    """The two folders of a mirror: what `VOXTRAL_MODEL` and `VOXTRAL_DATASET` should name."""

    model_dir: Path
    dataset_dir: Path


# --------------------------------------------------------------------------- what a complete copy holds
def missing_model_files(folder: str | os.PathLike) -> list[str]:
    """The files `load_model_and_processor` needs that `folder` lacks (empty when it is complete):
    config.json, tekken.json, a processor config, and every weight shard the index names."""
    folder = Path(folder)
    missing = [name for name in ("config.json", "tekken.json") if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in PROCESSOR_CONFIGS):
        missing.append(" or ".join(PROCESSOR_CONFIGS))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as error:
            return [*missing, f"a readable model.safetensors.index.json ({type(error).__name__}: {error})"]
        missing += [shard for shard in shards if not (folder / shard).is_file() or (folder / shard).stat().st_size == 0]
    elif not (folder / "model.safetensors").is_file():
        missing.append("model.safetensors.index.json and its shards (or model.safetensors)")
    return missing


def missing_dataset_files(folder: str | os.PathLike) -> list[str]:
    """The files `datasets.load_dataset(folder)` needs that `folder` lacks: every audio file that
    metadata.jsonl names, or, without metadata.jsonl, some data files (parquet, arrow, ...)."""
    folder = Path(folder)
    metadata = folder / "metadata.jsonl"
    if metadata.is_file():
        missing = []
        for number, line in enumerate(metadata.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                file_name = json.loads(line)["file_name"]
            except (ValueError, KeyError):
                return [f"metadata.jsonl line {number}: a JSON object with a 'file_name'"]
            if not (folder / file_name).is_file():
                missing.append(file_name)
        return missing
    if any(p.suffix in DATASET_DATA_SUFFIXES for p in folder.rglob("*") if p.is_file()):
        return []
    return ["metadata.jsonl (or data files: " + ", ".join(DATASET_DATA_SUFFIXES) + ")"]


def _describe_missing(missing: list[str], limit: int = 5) -> str:
    shown = ", ".join(missing[:limit])
    return shown + (f" and {len(missing) - limit} more" if len(missing) > limit else "")


# --------------------------------------------------------------------------- copying
def _free_bytes(folder: Path) -> int:
    existing = folder
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def _check_space(needed: int, destination: Path, what: str) -> None:
    free = _free_bytes(destination)
    if needed > free:
        raise MirrorError(f"{what} needs {needed / 1e9:.1f} GB more in {destination}, but only {free / 1e9:.1f} GB "
                          "is free there. Free some space or choose another folder.")


def _local_files(source: Path, ignore_patterns: tuple[str, ...]) -> list[str]:
    from huggingface_hub.utils import filter_repo_objects

    names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    return list(filter_repo_objects(names, ignore_patterns=list(ignore_patterns) + list(BOOKKEEPING_PATTERNS)))


def _copy_folder(source: Path, destination: Path, ignore_patterns: tuple[str, ...]) -> None:
    """Copy what the patterns keep; a file already there with the same size is kept (a resumed copy).
    Each file is written under a temporary name first, so an interrupted copy never looks complete."""
    source_resolved, destination_resolved = source.resolve(), destination.resolve()
    if destination_resolved == source_resolved or source_resolved in destination_resolved.parents:
        raise MirrorError(f"Cannot copy {source} into itself ({destination}): choose a folder outside it.")
    names = _local_files(source, ignore_patterns)
    todo = [n for n in names if not ((destination / n).is_file()
                                     and (destination / n).stat().st_size == (source / n).stat().st_size)]
    _check_space(sum((source / n).stat().st_size for n in todo), destination, f"Copying {source}")
    for name in todo:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source / name, partial)
        os.replace(partial, target)
        print(f"  {name:<45} {target.stat().st_size / 1e6:>10,.1f} MB", flush=True)


def _download(repo_id: str, repo_type: str, destination: Path, ignore_patterns: tuple[str, ...]) -> None:
    from huggingface_hub import snapshot_download

    settings = dict(repo_type=repo_type, local_dir=destination, ignore_patterns=list(ignore_patterns) or None)
    try:
        # A dry run first: the sizes, so a full stick fails now rather than after 9 GB.
        planned = snapshot_download(repo_id, dry_run=True, **settings)
        _check_space(sum(f.file_size or 0 for f in planned if f.will_download), destination, f"Downloading {repo_id}")
        snapshot_download(repo_id, **settings)
    except MirrorError:
        raise
    except Exception as error:  # noqa: BLE001 - network, authentication and not-found errors all end here
        raise MirrorError(
            f"Could not download {repo_id!r} ({repo_type}) from the Hugging Face Hub "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}). Check the "
            "network and the name; for a gated or private repository log in with `hf auth login`. "
            "With HF_HUB_OFFLINE=1 nothing can be downloaded: unset it while you make the mirror."
        ) from None


def copy_source(source: str | os.PathLike, destination: str | os.PathLike, repo_type: str,
                ignore_patterns: tuple[str, ...] = ()) -> Path:
    """Copy a Hub repository (`owner/name`) or a local folder to `destination`; returns it."""
    destination = Path(destination)
    local = Path(source).expanduser()
    if local.is_dir():
        _copy_folder(local, destination, ignore_patterns)
    elif is_repo_id(str(source)):
        _download(str(source), repo_type, destination, ignore_patterns)
    else:
        raise MirrorError(f"{str(source)!r} is neither a folder on this machine nor a Hub repository id (owner/name).")
    return destination


def make_mirror(directory: str | os.PathLike, model: str | os.PathLike = FULL_MODEL_ID,
                dataset: str | os.PathLike = FULL_DATASET_ID) -> Mirror:
    """Copy the model (without Mistral's native files) and the dataset into `directory`, check that
    each copy has everything the tutorial loads, and return the two folders."""
    directory = Path(directory).expanduser()
    mirror = Mirror(directory / repo_name(model), directory / repo_name(dataset))
    if mirror.model_dir == mirror.dataset_dir:
        raise MirrorError(f"The model and the dataset would both be copied to {mirror.model_dir}; "
                          "give sources with different names.")
    print(f"Model {model} -> {mirror.model_dir}", flush=True)
    copy_source(model, mirror.model_dir, "model", MODEL_IGNORE_PATTERNS)
    print(f"Dataset {dataset} -> {mirror.dataset_dir}", flush=True)
    copy_source(dataset, mirror.dataset_dir, "dataset")
    for folder, missing in ((mirror.model_dir, missing_model_files(mirror.model_dir)),
                            (mirror.dataset_dir, missing_dataset_files(mirror.dataset_dir))):
        if missing:
            raise MirrorError(f"The copy in {folder} is incomplete: it lacks {_describe_missing(missing)}. "
                              "Check the source (is it the whole repository?) and run the command again.")
    return mirror


def usage(mirror: Mirror) -> str:
    """How to point the tutorial at a mirror, in a shell and in a notebook."""
    model, dataset = mirror.model_dir.resolve(), mirror.dataset_dir.resolve()
    return f"""\
On each machine, set these before anything imports huggingface_hub (HF_HUB_OFFLINE is read once, at import).
In a shell, before `make tutorial` or `jupyter lab`:
  export {MODEL_ENV}={model}
  export {DATASET_ENV}={dataset}
  export HF_HUB_OFFLINE=1
In a notebook, as the very first cell (after a restart if something has run already):
  import os
  os.environ.update({MODEL_ENV}="{model}", {DATASET_ENV}="{dataset}", HF_HUB_OFFLINE="1")
Check it with `make preflight` (or notebook 00): 'model files' and 'dataset files' should say PASS.
If the mirror moves (another stick, another mount point), change the two paths."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tutorial_kit.mirror",
        description="Copy Voxtral-Mini-3B-2507 (without Mistral's native consolidated.safetensors and params.json) "
                    "and Big Bench Audio into DIR, for machines without (good) internet.")
    parser.add_argument("directory", type=Path, metavar="DIR", help="where to put the mirror (a USB stick, a shared drive)")
    parser.add_argument("--model", default=FULL_MODEL_ID,
                        help="a Hub repository id or a local folder, such as an earlier mirror (default: %(default)s)")
    parser.add_argument("--dataset", default=FULL_DATASET_ID,
                        help="a Hub dataset id or a local folder (default: %(default)s)")
    arguments = parser.parse_args(argv)
    try:
        mirror = make_mirror(arguments.directory, arguments.model, arguments.dataset)
    except (MirrorError, FileExistsError, PermissionError) as error:
        print(f"Mirror not made: {error}", file=sys.stderr)
        return 1
    print(f"\nMirror ready: {mirror.model_dir} ({folder_size(mirror.model_dir) / 1e9:.2f} GB), "
          f"{mirror.dataset_dir} ({folder_size(mirror.dataset_dir) / 1e9:.2f} GB).")
    print(usage(mirror))
    return 0


if __name__ == "__main__":
    sys.exit(main())
