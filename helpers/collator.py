"""Turn dataset rows into Voxtral training and generation batches.

The published recipe asks the processor to pad a batch of prompts and then keeps
`ids[:sum(attention_mask)]` of each. Voxtral's tokenizer pads on the LEFT, so for every prompt
shorter than the longest that keeps the pads and cuts off the end of the prompt, `[/INST]`
included. Here each prompt is built on its own and the batch is padded once, at the end, on the
side we choose.

It is also faster: a prompt's tokens depend only on its instruction and the number of 30-s
audio chunks, so they are computed once through the processor's own chat template and reused;
the audio goes straight to the feature extractor instead of through a base64 WAV.

Built step by step in notebook 02; this is the tested version it is checked against.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from helpers.audio import CHUNK_SECONDS, MAX_SECONDS, SAMPLING_RATE, load_audio
from helpers.rows import row_id, sample_name
from helpers.tasks import answer_text, build_conversation, row_instruction

IGNORE_INDEX = -100
# How the features computed once are stored: float16 halves the disk (0.77 MB instead of 1.5 MB
# per 30 s of audio) and changes the loss by a few parts in a million (tests/test_feature_routes.py).
FEATURE_DTYPES = ("float32", "float16")
# The frozen audio tower's output, computed once per row (helpers.frozen_tower); it replaces the features.
TOWER_OUTPUT = "audio_tower_output"


class VoxtralAudioCollator:
    """Collate dataset rows (`audio`, `category` or `question`, `official_answer`) into model inputs.

    A row's instruction, read after its audio, is `helpers.tasks.row_instruction(row)`.

    Called with a list of rows it returns `input_ids`, `attention_mask`, `labels` and
    `input_features` for training (`audio_tower_output` instead where the rows carry the tower's
    stored output): prompt + answer + eos, labels -100 on prompt and padding.
    `prompts(rows)` returns left-padded prompts for generation. Padding side defaults to right
    for training (positions then match the unpadded row) and is always left for generation.
    """

    def __init__(self, processor, dtype: torch.dtype | None = None, padding_side: str = "right",
                 max_audio_seconds: float = MAX_SECONDS):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.dtype = dtype
        self.padding_side = padding_side
        self.max_audio_seconds = max_audio_seconds
        self.pad_id = self.tokenizer.pad_token_id
        self.eos_id = self.tokenizer.eos_token_id
        self._prompt_cache = lru_cache(maxsize=None)(self._prompt_ids_uncached)
        self._answer_cache = lru_cache(maxsize=4096)(self._answer_ids_uncached)

    # -- pieces ---------------------------------------------------------------------------
    def _prompt_ids_uncached(self, instruction: str, chunks: int) -> tuple[int, ...]:
        silence = {"array": np.zeros(chunks * CHUNK_SECONDS * SAMPLING_RATE - SAMPLING_RATE, np.float32),
                   "sampling_rate": SAMPLING_RATE}
        conversation = build_conversation({"audio": silence, "question": instruction})
        encoded = self.processor.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                                     add_generation_prompt=True)
        return tuple(encoded["input_ids"][0].tolist())

    def prompt_ids(self, category, chunks: int, question: str | None = None) -> list[int]:
        """Prompt tokens for a category (or a question of the row's own) and audio length (in 30-s
        chunks), ending in `[/INST]`."""
        category = category if category is None or isinstance(category, str) else str(category)
        return list(self._prompt_cache(row_instruction({"category": category, "question": question}), chunks))

    def _answer_ids_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False)) + (self.eos_id,)

    def audio_features(self, audio: np.ndarray) -> torch.Tensor:
        """Log-mel features of one clip, (chunks, 128, 3000), exactly as Voxtral's processor makes them."""
        extractor = self.processor.feature_extractor
        out = extractor(audio, sampling_rate=SAMPLING_RATE, padding=True, truncation=False,
                        pad_to_multiple_of=CHUNK_SECONDS * SAMPLING_RATE, return_tensors="pt")
        return out["input_features"].reshape(extractor.feature_size, -1, extractor.nb_max_frames).transpose(0, 1)

    def row_features(self, row: dict, position: int) -> torch.Tensor:
        """A row's features: the tower's stored output (see `helpers.frozen_tower`), precomputed
        log-mel features (see `precompute_features`) or log-mel features computed from its audio."""
        if not isinstance(row, dict):
            raise ValueError(f"batch row {position}: expected a dict with 'audio', got {type(row).__name__}.")
        name = row_id(row, position)
        if row.get(TOWER_OUTPUT) is not None:
            output = torch.from_numpy(np.array(row[TOWER_OUTPUT], dtype=np.float32))  # a copy: Arrow's is read-only
            if output.ndim != 3 or output.shape[0] == 0:
                raise ValueError(f"{sample_name(index=name)}: {TOWER_OUTPUT} has shape {tuple(output.shape)}; "
                                 "expected (chunks, positions, hidden size).")
            return output
        if row.get("input_features") is not None:
            features = torch.from_numpy(np.array(row["input_features"], dtype=np.float32))  # a copy: Arrow's is read-only
            expected = (self.processor.feature_extractor.feature_size, self.processor.feature_extractor.nb_max_frames)
            if features.ndim != 3 or tuple(features.shape[1:]) != expected or features.shape[0] == 0:
                raise ValueError(f"{sample_name(index=name)}: input_features has shape {tuple(features.shape)}; "
                                 f"expected (chunks, {expected[0]}, {expected[1]}).")
            return features
        if row.get("audio") is None:
            raise ValueError(f"{sample_name(index=name)}: missing 'audio'.")
        return self.audio_features(load_audio(row["audio"], index=name, max_seconds=self.max_audio_seconds))

    def _pad(self, sequences: list[list[int]], value: int, side: str) -> torch.Tensor:
        longest = max(len(s) for s in sequences)
        padded = [([value] * (longest - len(s)) + s) if side == "left" else (s + [value] * (longest - len(s)))
                  for s in sequences]
        return torch.tensor(padded, dtype=torch.long)

    # -- batches --------------------------------------------------------------------------
    def encode(self, rows: list[dict], with_answers: bool, padding_side: str | None = None) -> dict:
        if not rows:
            raise ValueError("Cannot collate an empty batch.")
        side = padding_side or self.padding_side
        stored = [isinstance(row, dict) and row.get(TOWER_OUTPUT) is not None for row in rows]
        if any(stored) and not all(stored):
            without = [row_id(row, i) for i, (row, has) in enumerate(zip(rows, stored)) if not has]
            raise ValueError(f"Some rows of this batch carry {TOWER_OUTPUT} and some do not (without: "
                             f"{', '.join(f'sample {name}' for name in without)}): cache the tower for every split.")
        features, sequences, labels = [], [], []
        for position, row in enumerate(rows):
            row_features = self.row_features(row, position)
            prompt = self.prompt_ids(row.get("category"), row_features.shape[0], row.get("question"))
            features.append(row_features)
            if with_answers:
                answer = self._answer_cache(answer_text(row.get("official_answer"), row_id(row, position)))
                sequences.append(prompt + list(answer))
                labels.append([IGNORE_INDEX] * len(prompt) + list(answer))
            else:
                sequences.append(prompt)
        batch = {
            "input_ids": self._pad(sequences, self.pad_id, side),
            "attention_mask": self._pad([[1] * len(s) for s in sequences], 0, side),
            TOWER_OUTPUT if all(stored) else "input_features":
                torch.cat(features).to(self.dtype) if self.dtype else torch.cat(features),
        }
        if with_answers:
            batch["labels"] = self._pad(labels, IGNORE_INDEX, side)
        return batch

    def __call__(self, rows: list[dict]) -> dict:
        return self.encode(rows, with_answers=True)

    def prompts(self, rows: list[dict]) -> dict:
        """Left-padded prompts (ending in `[/INST]`) and features, ready for `model.generate`."""
        return self.encode(rows, with_answers=False, padding_side="left")


def precompute_features(dataset, processor, num_proc: int | None = None, load_from_cache_file: bool = True,
                        dtype: str = "float32"):
    """Compute every row's log-mel features once, with `datasets.map` (cached on disk).

    The published recipe redoes the audio work for every batch of every epoch; after this,
    epochs only read the features back. The `audio` column is dropped (the features replace
    it); the result is in numpy format, ready for `VoxtralAudioCollator` and `Trainer`.
    `dtype="float16"` stores them in half the disk; the collator reads them back as float32.
    """
    from datasets import Array3D, Features

    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"dtype {dtype!r}: features are stored as float32 or float16.")
    if "audio" not in dataset.column_names:
        raise ValueError(f"The dataset has no 'audio' column (columns: {dataset.column_names}).")
    collator = VoxtralAudioCollator(processor)
    extractor = processor.feature_extractor
    features = Features({**{k: v for k, v in dataset.features.items() if k != "audio"},
                         "input_features": Array3D(shape=(None, extractor.feature_size, extractor.nb_max_frames),
                                                   dtype=dtype)})

    def featurize(batch, indices):
        names = batch["id"] if "id" in batch else indices
        return {"input_features": [
            collator.audio_features(load_audio(audio, index=name, max_seconds=collator.max_audio_seconds)).numpy()
            .astype(dtype, copy=False) for audio, name in zip(batch["audio"], names)]}

    computed = dataset.map(featurize, batched=True, batch_size=16, with_indices=True, remove_columns=["audio"],
                           features=features, num_proc=num_proc, load_from_cache_file=load_from_cache_file,
                           desc="log-mel features, once")
    return computed.with_format("numpy", columns=["input_features"], output_all_columns=True)
