import hashlib

import pytest

from helpers import profiles
from helpers.profiles import PROFILE_ENV, get_profile
from tutorial_kit import tiny


def test_env_variable_chooses_profile(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "full")
    profile = get_profile()
    assert profile.name == "full" and PROFILE_ENV in profile.reason
    assert profile.model_id == "mistralai/Voxtral-Mini-3B-2507"
    assert profile.dataset_id == "ArtificialAnalysis/big_bench_audio"
    assert profile.test_per_category == 25
    assert (profile.effective_batch_size, profile.train_epochs) == (16, 3)
    assert profile.per_device_batch_size is None  # chosen from the GPU's memory: helpers.hardware.training_plan
    assert profile.learning_rate == 2e-4 and profile.dtype == "auto"


def test_default_follows_hardware(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    monkeypatch.setattr(profiles, "cuda_available", lambda: True)
    assert get_profile().name == "full"
    monkeypatch.setattr(profiles, "cuda_available", lambda: False)
    tiny_profile = get_profile()
    assert tiny_profile.name == "tiny" and "no CUDA GPU" in tiny_profile.reason


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown profile 'huge'"):
        get_profile("huge")


def test_overrides_replace_fields():
    assert get_profile("full", test_per_category=5).test_per_category == 5


def _digest(folder):
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_tiny_model_is_deterministic_and_loads_like_the_hub(tmp_path):
    from transformers import (
        MistralCommonBackend,
        VoxtralForConditionalGeneration,
        VoxtralProcessor,
    )

    a = tiny.build_tiny_model(tmp_path / "a")
    b = tiny.build_tiny_model(tmp_path / "b")
    assert _digest(a) == _digest(b)
    model = VoxtralForConditionalGeneration.from_pretrained(a)
    processor = VoxtralProcessor.from_pretrained(a)
    assert isinstance(processor.tokenizer, MistralCommonBackend)
    assert model.config.audio_token_id == 24 == processor.audio_token_id
    assert model.model.audio_tower is not None and model.model.multi_modal_projector is not None
    assert 0.3e6 < sum(p.numel() for p in model.parameters()) < 1e6
    ids = processor.tokenizer.convert_tokens_to_ids(["<s>", "</s>", "[INST]", "[/INST]", "<pad>", "[AUDIO]", "[BEGIN_AUDIO]"])
    assert ids == [1, 2, 3, 4, 11, 24, 25]
    assert processor.tokenizer.padding_side == "left"  # as the real Voxtral tokenizer


def test_full_size_processor_matches_the_real_model_ids(tmp_path):
    import numpy as np

    from helpers.tasks import audio_content

    processor = tiny.build_processor(tmp_path, tiny.FULL_SIZE_SPECIAL_TOKENS, tiny.FULL_SIZE_TEXT_TOKENS)
    tokenizer = processor.tokenizer
    assert len(tokenizer) == 131072  # VoxtralConfig().text_config.vocab_size
    assert tokenizer.convert_tokens_to_ids(["<pad>", "[AUDIO]", "[BEGIN_AUDIO]"]) == [11, 24, 25]
    assert tokenizer.decode([131071]) != ""  # the last text rank decodes
    conversation = [{"role": "user", "content": [
        audio_content({"array": np.zeros(16000 * 31, np.float32), "sampling_rate": 16000}),
        {"type": "text", "text": "Answer."}]}]
    prompt = processor.apply_chat_template(conversation, tokenize=True, return_dict=True)
    assert int((prompt["input_ids"] == 24).sum()) == 2 * 375  # 31 s: two 30-s chunks
    assert tuple(prompt["input_features"].shape) == (2, 128, 3000)


def test_tokenizer_asks_for_more_ranks_than_the_file_has():
    with pytest.raises(ValueError, match="num_text_tokens=200000"):
        tiny.tekken_tokenizer_json(1000, 200000)


def test_tiny_assets_are_cached(profile):
    assets = tiny.ensure_tiny_assets()
    assert str(assets.model_dir) == profile.model_id
    assert (assets.root / "COMPLETE").exists()
    assert (assets.dataset_dir / "metadata.jsonl").exists()


def test_full_profile_reads_model_dataset_and_steps_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(profiles.MODEL_ENV, str(tmp_path / "mirror" / "Voxtral-Mini-3B-2507"))
    monkeypatch.setenv(profiles.DATASET_ENV, "someone/big_bench_audio_copy")
    monkeypatch.setenv(profiles.MAX_STEPS_ENV, "12")
    full = get_profile("full")
    assert full.model_id == str(tmp_path / "mirror" / "Voxtral-Mini-3B-2507")
    assert full.dataset_id == "someone/big_bench_audio_copy"
    assert full.max_train_steps == 12 and "at most 12 steps" in full.describe()
    tiny_profile = get_profile("tiny")
    assert tiny_profile.max_train_steps == 12  # the one knob that shortens training, in both profiles
    assert "standin" not in tiny_profile.model_id and tiny_profile.model_id != full.model_id
    assert get_profile("full", max_train_steps=3).max_train_steps == 3  # explicit arguments win


@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_bad_step_count_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv(profiles.MAX_STEPS_ENV, value)
    with pytest.raises(ValueError, match="VOXTRAL_MAX_STEPS"):
        get_profile("full")


def test_dtype_from_the_environment(monkeypatch):
    monkeypatch.setenv(profiles.DTYPE_ENV, "float16")
    assert get_profile("full").dtype == "float16"
    monkeypatch.setenv(profiles.DTYPE_ENV, "fp8")
    with pytest.raises(ValueError, match="VOXTRAL_DTYPE"):
        get_profile("full")


def test_outputs_go_to_google_drive_when_it_is_mounted_in_colab(monkeypatch, tmp_path):
    import sys
    import types

    monkeypatch.delenv(profiles.OUTPUTS_ENV, raising=False)
    monkeypatch.setenv(profiles.DRIVE_ENV, str(tmp_path / "drive"))
    full = get_profile("full")
    assert profiles.outputs_dir(full) == profiles.Path.cwd() / "outputs" / "full"  # not Colab
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert profiles.outputs_dir(full) == profiles.Path.cwd() / "outputs" / "full"  # Colab, Drive not mounted
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    assert profiles.outputs_dir(full) == tmp_path / "drive" / "MyDrive" / "voxtral-tutorial" / "outputs" / "full"
    monkeypatch.setenv(profiles.OUTPUTS_ENV, str(tmp_path / "mine"))
    assert profiles.outputs_dir(full) == tmp_path / "mine" / "full"  # an explicit choice wins


def test_outputs_are_named_by_absolute_paths(monkeypatch, tmp_path):
    """A printed `outputs/tiny/adapter` says nothing about where it is (the notebook's folder, not the
    repository's), and a relative path breaks once the working directory changes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(profiles.OUTPUTS_ENV, raising=False)
    assert profiles.outputs_dir(get_profile("tiny")) == tmp_path / "outputs" / "tiny"
    monkeypatch.setenv(profiles.OUTPUTS_ENV, "relative/mine")
    assert profiles.outputs_dir(get_profile("tiny")) == tmp_path / "relative" / "mine" / "tiny"
    monkeypatch.setenv(profiles.OUTPUTS_ENV, "~/mine")
    assert profiles.outputs_dir(get_profile("tiny")) == profiles.Path.home() / "mine" / "tiny"


def test_big_outputs_stay_off_google_drive_unless_asked(monkeypatch, tmp_path):
    """A 9.4 GB merged model does not belong on a 15 GB Drive: `on_drive=False` keeps it on the machine,
    and an explicit $VOXTRAL_OUTPUTS still wins."""
    import sys
    import types

    monkeypatch.delenv(profiles.OUTPUTS_ENV, raising=False)
    monkeypatch.setenv(profiles.DRIVE_ENV, str(tmp_path / "drive"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    full = get_profile("full")
    assert profiles.outputs_dir(full, on_drive=False) == profiles.Path.cwd() / "outputs" / "full"
    monkeypatch.setenv(profiles.OUTPUTS_ENV, str(tmp_path / "mine"))
    assert profiles.outputs_dir(full, on_drive=False) == tmp_path / "mine" / "full"


def test_the_profile_summary_uses_no_word_notebook_03_has_not_defined_yet():
    """Notebook 00 prints it first: 'effective batch' and 'micro-batch' only mean something after 03."""
    from dataclasses import replace

    full, tiny = get_profile("full"), get_profile("tiny")
    assert "16 clips per weight update (in pieces sized to the GPU's memory)" in full.describe()
    assert replace(full, per_device_batch_size=4).describe().count("(in pieces of 4)") == 1
    assert f"{tiny.effective_batch_size} clips per weight update" in tiny.describe()
    for profile in (full, tiny, replace(full, per_device_batch_size=4)):
        assert "batch" not in profile.describe()
