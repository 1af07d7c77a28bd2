"""The offline mirror: copied from a Hub-layout stand-in with the network off, then loaded by the
`full` profile in a fresh process with HF_HUB_OFFLINE=1 and an empty Hub cache."""
import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
from huggingface_hub.file_download import DryRunFileInfo
from huggingface_hub.utils import filter_repo_objects

from helpers.profiles import FULL_DATASET_ID, FULL_MODEL_ID
from tutorial_kit import mirror

ROOT = Path(__file__).resolve().parents[2]


def relative_files(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def standins():
    from tools.standin import ensure_standins

    return ensure_standins(size="small", rows=40)  # built once into the tutorial cache, then reused


def serve_from(repos: dict, downloads: list):
    """`snapshot_download` as the Hub would answer it, from local folders, with the same pattern
    matching (`filter_repo_objects`); records what was asked."""

    def snapshot_download(repo_id, *, repo_type=None, local_dir=None, allow_patterns=None, ignore_patterns=None,
                          dry_run=False, **kwargs):
        root = repos.get((repo_type or "model", repo_id))
        if root is None:
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 Client Error: {repo_id} not found")
        names = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
        names = list(filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        downloads.append({"repo_id": repo_id, "repo_type": repo_type, "ignore_patterns": ignore_patterns,
                          "dry_run": dry_run})
        if dry_run:
            return [DryRunFileInfo(commit_hash="0" * 40, file_size=(root / n).stat().st_size, filename=n,
                                   local_path=str(Path(local_dir) / n), is_cached=False, will_download=True)
                    for n in names]
        for name in names:
            target = Path(local_dir) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((root / name).read_bytes())
        # What the real one leaves behind in a local_dir: its bookkeeping, not part of the repository.
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / ".cache" / "huggingface" / ".gitignore").write_text("*\n")
        return str(local_dir)

    return snapshot_download


@pytest.fixture(scope="module")
def mirrored(standins, tmp_path_factory):
    """`python -m tutorial_kit.mirror DIR` against the stand-ins served as the Hub, network off."""
    downloads = []
    repos = {("model", FULL_MODEL_ID): standins.model_dir, ("dataset", FULL_DATASET_ID): standins.dataset_dir}
    directory = tmp_path_factory.mktemp("stick")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # a real request would fail at once
        patch.setattr(huggingface_hub, "snapshot_download", serve_from(repos, downloads))
        from contextlib import redirect_stdout
        from io import StringIO

        printed = StringIO()
        with redirect_stdout(printed):
            code = mirror.main([str(directory)])
    return {"code": code, "printed": printed.getvalue(), "directory": directory, "downloads": downloads,
            "model": directory / "Voxtral-Mini-3B-2507", "dataset": directory / "big_bench_audio"}


def test_mirror_skips_mistral_native_files(mirrored, standins):
    assert mirrored["code"] == 0, mirrored["printed"]
    source = relative_files(standins.model_dir)
    assert {"consolidated.safetensors", "params.json"} <= set(source)  # the stand-in has them, as the Hub repo does
    copied = {k: v for k, v in relative_files(mirrored["model"]).items() if not k.startswith(".cache/")}
    assert copied == {k: v for k, v in source.items() if k not in ("consolidated.safetensors", "params.json")}
    assert {d["repo_type"] for d in mirrored["downloads"]} == {"model", "dataset"}
    assert all(d["ignore_patterns"] == list(mirror.MODEL_IGNORE_PATTERNS)
               for d in mirrored["downloads"] if d["repo_type"] == "model")
    assert [d["dry_run"] for d in mirrored["downloads"]] == [True, False, True, False]  # sizes first, then files


def test_mirror_copies_the_whole_dataset(mirrored, standins):
    copied = {k: v for k, v in relative_files(mirrored["dataset"]).items() if not k.startswith(".cache/")}
    assert copied == relative_files(standins.dataset_dir)
    assert sum(k.endswith(".mp3") for k in copied) == 40


def test_mirror_says_how_to_use_it(mirrored):
    printed = mirrored["printed"]
    assert f"export VOXTRAL_MODEL={mirrored['model'].resolve()}" in printed
    assert f"export VOXTRAL_DATASET={mirrored['dataset'].resolve()}" in printed
    assert "export HF_HUB_OFFLINE=1" in printed
    assert "before anything imports huggingface_hub" in printed


def test_mirror_folder_keeps_the_repository_name_so_adapters_match(mirrored):
    from helpers.loading import repo_name

    assert repo_name(mirrored["model"]) == repo_name(FULL_MODEL_ID)
    snapshot = Path("/x/hub/datasets--ArtificialAnalysis--big_bench_audio/snapshots/0123abc")
    assert repo_name(snapshot) == "big_bench_audio"


LOAD_OFFLINE = """
import json, os
from helpers.data import load_splits
from helpers.loading import load_model_and_processor
from helpers.profiles import get_profile

profile = get_profile()
model, processor = load_model_and_processor(profile)
# The stand-in has 10 rows per category; the full profile's 25 test rows per category need 26.
splits = load_splits(get_profile(test_per_category=2))
print(json.dumps({"profile": profile.name, "model_id": profile.model_id, "dataset_id": profile.dataset_id,
                  "model": type(model).__name__, "vocabulary": len(processor.tokenizer),
                  "rows": {name: len(split) for name, split in splits.items()},
                  "offline": __import__("huggingface_hub").constants.HF_HUB_OFFLINE}))
"""


def test_full_profile_reads_the_mirror_with_the_hub_off(mirrored, tmp_path, monkeypatch):
    """In this process (imports shared with the other tests); the fresh-process run is below."""
    import datasets.config

    from helpers.data import load_splits
    from helpers.loading import load_model_and_processor
    from helpers.profiles import get_profile

    for module in (huggingface_hub.constants, datasets.config):
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setenv("VOXTRAL_MODEL", str(mirrored["model"]))
    monkeypatch.setenv("VOXTRAL_DATASET", str(mirrored["dataset"]))
    for name in ("VOXTRAL_MAX_STEPS", "VOXTRAL_DTYPE"):
        monkeypatch.delenv(name, raising=False)
    model, processor = load_model_and_processor(get_profile("full"))
    splits = load_splits(get_profile("full", test_per_category=2))  # 10 rows per category here; 25 need 26
    assert type(model).__name__ == "VoxtralForConditionalGeneration"
    assert {name: len(split) for name, split in splits.items()} == {"train": 32, "test": 8}


@pytest.mark.extended
def test_full_profile_loads_from_the_mirror_offline(mirrored, tmp_path):
    """A fresh process, HF_HUB_OFFLINE=1 set before anything imports huggingface_hub, an empty Hub cache."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "VOXTRAL_PROFILE": "full",
                   "VOXTRAL_MODEL": str(mirrored["model"]), "VOXTRAL_DATASET": str(mirrored["dataset"]),
                   # an empty Hub and datasets cache: everything must come from the mirror
                   "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets")}
    for name in ("VOXTRAL_MAX_STEPS", "VOXTRAL_DTYPE", "VOXTRAL_ADAPTER", "HF_HUB_CACHE"):
        environment.pop(name, None)
    result = subprocess.run([sys.executable, "-c", LOAD_OFFLINE], env=environment, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"profile": "full", "model_id": str(mirrored["model"]), "dataset_id": str(mirrored["dataset"]),
                      "model": "VoxtralForConditionalGeneration", "vocabulary": 131072,
                      "rows": {"train": 32, "test": 8}, "offline": True}
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir())


def test_a_mirror_copies_to_another_stick_and_resumes(mirrored, tmp_path, capsys):
    assert mirror.main([str(tmp_path), "--model", str(mirrored["model"]), "--dataset", str(mirrored["dataset"])]) == 0
    first = capsys.readouterr().out
    for name in ("model", "dataset"):
        original = {k: v for k, v in relative_files(mirrored[name]).items() if not k.startswith(".cache/")}
        assert relative_files(tmp_path / mirrored[name].name) == original  # no download bookkeeping either
    assert "tekken.json" in first
    # Again, as after an interrupted copy: files already there with the right size are kept.
    (tmp_path / "big_bench_audio" / "metadata.jsonl").unlink()
    assert mirror.main([str(tmp_path), "--model", str(mirrored["model"]), "--dataset", str(mirrored["dataset"])]) == 0
    again = capsys.readouterr().out
    assert "metadata.jsonl" in again and "tekken.json" not in again and ".mp3" not in again


def test_an_incomplete_source_is_named(tmp_path, capsys):
    source = tmp_path / "Voxtral-Mini-3B-2507"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "preprocessor_config.json").write_text("{}")
    (source / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    dataset = tmp_path / "big_bench_audio"
    (dataset / "data").mkdir(parents=True)
    (dataset / "metadata.jsonl").write_text(json.dumps({"file_name": "data/question_0.mp3"}) + "\n")
    assert mirror.main([str(tmp_path / "stick"), "--model", str(source), "--dataset", str(dataset)]) == 1
    error = capsys.readouterr().err
    assert "incomplete" in error and "tekken.json" in error and "model-00001-of-00002.safetensors" in error
    assert "Traceback" not in error
    assert mirror.missing_dataset_files(dataset) == ["data/question_0.mp3"]


def test_neither_folder_nor_repository_id(tmp_path, capsys):
    assert mirror.main([str(tmp_path), "--model", str(tmp_path / "no" / "such" / "folder")]) == 1
    assert "neither a folder on this machine nor a Hub repository id" in capsys.readouterr().err


def test_hub_unreachable_is_one_readable_line(tmp_path, monkeypatch, capsys):
    def unreachable(*args, **kwargs):
        raise ConnectionError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    assert mirror.main([str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert f"Could not download '{FULL_MODEL_ID}' (model)" in error and "Check the network" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_a_full_stick_fails_before_copying(mirrored, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mirror.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1_000_000})())
    assert mirror.main([str(tmp_path), "--model", str(mirrored["model"]), "--dataset", str(mirrored["dataset"])]) == 1
    assert "but only 0.0 GB is free" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.safetensors"))


def test_copying_a_folder_into_itself_is_refused(mirrored, capsys):
    assert mirror.main([str(mirrored["model"]), "--model", str(mirrored["model"])]) == 1
    assert "into itself" in capsys.readouterr().err
