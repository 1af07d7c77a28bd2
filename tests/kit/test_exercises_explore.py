"""Notebook 01's exercise checks: the right answer passes, the usual mistakes get their own hint, nothing raises."""
import math
from collections import Counter

import numpy as np
import pytest
import torch

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


@pytest.mark.parametrize("answer", [
    lambda seconds: torch.ceil(torch.tensor(seconds / 30)) * 375,
    lambda seconds: torch.tensor(math.ceil(seconds / 30) * 375),
    lambda seconds: np.ceil(np.float32(seconds) / 30).astype(np.int64) * 375,
])
def test_audio_token_count_computed_with_torch_or_numpy(processor, answer):
    feedback = exercises.check_audio_token_count(answer, processor=processor)
    assert feedback, feedback.message


def test_audio_token_count_returns_the_number_of_chunks(processor):
    feedback = exercises.check_audio_token_count(lambda seconds: math.ceil(seconds / 30), processor=processor)
    assert not feedback and "that is the number of chunks" in feedback.message, feedback.message
    assert "each chunk costs" in feedback.message and "375" not in feedback.message


@pytest.mark.parametrize(("per_chunk", "hint"), [
    (376, "`[BEGIN_AUDIO]`"),
    (300, "right number of chunks, wrong number of tokens per chunk"),
    (1, "that is the number of chunks"),
])
def test_audio_token_count_wrong_tokens_per_chunk(processor, per_chunk, hint):
    feedback = exercises.check_audio_token_count(lambda seconds: math.ceil(seconds / 30) * per_chunk,
                                                 processor=processor)
    assert not feedback and hint in feedback.message, feedback.message
    if per_chunk == 376:
        assert "right number of chunks, wrong number of tokens per chunk" in feedback.message


@pytest.mark.parametrize("offset", [1, -1])
def test_audio_token_count_one_token_off_on_every_clip(processor, offset):
    """The chunks are right, the total one token off: `[BEGIN_AUDIO]` counted once, say. Not a chunk question."""
    feedback = exercises.check_audio_token_count(lambda seconds: math.ceil(seconds / 30) * 375 + offset,
                                                 processor=processor)
    assert not feedback and "one token" in feedback.message, feedback.message
    assert "How many 30-s chunks" not in feedback.message and "12.5 tokens per second" not in feedback.message
    assert "right number of chunks" in feedback.message
    if offset == 1:
        assert "only the `[AUDIO]` tokens" in feedback.message
        assert "`[BEGIN_AUDIO]`" in feedback.message and "once per clip" in feedback.message
    else:
        assert "`[BEGIN_AUDIO]`" not in feedback.message


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


def test_padding_share_as_a_tensor(splits):
    from helpers.data import duration_seconds

    seconds = duration_seconds(splits["train"])
    feedback = exercises.check_padding_share(torch.tensor(pooled_with_numpy(seconds)), seconds=seconds)
    assert feedback, feedback.message
    assert exercises.check_padding_share(np.float32(pooled_with_numpy(seconds)), seconds=seconds)


def pooled_in_tokens(seconds):
    """12.5 audio tokens a second of speech, 375 a chunk: the same share, counted in tokens."""
    speech = sum(s * 12.5 for s in seconds)
    return 1 - speech / sum(math.ceil(s / 30) * 375 for s in seconds)


def pooled_in_float32(seconds):
    """Computed with torch's default dtype, then taken out with `.item()`: right, to float32's precision."""
    seconds = torch.tensor(seconds)
    padded = torch.ceil(seconds / 30) * 30
    return ((padded - seconds).sum() / padded.sum()).item()


@pytest.mark.parametrize("form", [pooled_in_samples, pooled_with_numpy, pooled_in_tokens, pooled_in_float32])
def test_padding_share_right_in_every_form_is_not_taken_for_rounded(form, splits):
    from helpers.data import duration_seconds

    for seconds in (CLIPS, duration_seconds(splits["train"])):
        feedback = exercises.check_padding_share(form(seconds), seconds=seconds)
        assert feedback, (form.__name__, feedback.message)


def test_padding_share_is_compared_unrounded(splits):
    """The first clip left out moves the share by well under 0.001: not the share of the whole split."""
    from helpers.data import duration_seconds

    seconds = duration_seconds(splits["train"])
    assert abs(pooled_with_numpy(seconds[1:]) - pooled_with_numpy(seconds)) < 1e-3
    feedback = exercises.check_padding_share(pooled_with_numpy(seconds[1:]), seconds=seconds)
    assert not feedback and "rounded" not in feedback.message, feedback.message
    assert "clip 0 is left out" in feedback.message, feedback.message
    feedback = exercises.check_padding_share(pooled_with_numpy(seconds[:-1]), seconds=seconds)
    assert not feedback and f"clip {len(seconds) - 1} is left out" in feedback.message, feedback.message


def test_padding_share_as_a_rounded_percentage(splits):
    from helpers.data import duration_seconds

    for seconds in (CLIPS, duration_seconds(splits["train"])):
        share = pooled_with_numpy(seconds)
        for percentage in (round(share * 100), round(share * 100, 1)):
            feedback = exercises.check_padding_share(percentage, seconds=seconds)
            assert not feedback and "as a percentage" in feedback.message, (percentage, feedback.message)
            assert "between 0 and 1" in feedback.message


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
    right = pooled_with_numpy(duration_seconds(splits["train"]))
    for decimals in (3, 4, 5):  # "Give numbers unrounded": rounded to any of these, it is not the share yet
        assert round(right, decimals) != right
        feedback = exercises.check_padding_share(round(right, decimals), seconds=duration_seconds(splits["train"]))
        assert not feedback and "right method, rounded too far" in feedback.message, (decimals, feedback.message)
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


def two_categories(navigate, web_of_lies):
    return {"category": ["navigate"] * len(navigate) + ["web_of_lies"] * len(web_of_lies),
            "official_answer": navigate + web_of_lies}


def real_baseline(splits):
    train = [a for c, a in zip(splits["train"]["category"], splits["train"]["official_answer"]) if c == "web_of_lies"]
    test = [a for c, a in zip(splits["test"]["category"], splits["test"]["official_answer"]) if c == "web_of_lies"]
    majority = Counter(train).most_common(1)[0][0]
    return test.count(majority) / len(test)


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
    (0.75, "how often the majority answer is wrong"),
    (0.5, "most common `official_answer`"),
    ([0.25], "should be a number"),
])
def test_majority_baseline_mistakes(answer, hint):
    feedback = exercises.check_majority_baseline(answer, train=TRAIN, test=TEST, category="navigate")
    assert not feedback and hint in feedback.message


def test_majority_baseline_from_the_test_split():
    """Not two answers: the test majority's share is not also 1 - accuracy, so the hint names it."""
    train = {"category": ["object_counting"] * 3, "official_answer": ["2", "2", "3"]}
    test = {"category": ["object_counting"] * 4, "official_answer": ["3", "3", "5", "2"]}
    feedback = exercises.check_majority_baseline(0.5, train=train, test=test, category="object_counting")
    assert not feedback and "test split's most common answer ('3')" in feedback.message
    assert "choose" in feedback.message and "wrong" not in feedback.message


@pytest.mark.parametrize(("train", "test"), [
    (TRAIN, TEST),  # 0.75 is also the test majority's share
    (two_categories(["Yes", "Yes", "No"], ["No", "No", "No"]),  # and the whole split's 'No' scores 0.4 here
     two_categories(["No", "Yes", "Yes", "Yes", "No"], ["No"])),
])
def test_majority_baseline_error_rate_first_and_alone(train, test):
    """1 - accuracy is the error rate: said first, in one short cause, whatever else gives the same number."""
    answers = [a for c, a in zip(test["category"], test["official_answer"]) if c == "navigate"]
    majority = Counter(a for c, a in zip(train["category"], train["official_answer"]) if c == "navigate").most_common(1)[0][0]
    feedback = exercises.check_majority_baseline(1 - answers.count(majority) / len(answers), train=train, test=test,
                                                 category="navigate")
    assert not feedback
    assert feedback.message.startswith("Not yet: that is how often the majority answer is wrong"), feedback.message
    assert "error rate" in feedback.message
    assert "test split" not in feedback.message and "whole training split" not in feedback.message
    assert len(feedback.message.split()) <= 25, feedback.message


def test_majority_baseline_error_rate_on_the_real_splits(splits):
    feedback = exercises.check_majority_baseline(1 - real_baseline(splits), train=splits["train"],
                                                 test=splits["test"], category="web_of_lies")
    assert not feedback and "how often the majority answer is wrong" in feedback.message, feedback.message


def test_majority_baseline_rounded_too_far(splits):
    """The share printed as a percentage (38%), read back: the method is right, say so."""
    right = real_baseline(splits)
    assert round(right, 2) != right
    feedback = exercises.check_majority_baseline(round(right, 2), train=splits["train"], test=splits["test"],
                                                 category="web_of_lies")
    assert not feedback and "right method, rounded too far" in feedback.message, feedback.message
    train = split(["Yes", "Yes", "No"])
    test = split(["Yes"] * 3 + ["No"] * 5)  # 3/8 = 0.375
    feedback = exercises.check_majority_baseline(0.38, train=train, test=test, category="navigate")
    assert not feedback and "right method, rounded too far" in feedback.message, feedback.message


def test_majority_baseline_as_a_tensor(splits):
    for answer in (torch.tensor(real_baseline(splits)), np.float32(real_baseline(splits))):
        feedback = exercises.check_majority_baseline(answer, train=splits["train"], test=splits["test"],
                                                     category="web_of_lies")
        assert feedback, feedback.message
    train = split(["Yes", "Yes", "No"])
    assert exercises.check_majority_baseline(torch.tensor(1 / 3), train=train, test=split(["Yes", "No", "No"]),
                                             category="navigate")


def test_majority_baseline_scored_on_the_training_rows():
    test = split(["Yes", "No", "No", "No", "No"])  # 'Yes' is right once in five here, three times in four in training
    feedback = exercises.check_majority_baseline(0.75, train=TRAIN, test=test, category="navigate")
    assert not feedback and "right on the training rows" in feedback.message


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


def majority_from(pick_from_whole_split=False, error_rate=False):
    """`majority_accuracy(train, test, category)` as a function, right or with one mistake."""
    def majority_accuracy(train, test, category):
        train_answers = [a for c, a in zip(train["category"], train["official_answer"])
                         if c == category or pick_from_whole_split]
        majority = Counter(train_answers).most_common(1)[0][0]
        test_answers = [a for c, a in zip(test["category"], test["official_answer"]) if c == category]
        accuracy = test_answers.count(majority) / len(test_answers)
        return 1 - accuracy if error_rate else accuracy

    return majority_accuracy


def test_majority_baseline_as_a_function(splits):
    """The function form: checked on the real splits and on rows the check builds."""
    for train, test, category in ((splits["train"], splits["test"], "web_of_lies"), (TRAIN, TEST, "navigate")):
        feedback = exercises.check_majority_baseline(majority_from(), train=train, test=test, category=category)
        assert feedback, feedback.message


def test_majority_baseline_function_that_picks_from_the_whole_training_split(splits):
    """On the real splits the whole split's first most common answer is web_of_lies' too: the built rows tell."""
    wrong = majority_from(pick_from_whole_split=True)
    assert wrong(splits["train"], splits["test"], "web_of_lies") == real_baseline(splits)
    feedback = exercises.check_majority_baseline(wrong, train=splits["train"], test=splits["test"],
                                                 category="web_of_lies")
    assert not feedback and "most common answer of the whole training split" in feedback.message, feedback.message
    assert "web_of_lies" in feedback.message


@pytest.mark.parametrize(("answer", "hint"), [
    (majority_from(error_rate=True), "how often the majority answer is wrong"),
    (lambda train, test, category: ..., PLACEHOLDER_HINT),
    (lambda train, test, category: None, "give it a `return`"),
    (lambda train, test, category: "0.375", "should return a number"),
    (lambda train, test, category: 1 / 0, "raised ZeroDivisionError"),
])
def test_majority_baseline_function_mistakes(splits, answer, hint):
    feedback = exercises.check_majority_baseline(answer, train=splits["train"], test=splits["test"],
                                                 category="web_of_lies")
    assert not feedback and hint in feedback.message, feedback.message


def test_majority_baseline_function_from_the_test_split(splits):
    """On the real splits the test majority's share is also 1 - accuracy; on the built rows it is not."""
    def from_the_test_split(train, test, category):
        answers = [a for c, a in zip(test["category"], test["official_answer"]) if c == category]
        return Counter(answers).most_common(1)[0][1] / len(answers)

    feedback = exercises.check_majority_baseline(from_the_test_split, train=splits["train"], test=splits["test"],
                                                 category="web_of_lies")
    assert not feedback and "test split's most common answer" in feedback.message, feedback.message
    assert "wrong" not in feedback.message


def answers_of(rows, category):
    return [a for c, a in zip(rows["category"], rows["official_answer"]) if c == category]


def scored(train, test, category, pick):
    """The test accuracy of the training answer `pick` chooses among the category's training answers."""
    answer = pick(answers_of(train, category))
    test_answers = answers_of(test, category)
    return test_answers.count(answer) / len(test_answers)


def hard_coded(train, test, category):
    return majority_from()(train, test, "web_of_lies")


def no_filter(train, test, category):
    majority = Counter(train["official_answer"]).most_common(1)[0][0]
    return list(test["official_answer"]).count(majority) / len(test["official_answer"])


def first_answer(train, test, category):
    return scored(train, test, category, lambda answers: answers[0])


def least_common(train, test, category):
    return scored(train, test, category, lambda answers: Counter(answers).most_common()[-1][0])


def yes_or_no(train, test, category):
    """Written for Yes/No answers, as web_of_lies has: right there."""
    return scored(train, test, category, lambda answers: "Yes" if answers.count("Yes") > answers.count("No") else "No")


@pytest.mark.parametrize(("answer", "hint", "not_said"), [
    (hard_coded, "your function gives the same result whatever `category` it is given: filter the rows by `category`",
     "whole training split"),
    (no_filter, "whatever `category` it is given", "whole training split"),
    (first_answer, "that is the first training answer, not the most common one", "wrong"),
    (least_common, "the least common training answer", "test split"),
    (majority_from(error_rate=True), "how often the majority answer is wrong", "least common"),
])
def test_majority_baseline_function_mistakes_named_by_their_cause(splits, answer, hint, not_said):
    """Each mistake gets its own cause, whatever else its number on one set of rows could be."""
    feedback = exercises.check_majority_baseline(answer, train=splits["train"], test=splits["test"],
                                                 category="web_of_lies")
    assert not feedback and hint in feedback.message, feedback.message
    assert not_said not in feedback.message, feedback.message


@pytest.mark.parametrize("category", ["web_of_lies", "navigate"])
def test_majority_baseline_function_written_for_yes_or_no_passes(splits, category):
    """web_of_lies and navigate answer Yes or No: a function that counts those two is right there."""
    feedback = exercises.check_majority_baseline(yes_or_no, train=splits["train"], test=splits["test"],
                                                 category=category)
    assert feedback, feedback.message


@pytest.mark.parametrize("category", ["formal_fallacies", "navigate", "object_counting", "web_of_lies"])
@pytest.mark.parametrize(("answer", "hint"), [
    (majority_from(), None),
    (first_answer, "first training answer"),
    (least_common, "least common training answer"),
    (majority_from(error_rate=True), "how often the majority answer is wrong"),
    (majority_from(pick_from_whole_split=True), "most common answer of the whole training split"),
    (hard_coded, "whatever `category`"),
    (lambda train, test, category: 100 * majority_from()(train, test, category), "as a percentage"),
    (lambda train, test, category: round(majority_from()(train, test, category), 2), "rounded too far"),
])
def test_majority_baseline_function_in_every_category(splits, category, answer, hint):
    """The rows the check builds keep each category's answers in its own form, and tell the mistakes apart."""
    if answer is hard_coded:  # the category the check asks for, written into the function
        answer = lambda train, test, _: majority_from()(train, test, category)  # noqa: E731
    if hint == "rounded too far" and round(majority_from()(splits["train"], splits["test"], category), 2) == \
            majority_from()(splits["train"], splits["test"], category):
        hint = None  # 0.5, say: rounding it changes nothing
    feedback = exercises.check_majority_baseline(answer, train=splits["train"], test=splits["test"],
                                                 category=category)
    if hint is None:
        assert feedback, feedback.message
    else:
        assert not feedback and hint in feedback.message, feedback.message


@pytest.mark.parametrize("category", ["formal_fallacies", "navigate", "object_counting", "web_of_lies"])
def test_majority_baseline_built_rows_tell_every_mistake_apart(category):
    """On the rows the check builds, no two mistakes (nor a mistake and the right answer) give the same numbers,
    and only a function that ignores `category` gives one number for the first two calls."""
    cases = exercises._built_cases({}, category)
    assert cases[0][:2] == cases[1][:2] and cases[0][2] == category != cases[1][2]
    for train, test, name in cases:
        answers = set(answers_of(train, name)) | set(answers_of(test, name))
        assert answers <= set(exercises._answer_pair(name)), (name, answers)  # each category in its own form
    series = [[exercises._right(*case) for case in cases]]
    series += [[mistake(*case) for case in cases] for mistake, _ in exercises._FUNCTION_MISTAKES]
    for i, numbers in enumerate(series):
        assert not math.isclose(numbers[0], numbers[1]), (i, numbers)
        for other in series[:i]:
            assert not all(math.isclose(a, b) for a, b in zip(numbers, other)), (i, numbers, other)


def pair_not_answer(train, test, category):
    """`most_common(1)[0]` is an (answer, count) pair: no test answer equals it."""
    majority = Counter(answers_of(train, category)).most_common(1)[0]
    test_answers = answers_of(test, category)
    return test_answers.count(majority) / len(test_answers)


def count_not_answer(train, test, category):
    majority = Counter(answers_of(train, category)).most_common(1)[0][1]
    test_answers = answers_of(test, category)
    return test_answers.count(majority) / len(test_answers)


@pytest.mark.parametrize("category", ["formal_fallacies", "navigate", "object_counting", "web_of_lies"])
@pytest.mark.parametrize(("answer", "hint"), [
    (pair_not_answer, "(answer, count) pair"),
    (count_not_answer, "(answer, count) pair"),
    (lambda train, test, category: 1 / len(set(answers_of(train, category))), "random baseline"),
    (lambda train, test, category: 1 / len(set(answers_of(test, category))), "random baseline"),
    (lambda train, test, category: 0.375, "does not use its arguments"),
])
def test_majority_baseline_function_mistakes_that_ignore_the_rows(splits, category, answer, hint):
    feedback = exercises.check_majority_baseline(answer, train=splits["train"], test=splits["test"],
                                                 category=category)
    assert not feedback and hint in feedback.message, feedback.message
    assert "filter the rows" not in feedback.message, feedback.message


def written_in_yes(train, test, category):
    return answers_of(test, category).count("Yes") / len(answers_of(test, category))


def last_by_name(train, test, category):
    return scored(train, test, category, lambda answers: max(set(answers)))


@pytest.mark.parametrize(("category", "answer"), [
    ("navigate", written_in_yes), ("web_of_lies", written_in_yes),
    *[(category, last_by_name) for category in ["formal_fallacies", "navigate", "object_counting", "web_of_lies"]],
])
def test_majority_baseline_function_that_picks_an_answer_whatever_the_counts(splits, category, answer):
    feedback = exercises.check_majority_baseline(answer, train=splits["train"], test=splits["test"],
                                                 category=category)
    assert not feedback and "not the most common training answer" in feedback.message, feedback.message
    for wrong_cause in ("test split", "filter the rows", "first training answer"):
        assert wrong_cause not in feedback.message, feedback.message


@pytest.mark.parametrize("answer", [1 - 75 / 120, 0.0])
def test_padding_share_given_padded_durations(answer):
    """The learner's cell overwrote `seconds` with each clip's padded duration."""
    feedback = exercises.check_padding_share(answer, seconds=[30.0, 30.0, 60.0])
    assert not feedback and "already padded" in feedback.message, feedback.message
