"""Loading Big Bench Audio (or the tiny profile's stand-in) and its stratified train/test split.

Used from notebook 01 on (schema, balance, the split).
"""
from __future__ import annotations

import random

from helpers.audio import SAMPLING_RATE, load_audio
from helpers.profiles import SEED, Profile, ensure_assets
from helpers.tasks import CATEGORIES

# What the recipe reads from each row (notebooks and `python -m tutorial_kit.train` without column options).
RECIPE_COLUMNS = ("audio", "category", "official_answer")


def load_dataset_for_profile(profile: Profile):
    """The whole dataset (one `train` split), same calls in both profiles.

    Audio is decoded at the file's own rate (Big Bench Audio: 22.05 kHz MP3) and resampled to
    16 kHz by `load_audio`. Not `Audio(sampling_rate=16000)`: resampling inside torchcodec's
    decoder returned a different number of samples when the same row was read twice.
    """
    from datasets import Audio, load_dataset

    ensure_assets(profile)
    try:
        dataset = load_dataset(profile.dataset_id, split="train")
    except Exception as error:  # noqa: BLE001 - re-raised with advice, original chained
        if profile.is_tiny:
            raise
        raise RuntimeError(
            f"Could not load the dataset {profile.dataset_id!r} ({type(error).__name__}: {str(error)[:200]}). "
            "From the Hugging Face Hub: check your network connection. From a local folder (a mirror): "
            "check $VOXTRAL_DATASET. Or run offline with VOXTRAL_PROFILE=tiny."
        ) from None  # the message says what to do; the chained traceback would bury it
    missing = [column for column in RECIPE_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset {profile.dataset_id!r} has no {', '.join(map(repr, missing))} column (its columns: "
            f"{', '.join(map(repr, dataset.column_names))}); Big Bench Audio's are {', '.join(RECIPE_COLUMNS)}. "
            "To train on data with other columns, name them: python -m tutorial_kit.train --dataset ... "
            "--answer-column ... --question-column (or --category-column) ... (and --audio-column ... for a Hub dataset)"
        )
    return dataset.cast_column("audio", Audio())


def stratified_test_indices(categories: list[str], per_category: int, seed: int = SEED) -> list[int]:
    """`per_category` indices of each category, drawn with a seeded shuffle, in dataset order."""
    by_category: dict[str, list[int]] = {}
    for index, category in enumerate(categories):
        by_category.setdefault(category, []).append(index)
    rng = random.Random(seed)
    chosen = []
    for category in sorted(by_category):
        indices = by_category[category]
        if len(indices) <= per_category:
            raise ValueError(
                f"Category {category!r} has {len(indices)} rows; a test split of {per_category} per "
                "category would leave none for training."
            )
        chosen += rng.sample(indices, per_category)
    return sorted(chosen)


def load_splits(profile: Profile, seed: int = SEED):
    """A `DatasetDict` with `train` and `test`, the test split stratified by category (`SEED`).

    Full profile: 900 train / 100 test, 25 per category in test.
    """
    from datasets import DatasetDict

    dataset = load_dataset_for_profile(profile)
    test = set(stratified_test_indices(dataset["category"], profile.test_per_category, seed))
    train = [i for i in range(len(dataset)) if i not in test]
    return DatasetDict(train=dataset.select(train), test=dataset.select(sorted(test)))


def duration_seconds(dataset) -> list[float]:
    """Duration of every row's audio, in seconds."""
    return [len(load_audio(row["audio"], index=i)) / SAMPLING_RATE for i, row in enumerate(dataset)]


def category_counts(dataset) -> dict[str, dict[str, int]]:
    """{category: {answer: count}} for the balance plot and the baselines."""
    counts: dict[str, dict[str, int]] = {c: {} for c in CATEGORIES}
    for category, answer in zip(dataset["category"], dataset["official_answer"]):
        counts.setdefault(category, {})
        counts[category][str(answer)] = counts[category].get(str(answer), 0) + 1
    return {c: v for c, v in counts.items() if v}
