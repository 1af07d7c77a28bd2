import hashlib

import pytest

from helpers import profiles, tiny
from helpers.profiles import PROFILE_ENV, get_profile


def test_env_variable_chooses_profile(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "full")
    profile = get_profile()
    assert profile.name == "full" and PROFILE_ENV in profile.reason
    assert profile.model_id == "mistralai/Voxtral-Mini-3B-2507"
    assert profile.dataset_id == "ArtificialAnalysis/big_bench_audio"
    assert profile.test_per_category == 25
    assert (profile.effective_batch_size, profile.train_epochs) == (16, 3)
    assert profile.per_device_batch_size is None  # chosen from the GPU's memory: helpers.model.training_plan
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
    from transformers import MistralCommonBackend, VoxtralForConditionalGeneration, VoxtralProcessor

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

    from helpers.prompts import audio_content

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
