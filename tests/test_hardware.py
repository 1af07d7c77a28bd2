"""helpers.hardware: the dtype from the compute capability, 4-bit on small GPUs with the tower kept out,
the training plan from the GPU's memory."""
import pytest
import torch

from helpers import hardware
from helpers.hardware import pick_dtype
from helpers.profiles import get_profile


def full_size_model():
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    with torch.device("meta"):
        return VoxtralForConditionalGeneration(VoxtralConfig())


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
