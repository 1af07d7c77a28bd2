"""Features stored in float16: half the disk, the loss within float16 rounding of float32's."""
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.collator import VoxtralAudioCollator, precompute_features


def cache_bytes(dataset) -> int:
    return sum(Path(f["filename"]).stat().st_size for f in dataset.cache_files)


@pytest.fixture(scope="module")
def both_precisions(splits, processor):
    rows = splits["train"].select(range(16))
    return (precompute_features(rows, processor, load_from_cache_file=False),
            precompute_features(rows, processor, dtype="float16", load_from_cache_file=False))


def test_float16_features_take_half_the_disk(both_precisions):
    full, half = both_precisions
    assert full.features["input_features"].dtype == "float32" and half.features["input_features"].dtype == "float16"
    values = np.asarray(half[0]["input_features"])  # read back as float32 (datasets' numpy format), stored rounded
    assert np.array_equal(values, values.astype(np.float16).astype(values.dtype))
    chunks = sum(len(row["input_features"]) for row in half)
    assert 0.45 < cache_bytes(half) / cache_bytes(full) < 0.55
    assert cache_bytes(half) / chunks == pytest.approx(128 * 3000 * 2, rel=0.02)  # per 30-s chunk: 0.77 MB


def test_float16_features_give_the_float32_loss(both_precisions, processor, model_and_processor):
    model = model_and_processor[0]
    full, half = both_precisions
    first, second = np.asarray(full[0]["input_features"]), np.asarray(half[0]["input_features"], dtype=np.float32)
    assert 0 < np.abs(first - second).max() <= 1e-3 * max(1.0, np.abs(first).max())  # rounded, not identical
    collator = VoxtralAudioCollator(processor)
    rows32, rows16 = [full[i] for i in range(8)], [half[i] for i in range(8)]
    with torch.no_grad():
        loss32 = model(**collator(rows32)).loss.item()
        loss16 = model(**collator(rows16)).loss.item()
    assert loss16 == pytest.approx(loss32, rel=1e-4)


def test_an_unknown_feature_precision_is_refused(splits, processor):
    with pytest.raises(ValueError, match="dtype 'int8': features are stored as float32 or float16"):
        precompute_features(splits["train"].select(range(2)), processor, dtype="int8")
