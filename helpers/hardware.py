"""What the hardware decides: the dtype, 4-bit loading, GPU memory and the training batch plan.

Explained in notebooks 00 and 03 (dtype, 4-bit, the training plan).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from helpers.profiles import GPU_MEMORY_ENV, Profile


def native_bf16() -> bool:
    """Whether the GPU computes in bf16 natively: compute capability 8.0 (Ampere) or newer.

    Not `torch.cuda.is_bf16_supported()`: with its default `including_emulation=True` it answers
    True on a T4 (7.5) too, where bf16 is emulated and slow.
    """
    return torch.cuda.is_available() and tuple(torch.cuda.get_device_capability(0)) >= (8, 0)


def pick_dtype(profile: Profile | None = None) -> torch.dtype:
    """bf16 on GPUs with native bf16 (A100, L4, H100 ...), fp16 on older ones (T4, V100), fp32 on CPU.

    A profile with a fixed dtype (the tiny one: float32; or `$VOXTRAL_DTYPE`) wins over the hardware.
    """
    if profile is not None and profile.dtype != "auto":
        return getattr(torch, profile.dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if native_bf16() else torch.float16
    return torch.float32


def gpu_memory_gib() -> float:
    """GPU memory this process may use, in GiB: the card's, or less where `$VOXTRAL_GPU_MEMORY_GIB`
    caps it (a large GPU rehearsing as a small one). 0 without a GPU."""
    if not torch.cuda.is_available():
        return 0.0
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    cap = os.environ.get(GPU_MEMORY_ENV, "").strip()
    return min(total, float(cap)) if cap else total


def limit_gpu_memory() -> None:
    """Hold this process to `$VOXTRAL_GPU_MEMORY_GIB` of GPU memory, if set: allocations beyond it
    fail with an out-of-memory error, as they would on a card of that size."""
    cap = os.environ.get(GPU_MEMORY_ENV, "").strip()
    if cap and torch.cuda.is_available():
        device = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, float(cap) / total), device)


def wants_4bit(profile: Profile) -> bool:
    """4-bit loading when the profile asks, or on its own for the full model on a GPU of 16 GB or less."""
    if profile.load_in_4bit is not None:
        return profile.load_in_4bit
    if profile.is_tiny or not torch.cuda.is_available():
        return False
    return gpu_memory_gib() <= 16.5


# Full module names, as transformers matches them: from the start of the name (or as a suffix),
# so a bare "audio_tower" would match nothing and leave the whole tower to be quantized.
MODULES_KEPT_OUT_OF_4BIT = ("model.audio_tower", "model.multi_modal_projector", "lm_head")


def quantization_config(dtype: torch.dtype):
    """NF4 with double quantisation for the language model; the audio tower, projector and
    output head stay in `dtype` (they are small, and the head's precision matters most)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True, llm_int8_skip_modules=list(MODULES_KEPT_OUT_OF_4BIT),
    )


# GPU memory (GiB, as torch reports it) -> (micro-batch, activation checkpointing), largest first.
# Measured with benchmarks/train_step.py on an H100 (full-size model, bf16, ~60 text tokens,
# effective batch 16), peak memory with one 30-s chunk / two chunks (a batch holding a clip over
# 30 s is padded to two): 8 without checkpointing 37 / 61 GiB (22.8 samples/s with one chunk),
# 16 with 23 / 35 GiB (14.8/s), 4 with  - / 16 GiB. Batch 16 without checkpointing is faster
# (24.0/s) but needs 65 GiB with one chunk; the published 2 x 8 with checkpointing runs 3.0-3.7/s.
TRAINING_TIERS = [(75, 8, False), (36, 16, True), (0, 4, True)]


@dataclass(frozen=True)
class TrainingPlan:
    micro_batch: int
    accumulation: int
    activation_checkpointing: bool
    reason: str


def _divide(effective: int, by: int, what: str) -> int:
    if by < 1 or effective % by:
        raise ValueError(f"effective batch {effective} is not a multiple of {what} {by}; "
                         "choose a per_device_batch_size or gradient_accumulation_steps that divides it.")
    return effective // by


def training_plan(profile: Profile) -> TrainingPlan:
    """Micro-batch, accumulation and checkpointing for the profile's effective batch.

    What the profile fixes is kept; the rest comes from the GPU's memory (`TRAINING_TIERS`):
    the biggest micro-batch that fits, and checkpointing only where memory requires it.
    """
    effective = profile.effective_batch_size
    gib = gpu_memory_gib()
    _, micro, checkpointing = next(tier for tier in TRAINING_TIERS if gib >= tier[0])
    micro = max(d for d in range(1, min(micro, effective) + 1) if effective % d == 0)  # divides the batch
    reason = f"{gib:.0f} GiB of GPU memory" if gib else "no GPU"
    accumulation = profile.gradient_accumulation_steps
    if profile.per_device_batch_size:
        micro, reason = profile.per_device_batch_size, "set by the profile"
        accumulation = accumulation or _divide(effective, micro, "the micro-batch")
    elif accumulation:
        micro, reason = _divide(effective, accumulation, "gradient_accumulation_steps"), "set by the profile"
    else:
        accumulation = _divide(effective, micro, "the micro-batch")
    if profile.activation_checkpointing is not None:
        checkpointing = profile.activation_checkpointing
    return TrainingPlan(micro, accumulation, checkpointing, reason)
