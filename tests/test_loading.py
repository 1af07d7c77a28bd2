"""helpers.loading: the model, processor and adapter for a profile, and a clear error when one is missing,
damaged, trained on another model or out of reach offline."""
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from helpers import loading, training
from helpers.lora import (
    add_lora,
    lora_module_names,
)
from helpers.profiles import get_profile
from helpers.training import training_arguments
from tutorial_kit import checkpoints


def go_offline(monkeypatch, tmp_path):
    """As a machine with no network: the env variables, and the constants read at import time."""
    import huggingface_hub.constants as hub_constants

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))


def test_full_profile_offline_says_what_to_do(monkeypatch, tmp_path):
    go_offline(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError, match="VOXTRAL_PROFILE=tiny") as info:
        loading.load_model_and_processor(get_profile("full", load_in_4bit=False))
    assert "hf auth login" in str(info.value) and "huggingface-cli" not in str(info.value)


def test_full_dataset_offline_says_what_to_do(monkeypatch, tmp_path):
    from helpers.data import load_splits

    go_offline(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError, match="VOXTRAL_PROFILE=tiny"):
        load_splits(get_profile("full"))


def test_missing_adapter_and_processor(profile, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        loading.load_model_and_processor(profile, adapter=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter folder"):
        loading.load_model_and_processor(profile, adapter=tmp_path / "empty")


def test_adapter_for_another_base_model(profile, tmp_path):
    adapter = tmp_path / "other"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "mistralai/Voxtral-Small-24B-2507"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="was trained on 'mistralai/Voxtral-Small-24B-2507'"):
        loading.load_model_and_processor(profile, adapter=adapter)


def test_missing_processor(profile, tmp_path):
    from dataclasses import replace

    with pytest.raises(FileNotFoundError, match="No Voxtral processor"):
        loading.load_processor(replace(profile, model_id=str(tmp_path)))


def snapshot_like_the_hub(profile, folder):
    """The tiny model laid out like a snapshot of the real repo: the feature extractor's settings in
    `preprocessor_config.json`, no `processor_config.json`."""
    import shutil

    from transformers import WhisperFeatureExtractor

    shutil.copytree(profile.model_id, folder)
    (folder / "processor_config.json").unlink()
    WhisperFeatureExtractor(feature_size=128).save_pretrained(folder)
    assert (folder / "preprocessor_config.json").exists()
    return folder


def test_processor_loads_from_a_snapshot_of_the_real_repo(profile, processor, tmp_path):
    from dataclasses import replace

    snapshot = snapshot_like_the_hub(profile, tmp_path / "Voxtral-Mini-3B-2507")
    loaded = loading.load_processor(replace(profile, name="full", model_id=str(snapshot)))
    assert loaded.feature_extractor.feature_size == 128
    assert loaded.tokenizer.encode("Is it valid?") == processor.tokenizer.encode("Is it valid?")


def test_adapter_from_the_environment_or_the_outputs_folder(profile, monkeypatch, tmp_path):
    monkeypatch.delenv("VOXTRAL_ADAPTER", raising=False)
    monkeypatch.setenv("VOXTRAL_OUTPUTS", str(tmp_path / "outputs"))
    assert loading.adapter_location(profile) == tmp_path / "outputs" / "tiny" / "adapter"
    monkeypatch.setenv("VOXTRAL_ADAPTER", str(tmp_path / "mine"))
    assert loading.adapter_location(profile) == tmp_path / "mine"
    monkeypatch.setenv("VOXTRAL_ADAPTER", "someone/voxtral-lora")
    assert loading.adapter_location(profile) == "someone/voxtral-lora"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    monkeypatch.setenv("VOXTRAL_ADAPTER", "./here")
    assert loading.adapter_location(profile) == tmp_path / "here"  # printed where it is


def test_adapter_from_a_hub_repo_id_is_downloaded(profile, fresh_model, processor, monkeypatch, tmp_path):
    import huggingface_hub

    saved = loading.save_adapter(add_lora(fresh_model), processor, tmp_path / "on-the-hub")
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append(repo_id)
        return str(saved)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model, _ = loading.load_model_and_processor(profile, adapter="someone/voxtral-lora")
    assert calls == ["someone/voxtral-lora"] and len(lora_module_names(model)) > 0


def test_adapter_neither_folder_nor_reachable_repo(profile, monkeypatch, tmp_path):
    go_offline(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError, match="someone/voxtral-lora") as info:
        loading.load_model_and_processor(profile, adapter="someone/voxtral-lora")
    assert "hf auth login" in str(info.value) and "VOXTRAL_ADAPTER" in str(info.value)


def test_adapter_trained_on_a_snapshot_of_the_same_model(profile):
    snapshot = "/root/.cache/huggingface/hub/models--mistralai--Voxtral-Mini-3B-2507/snapshots/3060fe34b3"
    assert loading.repo_name(snapshot) == loading.repo_name("mistralai/Voxtral-Mini-3B-2507")
    assert loading.repo_name("/mnt/mirror/Voxtral-Mini-3B-2507") == "Voxtral-Mini-3B-2507"


def test_login_advice_uses_the_installed_command(monkeypatch, tmp_path):
    import shutil
    import sys
    from pathlib import Path

    monkeypatch.setattr(training, "hub_token", lambda: None)
    with pytest.raises(RuntimeError, match="hf auth login") as info:
        training_arguments(get_profile("tiny"), tmp_path, push_to_hub=True, hub_model_id="me/x")
    assert "huggingface-cli" not in str(info.value)
    assert (Path(sys.executable).parent / "hf").exists() or shutil.which("hf")  # the command we advise exists


def test_cut_off_adapter_is_a_clear_error(profile, fresh_model, processor, tmp_path):
    saved = loading.save_adapter(add_lora(fresh_model), processor, tmp_path / "adapter")
    weights = saved / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="adapter_model.safetensors' is damaged"):
        loading.load_model_and_processor(profile, adapter=saved)


def test_load_config_gives_the_architecture_without_weights(profile):
    from transformers import VoxtralForConditionalGeneration

    from helpers.loading import load_config

    with torch.device("meta"):
        skeleton = VoxtralForConditionalGeneration(load_config(profile))
    assert next(skeleton.parameters()).is_meta and skeleton.config.model_type == "voxtral"












def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_damaged_adapter_files_are_named(finished, tmp_path):
    adapter = shutil.copytree(finished[0] / "checkpoint-4", tmp_path / "adapter")
    assert checkpoints.check_adapter_files(adapter)["peft_type"] == "LORA"
    weights = adapter / "adapter_model.safetensors"
    original = weights.read_bytes()
    _cut(weights)
    with pytest.raises(ValueError, match=f"'{weights}' is damaged .*incomplete metadata.*cut off while being written"):
        checkpoints.check_adapter_files(adapter)
    save_file({}, str(weights))
    with pytest.raises(ValueError, match="holds no tensors"):
        checkpoints.check_adapter_files(adapter)
    weights.write_bytes(original)
    _cut(adapter / "adapter_config.json")
    with pytest.raises(ValueError, match=f"'{adapter / 'adapter_config.json'}' is not valid JSON"):
        checkpoints.check_adapter_files(adapter)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    with pytest.raises(ValueError, match="not a LoRA adapter configuration"):
        checkpoints.check_adapter_files(adapter)
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_config.json' is missing"):
        checkpoints.check_adapter_files(adapter)
