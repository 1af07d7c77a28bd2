"""Loading the model and processor for a profile, with an optional LoRA adapter (a folder or a Hub repo).

Used from notebook 02 on; notebook 04 loads an adapter with it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from helpers.hardware import (
    limit_gpu_memory,
    pick_dtype,
    quantization_config,
    wants_4bit,
)
from helpers.lora import quiet_peft_warnings
from helpers.profiles import ADAPTER_ENV, Profile, ensure_assets, outputs_dir

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LOGIN_ADVICE = "log in with `hf auth login` in a terminal (or `from huggingface_hub import login; login()` in a notebook)"


def _hub_advice(profile: Profile, error: Exception) -> RuntimeError:
    return RuntimeError(
        f"Could not load {profile.model_id!r} ({type(error).__name__}: {first_line(error)[:200]}). "
        f"If it is a Hub model: check the network, and accept the model's terms and {LOGIN_ADVICE} "
        "if it is gated. If it is a local folder (a mirror or a snapshot), check $VOXTRAL_MODEL. "
        "To run without the Hub, use the offline profile: VOXTRAL_PROFILE=tiny."
    )


def repo_name(source: str | os.PathLike) -> str:
    """A Hub repository's own name, from its id, a mirror folder named after it, or a Hub cache snapshot
    (`.../models--mistralai--Voxtral-Mini-3B-2507/snapshots/<commit>`, `datasets--...` alike)."""
    path = Path(source)
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith(("models--", "datasets--")):
        return path.parent.parent.name.split("--")[-1]
    return path.name


def adapter_location(profile: Profile) -> str | Path:
    """The adapter notebooks 04 and 05 load: `$VOXTRAL_ADAPTER` (a local folder or a Hub repo id,
    for an adapter trained elsewhere) when set, else the one notebook 03 saved in `outputs_dir`."""
    chosen = os.environ.get(ADAPTER_ENV, "").strip()
    if not chosen:
        return outputs_dir(profile) / "adapter"
    local = Path(chosen).expanduser()
    return local.absolute() if local.exists() or not is_repo_id(chosen) else chosen


def is_repo_id(text: str) -> bool:
    """`owner/name`, as on the Hub (a path such as `./a/b` or `/a/b` is not)."""
    return re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not text.startswith(".")


def fetch_adapter(adapter: str | os.PathLike) -> Path:
    """A local adapter folder as it is; a Hub repo id (`owner/name`) downloaded to the Hub cache."""
    if Path(adapter).expanduser().exists() or not is_repo_id(str(adapter)):
        return Path(adapter).expanduser()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(adapter)))
    except Exception as error:  # noqa: BLE001 - network, auth and not-found errors all end here
        raise FileNotFoundError(
            f"No adapter folder {str(adapter)!r} here, and it could not be downloaded as a Hub repository "
            f"({type(error).__name__}: {first_line(error)[:200]}). Check the name and the network; "
            f"for a private repository {LOGIN_ADVICE}. Set $VOXTRAL_ADAPTER to a local folder or a Hub repo "
            "id, or train one in notebook 03."
        ) from None


def _check_adapter(adapter: Path, profile: Profile) -> dict:
    if not adapter.is_dir():
        raise FileNotFoundError(
            f"Adapter folder {str(adapter)!r} does not exist. Train one in notebook 03 (in Colab, keep outputs on "
            "Google Drive in both notebooks), or set $VOXTRAL_ADAPTER to an adapter folder or a Hub repo id.")
    try:
        base = json.loads((adapter / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        base = None  # check_adapter_files below names what is wrong with the file
    if base and base != profile.model_id and repo_name(base) != repo_name(profile.model_id):
        raise ValueError(
            f"Adapter {str(adapter)!r} was trained on {base!r}, but this profile's model is "
            f"{profile.model_id!r}. Load it with the profile it was trained in."
        )
    return check_adapter_files(adapter)  # a save cut short: a ValueError naming the file, not a safetensors traceback


# -- is an adapter folder whole? -----------------------------------------------------------

def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


_SAVE_AGAIN = ("Save the adapter again (notebook 03), or use the adapter in the newest complete "
               "checkpoint-* folder of the training output.")


def check_safetensors_file(path) -> list[str]:
    """The tensor names in a `.safetensors` file; a `ValueError` naming the file if it is cut off."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' is missing.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
    except SafetensorError as error:
        raise ValueError(f"'{path}' is damaged ({first_line(error)}; {path.stat().st_size:,} bytes): "
                         f"it was cut off while being written. {_SAVE_AGAIN}") from None
    if not names:
        raise ValueError(f"'{path}' holds no tensors. {_SAVE_AGAIN}")
    return names


def check_adapter_files(folder) -> dict:
    """The LoRA adapter's configuration, once both of its files are known to be whole.

    A save cut short (a runtime stopped mid-write, a full disk) leaves a truncated
    `adapter_model.safetensors` or an unreadable `adapter_config.json`. This raises a `ValueError`
    that names the damaged file (a `FileNotFoundError` for a missing one) instead of letting
    safetensors fail later with "incomplete metadata".
    """
    folder = Path(folder)
    config_file = folder / ADAPTER_CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"'{config_file}' is missing: '{folder}' is not a LoRA adapter folder (or not a whole one).")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"'{config_file}' is not valid JSON ({error}): it was cut off while being written. "
                         f"{_SAVE_AGAIN}") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise ValueError(f"'{config_file}' is not a LoRA adapter configuration (it has no 'peft_type'). {_SAVE_AGAIN}")
    check_safetensors_file(folder / ADAPTER_WEIGHTS)
    return config



def _processor_folder(folder: Path) -> bool:
    """A folder holding Voxtral's processor as `save_pretrained` writes it (`processor_config.json`)
    or as the Hub repo has it (`preprocessor_config.json`)."""
    return (folder / "tekken.json").exists() and any(
        (folder / name).exists() for name in ("processor_config.json", "preprocessor_config.json"))


def load_config(profile: Profile):
    """The model's configuration alone (a small JSON file): enough to build its architecture on
    PyTorch's `meta` device, without loading or downloading the weights."""
    from transformers import AutoConfig

    ensure_assets(profile)
    try:
        return AutoConfig.from_pretrained(profile.model_id)
    except OSError as error:
        if profile.is_tiny:
            raise
        raise _hub_advice(profile, error) from None


def load_processor(profile: Profile, adapter: str | os.PathLike | None = None):
    """The Voxtral processor: from the adapter folder when it has one (saved with it), else the model's.

    A local folder is assembled explicitly: `VoxtralProcessor.from_pretrained` on a folder with no
    model `config.json` (an adapter folder) silently loads a tokenizer without Voxtral's chat
    template (reproduced in tests/test_library_surprises.py).
    """
    from transformers import (
        MistralCommonBackend,
        VoxtralProcessor,
        WhisperFeatureExtractor,
    )

    ensure_assets(profile)
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
    ensure_assets(profile)
    limit_gpu_memory()
    dtype = pick_dtype(profile)
    kwargs: dict = {"dtype": dtype}
    use_4bit = wants_4bit(profile) if load_in_4bit is None else load_in_4bit
    if use_4bit:
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": torch.cuda.current_device()}  # this process's GPU under a launcher
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

        with quiet_peft_warnings():
            model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, processor


def model_dtype(model) -> torch.dtype:
    """The dtype of the model's floating-point weights (what its inputs must be cast to)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def hub_token() -> str | None:
    """The Hugging Face token if the user is logged in, else None (never printed)."""
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover
        return None
    return get_token()


def save_adapter(model, processor, folder) -> Path:
    """Save the LoRA adapter (safetensors) with the processor beside it, so the folder loads alone."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder
