"""LoRA placement on the full-size architecture (meta device, no download), dtype and arguments."""
import json

import pytest
import torch

from helpers import model as model_helpers
from helpers.model import (add_lora, freeze_audio_tower, lora_config, lora_module_names, pick_dtype,
                           trainable_parameters, training_arguments)
from helpers.profiles import get_profile
from helpers.published import PUBLISHED_TARGET_MODULES


def full_size_model():
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    with torch.device("meta"):
        return VoxtralForConditionalGeneration(VoxtralConfig())


def test_audio_tower_lives_under_model_model():
    model = full_size_model()
    assert not hasattr(model, "audio_tower")  # the guide's `model.audio_tower` raises AttributeError
    assert model_helpers.audio_tower(model) is model.model.audio_tower


def test_our_lora_adapts_language_model_and_projector_only():
    model = add_lora(freeze_audio_tower(full_size_model()))
    names = lora_module_names(model)
    assert len(names) == 212
    assert sum("audio_tower" in n for n in names) == 0
    assert sum("multi_modal_projector" in n for n in names) == 2
    trainable, total = trainable_parameters(model)
    assert trainable == 13_631_488 and 4.6e9 < total < 4.8e9
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_published_module_list_puts_lora_into_the_audio_tower():
    from peft import LoraConfig, get_peft_model

    model = full_size_model()
    freeze_audio_tower(model)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=PUBLISHED_TARGET_MODULES))
    names = lora_module_names(model)
    assert len(names) == 306
    assert sum("audio_tower" in n for n in names) == 96  # trained, in the tower meant to be frozen
    assert sum("multi_modal_projector" in n for n in names) == 0
    assert any(p.requires_grad for n, p in model.named_parameters() if "audio_tower" in n)


def test_lora_config_recipe_and_overrides():
    config = lora_config()
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 32, 0.05)
    assert lora_config(r=16).r == 16


def test_dtype_from_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_dtype() == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype() == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a T4
    assert pick_dtype() == torch.float16
    assert pick_dtype(get_profile("tiny")) == torch.float32


def fake_gpu(monkeypatch, gib: float, bf16: bool = True):
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=gib * 2**30))


def test_full_training_arguments_follow_the_recipe(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # TrainingArguments would touch a faked GPU
    monkeypatch.setattr(model_helpers, "training_plan", lambda profile: model_helpers.TrainingPlan(8, 2, False, "test"))
    args = training_arguments(get_profile("full"), tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.activation_checkpointing) == (8, 2, False)
    assert args.learning_rate == 2e-4 and args.num_train_epochs == 3
    assert args.lr_scheduler_type.value == "cosine" and args.warmup_steps == 0.1 and args.weight_decay == 0.01
    assert not args.push_to_hub and not args.remove_unused_columns
    assert not args.bf16 and not args.fp16  # no GPU here


@pytest.mark.parametrize("gib, bf16, expected", [
    (79.2, True, (8, 2, False)),   # H100 / A100 80GB: 37 GiB measured at batch 8, room for clips over 30 s
    (44.4, True, (16, 1, True)),   # L40S
    (39.4, True, (16, 1, True)),   # A100 40GB: 23 GiB measured
    (22.0, True, (4, 4, True)),    # L4, A10G
    (14.7, False, (4, 4, True)),   # T4 (4-bit)
])
def test_training_plan_spends_memory_on_speed_only_where_it_fits(monkeypatch, gib, bf16, expected):
    fake_gpu(monkeypatch, gib, bf16)
    plan = model_helpers.training_plan(get_profile("full"))
    assert (plan.micro_batch, plan.accumulation, plan.activation_checkpointing) == expected
    assert plan.micro_batch * plan.accumulation == 16 and "GiB" in plan.reason


def test_training_plan_keeps_what_the_profile_fixes(monkeypatch, tmp_path):
    fake_gpu(monkeypatch, 79.2)
    published = get_profile("full", per_device_batch_size=2, gradient_accumulation_steps=8, activation_checkpointing=True)
    plan = model_helpers.training_plan(published)
    assert (plan.micro_batch, plan.accumulation, plan.activation_checkpointing) == (2, 8, True)
    plan = model_helpers.training_plan(get_profile("full", effective_batch_size=32))
    assert (plan.micro_batch, plan.accumulation) == (8, 4)
    plan = model_helpers.training_plan(get_profile("full", effective_batch_size=12))
    assert (plan.micro_batch, plan.accumulation) == (6, 2)  # the largest divisor within the tier's 8
    plan = model_helpers.training_plan(get_profile("full", gradient_accumulation_steps=4))
    assert (plan.micro_batch, plan.accumulation) == (4, 4)
    with pytest.raises(ValueError, match="effective batch 16 is not a multiple of the micro-batch 6"):
        model_helpers.training_plan(get_profile("full", per_device_batch_size=6))
    with pytest.raises(ValueError, match="effective batch 16 is not a multiple of gradient_accumulation_steps 5"):
        model_helpers.training_plan(get_profile("full", gradient_accumulation_steps=5))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = model_helpers.training_plan(get_profile("tiny"))
    assert (plan.micro_batch, plan.accumulation, plan.activation_checkpointing) == (8, 1, False)


def test_tiny_training_arguments_and_overrides(tmp_path):
    args = training_arguments(get_profile("tiny"), tmp_path, max_steps=3)
    assert args.max_steps == 3 and not args.activation_checkpointing


def test_push_to_hub_needs_a_login(tmp_path, monkeypatch):
    monkeypatch.setattr(model_helpers, "hub_token", lambda: None)
    with pytest.raises(RuntimeError, match="needs a Hugging Face login"):
        training_arguments(get_profile("tiny"), tmp_path, push_to_hub=True)


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
        model_helpers.load_model_and_processor(get_profile("full", load_in_4bit=False))
    assert "huggingface-cli login" in str(info.value)


def test_full_dataset_offline_says_what_to_do(monkeypatch, tmp_path):
    from helpers.data import load_splits

    go_offline(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError, match="VOXTRAL_PROFILE=tiny"):
        load_splits(get_profile("full"))


def test_missing_adapter_and_processor(profile, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model_helpers.load_model_and_processor(profile, adapter=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter folder"):
        model_helpers.load_model_and_processor(profile, adapter=tmp_path / "empty")


def test_adapter_for_another_base_model(profile, tmp_path):
    adapter = tmp_path / "other"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "mistralai/Voxtral-Small-24B-2507"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="was trained on 'mistralai/Voxtral-Small-24B-2507'"):
        model_helpers.load_model_and_processor(profile, adapter=adapter)


def test_missing_processor(profile, tmp_path):
    from dataclasses import replace

    with pytest.raises(FileNotFoundError, match="No Voxtral processor"):
        model_helpers.load_processor(replace(profile, model_id=str(tmp_path)))


def test_four_bit_only_for_the_full_model_on_small_gpus(monkeypatch):
    from types import SimpleNamespace

    full, tiny = get_profile("full"), get_profile("tiny")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=15 * 2**30))
    assert model_helpers.wants_4bit(full) and not model_helpers.wants_4bit(tiny)  # a T4
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=80 * 2**30))
    assert not model_helpers.wants_4bit(full)  # an H100
    assert model_helpers.wants_4bit(get_profile("full", load_in_4bit=True))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not model_helpers.wants_4bit(full)


def test_four_bit_keeps_audio_tower_projector_and_head_unquantised(model_and_processor):
    config = model_helpers.quantization_config(torch.float16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_compute_dtype == torch.float16
    names = [name for name, _ in model_and_processor[0].named_modules()]
    for skipped in config.llm_int8_skip_modules:  # each must name real modules, or nothing is skipped
        assert any(name.split(".")[-1] == skipped or f".{skipped}." in f".{name}." for name in names), skipped
