"""The frozen audio tower, run once per row instead of in every training step (notebook 03).

The tower is frozen, its output is cut from the autograd graph (`helpers.lora.freeze_audio_tower`)
and it has no dropout, so a row's tower output is the same in every epoch and every evaluation
pass. `cache_tower_outputs` computes it once, with `datasets.map` (written beside the dataset's own
files and memory-mapped back when the dataset lives on disk), in place of the log-mel features. The
trainer's loss then hands the stored output to the model through `tower_output_given`, which stands
in for the tower during that forward pass; the projector after it carries LoRA and still runs every
step, so the update is the one the full forward pass makes.

Size at full size: 1500 positions x 1280 numbers per 30-s chunk, 3.7 MiB in float16 (the tower's
dtype on a T4), about 4 GB for Big Bench Audio's 1000 rows; a bfloat16 tower's output is stored as
float32 (exact, twice the size), since Arrow has no bfloat16.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from helpers.collator import TOWER_OUTPUT, VoxtralAudioCollator
from helpers.lora import audio_tower, audio_tower_holder


class GivenTowerOutput(torch.nn.Module):
    """Stands in for the audio tower: what it is given as `input_features` is the tower's stored output."""

    def forward(self, input_features, return_dict=True, **kwargs):
        return BaseModelOutput(last_hidden_state=input_features)


@contextmanager
def tower_output_given(model):
    """Within this block the model takes the tower's stored output where it takes log-mel features."""
    holder = audio_tower_holder(model)
    tower = holder.audio_tower
    holder.audio_tower = GivenTowerOutput()
    try:
        yield
    finally:
        holder.audio_tower = tower


def storage_dtype(dtype: torch.dtype) -> str:
    """How a tower output of `dtype` is stored exactly: float16 as is, anything else as float32."""
    return "float16" if dtype == torch.float16 else "float32"


def _tower_fingerprint(dataset, tower, dtype: str) -> str:
    # Hashing the map function would hash the whole model; the tower's first and last weights
    # tell one checkpoint from another in a fraction of the time.
    parameters = list(tower.parameters())
    digest = hashlib.sha256(f"{dataset._fingerprint} {dtype} {type(tower).__name__}".encode())
    for parameter in (parameters[0], parameters[-1]):
        digest.update(parameter.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


def cache_tower_outputs(dataset, model, processor, batch_size: int = 8, load_from_cache_file: bool = True):
    """Each row's audio tower output, computed once, in a column `audio_tower_output`
    (chunks, positions, hidden size) that replaces `audio` and `input_features`."""
    from datasets import Array3D, Features

    tower = audio_tower(model)
    if any(parameter.requires_grad for parameter in tower.parameters()):
        raise ValueError("The audio tower still trains, so its output changes from step to step and cannot be kept: "
                         "call helpers.lora.freeze_audio_tower(model) first.")
    config = tower.config
    if config.dropout or config.layerdrop or config.attention_dropout or config.activation_dropout:
        raise ValueError("This audio tower uses dropout, so its output differs from step to step and cannot be kept; "
                         "train with cache_tower_output=False.")
    if {"audio", "input_features"}.isdisjoint(dataset.column_names):
        raise ValueError(f"The dataset has neither 'audio' nor 'input_features' (columns: {dataset.column_names}).")
    first = next(tower.parameters())
    dtype = storage_dtype(first.dtype)
    collator = VoxtralAudioCollator(processor)
    kept = {k: v for k, v in dataset.features.items() if k not in ("audio", "input_features")}
    features = Features({**kept, TOWER_OUTPUT: Array3D(shape=(None, config.max_source_positions, config.hidden_size),
                                                       dtype=dtype)})
    autocast = torch.autocast(first.device.type, dtype=first.dtype,
                              enabled=first.device.type == "cuda" and first.dtype != torch.float32)

    def run_tower(batch, indices):
        names = batch["id"] if "id" in batch else indices
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        chunks = [collator.row_features(row, name) for row, name in zip(rows, names)]
        with torch.no_grad(), autocast:
            outputs = tower(torch.cat(chunks).to(first.device, first.dtype)).last_hidden_state
        outputs = outputs.float().cpu().numpy().astype(dtype, copy=False)
        ends = np.cumsum([len(c) for c in chunks])
        return {TOWER_OUTPUT: [outputs[end - len(c):end] for c, end in zip(chunks, ends)]}

    was_training = tower.training
    tower.eval()
    try:
        computed = dataset.map(run_tower, batched=True, batch_size=batch_size, with_indices=True, features=features,
                               remove_columns=[c for c in ("audio", "input_features") if c in dataset.column_names],
                               load_from_cache_file=load_from_cache_file,
                               new_fingerprint=_tower_fingerprint(dataset, tower, dtype),
                               desc="audio tower, once per row")
    finally:
        tower.train(was_training)
    return computed.with_format("numpy", columns=[TOWER_OUTPUT], output_all_columns=True)
