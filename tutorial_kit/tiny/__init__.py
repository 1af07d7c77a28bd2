"""The offline `tiny` profile: a tiny random Voxtral, a real Voxtral processor, a spoken dataset.

Everything is built deterministically from packages on disk (no Hub access) and cached, so
the notebooks load it through exactly the calls the `full` profile uses:
``VoxtralForConditionalGeneration.from_pretrained``, ``VoxtralProcessor.from_pretrained`` and
``datasets.load_dataset``.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers.profiles import TINY_ASSETS_VERSION, tiny_assets_dir

TINY_SEED = 1234
NUM_SPECIAL_TOKENS = 100
NUM_TEXT_TOKENS = 1900
AUDIO_TOKEN_ID = 24
# With hidden size 64 the final RMSNorm caps the hidden state's norm at ~8, and the default output init
# (std 0.02) then caps every logit near 1: a frozen head could never make one answer likely. A wider head
# lets LoRA on the layers below actually learn the answer format (the small Hub-layout stand-in too).
SMALL_LM_HEAD_STD = 0.15

# Ranks of the control tokens that Voxtral's tokenizer (tekken, v7) uses.
_SPECIAL_NAMES = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]", 7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]",
    10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]", 13: "[IMG_END]", 14: "[PREFIX]",
    15: "[MIDDLE]", 16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]", 20: "[ARGS]", 21: "[CALL_ID]", 24: "[AUDIO]", 25: "[BEGIN_AUDIO]",
    34: "[TRANSCRIBE]",
}


@dataclass(frozen=True)
class TinyAssets:
    root: Path
    model_dir: Path
    dataset_dir: Path


# Voxtral-Mini-3B's own tokenizer: 1000 control tokens + 130072 text ranks = 131072 ids.
FULL_SIZE_SPECIAL_TOKENS = 1000
FULL_SIZE_TEXT_TOKENS = 130072


def tekken_tokenizer_json(num_special_tokens: int = NUM_SPECIAL_TOKENS, num_text_tokens: int = NUM_TEXT_TOKENS) -> dict:
    """A Voxtral (tekken, v7) tokenizer from mistral-common's tekken file: the first
    `num_text_tokens` ranks, Voxtral's special tokens and the audio section its processor reads.

    The defaults make the tiny profile's 2000-id tokenizer; `FULL_SIZE_*` make one with the real
    model's 131072 ids, for benchmarks with the full-size architecture.
    """
    import mistral_common

    source = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    full = json.loads(source.read_text())
    if num_text_tokens > len(full["vocab"]):
        raise ValueError(f"num_text_tokens={num_text_tokens}, but {source.name} has {len(full['vocab'])} ranks")
    specials = [
        {"rank": i, "token_str": _SPECIAL_NAMES.get(i, f"<SPECIAL_{i}>"), "is_control": True}
        for i in range(num_special_tokens)
    ]
    return {
        "config": {
            **full["config"],
            "num_vocab_tokens": num_text_tokens,
            "default_vocab_size": num_special_tokens + num_text_tokens,
            "default_num_special_tokens": num_special_tokens,
            "version": "v7",
        },
        "vocab": full["vocab"][:num_text_tokens],
        "special_tokens": specials,
        "audio": {
            "sampling_rate": 16000,
            "frame_rate": 12.5,
            "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
            "chunk_length_s": 30,
        },
    }


def tiny_config():
    """Voxtral's real architecture, shrunk: 2 layers each, hidden size 64 (~0.6M parameters)."""
    from transformers import VoxtralConfig

    return VoxtralConfig(
        audio_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
        text_config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=NUM_SPECIAL_TOKENS + NUM_TEXT_TOKENS,
            max_position_embeddings=32768,
        ),
        audio_token_id=AUDIO_TOKEN_ID,
    )


def build_processor(folder: Path, num_special_tokens: int = NUM_SPECIAL_TOKENS,
                    num_text_tokens: int = NUM_TEXT_TOKENS):
    """A real `VoxtralProcessor` (Whisper features, 128 mel bins; tekken tokenizer written to
    `folder/tekken.json`), sized by `tekken_tokenizer_json`'s arguments."""
    from transformers import (
        MistralCommonBackend,
        VoxtralProcessor,
        WhisperFeatureExtractor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_file = folder / "tekken.json"
    tokenizer_file.write_text(json.dumps(tekken_tokenizer_json(num_special_tokens, num_text_tokens)))
    tokenizer = MistralCommonBackend(tokenizer_path=str(tokenizer_file))
    return VoxtralProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer)


def build_tiny_model(model_dir: Path) -> Path:
    """Write a randomly initialised tiny Voxtral and its processor to `model_dir` (deterministic)."""
    import torch
    from transformers import VoxtralForConditionalGeneration

    model_dir = Path(model_dir)
    processor = build_processor(model_dir)
    tokenizer = processor.tokenizer

    torch.manual_seed(TINY_SEED)
    model = VoxtralForConditionalGeneration(tiny_config())
    torch.nn.init.normal_(model.lm_head.weight, std=SMALL_LM_HEAD_STD)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    return model_dir


def ensure_tiny_assets(root: Path | None = None, rebuild: bool = False) -> TinyAssets:
    """Build the tiny model and dataset once; later calls return the cached paths."""
    from tutorial_kit.tiny import synthetic

    root = Path(root) if root else tiny_assets_dir()
    assets = TinyAssets(root=root, model_dir=root / "model", dataset_dir=root / "big_bench_audio_tiny")

    def build(tmp: Path) -> None:
        print(f"Building the tiny profile's model and spoken dataset once, into {root} (about half a minute).")
        build_tiny_model(tmp / "model")
        synthetic.write_dataset(tmp / "big_bench_audio_tiny")

    build_once(root, build, TINY_ASSETS_VERSION, rebuild=rebuild)
    return assets


def build_once(root: str | os.PathLike, build: Callable[[Path], object], stamp: str, rebuild: bool = False) -> Path:
    """Run ``build(folder)`` once for `root`, however many processes ask at the same time.

    `build` writes into a temporary sibling folder that is renamed to `root` only when complete
    (with a COMPLETE file holding `stamp`), so a half-built folder is never mistaken for a finished
    one; a failed build leaves nothing behind.
    """
    from filelock import FileLock

    root = Path(root)
    complete = root / "COMPLETE"
    if complete.exists() and not rebuild:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # A notebook and a test run may ask at once: one builds, the other waits and reuses it.
    with FileLock(str(root) + ".lock"):
        if complete.exists() and not rebuild:
            return root
        if root.exists():
            shutil.rmtree(root)
        tmp = root.with_name(root.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            build(tmp)
            (tmp / "COMPLETE").write_text(stamp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(root)  # atomic on one file system
    return root
