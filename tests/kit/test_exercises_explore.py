"""Notebook 01's exercise checks: the right answer passes, the usual mistakes get their own hint, nothing raises."""
import math

import pytest

from helpers.collator import VoxtralAudioCollator
from tutorial_kit.exercises import PLACEHOLDER_HINT
from tutorial_kit.exercises import explore as exercises


@pytest.fixture(scope="module")
def tokens_per_chunk(processor):
    prompt = VoxtralAudioCollator(processor).prompt_ids("navigate", 1)
    return prompt.count(processor.audio_token_id)


def test_audio_token_count(processor, tokens_per_chunk):
    def right(seconds):
        return math.ceil(seconds / 30) * tokens_per_chunk

    assert exercises.check_audio_token_count(right, processor=processor)
    # one rule for whole numbers in every check: a float equal to the integer is accepted
    assert exercises.check_audio_token_count(lambda seconds: float(right(seconds)), processor=processor)


@pytest.mark.parametrize(("answer", "hint"), [
    (..., PLACEHOLDER_HINT),
    (lambda seconds: ..., PLACEHOLDER_HINT),
    (375, "should be a function"),
    (lambda seconds: seconds * 12.5, "12.5 tokens per second"),
    (lambda seconds: int(seconds * 12.5), "12.5 tokens per second"),
    (lambda seconds: int(seconds // 30) * 375, "round the number of chunks up"),
    (lambda seconds: math.ceil(seconds / 30) * 3000, "8 times too many"),
    (lambda seconds: math.ceil(seconds / 30) * 375 + 0.5, "return a whole number"),
    (lambda seconds: "375", "return a whole number"),
    (lambda seconds: 1 / 0, "raised ZeroDivisionError"),
    (lambda seconds: 375 if seconds <= 30 else 500, "How many 30-s chunks"),
])
def test_audio_token_count_mistakes(processor, answer, hint):
    feedback = exercises.check_audio_token_count(answer, processor=processor)
    assert not feedback and hint in feedback.message


@pytest.mark.parametrize("answer", [lambda seconds: 375, lambda seconds: 375.0, lambda seconds: 750])
def test_audio_token_count_constant_answer(processor, answer):
    """A constant passes some clips; the hint says it ignores the duration, not how to round."""
    feedback = exercises.check_audio_token_count(answer, processor=processor)
    assert not feedback and "whatever the duration" in feedback.message
    assert "30.1-s clip needs two chunks" in feedback.message and "round" not in feedback.message


@pytest.mark.parametrize("answer", [
    lambda seconds: (int(seconds // 30) + 1) * 375,
    lambda seconds: (int(seconds / 30) + 1) * 3000 // 2 // 4,
    lambda seconds: (round(seconds * 16000) // 480000 + 1) * 375,
])
def test_audio_token_count_one_chunk_too_many_on_the_boundary(processor, answer):
    """Floor + 1 equals ceil everywhere but on a boundary: the hint names the boundary, not the encoder."""
    feedback = exercises.check_audio_token_count(answer, processor=processor)
    assert not feedback
    assert "audio_token_count(30.0) = 750, one chunk too many" in feedback.message
    assert "exactly 30 s fits 1 chunk" in feedback.message and "math.ceil" in feedback.message
    assert "encoder" not in feedback.message and "projector" not in feedback.message


CLIPS = [10.0, 20.0, 45.0]  # 75 s of audio, padded to 30 + 30 + 60 = 120 s


def test_padding_share():
    assert exercises.check_padding_share(1 - 75 / 120, seconds=CLIPS)


def pooled_in_samples(seconds):
    samples = [round(s * 16000) for s in seconds]
    padded = [math.ceil(n / 480000) * 480000 for n in samples]
    return sum(p - n for p, n in zip(padded, samples)) / sum(padded)


def pooled_with_numpy(seconds):
    import numpy as np

    seconds = np.asarray(seconds)
    padded = np.ceil(seconds / 30) * 30
    return float((padded - seconds).sum() / padded.sum())


@pytest.mark.parametrize("form", [pooled_in_samples, pooled_with_numpy])
def test_padding_share_pooled_in_other_forms(form, splits):
    from helpers.data import duration_seconds

    for seconds in (CLIPS, duration_seconds(splits["train"])):
        feedback = exercises.check_padding_share(form(seconds), seconds=seconds)
        assert feedback, feedback.message


def per_clip_mean(seconds):
    return sum(1 - s / (math.ceil(s / 30) * 30) for s in seconds) / len(seconds)


def test_padding_share_mean_of_per_clip_shares_on_the_train_split(splits):
    """The train split has clips over 30 s, so the mean of per-clip shares is not the pooled share."""
    from helpers.data import duration_seconds

    seconds = duration_seconds(splits["train"])
    assert sum(s > 30 for s in seconds) > 0
    feedback = exercises.check_padding_share(per_clip_mean(seconds), seconds=seconds)
    assert not feedback and "mean of the per-clip padding shares" in feedback.message
    assert "pooled" in feedback.message


def test_padding_share_rounded_too_far(splits):
    """The right method, rounded to 2 decimals: the hint says so instead of suggesting another method."""
    from helpers.data import duration_seconds

    for seconds in (CLIPS, duration_seconds(splits["train"])):
        right = pooled_with_numpy(seconds)
        assert round(right, 2) != right
        feedback = exercises.check_padding_share(round(right, 2), seconds=seconds)
        assert not feedback and "right method, rounded too far" in feedback.message, feedback.message
        assert exercises.check_padding_share(round(right, 3), seconds=seconds)  # within the check's 0.001
    feedback = exercises.check_padding_share(0.5, seconds=CLIPS)  # 0.375 is right: 0.5 is no rounding of it
    assert "rounded" not in feedback.message


@pytest.mark.parametrize(("answer", "hint"), [
    (..., PLACEHOLDER_HINT),
    (75 / 120, "share of real audio"),
    (100 * (1 - 75 / 120), "as a percentage"),
    ((20 / 30 + 10 / 30 - 15 / 30) / 3, "padded to 60 s"),
    (per_clip_mean(CLIPS), "mean of the per-clip padding shares"),
    ((120 - 75) / 75, "divides the padding by the real audio"),
    (0.5, "1 - real / padded"),
    ("0.375", "should be a number"),
])
def test_padding_share_mistakes(answer, hint):
    feedback = exercises.check_padding_share(answer, seconds=CLIPS)
    assert not feedback and hint in feedback.message


def split(answers):
    return {"category": ["navigate"] * len(answers), "official_answer": answers}


TRAIN = split(["Yes", "Yes", "Yes", "No"])
TEST = split(["No", "No", "No", "Yes"])  # the training majority ("Yes") is right once in four


def test_majority_baseline_on_the_real_splits(splits):
    train = [a for c, a in zip(splits["train"]["category"], splits["train"]["official_answer"]) if c == "web_of_lies"]
    test = [a for c, a in zip(splits["test"]["category"], splits["test"]["official_answer"]) if c == "web_of_lies"]
    majority = max(set(train), key=train.count)
    assert train.count(majority) > len(train) / 2  # no tie here, so one answer is right
    feedback = exercises.check_majority_baseline(test.count(majority) / len(test), train=splits["train"],
                                                 test=splits["test"], category="web_of_lies")
    assert feedback, feedback.message


def test_majority_baseline_accepts_either_answer_of_a_tie():
    train = split(["Yes", "No"])
    for answer in (0.25, 0.75):
        assert exercises.check_majority_baseline(answer, train=train, test=TEST, category="navigate")


@pytest.mark.parametrize(("answer", "hint"), [
    (..., PLACEHOLDER_HINT),
    (25, "as a percentage"),
    (1, "a count of rows"),
    (0.75, "test split's most common answer"),
    (0.5, "most common `official_answer`"),
    ([0.25], "should be a number"),
])
def test_majority_baseline_mistakes(answer, hint):
    feedback = exercises.check_majority_baseline(answer, train=TRAIN, test=TEST, category="navigate")
    assert not feedback and hint in feedback.message


def test_majority_baseline_from_the_test_split_or_the_wrong_way_round():
    """With two answers, the test majority's share is also how often the training majority is wrong."""
    feedback = exercises.check_majority_baseline(0.75, train=TRAIN, test=TEST, category="navigate")
    assert not feedback and "test split's most common answer ('No')" in feedback.message
    assert "how often 'Yes' is wrong" in feedback.message
    # the likely mistake comes first, with what to do, in one sentence
    first = feedback.message.split(". ")[0]
    assert first.startswith("Not yet: that is the share of the test split's most common answer ('No')"), first
    assert "choose" in first and "training" in first, first


def test_majority_baseline_scored_on_the_training_rows():
    test = split(["Yes", "No", "No", "No", "No"])  # 'Yes' is right once in five here, three times in four in training
    feedback = exercises.check_majority_baseline(0.75, train=TRAIN, test=test, category="navigate")
    assert not feedback and "right on the training rows" in feedback.message


def two_categories(navigate, web_of_lies):
    return {"category": ["navigate"] * len(navigate) + ["web_of_lies"] * len(web_of_lies),
            "official_answer": navigate + web_of_lies}


@pytest.mark.parametrize("answer", [1 / 8, 4 / 8])  # 'Yes' among the category's test rows, or among all of them
def test_majority_baseline_divided_by_the_whole_test_split(answer):
    train = two_categories(["Yes", "Yes", "No"], ["No", "No"])
    test = two_categories(["No", "No", "No", "Yes"], ["Yes", "Yes", "Yes", "No"])
    feedback = exercises.check_majority_baseline(answer, train=train, test=test, category="navigate")
    assert not feedback and "all 8 rows of the test split" in feedback.message


def test_majority_baseline_chosen_from_the_whole_training_split():
    train = {"category": ["object_counting"] * 3 + ["web_of_lies"] * 3, "official_answer": ["2", "2", "3"] + ["No"] * 3}
    test = {"category": ["object_counting"] * 4, "official_answer": ["2", "3", "5", "5"]}
    # 'No', the whole split's most common answer, is never right on object_counting
    feedback = exercises.check_majority_baseline(0.0, train=train, test=test, category="object_counting")
    assert not feedback and "most common answer of the whole training split" in feedback.message


def test_majority_baseline_names_every_mistake_that_gives_the_number():
    """Yes/No: picking the whole split's 'No' scores what the category's 'Yes' misses."""
    train = two_categories(["Yes", "Yes", "No"], ["No", "No", "No"])
    test = two_categories(["No", "Yes", "Yes", "Yes", "No"], ["No"])
    feedback = exercises.check_majority_baseline(0.4, train=train, test=test, category="navigate")
    assert not feedback
    assert "the most common answer of the whole training split, is right" in feedback.message
    assert "how often 'Yes' is wrong" in feedback.message


def test_majority_baseline_wrong_way_round():
    test = split(["Yes", "Yes", "Yes", "No"])  # majority right 3 times in 4
    feedback = exercises.check_majority_baseline(0.25, train=TRAIN, test=test, category="navigate")
    assert not feedback and "how often the majority answer is wrong" in feedback.message


def test_chunks_rounded_to_the_nearest_are_told_why_a_long_clip_needs_more(processor):
    from tutorial_kit.exercises import explore

    # round() to the nearest chunk, at least one: right below 30 s, one chunk short at 30.1 s
    feedback = explore.check_audio_token_count(lambda seconds: max(1, round(seconds / 30)) * 375, processor=processor)
    assert not feedback and "a 30.1-s clip needs 2 chunks" in feedback.message
    assert "shorter than 30 s" not in feedback.message
