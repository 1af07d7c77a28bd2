"""helpers.data: the stratified splits and the counts the notebooks show."""
from collections import Counter

import pytest

from helpers.data import category_counts, duration_seconds, stratified_test_indices


def test_splits_are_stratified_and_disjoint(splits, profile):
    test_counts = Counter(splits["test"]["category"])
    assert set(test_counts.values()) == {profile.test_per_category} and len(test_counts) == 4
    assert not set(splits["train"]["id"]) & set(splits["test"]["id"])
    assert len(splits["train"]) + len(splits["test"]) == 4 * 48


def test_full_profile_split_sizes():
    categories = [c for c in ("a", "b", "c", "d") for _ in range(250)]
    test = stratified_test_indices(categories, 25, seed=42)
    assert len(test) == 100 and Counter(categories[i] for i in test) == {c: 25 for c in "abcd"}
    assert test == stratified_test_indices(categories, 25, seed=42)
    assert test != stratified_test_indices(categories, 25, seed=43)


def test_split_refuses_to_empty_a_category():
    with pytest.raises(ValueError, match="Category 'b' has 2 rows"):
        stratified_test_indices(["a"] * 10 + ["b"] * 2, 2)


def test_category_counts(splits):
    counts = category_counts(splits["test"])
    assert sum(sum(v.values()) for v in counts.values()) == len(splits["test"])


def test_durations(splits):
    durations = duration_seconds(splits["test"])
    assert len(durations) == len(splits["test"]) and all(1 < d < 60 for d in durations)
    assert any(d > 30 for d in durations)  # some take two 30-s chunks, as Big Bench Audio's longest do
