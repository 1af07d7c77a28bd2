"""LoRA placement on the full-size architecture (meta device, no download), dtype and arguments."""
import json

import pytest
import torch

from helpers import hardware, loading, lora, training
from helpers.hardware import pick_dtype
from helpers.lora import (
    add_lora,
    freeze_audio_tower,
    lora_config,
    lora_module_names,
    trainable_parameters,
)
from helpers.profiles import get_profile
from helpers.published import PUBLISHED_TARGET_MODULES
from helpers.training import training_arguments


def full_size_model():
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    with torch.device("meta"):
        return VoxtralForConditionalGeneration(VoxtralConfig())


def test_audio_tower_lives_under_model_model():
    model = full_size_model()
    assert not hasattr(model, "audio_tower")  # the guide's `model.audio_tower` raises AttributeError
    assert lora.audio_tower(model) is model.model.audio_tower


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


def fake_gpu(monkeypatch, gib: float = 80, capability: tuple[int, int] = (9, 0)):
    """A CUDA device as torch describes it. `is_bf16_supported()` answers like torch 2.13 does:
    with its default `including_emulation=True` it says True on every CUDA GPU, a T4 (7.5) included;
    only `including_emulation=False` (or the capability) tells native support."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability >= (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(total_memory=gib * 2**30, major=capability[0],
                                                            minor=capability[1], name="fake GPU"))


@pytest.mark.parametrize("capability, expected", [
    ((7, 5), torch.float16),   # T4: bf16 only through emulation
    ((7, 0), torch.float16),   # V100
    ((8, 0), torch.bfloat16),  # A100
    ((8, 9), torch.bfloat16),  # L4
    ((9, 0), torch.bfloat16),  # H100
])
def test_dtype_from_the_compute_capability(monkeypatch, capability, expected):
    fake_gpu(monkeypatch, 15 if capability < (8, 0) else 80, capability)
    assert torch.cuda.is_bf16_supported()  # what the published recipe trusts: True even on a T4
    assert pick_dtype() == expected
    assert pick_dtype(get_profile("tiny")) == torch.float32  # a fixed dtype wins


def test_dtype_on_cpu_and_forced(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_dtype() == torch.float32
    assert pick_dtype(get_profile("full", dtype="float16")) == torch.float16


def test_full_training_arguments_follow_the_recipe(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # TrainingArguments would touch a faked GPU
    monkeypatch.setattr(training, "training_plan", lambda profile: hardware.TrainingPlan(8, 2, False, "test"))
    args = training_arguments(get_profile("full"), tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.activation_checkpointing) == (8, 2, False)
    assert args.learning_rate == 2e-4 and args.num_train_epochs == 3
    assert args.lr_scheduler_type.value == "cosine" and args.warmup_steps == 0.1 and args.weight_decay == 0.01
    assert not args.push_to_hub and not args.remove_unused_columns
    assert not args.bf16 and not args.fp16  # no GPU here


@pytest.mark.parametrize("gib, capability, expected", [
    (79.2, (9, 0), (8, 2, False)),   # H100 / A100 80GB: 37 GiB measured at batch 8, room for clips over 30 s
    (44.4, (8, 9), (16, 1, True)),   # L40S
    (39.4, (8, 0), (16, 1, True)),   # A100 40GB: 23 GiB measured
    (22.0, (8, 9), (4, 4, True)),    # L4, A10G
    (14.7, (7, 5), (4, 4, True)),    # T4 (4-bit)
])
def test_training_plan_spends_memory_on_speed_only_where_it_fits(monkeypatch, gib, capability, expected):
    fake_gpu(monkeypatch, gib, capability)
    plan = hardware.training_plan(get_profile("full"))
    assert (plan.micro_batch, plan.accumulation, plan.activation_checkpointing) == expected
    assert plan.micro_batch * plan.accumulation == 16 and "GiB" in plan.reason


def test_training_plan_keeps_what_the_profile_fixes(monkeypatch, tmp_path):
    fake_gpu(monkeypatch, 79.2)
    published = get_profile("full", per_device_batch_size=2, gradient_accumulation_steps=8, activation_checkpointing=True)
    plan = hardware.training_plan(published)
    assert (plan.micro_batch, plan.accumulation, plan.activation_checkpointing) == (2, 8, True)
    plan = hardware.training_plan(get_profile("full", effective_batch_size=32))
    assert (plan.micro_batch, plan.accumulation) == (8, 4)
    plan = hardware.training_plan(get_profile("full", effective_batch_size=12))
    assert (plan.micro_batch, plan.accumulation) == (6, 2)  # the largest divisor within the tier's 8
    plan = hardware.training_plan(get_profile("full", gradient_accumulation_steps=4))
    assert (plan.micro_batch, plan.accumulation) == (4, 4)
    with pytest.raises(ValueError, match="effective batch 16 is not a multiple of the micro-batch 6"):
        hardware.training_plan(get_profile("full", per_device_batch_size=6))
    with pytest.raises(ValueError, match="effective batch 16 is not a multiple of gradient_accumulation_steps 5"):
        hardware.training_plan(get_profile("full", gradient_accumulation_steps=5))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = hardware.training_plan(get_profile("tiny"))
    assert (plan.micro_batch, plan.accumulation, plan.activation_checkpointing) == (8, 1, False)


def test_tiny_training_arguments_and_overrides(tmp_path):
    args = training_arguments(get_profile("tiny"), tmp_path, max_steps=3)
    assert args.max_steps == 3 and not args.activation_checkpointing


def test_push_to_hub_needs_a_login(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "hub_token", lambda: None)
    with pytest.raises(RuntimeError, match="needs a Hugging Face login"):
        training_arguments(get_profile("tiny"), tmp_path, push_to_hub=True, hub_model_id="me/voxtral-lora")


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


def test_four_bit_only_for_the_full_model_on_small_gpus(monkeypatch):
    full, tiny = get_profile("full"), get_profile("tiny")
    fake_gpu(monkeypatch, 15, (7, 5))
    assert hardware.wants_4bit(full) and not hardware.wants_4bit(tiny)  # a T4
    fake_gpu(monkeypatch, 80, (9, 0))
    assert not hardware.wants_4bit(full)  # an H100
    assert hardware.wants_4bit(get_profile("full", load_in_4bit=True))
    monkeypatch.setenv("VOXTRAL_GPU_MEMORY_GIB", "15")  # an H100 rehearsing as a T4
    assert hardware.wants_4bit(full)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not hardware.wants_4bit(full)


def test_four_bit_keeps_audio_tower_projector_and_head_in_the_compute_dtype():
    """Replays transformers' own choice of which Linear layers bitsandbytes replaces, over the
    full-size model's module names: bare names such as "audio_tower" match nothing, because
    `should_convert_module` matches from the start of the full name (or as a suffix)."""
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    config = hardware.quantization_config(torch.float16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_compute_dtype == torch.float16
    model = full_size_model()
    skipped = HfQuantizer.get_modules_to_not_convert(model, config.llm_int8_skip_modules, model._keep_in_fp32_modules)
    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    quantized = [name for name in linear if should_convert_module(name, skipped)]
    kept = sorted(set(linear) - set(quantized))
    assert sum(".audio_tower." in n for n in kept) == 192 and not any(".audio_tower." in n for n in quantized)
    assert [n for n in kept if "multi_modal_projector" in n] == ["model.multi_modal_projector.linear_1",
                                                                   "model.multi_modal_projector.linear_2"]
    assert "lm_head" in kept
    assert len(quantized) == 30 * 7 and all(n.startswith("model.language_model.layers.") for n in quantized)


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
    assert loading.model_name(snapshot) == loading.model_name("mistralai/Voxtral-Mini-3B-2507")
    assert loading.model_name("/mnt/mirror/Voxtral-Mini-3B-2507") == "Voxtral-Mini-3B-2507"


def test_push_to_hub_names_its_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "hub_token", lambda: "a-token")
    with pytest.raises(ValueError, match="hub_model_id"):
        training_arguments(get_profile("tiny"), tmp_path, push_to_hub=True)
    args = training_arguments(get_profile("tiny"), tmp_path, push_to_hub=True, hub_model_id="me/voxtral-lora")
    assert args.push_to_hub and args.hub_model_id == "me/voxtral-lora"


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


def test_parameter_counts_see_through_4bit_packing():
    """bitsandbytes stores a 4-bit weight as uint8 bytes holding two numbers each (its `Params4bit`);
    counted by `numel` the language model would look half its size."""

    class Params4bit(torch.nn.Parameter):  # the name is how peft and we recognise bitsandbytes' class
        pass

    layer = torch.nn.Linear(8, 4, bias=False)
    packed = Params4bit(torch.zeros(16, 1, dtype=torch.uint8), requires_grad=False)  # 32 numbers, 2 per byte
    model = torch.nn.Module()
    model.register_parameter("packed", packed)
    model.layer = layer
    assert lora.trainable_parameters(model) == (32, 64)


def test_load_config_gives_the_architecture_without_weights(profile):
    from transformers import VoxtralForConditionalGeneration

    from helpers.loading import load_config

    with torch.device("meta"):
        skeleton = VoxtralForConditionalGeneration(load_config(profile))
    assert next(skeleton.parameters()).is_meta and skeleton.config.model_type == "voxtral"
