"""Local stand-ins for the two Hub repos the `full` profile downloads, file for file.

Without Hugging Face Hub access the `full` profile can still be rehearsed: these folders are laid
out exactly like ``mistralai/Voxtral-Mini-3B-2507`` and ``ArtificialAnalysis/big_bench_audio``, so
``VoxtralForConditionalGeneration.from_pretrained``, ``AutoProcessor.from_pretrained`` and
``datasets.load_dataset`` read them through the same code paths as the real downloads.

The model folder (`write_model_standin`):
  config.json                       as transformers 4.54 wrote it ("torch_dtype", "rope_theta")
  model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json
                                    the checkpoint's own (legacy) tensor names; transformers 5
                                    renames them while loading
  preprocessor_config.json          WhisperFeatureExtractor, 128 mel bins (no processor_config.json)
  tekken.json                       Mistral's tokenizer, 131072 ids
  generation_config.json            bos 1, eos 2, pad 11
  params.json, consolidated.safetensors
                                    Mistral's native format (transformers does not read them)

``size="small"`` is the tiny profile's architecture with the real 131072-id vocabulary (runs on a
CPU in seconds); ``size="full"`` is Voxtral-Mini-3B's architecture with random weights (~9.4 GB).

The dataset folder (`write_dataset_standin`): ``README.md``, ``metadata.jsonl`` (category,
official_answer, file_name, id) and ``data/question_<id>.mp3`` (22050 Hz mono), spoken by espeak-ng
from the question generators of `tutorial_kit.tiny.synthetic`, with a share of clips longer than 30 s.

Command line: ``python -m tools.standin --model-dir DIR --dataset-dir DIR [--size small|full]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from helpers.profiles import FULL_DATASET_ID, FULL_MODEL_ID, cache_dir
from helpers.tasks import CATEGORIES
from tutorial_kit import tiny
from tutorial_kit.checkpoints import folder_size
from tutorial_kit.tiny import build_once, synthetic

# Bump when what is written changes, so cached stand-ins are rebuilt.
VERSION = "1"
SEED = 2507
SIZES = ("small", "full")

# --------------------------------------------------------------------------- the model repo
HUB_TRANSFORMERS_VERSION = "4.54.0.dev0"  # the version that wrote the Hub repo's JSON files
HUB_SHARD_SIZE = "5GB"  # save_pretrained's default max_shard_size in transformers 4.54
FULL_VOCAB_SIZE = tiny.FULL_SIZE_SPECIAL_TOKENS + tiny.FULL_SIZE_TEXT_TOKENS  # 131072
PAD_TOKEN_ID = 11
INDEX_FILE = "model.safetensors.index.json"

# --------------------------------------------------------------------------- the dataset repo
SAMPLING_RATE = 22050  # espeak-ng's own rate, and the Hub clips' rate
MP3_BIT_RATE = 64_000
CLIPS_PER_ENCODER = 25  # clips per ffmpeg command
LONG_SHARE = 0.09
# Over 30 s with a margin, so a clip still needs two 30-s chunks after MP3 encoder padding.
LONG_MIN_SECONDS = 31.0
# 23 voices, as in Big Bench Audio: espeak-ng's English accents, plain and with two voice variants.
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc")
VOICES = tuple(f"{accent}{variant}" for variant in ("", "+f3", "+m3") for accent in ACCENTS)[:23]
# Long clips are slow, careful readings: a lead-in sentence that changes no answer, then the
# question, slower and slower (words per minute, gap between words in 10 ms) until over 30 s.
LONG_LEAD_INS = {
    "formal_fallacies": "It is not always easy to see who is related to whom, and in which ways. "
                        "The following argument pertains to this question.",
    "navigate": "Listen to all of the following instructions, and keep track of where you are after each one.",
    "object_counting": "Listen to the whole list before you answer, and count carefully.",
    "web_of_lies": "In the following puzzle, every person either always tells the truth or always lies.",
}
LONG_READINGS = ((120, 0), (110, 0), (100, 0), (90, 0), (80, 0), (80, 5), (80, 10), (80, 15), (80, 20),
                 (80, 30), (80, 40))
DATASET_CARD = f"""---
license: mit
language:
- en
pretty_name: Big Bench Audio (offline stand-in)
size_categories:
- n<1K
---
# Big Bench Audio, offline stand-in

A local folder laid out like [`{FULL_DATASET_ID}`](https://huggingface.co/datasets/{FULL_DATASET_ID}):
`metadata.jsonl` (`category`, `official_answer`, `file_name`, `id`) and `data/question_<id>.mp3`
(MP3, 22050 Hz, mono), loaded with `datasets.load_dataset(folder, split="train")`.

The questions follow the four BIG-Bench Hard tasks that Big Bench Audio speaks aloud
(formal_fallacies, navigate, object_counting, web_of_lies); each answer is computed by the
generator that wrote its question (`tutorial_kit.tiny.synthetic`). They are spoken by espeak-ng in
{len(VOICES)} voices; some clips are read slowly and last more than 30 seconds, so that they take
two of Voxtral's 30-second audio chunks. Built by `python -m tools.standin`.
"""


@dataclass(frozen=True)
class StandinAssets:
    """The two stand-in folders: pass them where the `full` profile names the Hub repos."""

    model_dir: Path
    dataset_dir: Path


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the checkpoint: its name in the files, its name once loaded, how it starts."""

    name: str  # as stored in the Hub checkpoint (transformers 4.54 names)
    loaded_name: str  # what transformers 5 calls it after loading
    shape: tuple[int, ...]
    dtype: torch.dtype  # noqa: F821 - torch is imported lazily
    shard_file: str
    init: str  # "normal", "ones", "zeros" or "sinusoids"
    std: float = 0.0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        import torch

        return self.numel * torch.empty((), dtype=self.dtype).element_size()


@dataclass(frozen=True)
class ModelPlan:
    """Everything `write_model_standin` writes for one size, computed on the meta device (no memory)."""

    size: str
    config: VoxtralConfig  # noqa: F821 - transformers is imported lazily
    tensors: tuple[TensorSpec, ...]
    shard_files: tuple[str, ...]

    @property
    def num_parameters(self) -> int:
        return sum(spec.numel for spec in self.tensors)

    @property
    def total_size(self) -> int:
        return sum(spec.nbytes for spec in self.tensors)

    def index(self) -> dict:
        """The content of model.safetensors.index.json."""
        return {"metadata": {"total_size": self.total_size},
                "weight_map": {spec.name: spec.shard_file for spec in self.tensors}}


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"Unknown stand-in size {size!r}: use 'small' (CPU, seconds) or 'full' (Voxtral-Mini-3B, ~9.4 GB).")


def model_config(size: str = "small"):
    """`VoxtralConfig` of a stand-in: the tiny profile's architecture with the real vocabulary
    (`small`), or Voxtral-Mini-3B-2507's (`full`: `VoxtralConfig()` defaults, audio token 24)."""
    from transformers import VoxtralConfig

    _check_size(size)
    if size == "full":
        return VoxtralConfig(audio_token_id=tiny.AUDIO_TOKEN_ID)
    config = tiny.tiny_config()
    config.text_config.vocab_size = FULL_VOCAB_SIZE
    return config


def _init_rule(module, size: str, loaded_name: str, audio_std: float, text_std: float) -> tuple[str, float]:
    """How a tensor starts, following transformers' own `_init_weights` by module type."""
    import torch.nn as nn

    kind = type(module).__name__
    leaf = loaded_name.rsplit(".", 1)[-1]
    if loaded_name.endswith("embed_positions.weight"):
        return "sinusoids", 0.0  # Whisper's fixed position table, as in the Hub checkpoint
    if "LayerNorm" in kind or "RMSNorm" in kind:
        return ("ones" if leaf == "weight" else "zeros"), 0.0
    if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
        raise TypeError(f"No initialisation rule for {loaded_name} ({kind}); add one to tools.standin._init_rule.")
    if leaf == "bias":
        return "zeros", 0.0
    std = audio_std if ".audio_tower." in f".{loaded_name}" else text_std
    if loaded_name == "lm_head.weight" and size == "small":
        std = tiny.SMALL_LM_HEAD_STD
    return "normal", std


def _legacy_order(name: str) -> int:
    # transformers 4.54 built the model as audio_tower, language_model, multi_modal_projector and
    # filled the shards in that order (a stable sort keeps the layers in order within each).
    for rank, prefix in enumerate(("audio_tower.", "language_model.model.", "language_model.lm_head.",
                                   "multi_modal_projector.")):
        if name.startswith(prefix):
            return rank
    raise ValueError(f"{name} is not a Voxtral checkpoint name")


def model_plan(size: str = "small") -> ModelPlan:
    """The tensors, legacy names, shapes, dtypes and shards of a stand-in, from a meta-device model.

    Legacy names come from transformers' own conversion mapping, reversed
    (`transformers.core_model_loading.revert_weight_conversion`), so they are exactly the names its
    loader renames. Everything is bf16 like the Hub checkpoint, except Whisper's position table,
    which the model keeps in fp32.
    """
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    from transformers import VoxtralForConditionalGeneration
    from transformers.core_model_loading import revert_weight_conversion

    config = model_config(size)
    with torch.device("meta"):
        model = VoxtralForConditionalGeneration(config)
    loaded = model.state_dict()
    loaded_name_of = {id(tensor): name for name, tensor in loaded.items()}
    legacy = revert_weight_conversion(model, dict(loaded))
    if len(legacy) != len(loaded):
        raise RuntimeError(f"Reverting transformers' renaming gave {len(legacy)} tensors for {len(loaded)}.")
    names = sorted(legacy, key=_legacy_order)
    dtypes = {name: torch.float32 if name.endswith("embed_positions.weight") else torch.bfloat16 for name in names}
    layout = {name: torch.empty(legacy[name].shape, dtype=dtypes[name], device="meta") for name in names}
    split = split_torch_state_dict_into_shards(layout, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=_shard_size(size, layout))
    if len(split.filename_to_tensors) != 2:
        raise RuntimeError(f"The {size} stand-in split into {len(split.filename_to_tensors)} shards; the Hub repo has 2.")
    audio_std, text_std = config.audio_config.initializer_range, config.text_config.initializer_range
    specs = []
    for name in names:
        loaded_name = loaded_name_of[id(legacy[name])]
        module = model.get_submodule(loaded_name.rsplit(".", 1)[0])
        init, std = _init_rule(module, size, loaded_name, audio_std, text_std)
        specs.append(TensorSpec(name, loaded_name, tuple(legacy[name].shape), dtypes[name],
                                split.tensor_to_filename[name], init, std))
    return ModelPlan(size, config, tuple(specs), tuple(sorted(split.filename_to_tensors)))


def _shard_size(size: str, layout: dict) -> int | str:
    if size == "full":
        return HUB_SHARD_SIZE
    # The small checkpoint is far below 5 GB; the smallest limit that still gives two shards
    # balances them, so the stand-in keeps the Hub's two-shard layout.
    from huggingface_hub import split_torch_state_dict_into_shards

    sizes = [t.numel() * t.element_size() for t in layout.values()]
    low, high = max(sizes), sum(sizes)
    while low < high:
        middle = (low + high) // 2
        shards = split_torch_state_dict_into_shards(layout, max_shard_size=middle).filename_to_tensors
        low, high = (low, middle) if len(shards) <= 2 else (middle + 1, high)
    return low


# --------------------------------------------------------------------------- JSON files
def legacy_config_dict(config) -> dict:
    """config.json as transformers 4.54 wrote it for Voxtral (legacy "torch_dtype", "rope_theta")."""
    audio, text = config.audio_config, config.text_config
    return {
        "architectures": ["VoxtralForConditionalGeneration"],
        "audio_config": {
            "activation_dropout": audio.activation_dropout,
            "activation_function": audio.activation_function,
            "attention_dropout": audio.attention_dropout,
            "dropout": audio.dropout,
            "head_dim": audio.hidden_size // audio.num_attention_heads,
            "hidden_size": audio.hidden_size,
            "initializer_range": audio.initializer_range,
            "intermediate_size": audio.intermediate_size,
            "layerdrop": audio.layerdrop,
            "max_source_positions": audio.max_source_positions,
            "model_type": "voxtral_encoder",
            "num_attention_heads": audio.num_attention_heads,
            "num_hidden_layers": audio.num_hidden_layers,
            "num_key_value_heads": audio.num_attention_heads,
            "num_mel_bins": audio.num_mel_bins,
            "scale_embedding": audio.scale_embedding,
            "vocab_size": audio.vocab_size,
        },
        "audio_token_id": config.audio_token_id,
        "hidden_size": text.hidden_size,
        "model_type": "voxtral",
        "projector_hidden_act": config.projector_hidden_act,
        "text_config": {
            "attention_bias": text.attention_bias,
            "attention_dropout": text.attention_dropout,
            "head_dim": text.head_dim,
            "hidden_act": text.hidden_act,
            "hidden_size": text.hidden_size,
            "initializer_range": text.initializer_range,
            "intermediate_size": text.intermediate_size,
            "max_position_embeddings": text.max_position_embeddings,
            "mlp_bias": text.mlp_bias,
            "model_type": "llama",
            "num_attention_heads": text.num_attention_heads,
            "num_hidden_layers": text.num_hidden_layers,
            "num_key_value_heads": text.num_key_value_heads,
            "pretraining_tp": 1,
            "rms_norm_eps": text.rms_norm_eps,
            "rope_scaling": None,
            "rope_theta": text.rope_parameters["rope_theta"],
            "sliding_window": None,
            "use_cache": True,
            "vocab_size": text.vocab_size,
        },
        "torch_dtype": "bfloat16",
        "transformers_version": HUB_TRANSFORMERS_VERSION,
        "vocab_size": text.vocab_size,
    }


def mistral_params_dict(config) -> dict:
    """Mistral's native params.json for the same architecture (the file vLLM and mistral-inference read)."""
    audio, text = config.audio_config, config.text_config
    return {
        "dim": text.hidden_size,
        "n_layers": text.num_hidden_layers,
        "head_dim": text.head_dim,
        "hidden_dim": text.intermediate_size,
        "n_heads": text.num_attention_heads,
        "n_kv_heads": text.num_key_value_heads,
        "rope_theta": text.rope_parameters["rope_theta"],
        "norm_eps": text.rms_norm_eps,
        "vocab_size": text.vocab_size,
        "max_seq_len": text.max_position_embeddings,
        "multimodal": {
            "whisper_model_args": {
                "encoder_args": {
                    "audio_encoding_args": {"sampling_rate": 16000, "num_mel_bins": audio.num_mel_bins,
                                            "hop_length": 160, "window_size": 400},
                    "dim": audio.hidden_size,
                    "n_layers": audio.num_hidden_layers,
                    "head_dim": audio.hidden_size // audio.num_attention_heads,
                    "hidden_dim": audio.intermediate_size,
                    "n_heads": audio.num_attention_heads,
                    "vocab_size": audio.vocab_size,
                    "max_source_positions": audio.max_source_positions,
                },
                "downsample_args": {"downsample_factor": audio.intermediate_size // audio.hidden_size},
            }
        },
    }


def preprocessor_config_dict() -> dict:
    """preprocessor_config.json as the Hub repo has it: Whisper features with 128 mel bins, and
    the processor class that lets `AutoProcessor` work without a processor_config.json."""
    from transformers import WhisperFeatureExtractor

    features = WhisperFeatureExtractor(feature_size=128)
    return {
        "chunk_length": features.chunk_length,
        "dither": features.dither,
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": features.feature_size,
        "hop_length": features.hop_length,
        "n_fft": features.n_fft,
        "n_samples": features.n_samples,
        "nb_max_frames": features.nb_max_frames,
        "padding_side": features.padding_side,
        "padding_value": features.padding_value,
        "processor_class": "VoxtralProcessor",
        "return_attention_mask": features.return_attention_mask,
        "sampling_rate": features.sampling_rate,
    }


def _write_json(path: Path, content: dict) -> None:
    # transformers 4.54 wrote its JSON files sorted, indented by 2, with a final newline.
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- weights
def _tensor_seed(seed: int, name: str) -> int:
    # One generator per tensor: values do not depend on the order or the device split of the work.
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def _make_tensor(spec: TensorSpec, seed: int, device) -> torch.Tensor:  # noqa: F821
    import torch

    if spec.init == "ones":
        return torch.ones(spec.shape, dtype=spec.dtype)
    if spec.init == "zeros":
        return torch.zeros(spec.shape, dtype=spec.dtype)
    if spec.init == "sinusoids":
        from transformers.models.whisper.modeling_whisper import sinusoids

        return sinusoids(*spec.shape).to(spec.dtype)
    generator = torch.Generator(device=device).manual_seed(_tensor_seed(seed, spec.name))
    # Drawn straight in the stored dtype: the full model never exists in fp32 (4.7B parameters).
    values = torch.empty(spec.shape, dtype=spec.dtype, device=device).normal_(0.0, spec.std, generator=generator)
    return values.cpu()


# Mistral's native names (consolidated.safetensors), from the checkpoint names; the inverse of
# transformers' convert_voxtral_weights_to_hf.py. Whisper's position table has no entry: Mistral's
# code computes it.
_MISTRAL_NAMES = (
    (r"^language_model\.lm_head\.weight$", "output.weight"),
    (r"^language_model\.model\.norm\.weight$", "norm.weight"),
    (r"^language_model\.model\.embed_tokens\.weight$", "mm_whisper_embeddings.tok_embeddings.weight"),
    (r"^language_model\.model\.layers\.(\d+)\.input_layernorm\.weight$", r"layers.\1.attention_norm.weight"),
    (r"^language_model\.model\.layers\.(\d+)\.post_attention_layernorm\.weight$", r"layers.\1.ffn_norm.weight"),
    (r"^language_model\.model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.weight$", r"layers.\1.attention.w\2.weight"),
    (r"^language_model\.model\.layers\.(\d+)\.mlp\.gate_proj\.weight$", r"layers.\1.feed_forward.w1.weight"),
    (r"^language_model\.model\.layers\.(\d+)\.mlp\.down_proj\.weight$", r"layers.\1.feed_forward.w2.weight"),
    (r"^language_model\.model\.layers\.(\d+)\.mlp\.up_proj\.weight$", r"layers.\1.feed_forward.w3.weight"),
    (r"^audio_tower\.conv1\.(weight|bias)$", r"mm_whisper_embeddings.whisper_encoder.conv_layers.0.\1"),
    (r"^audio_tower\.conv2\.(weight|bias)$", r"mm_whisper_embeddings.whisper_encoder.conv_layers.1.\1"),
    (r"^audio_tower\.layer_norm\.(weight|bias)$", r"mm_whisper_embeddings.whisper_encoder.transformer.norm.\1"),
    (r"^audio_tower\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$",
     r"mm_whisper_embeddings.whisper_encoder.transformer.layers.\1.attention.w\2.\3"),
    (r"^audio_tower\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$",
     r"mm_whisper_embeddings.whisper_encoder.transformer.layers.\1.attention.wo.\2"),
    (r"^audio_tower\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$",
     r"mm_whisper_embeddings.whisper_encoder.transformer.layers.\1.attention_norm.\2"),
    (r"^audio_tower\.layers\.(\d+)\.fc1\.(weight|bias)$",
     r"mm_whisper_embeddings.whisper_encoder.transformer.layers.\1.feed_forward.w1.\2"),
    (r"^audio_tower\.layers\.(\d+)\.fc2\.(weight|bias)$",
     r"mm_whisper_embeddings.whisper_encoder.transformer.layers.\1.feed_forward.w2.\2"),
    (r"^audio_tower\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$",
     r"mm_whisper_embeddings.whisper_encoder.transformer.layers.\1.ffn_norm.\2"),
    (r"^multi_modal_projector\.linear_1\.weight$", "mm_whisper_embeddings.audio_language_projection.0.weight"),
    (r"^multi_modal_projector\.linear_2\.weight$", "mm_whisper_embeddings.audio_language_projection.2.weight"),
)


def _mistral_checkpoint(tensors: dict, config) -> dict:
    """The same weights under Mistral's names, q/k rows in Mistral's RoPE order (un-permuted)."""
    import re

    text = config.text_config
    native = {}
    for name, tensor in tensors.items():
        if name.endswith("embed_positions.weight"):
            continue
        for pattern, replacement in _MISTRAL_NAMES:
            new, count = re.subn(pattern, replacement, name)
            if count:
                break
        else:
            raise ValueError(f"{name} has no Mistral name; add it to tools.standin._MISTRAL_NAMES.")
        if name.startswith("language_model.") and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = text.num_attention_heads if "q_proj" in name else text.num_key_value_heads
            rows, columns = tensor.shape
            tensor = tensor.view(heads, 2, rows // heads // 2, columns).transpose(1, 2).reshape(rows, columns)
        native[new] = tensor.contiguous()
    return native


def write_model_standin(folder: str | os.PathLike, size: str = "small", seed: int = SEED, *,
                        with_consolidated: bool | None = None, dry_run: bool = False, device: str | None = None) -> Path:
    """Write a folder laid out like the Hub repo mistralai/Voxtral-Mini-3B-2507; returns it.

    size: "small" (tiny architecture, real 131072-id vocabulary, ~34 MB, byte-for-byte the same for
        the same seed) or "full" (Voxtral-Mini-3B's architecture, random weights, ~9.4 GB).
    with_consolidated: also write Mistral's native consolidated.safetensors (default: small only;
        the Hub's is 9.4 GB and `from_pretrained` never reads it).
    dry_run: write every file except the weights (.safetensors), e.g. to check a full-size layout.
    device: where random weights are drawn ("cuda" when available, else "cpu"); the small size is
        always drawn on the CPU so that its bytes do not depend on the machine.
    """
    import torch
    from safetensors.torch import save_file

    _check_size(size)
    if with_consolidated is None:
        with_consolidated = size == "small"
    if with_consolidated and size == "full":
        raise ValueError("A full-size consolidated.safetensors would add another 9.4 GB that transformers never "
                         "reads; leave with_consolidated unset for the full size.")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty: write the stand-in model into a new or empty folder.")
    folder.mkdir(parents=True, exist_ok=True)
    plan = model_plan(size)
    config = plan.config

    _write_json(folder / "config.json", legacy_config_dict(config))
    _write_json(folder / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": PAD_TOKEN_ID,
                                                    "transformers_version": HUB_TRANSFORMERS_VERSION})
    _write_json(folder / "preprocessor_config.json", preprocessor_config_dict())
    _write_json(folder / "params.json", mistral_params_dict(config))
    (folder / "tekken.json").write_text(json.dumps(
        tiny.tekken_tokenizer_json(tiny.FULL_SIZE_SPECIAL_TOKENS, tiny.FULL_SIZE_TEXT_TOKENS)))
    _write_json(folder / INDEX_FILE, plan.index())
    if dry_run:
        return folder

    if size == "small" or device is None:
        device = "cuda" if size == "full" and torch.cuda.is_available() else "cpu"
    everything = {} if with_consolidated else None
    for shard_file in plan.shard_files:  # one shard in memory at a time (~5 GB for the full size)
        shard = {spec.name: _make_tensor(spec, seed, device) for spec in plan.tensors if spec.shard_file == shard_file}
        save_file(shard, str(folder / shard_file), metadata={"format": "pt"})
        if everything is not None:
            everything.update(shard)
        del shard
    if everything is not None:
        save_file(_mistral_checkpoint(everything, config), str(folder / "consolidated.safetensors"))
    return folder


# --------------------------------------------------------------------------- dataset
def _speak(text: str, voice: str, speed: int, word_gap: int, wav: Path, question_id: int) -> float:
    """Speak `text` into a WAV file at espeak-ng's native 22050 Hz; returns its duration in seconds."""
    import soundfile as sf

    try:
        synthetic.espeak(text, voice, speed, word_gap=word_gap, wav_file=wav)
    except RuntimeError as error:
        raise RuntimeError(f"question {question_id}: {error}") from error
    info = sf.info(str(wav))
    if info.samplerate != SAMPLING_RATE:
        raise RuntimeError(f"espeak-ng spoke question {question_id} at {info.samplerate} Hz; "
                           f"the stand-in clips are {SAMPLING_RATE} Hz.")
    return info.duration


def _long_reading(job: dict, wav: Path) -> float:
    """The lead-in and the question, read slowly enough to last over `LONG_MIN_SECONDS`."""
    text = f"{LONG_LEAD_INS[job['category']]} {job['text']}"
    words = len(text.split())
    readings = LONG_READINGS[job["first_reading"]:]
    speed0, gap0 = readings[0]
    seconds = _speak(text, job["voice"], speed0, gap0, wav, job["id"])
    for speed, gap in readings:
        if seconds >= LONG_MIN_SECONDS:
            return seconds
        # Speech time scales with 1/speed; espeak-ng's word gap is in 10 ms at its default 175 wpm.
        # Skipping readings that cannot be long enough saves an espeak-ng run each.
        predicted = seconds * speed0 / speed + words * (gap - gap0) * 0.01 * 175 / speed
        if predicted >= LONG_MIN_SECONDS * 1.03 or (speed, gap) == readings[-1]:
            seconds = _speak(text, job["voice"], speed, gap, wav, job["id"])
            speed0, gap0 = speed, gap
    if seconds >= LONG_MIN_SECONDS:
        return seconds
    raise RuntimeError(f"Question {job['id']} ({job['category']}) lasts {seconds:.1f} s, under {LONG_MIN_SECONDS} s, "
                       "even at espeak-ng's slowest reading; add a slower one to LONG_READINGS.")


def _write_clips(jobs: list[dict], scratch: Path) -> list[float]:
    """Speak a batch of questions, then encode them all with one ffmpeg command; returns durations.

    One ffmpeg process per batch, not per clip: starting ffmpeg costs ~0.15 s of CPU, as much as
    encoding 30 s of speech. LAME's fastest mode (-compression_level 9) takes ~5 ms of CPU per
    second of audio here, against ~6.5 ms through torchcodec (LAME's default mode) and ~13 ms
    through soundfile (libsndfile).
    """
    wavs = [scratch / f"question_{job['id']}.wav" for job in jobs]
    durations = [_long_reading(job, wav) if job["long"] else
                 _speak(job["text"], job["voice"], job["speed"], 0, wav, job["id"]) for job, wav in zip(jobs, wavs)]
    command = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    for wav in wavs:
        command += ["-i", str(wav)]
    for n, job in enumerate(jobs):
        command += ["-map", f"{n}:a", "-c:a", "libmp3lame", "-b:a", str(MP3_BIT_RATE), "-compression_level", "9",
                    "-ar", str(SAMPLING_RATE), "-ac", "1", job["path"]]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not encode questions {jobs[0]['id']}..{jobs[-1]['id']} as MP3: "
                           f"{result.stderr.strip()[-1000:]}")
    for wav in wavs:
        wav.unlink()
    return durations


def _dataset_jobs(folder: Path, rows: int, seed: int, long_share: float) -> tuple[list[dict], list[dict]]:
    per_category = rows // len(CATEGORIES)
    questions = synthetic.generate_questions(per_category=per_category, seed=seed)
    rng = random.Random(seed + 1)
    long_count = 0 if long_share == 0 else max(1, round(long_share * rows))
    # Long clips spread over the categories in turn, so each has its share of two-chunk clips.
    by_category = {c: [q["id"] for q in questions if q["category"] == c] for c in CATEGORIES}
    long_ids = set()
    for i in range(long_count):
        pool = [n for n in by_category[CATEGORIES[i % len(CATEGORIES)]] if n not in long_ids]
        long_ids.add(rng.choice(pool))
    jobs, metadata = [], []
    for question in questions:
        file_name = f"data/question_{question['id']}.mp3"
        jobs.append({"id": question["id"], "category": question["category"], "text": question["transcript"],
                     "path": str(folder / file_name), "voice": rng.choice(VOICES),
                     "speed": rng.choice(synthetic.SPEEDS), "long": question["id"] in long_ids,
                     "first_reading": rng.randrange(3)})
        metadata.append({"category": question["category"], "official_answer": question["official_answer"],
                         "file_name": file_name, "id": question["id"]})
    return jobs, metadata


def write_dataset_standin(folder: str | os.PathLike, rows: int = 1000, seed: int = SEED,
                          long_share: float = LONG_SHARE, workers: int | None = None) -> Path:
    """Write a folder laid out like the Hub dataset ArtificialAnalysis/big_bench_audio; returns it.

    rows: a multiple of 4, split evenly over the four categories (1000 gives 250 each).
    long_share: the share of clips read slowly enough to last over 30 s (at least one when > 0).
    workers: clips spoken and encoded at a time (default: one per CPU core).
    """
    if rows <= 0 or rows % len(CATEGORIES):
        raise ValueError(f"rows={rows}: use a positive multiple of 4, so that each of the four categories "
                         "gets the same number of questions.")
    if not 0 <= long_share <= 1:
        raise ValueError(f"long_share={long_share}: use a share between 0 and 1 (e.g. 0.09 for 9% of clips over 30 s).")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty: write the stand-in dataset into a new or empty folder.")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    jobs, metadata = _dataset_jobs(folder, rows, seed, long_share)
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed: `sudo apt-get install {tool}` (or run `make setup`).")
    batches = [jobs[i:i + CLIPS_PER_ENCODER] for i in range(0, len(jobs), CLIPS_PER_ENCODER)]
    # Threads are enough: espeak-ng and ffmpeg do the work in their own processes, one per core.
    with tempfile.TemporaryDirectory(prefix="standin-wav-") as scratch, \
            ThreadPoolExecutor(min(workers or os.cpu_count() or 1, len(batches))) as pool:
        list(pool.map(lambda batch: _write_clips(batch, Path(scratch)), batches))
    (folder / "README.md").write_text(DATASET_CARD)
    with open(folder / "metadata.jsonl", "w") as meta:
        for row in metadata:
            meta.write(json.dumps(row) + "\n")
    return folder


def clip_durations(dataset_dir: str | os.PathLike) -> dict[int, float]:
    """Seconds of audio in each clip of a stand-in (or downloaded) dataset folder, by row id."""
    import soundfile as sf

    dataset_dir = Path(dataset_dir)
    durations = {}
    for line in (dataset_dir / "metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        durations[row["id"]] = sf.info(str(dataset_dir / row["file_name"])).duration
    return durations


# --------------------------------------------------------------------------- cache
def ensure_standins(size: str = "small", rows: int = 1000, rebuild: bool = False) -> StandinAssets:
    """Both stand-ins, built once into the tutorial cache (``standin-v<VERSION>-<size>-<rows>``)."""
    _check_size(size)
    root = cache_dir() / f"standin-v{VERSION}-{size}-{rows}"
    assets = StandinAssets(model_dir=root / Path(FULL_MODEL_ID).name, dataset_dir=root / Path(FULL_DATASET_ID).name)

    def build(tmp: Path) -> None:
        write_model_standin(tmp / assets.model_dir.name, size=size)
        write_dataset_standin(tmp / assets.dataset_dir.name, rows=rows)

    build_once(root, build, VERSION, rebuild=rebuild)
    return assets


# --------------------------------------------------------------------------- command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.standin",
        description="Write local folders laid out like the Hub repos mistralai/Voxtral-Mini-3B-2507 and "
                    "ArtificialAnalysis/big_bench_audio, to rehearse the full profile without Hub access.")
    parser.add_argument("--model-dir", type=Path,
                        help="new or empty folder for the model (config.json, two safetensors shards and their index, "
                             "tekken.json, preprocessor and generation configs, params.json); omit to skip the model")
    parser.add_argument("--dataset-dir", type=Path,
                        help="new or empty folder for the dataset (README.md, metadata.jsonl, data/question_<id>.mp3); "
                             "omit to skip the dataset")
    parser.add_argument("--size", choices=SIZES, default="small",
                        help="model size: 'small' is the tiny architecture with the real vocabulary (~34 MB, runs on a "
                             "CPU); 'full' is Voxtral-Mini-3B's architecture with random weights (~9.4 GB, for a GPU "
                             "machine) (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=1000,
                        help="dataset rows, a multiple of 4, split evenly over the four categories "
                             "(default: %(default)s, as on the Hub)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="seed for the weights, the questions and the voices (default: %(default)s)")
    parser.add_argument("--long-share", type=float, default=LONG_SHARE,
                        help="share of clips read slowly enough to last over 30 s, i.e. two 30-s audio chunks "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.model_dir is None and args.dataset_dir is None:
        parser.error("give --model-dir, --dataset-dir or both: there is nothing to write otherwise")

    if args.model_dir is not None:
        start = time.perf_counter()
        folder = write_model_standin(args.model_dir, size=args.size, seed=args.seed)
        seconds = time.perf_counter() - start
        print(f"Wrote the {args.size} Voxtral stand-in to {folder} in {seconds:.1f} s "
              f"({folder_size(folder) / 1e6:,.1f} MB):")
        for path in sorted(folder.iterdir()):
            print(f"  {path.name:<40} {path.stat().st_size / 1e6:>10,.1f} MB")
    if args.dataset_dir is not None:
        start = time.perf_counter()
        folder = write_dataset_standin(args.dataset_dir, rows=args.rows, seed=args.seed, long_share=args.long_share)
        seconds = time.perf_counter() - start
        durations = list(clip_durations(folder).values())
        print(f"Wrote the Big Bench Audio stand-in to {folder} in {seconds:.1f} s "
              f"({folder_size(folder) / 1e6:,.1f} MB): {len(durations)} clips, "
              f"{sum(d > 30 for d in durations)} over 30 s, {sum(durations) / 60:.1f} minutes of audio, "
              f"longest {max(durations):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
