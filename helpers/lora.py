"""LoRA on Voxtral: which layers get adapters, the frozen audio tower, parameter counts.

Built in notebook 03 (which layers get LoRA, counting its parameters, the frozen tower).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

# Every linear layer of the language model, and the two layers of the audio->text projector.
# The published recipe lists bare names ("q_proj", ...), which also match the audio encoder's
# attention: 96 LoRA modules land in the tower it means to freeze, and the projector gets none.
LORA_TARGET_MODULES = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    r"|.*multi_modal_projector\.linear_[12]"
)


@contextmanager
def quiet_peft_warnings():
    """peft still reads a transformers attribute deprecated in v5; its FutureWarning is not the user's to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def audio_tower_holder(model):
    """The module whose `audio_tower` is the encoder, wherever PEFT wrapping put it (`model.model` in transformers 5)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def audio_tower(model):
    """The audio encoder, wherever PEFT wrapping put it (`model.model.audio_tower` in transformers 5)."""
    return audio_tower_holder(model).audio_tower


def _no_gradient_out_of_the_tower(module, inputs, output):
    output.last_hidden_state = output.last_hidden_state.detach()
    return output


def freeze_audio_tower(model):
    """Freeze the audio encoder: it already hears well; we adapt the language side.

    Its output is also cut from the autograd graph. With activation checkpointing on, transformers
    makes the input embeddings of every sub-model require gradients, the tower's included, so
    its frozen layers would otherwise be recomputed and back-propagated through on every step
    (tested: same LoRA gradients, no backward in the tower).
    """
    tower = audio_tower(model)
    for parameter in tower.parameters():
        parameter.requires_grad = False
    if not getattr(tower, "_frozen_output", False):
        tower.register_forward_hook(_no_gradient_out_of_the_tower)
        tower._frozen_output = True
    return model


def lora_config(**overrides):
    """The recipe's LoRA settings (r=8, alpha=32, dropout 0.05) on the language model and projector."""
    from peft import LoraConfig

    settings = dict(r=8, lora_alpha=32, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                    target_modules=LORA_TARGET_MODULES)
    settings.update(overrides)
    return LoraConfig(**settings)


def add_lora(model, config=None):
    """Wrap the model with LoRA adapters (default `lora_config()`); only LoRA weights train."""
    from peft import get_peft_model

    with quiet_peft_warnings():
        return get_peft_model(model, config or lora_config())


def lora_module_names(model) -> list[str]:
    """Names of the modules that carry a LoRA adapter."""
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)]


def parameter_count(parameter) -> int:
    """How many numbers a parameter holds. A 4-bit weight (bitsandbytes' `Params4bit`) is stored as
    bytes holding two numbers each, so its `numel` is half its size (peft counts it the same way)."""
    if type(parameter).__name__ == "Params4bit":
        return parameter.numel() * 2 * parameter.element_size()
    return parameter.numel()


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, 4-bit weights included at their real size."""
    trainable = sum(parameter_count(p) for p in model.parameters() if p.requires_grad)
    return trainable, sum(parameter_count(p) for p in model.parameters())
