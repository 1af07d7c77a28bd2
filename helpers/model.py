"""Model setup: dtype from the hardware, loading (with an optional LoRA adapter), LoRA, Trainer arguments."""
from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers.profiles import ADAPTER_ENV, GPU_MEMORY_ENV, Profile, outputs_dir

# Every linear layer of the language model, and the two layers of the audio->text projector.
# The published recipe lists bare names ("q_proj", ...), which also match the audio encoder's
# attention: 96 LoRA modules land in the tower it means to freeze, and the projector gets none.
LORA_TARGET_MODULES = (
    r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    r"|.*multi_modal_projector\.linear_[12]"
)


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
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    cap = os.environ.get(GPU_MEMORY_ENV, "").strip()
    return min(total, float(cap)) if cap else total


def limit_gpu_memory() -> None:
    """Hold this process to `$VOXTRAL_GPU_MEMORY_GIB` of GPU memory, if set: allocations beyond it
    fail with an out-of-memory error, as they would on a card of that size."""
    cap = os.environ.get(GPU_MEMORY_ENV, "").strip()
    if cap and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, float(cap) / total), 0)


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


LOGIN_ADVICE = "log in with `hf auth login` in a terminal (or `from huggingface_hub import login; login()` in a notebook)"


def _hub_advice(profile: Profile, error: Exception) -> RuntimeError:
    return RuntimeError(
        f"Could not load {profile.model_id!r} ({type(error).__name__}: {str(error).splitlines()[0][:200]}). "
        f"If it is a Hub model: check the network, and accept the model's terms and {LOGIN_ADVICE} "
        "if it is gated. If it is a local folder (a mirror or a snapshot), check $VOXTRAL_MODEL. "
        "To run without the Hub, use the offline profile: VOXTRAL_PROFILE=tiny."
    )


def model_name(model_id: str | os.PathLike) -> str:
    """The model's own name in a Hub id, a mirror folder or a Hub cache snapshot
    (`.../models--mistralai--Voxtral-Mini-3B-2507/snapshots/<commit>`)."""
    path = Path(model_id)
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.split("--")[-1]
    return path.name


def adapter_location(profile: Profile) -> str | Path:
    """The adapter notebooks 04 and 05 load: `$VOXTRAL_ADAPTER` (a local folder or a Hub repo id,
    for an adapter trained elsewhere) when set, else the one notebook 03 saved in `outputs_dir`."""
    chosen = os.environ.get(ADAPTER_ENV, "").strip()
    if not chosen:
        return outputs_dir(profile) / "adapter"
    return Path(chosen) if Path(chosen).expanduser().exists() or not _looks_like_repo_id(chosen) else chosen


def _looks_like_repo_id(text: str) -> bool:
    import re

    return re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not text.startswith(".")


def fetch_adapter(adapter: str | os.PathLike) -> Path:
    """A local adapter folder as it is; a Hub repo id (`owner/name`) downloaded to the Hub cache."""
    if Path(adapter).expanduser().exists() or not _looks_like_repo_id(str(adapter)):
        return Path(adapter).expanduser()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(adapter)))
    except Exception as error:  # noqa: BLE001 - network, auth and not-found errors all end here
        raise FileNotFoundError(
            f"No adapter folder {str(adapter)!r} here, and it could not be downloaded as a Hub repository "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). Check the name and the network; "
            f"for a private repository {LOGIN_ADVICE}. Set $VOXTRAL_ADAPTER to a local folder or a Hub repo "
            "id, or train one in notebook 03."
        ) from None


def _check_adapter(adapter: Path, profile: Profile) -> dict:
    if not adapter.is_dir():
        raise FileNotFoundError(
            f"Adapter folder {str(adapter)!r} does not exist. Train one in notebook 03 (in Colab, keep outputs on "
            "Google Drive in both notebooks), or set $VOXTRAL_ADAPTER to an adapter folder or a Hub repo id.")
    config_file = adapter / "adapter_config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{str(adapter)!r} has no adapter_config.json: it is not a LoRA adapter folder.")
    if not any(adapter.glob("adapter_model.safetensors")):
        raise FileNotFoundError(f"{str(adapter)!r} has no adapter_model.safetensors.")
    from helpers.training import check_adapter_files

    try:
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except (ValueError, AttributeError):
        base = None  # check_adapter_files below names what is wrong with the file
    if base and base != profile.model_id and model_name(base) != model_name(profile.model_id):
        raise ValueError(
            f"Adapter {str(adapter)!r} was trained on {base!r}, but this profile's model is "
            f"{profile.model_id!r}. Load it with the profile it was trained in."
        )
    return check_adapter_files(adapter)  # a save cut short: a ValueError naming the file, not a safetensors traceback


def _processor_folder(folder: Path) -> bool:
    """A folder holding Voxtral's processor as `save_pretrained` writes it (`processor_config.json`)
    or as the Hub repo has it (`preprocessor_config.json`)."""
    return (folder / "tekken.json").exists() and any(
        (folder / name).exists() for name in ("processor_config.json", "preprocessor_config.json"))


def load_processor(profile: Profile, adapter: str | os.PathLike | None = None):
    """The Voxtral processor: from the adapter folder when it has one (saved with it), else the model's.

    A local folder is assembled explicitly: `VoxtralProcessor.from_pretrained` on a folder with no
    model `config.json` (an adapter folder) silently loads a tokenizer without Voxtral's chat
    template (reproduced in tests/test_library_surprises.py).
    """
    from transformers import MistralCommonBackend, VoxtralProcessor, WhisperFeatureExtractor

    source = Path(adapter) if adapter is not None and _processor_folder(Path(adapter)) else profile.model_id
    if Path(source).is_dir() or profile.is_tiny:
        folder = Path(source)
        if not _processor_folder(folder):
            raise FileNotFoundError(f"No Voxtral processor in {str(folder)!r}: it needs tekken.json and "
                                    "preprocessor_config.json (or processor_config.json).")
        tokenizer = MistralCommonBackend.from_pretrained(str(folder))
        return VoxtralProcessor(feature_extractor=WhisperFeatureExtractor.from_pretrained(str(folder)), tokenizer=tokenizer)
    try:
        return VoxtralProcessor.from_pretrained(source)
    except OSError as error:
        raise _hub_advice(profile, error) from None


def load_model_and_processor(profile: Profile, adapter: str | os.PathLike | None = None,
                             load_in_4bit: bool | None = None, device: str | None = None):
    """Base model and processor for the profile, with a LoRA `adapter` applied if given: a local
    folder or a Hub repo id (`owner/name`, downloaded once).

    The dtype comes from the hardware (`pick_dtype`); 4-bit (bitsandbytes) is used on GPUs of
    16 GB or less for the full model, or when `load_in_4bit=True`.
    """
    from transformers import VoxtralForConditionalGeneration

    if adapter is not None:
        adapter = fetch_adapter(adapter)
        _check_adapter(adapter, profile)
    limit_gpu_memory()
    dtype = pick_dtype(profile)
    kwargs: dict = {"dtype": dtype}
    use_4bit = wants_4bit(profile) if load_in_4bit is None else load_in_4bit
    if use_4bit:
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": 0}
    elif torch.cuda.is_available() and device in (None, "cuda"):
        # Straight onto the GPU: a copy in CPU memory first would need 9.4 GB of Colab's 12 GB of RAM.
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        model = VoxtralForConditionalGeneration.from_pretrained(profile.model_id, **kwargs)
    except OSError as error:
        if profile.is_tiny:
            raise
        raise _hub_advice(profile, error) from None  # the advice says it all; no traceback wall
    if "device_map" not in kwargs:
        model.to(device or "cpu")
    processor = load_processor(profile, adapter)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    if adapter is not None:
        from peft import PeftModel

        with _quiet_peft():
            model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, processor


@contextmanager
def _quiet_peft():
    """peft still reads a transformers attribute deprecated in v5; its FutureWarning is not the user's to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def model_dtype(model) -> torch.dtype:
    """The dtype of the model's floating-point weights (what its inputs must be cast to)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def audio_tower(model):
    """The audio encoder, wherever PEFT wrapping put it (`model.model.audio_tower` in transformers 5)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model.audio_tower


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

    with _quiet_peft():
        return get_peft_model(model, config or lora_config())


def lora_module_names(model) -> list[str]:
    """Names of the modules that carry a LoRA adapter."""
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)]


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def hub_token() -> str | None:
    """The Hugging Face token if the user is logged in, else None (never printed)."""
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover
        return None
    return get_token()


def training_arguments(profile: Profile, output_dir: str | os.PathLike, push_to_hub: bool = False, **overrides):
    """`TrainingArguments` for the profile: the published recipe's hyper-parameters for `full`,
    a short CPU run for `tiny`. `push_to_hub=True` needs a Hub login and says so if missing."""
    from transformers import TrainingArguments

    if push_to_hub and not overrides.get("hub_model_id"):
        raise ValueError("push_to_hub=True needs the repository to push to: hub_model_id='your-name/voxtral-lora' "
                         "(without it the Trainer would invent one from the output folder's name).")
    if push_to_hub and hub_token() is None:
        raise RuntimeError(f"push_to_hub=True needs a Hugging Face login: {LOGIN_ADVICE}, or leave push_to_hub off.")
    dtype = pick_dtype(profile)
    on_gpu = torch.cuda.is_available()
    plan = training_plan(profile)
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.accumulation,
        learning_rate=profile.learning_rate,
        num_train_epochs=profile.train_epochs,
        max_steps=profile.max_train_steps,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,  # a float below 1 is a fraction of the training steps
        weight_decay=0.01,
        activation_checkpointing=plan.activation_checkpointing,  # "gradient_checkpointing" before transformers 5.2x
        activation_checkpointing_kwargs={"use_reentrant": False},
        bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16,
        logging_steps=profile.logging_steps,
        eval_strategy="steps",
        eval_steps=profile.eval_steps,
        save_strategy="steps",
        save_steps=profile.eval_steps,
        save_total_limit=2,
        remove_unused_columns=False,  # the collator needs the raw audio and category columns
        report_to="none",
        seed=42,
        data_seed=42,
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        push_to_hub=push_to_hub,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def make_trainer(model, processor, profile: Profile, train_dataset, eval_dataset=None, output_dir="outputs/lora",
                 callbacks=None, precompute: bool = True, **overrides):
    """A `transformers.Trainer` wired with our collator and the profile's training arguments; its loss
    computes the output head only where the answer is learned (`helpers.training.AnswerLossTrainer`).

    With `precompute` (default) the audio features are computed once, before the first epoch,
    instead of in every batch of every epoch.
    """
    from helpers.collator import VoxtralAudioCollator, precompute_features
    from helpers.training import AnswerLossTrainer

    if precompute:
        train_dataset = precompute_features(train_dataset, processor)
        if eval_dataset is not None:
            eval_dataset = precompute_features(eval_dataset, processor)

    from helpers.training import TimeBudget

    args = training_arguments(profile, output_dir, **overrides)
    if profile.train_minutes:
        callbacks = [*(callbacks or []), TimeBudget(profile.train_minutes)]
    if eval_dataset is None:
        args.eval_strategy = "no"
    return AnswerLossTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                             data_collator=VoxtralAudioCollator(processor, dtype=model_dtype(model)), callbacks=callbacks)


def save_adapter(model, processor, folder) -> Path:
    """Save the LoRA adapter (safetensors) with the processor beside it, so the folder loads alone."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder
