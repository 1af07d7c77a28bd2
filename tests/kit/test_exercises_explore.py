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


@pytest.mark.parametrize(("answer", "hint"), [
    (..., PLACEHOLDER_HINT),
    (lambda seconds: ..., PLACEHOLDER_HINT),
    (375, "should be a function"),
    (lambda seconds: seconds * 12.5, "12.5 tokens per second"),
    (lambda seconds: int(seconds * 12.5), "12.5 tokens per second"),
    (lambda seconds: int(seconds // 30) * 375, "round the number of chunks up"),
    (lambda seconds: math.ceil(seconds / 30) * 3000, "8 times too many"),
    (lambda seconds: float(math.ceil(seconds / 30) * 375), "return an int"),
    (lambda seconds: "375", "return a whole number"),
    (lambda seconds: 1 / 0, "raised ZeroDivisionError"),
    (lambda seconds: 375 if seconds <= 30 else 500, "How many 30-s chunks"),
])
def test_audio_token_count_mistakes(processor, answer, hint):
    feedback = exercises.check_audio_token_count(answer, processor=processor)
    assert not feedback and hint in feedback.message


CLIPS = [10.0, 20.0, 45.0]  # 75 s of audio, padded to 30 + 30 + 60 = 120 s


def test_padding_share():
    assert exercises.check_padding_share(1 - 75 / 120, seconds=CLIPS)


@pytest.mark.parametrize(("answer", "hint"), [
    (..., PLACEHOLDER_HINT),
    (75 / 120, "share of real audio"),
    (100 * (1 - 75 / 120), "as a percentage"),
    ((20 / 30 + 10 / 30 - 15 / 30) / 3, "padded to 60 s"),
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
    (0.75, "most common answer of the test split"),
    (0.5, "most common `official_answer`"),
    ([0.25], "should be a number"),
])
def test_majority_baseline_mistakes(answer, hint):
    feedback = exercises.check_majority_baseline(answer, train=TRAIN, test=TEST, category="navigate")
    assert not feedback and hint in feedback.message


def test_majority_baseline_wrong_way_round():
    test = split(["Yes", "Yes", "Yes", "No"])  # majority right 3 times in 4
    feedback = exercises.check_majority_baseline(0.25, train=TRAIN, test=test, category="navigate")
    assert not feedback and "how often the majority answer is wrong" in feedback.message
