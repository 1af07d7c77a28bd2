"""helpers.lora: which layers get LoRA on the full-size architecture (meta device, no download), the
frozen tower, the recipe and parameter counts."""
import torch

from helpers import lora
from helpers.lora import (
    add_lora,
    freeze_audio_tower,
    lora_config,
    lora_module_names,
    trainable_parameters,
)
from helpers.published import PUBLISHED_TARGET_MODULES


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
