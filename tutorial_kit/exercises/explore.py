"""Checks for the exercises of notebook 01 · Explore Big Bench Audio.

    from tutorial_kit.exercises import explore as exercises
    exercises.check_audio_token_count(audio_token_count, processor=processor)
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from helpers.audio import CHUNK_SECONDS, SAMPLING_RATE, num_chunks
from helpers.tasks import CATEGORIES, TASKS, build_conversation
from tutorial_kit.exercises import (
    PLACEHOLDER_HINT,
    ROUNDED_HINT,
    correct,
    friendly,
    is_number,
    not_yet,
    plain_number,
    rounded_too_far,
)

# Short, exactly on a boundary, just over it, and several chunks: where the usual mistakes show.
CLIP_SECONDS = (0.5, 12.0, 30.0, 30.1, 45.0, 61.0)


def _processor_audio_tokens(processor, seconds: float) -> int:
    """What Voxtral's processor really puts in a prompt for a clip this long (silence will do)."""
    silence = {"array": np.zeros(round(seconds * SAMPLING_RATE), np.float32), "sampling_rate": SAMPLING_RATE}
    encoded = processor.apply_chat_template(build_conversation({"audio": silence, "category": CATEGORIES[0]}),
                                            tokenize=True, return_dict=True, add_generation_prompt=True)
    return int((encoded["input_ids"] == processor.audio_token_id).sum())


# How a chunk's tokens are counted, for the hints (without the number itself).
PER_CHUNK_HOW = "a chunk's 3000 mel frames, halved by the encoder, then stacked 4 per token by the projector."


@friendly
def check_audio_token_count(audio_token_count, *, processor):
    """`audio_token_count(seconds)` must return the number of `[AUDIO]` tokens Voxtral's prompt
    holds for a clip that long; compared with the processor itself on short, boundary and long clips."""
    if not callable(audio_token_count):
        return not_yet("`audio_token_count` should be a function: `def audio_token_count(seconds): ...` "
                       "that returns a number of tokens.")
    answers = {seconds: plain_number(audio_token_count(seconds)) for seconds in CLIP_SECONDS}
    for seconds, given in answers.items():
        if given is None or given is Ellipsis:
            return not_yet(PLACEHOLDER_HINT + " (Your function returns None: give it a `return`.)")
        if not is_number(given) or not math.isfinite(given):
            return not_yet(f"audio_token_count({seconds}) returned {type(given).__name__} {given!r}; return a whole number.")
    if len(set(answers.values())) == 1:
        return not_yet(f"your function returns {answers[CLIP_SECONDS[0]]!r} whatever the duration. Use `seconds`: "
                       "a 12-s clip fits one 30-s chunk, but a 30.1-s clip needs two chunks, and each chunk costs "
                       "the same number of tokens.")
    chunks = {seconds: num_chunks(round(seconds * SAMPLING_RATE)) for seconds in CLIP_SECONDS}
    expected_counts = {seconds: _processor_audio_tokens(processor, seconds) for seconds in CLIP_SECONDS}
    per_chunk = expected_counts[CLIP_SECONDS[0]] // chunks[CLIP_SECONDS[0]]
    offsets = {given - expected_counts[seconds] for seconds, given in answers.items()}
    if offsets == {1}:  # the right chunks, plus one token per clip: the marker before the audio, counted
        return not_yet("right number of chunks, but one token off: one too many on every clip. Count only the "
                       "`[AUDIO]` tokens: `[BEGIN_AUDIO]` appears once per clip, where the audio starts, and is not "
                       "one of them.")
    if offsets == {-1}:
        return not_yet("right number of chunks, but one token off: one too few on every clip. A clip costs all the "
                       "`[AUDIO]` tokens of its chunks, none taken off; count them from " + PER_CHUNK_HOW)
    ratios = {given / chunks[seconds] for seconds, given in answers.items()}
    if len(ratios) == 1 and all(given == math.floor(given) for given in answers.values()):
        # the right number of chunks every time, times one number of tokens per chunk
        (tokens,) = ratios
        longest = CLIP_SECONDS[-1]
        if tokens == 1:
            return not_yet(f"audio_token_count({longest:g}) = {answers[longest]!r}: that is the number of chunks, and "
                           "it is right; each chunk costs the same number of `[AUDIO]` tokens. Multiply by it: "
                           + PER_CHUNK_HOW)
        if tokens != per_chunk and tokens not in (per_chunk * 2, per_chunk * 4, per_chunk * 8):
            why = ("count only the `[AUDIO]` tokens: `[BEGIN_AUDIO]` marks where the audio starts, once per clip, "
                   "and is not one of them." if tokens == per_chunk + 1 else "count them from " + PER_CHUNK_HOW)
            return not_yet(f"right number of chunks, wrong number of tokens per chunk: you count {tokens:g} per chunk. "
                           + why[0].upper() + why[1:])
    for seconds, given in answers.items():
        expected = expected_counts[seconds]
        if given == expected:  # an int, or a float equal to it (as every check accepts whole numbers)
            continue
        if abs(given - seconds * per_chunk / CHUNK_SECONDS) <= 1:  # rounded or not
            return not_yet(f"audio_token_count({seconds}) = {given!r}: that is 12.5 tokens per second of speech, but the "
                           "audio is padded to whole 30-s chunks first, so every started chunk costs all its tokens.")
        if given != math.floor(given):
            return not_yet(f"audio_token_count({seconds}) = {given!r}: return a whole number, a number of tokens. "
                           "Count the 30-s chunks the clip needs, then the tokens of each.")
        if given == seconds // CHUNK_SECONDS * per_chunk:
            why = ("a clip shorter than 30 s still fills one whole chunk" if seconds < CHUNK_SECONDS else
                   f"a {seconds:g}-s clip needs {math.ceil(seconds / CHUNK_SECONDS)} chunks, since any started chunk "
                   "is padded to a whole one")
            return not_yet(f"audio_token_count({seconds}) = {given!r}: round the number of chunks up, not down "
                           f"(math.ceil): {why}.")
        if given == (seconds // CHUNK_SECONDS + 1) * per_chunk:  # floor + 1 equals ceil except on a boundary
            fit = int(seconds // CHUNK_SECONDS)
            return not_yet(f"audio_token_count({seconds}) = {given!r}, one chunk too many. A clip of exactly {seconds:g} s "
                           f"fits {fit} chunk{'s' if fit > 1 else ''}: the chunk boundary needs no new chunk. "
                           "Rounding down and adding one adds a chunk on every boundary; "
                           "round up instead: math.ceil(seconds / 30).")
        if given in (expected * 2, expected * 4, expected * 8):
            return not_yet(f"audio_token_count({seconds}) = {given!r}, {given // expected} times too many: a 30-s chunk is "
                           "3000 mel frames, the encoder halves them to 1500 and the projector stacks 4 per token.")
        return not_yet(f"for a {seconds}-s clip the processor puts {expected} [AUDIO] tokens in the prompt; "
                       f"your function returned {given!r}. How many 30-s chunks does a {seconds}-s clip need?")
    return correct(f"every started 30-s chunk costs {per_chunk} tokens, so a 31-s clip costs twice as much as a 29-s one. "
                   "Checked against the processor on clips of " + ", ".join(f"{s:g}" for s in CLIP_SECONDS) + " s.")


def _same(given: float, value: float) -> bool:
    """`given` is `value`, unrounded: to float rounding, or to float32's precision when it is a float32 number
    (torch's default dtype, taken out with `.item()`)."""
    if math.isclose(given, value, rel_tol=1e-9, abs_tol=1e-12):
        return True
    return float(np.float32(given)) == given and math.isclose(given, value, rel_tol=1e-5, abs_tol=1e-12)


def _near(given: float, value: float) -> bool:
    """`given` is `value`, maybe rounded: how a mistake's number is told, whatever the digits kept."""
    return _same(given, value) or rounded_too_far(given, value)


@friendly
def check_padding_share(padding_share, *, seconds):
    """`padding_share`: the fraction of the audio the encoder processes that is padding, over all clips.
    Compared unrounded: the exercise asks for the value itself, not a few of its digits."""
    padding_share = plain_number(padding_share)
    if not is_number(padding_share):
        return not_yet(f"padding_share should be a number between 0 and 1, not {type(padding_share).__name__}.")
    seconds = np.asarray(seconds, dtype=float)
    if len(seconds) > 1 and np.allclose(seconds / CHUNK_SECONDS, np.round(seconds / CHUNK_SECONDS)):
        return not_yet(f"the durations in `seconds` are already padded: every one is a whole multiple of "
                       f"{CHUNK_SECONDS} s. Run the cell that builds `seconds` again, and keep the padded durations "
                       "in a new variable instead of overwriting `seconds`.")
    padded_each = np.array([num_chunks(round(s * SAMPLING_RATE)) * CHUNK_SECONDS for s in seconds], dtype=float)
    padded = float(padded_each.sum())
    expected = 1 - seconds.sum() / padded
    if _same(padding_share, expected):
        return correct(f"{expected:.0%} of the encoder's work is on silence added to fill the 30-s chunks. "
                       "A 5-s clip costs as much as a 30-s one: chunks, not seconds of speech, set the audio compute.")
    if padding_share > 1 and _near(padding_share / 100, expected):
        if _same(padding_share / 100, expected):
            return not_yet("right value, as a percentage: give it as a fraction between 0 and 1.")
        return not_yet("right value, as a percentage, and rounded: give it unrounded, as a fraction between 0 and 1.")
    if rounded_too_far(padding_share, expected):
        return not_yet(ROUNDED_HINT)
    if _near(padding_share, 1 - expected):
        return not_yet("that is the share of real audio; the question asks for the padding, the rest.")
    if _near(padding_share, float(np.mean(1 - seconds / padded_each))):
        return not_yet("that is the mean of the per-clip padding shares: a 5-s clip weighs as much in it as a 45-s one. "
                       "The question asks for the pooled share: add up the padding of all clips, then divide by "
                       "all the padded seconds together.")
    if _near(padding_share, float(np.mean(1 - seconds / CHUNK_SECONDS))):
        return not_yet("a clip over 30 s is padded to 60 s (two chunks), not 30: count the chunks each clip needs.")
    if _near(padding_share, (padded - seconds.sum()) / seconds.sum()):
        return not_yet("that divides the padding by the real audio. Divide it by the padded seconds instead: "
                       "the share of what the encoder sees.")
    if len(seconds) >= 10:  # every clip but one, a loop that starts at 1 or stops one short (among a few clips,
        # some other slip often gives one of these numbers too)
        all_but_one = 1 - (seconds.sum() - seconds) / (padded - padded_each)
        left_out = [i for i, share in enumerate(all_but_one) if _same(padding_share, float(share))]
        if left_out:
            return not_yet(f"that is the share of every clip but one (clip {left_out[0]} is left out). Pool all "
                           f"{len(seconds)} clips of `seconds`.")
    return not_yet("add up the seconds the encoder sees (every clip padded to whole 30-s chunks) and the seconds "
                   "of real audio; the padding share is 1 - real / padded.")


def _answers(dataset, category) -> list[str]:
    return [str(a) for c, a in zip(dataset["category"], dataset["official_answer"]) if c == category]


def _majority_scores(train, test, category) -> tuple[list[str], dict[str, float]]:
    """The category's most common training answers (several on a tie: either is fair) and their test accuracy."""
    train_answers, test_answers = _answers(train, category), _answers(test, category)
    if not train_answers or not test_answers:
        raise ValueError(f"No rows of category {category!r} in both splits.")
    counts = Counter(train_answers)
    tied = [answer for answer, n in counts.items() if n == max(counts.values())]
    return tied, {answer: test_answers.count(answer) / len(test_answers) for answer in tied}


def _majority_feedback(majority_accuracy, train, test, category: str):
    """Correct, or the one mistake that gives this number, the likeliest first."""
    tied, accuracies = _majority_scores(train, test, category)
    train_answers, test_answers = _answers(train, category), _answers(test, category)
    counts = Counter(train_answers)
    if any(math.isclose(majority_accuracy, a, abs_tol=1e-6) for a in accuracies.values()):
        return correct(f"always answering {' or '.join(map(repr, tied))} scores {max(accuracies.values()):.0%} on "
                       f"{category}: a fine-tuned model must beat that before its accuracy means anything.")
    if any(rounded_too_far(majority_accuracy, a) for a in accuracies.values()):
        return not_yet(ROUNDED_HINT)
    if any(math.isclose(majority_accuracy, 100 * a, abs_tol=0.1) for a in accuracies.values()):
        return not_yet("right value, as a percentage: give it as a fraction between 0 and 1.")
    if any(majority_accuracy == test_answers.count(answer) for answer in tied):
        return not_yet("that is a count of rows: divide by the number of test rows of the category.")
    # With two possible answers, the mistakes below often give 1 - accuracy too: the error rate is named first.
    if any(math.isclose(majority_accuracy, 1 - a, abs_tol=1e-6) for a in accuracies.values()):
        return not_yet("that is how often the majority answer is wrong, its error rate. "
                       "Accuracy counts how often it is right.")
    test_majority = Counter(test_answers).most_common(1)[0]
    if math.isclose(majority_accuracy, test_majority[1] / len(test_answers), abs_tol=1e-6):
        return not_yet(f"that is the share of the test split's most common answer ({test_majority[0]!r}): choose the "
                       f"answer from the training rows of {category}, as a model would have to, then score it on the "
                       "test rows.")
    overall = Counter(str(a) for a in train["official_answer"])
    overall_top = [a for a, n in overall.items() if n == max(overall.values())]
    whole_train = [a for a in overall_top if a not in tied
                   and math.isclose(majority_accuracy, test_answers.count(a) / len(test_answers), abs_tol=1e-6)]
    if whole_train:
        whole_name = "the most common answer" if len(overall_top) == 1 else "one of the most common answers"
        return not_yet(f"that is how often {whole_train[0]!r}, {whole_name} of the whole training split, is right: "
                       f"take the most common answer among the training rows of {category} only.")
    if any(math.isclose(majority_accuracy, counts[answer] / len(train_answers), abs_tol=1e-6) for answer in tied):
        return not_yet(f"that is how often {tied[0]!r} is right on the training rows, where it was chosen. "
                       f"Score it on the test rows of {category}: data the choice never saw.")
    all_test = [str(a) for a in test["official_answer"]]
    if len(all_test) != len(test_answers) and any(
            math.isclose(majority_accuracy, n / len(all_test), abs_tol=1e-6)
            for answer in tied for n in (test_answers.count(answer), all_test.count(answer))):
        return not_yet(f"that divides by all {len(all_test)} rows of the test split. "
                       f"Score the baseline on the {len(test_answers)} test rows of {category} only.")
    return not_yet(f"find the most common `official_answer` among the training rows of {category}, then the share of "
                   f"its test rows that have that answer.")


# Two answers in each category's own form: a function written for one form (Yes/No, say) is right on its rows.
_ANSWER_FORMS = {"yes/no": ("Yes", "No"), "valid/invalid": ("valid", "invalid"), "number": ("3", "5")}


def _answer_pair(category) -> tuple[str, str]:
    task = TASKS.get(category)
    return _ANSWER_FORMS.get(task.answer_kind if task else "", ("Yes", "No"))


def _partner(category) -> str:
    """The second category the function is called with: one whose answers have the same form, if there is one."""
    others = [c for c in CATEGORIES if c != category] or ["other"]
    return next((c for c in others if _answer_pair(c) == _answer_pair(category)), others[0])


def _rows(*parts) -> dict:
    return {"category": [c for c, answers in parts for _ in answers],
            "official_answer": [a for _, answers in parts for a in answers]}


def _built_cases(train, category: str) -> list[tuple]:
    """(train, test, category) calls where each usual mistake gives its own series of numbers.

    Answers `a` (the category's most common in training) and `b`. With two answers, scoring `b` gives
    1 - accuracy, whatever made `b` the pick: the three calls tell the picks apart. Call 1: `b` comes first
    in training and is the least common; the test rows favour `a`. Call 2, the partner category on the same
    rows: its first training answer is its most common, and its test rows favour the other answer. Call 3:
    `a` is the only training answer of the category, and the whole training split favours `b`. Call 4: `b` is
    the category's most common answer in training and its only one in the test rows.
    Calls 1 and 2 differ only by `category`: a function that ignores it returns one number for both."""
    other = _partner(category)
    a, b = _answer_pair(category)
    x, y = _answer_pair(other)
    same_form = (x, y) == (a, b)
    if same_form:  # the partner's most common answer is `b`: the whole split's pick differs by category
        x, y = b, a
    first = (_rows((category, [b, a, a, a]), (other, [x, x, y])),
             _rows((category, [a, a, a, b, b]), (other, [x, y, y, y])))
    second = (_rows((category, [a, a]), (other, [b if same_form else x] * 5)),
              _rows((category, [a, a, a, b]), (other, [x, y])))
    # call 4: `b` is the most common answer in training and the only one in the test rows, so an answer
    # chosen by its name or written in ("Yes") scores 0 where the test majority's share is 1; `a` comes first
    fourth = (_rows((category, [a, b, b]), (other, [a if same_form else y] * 5)),
              _rows((category, [b, b, b]), (other, [x])))
    splits = [first, first, second, fourth]
    if hasattr(train, "column_names"):  # a datasets.Dataset, as in the notebook: give the function the same type
        from datasets import Dataset

        splits = [tuple(Dataset.from_dict(columns) for columns in pair) for pair in splits]
    return [(*splits[0], category), (*splits[1], other), (*splits[2], category), (*splits[3], category)]


def _scored(train, test, category, answer) -> float:
    test_answers = _answers(test, category)
    return test_answers.count(answer) / len(test_answers)


def _majority(train, category) -> str:
    return Counter(_answers(train, category)).most_common(1)[0][0]  # the built rows have no ties


def _whole_split_majority(train, test, category) -> float:
    return _scored(train, test, category, Counter(str(a) for a in train["official_answer"]).most_common(1)[0][0])


def _test_majority_share(train, test, category) -> float:
    return Counter(_answers(test, category)).most_common(1)[0][1] / len(_answers(test, category))


def _on_training_rows(train, test, category) -> float:
    return _scored(None, train, category, _majority(train, category))


def _over_the_whole_test_split(train, test, category) -> float:
    return _answers(test, category).count(_majority(train, category)) / len(test["official_answer"])


def _right(train, test, category) -> float:
    return _scored(train, test, category, _majority(train, category))


# What a function with one mistake returns, and the cause to name: told apart by their numbers on every call.
_FUNCTION_MISTAKES = (
    (lambda *case: 1 - _right(*case),
     lambda category: "that is how often the majority answer is wrong, its error rate. Accuracy counts how often it "
                      "is right."),
    (lambda train, test, category: _scored(train, test, category, _answers(train, category)[0]),
     lambda category: f"that is the first training answer, not the most common one. Count the answers of the "
                      f"training rows of {category} (collections.Counter) and take the most common."),
    (lambda train, test, category: _scored(train, test, category,
                                           Counter(_answers(train, category)).most_common()[-1][0]),
     lambda category: f"that scores the least common training answer of {category}; the baseline gives the most "
                      "common one: `Counter(answers).most_common(1)[0][0]`."),
    (_whole_split_majority,
     lambda category: f"that is how often the most common answer of the whole training split is right: take the "
                      f"most common answer among the training rows of {category} only."),
    (_test_majority_share,
     lambda category: f"that is the share of the test split's most common answer: choose the answer from the "
                      f"training rows of {category}, as a model would have to, then score it on the test rows."),
    (_on_training_rows,
     lambda category: f"that is how often the majority answer is right on the training rows, where it was chosen. "
                      f"Score it on the test rows of {category}: data the choice never saw."),
    (_over_the_whole_test_split,
     lambda category: f"that divides by all the rows of the test split. Score the baseline on the test rows of "
                      f"{category} only."),
    (lambda *case: 100 * _right(*case),
     lambda category: "right value, as a percentage: give it as a fraction between 0 and 1."),
    (lambda train, test, category: _answers(test, category).count(_majority(train, category)),
     lambda category: "that is a count of rows: divide by the number of test rows of the category."),
)


def _ignores_rows_feedback(values: list[float], cases: list[tuple]):
    """The hint for a function whose numbers do not come from the test rows' answers, else None."""
    rights = [_right(*case) for case in cases]
    if all(_same(value, right) for value, right in zip(values, rights)):
        return None
    if all(_same(value, 0) for value in values):
        return not_yet("your function returns 0 on every call: no test answer matches the one it picks, so it "
                       "scores no rows. `Counter(answers).most_common(1)[0]` is an (answer, count) pair, not the "
                       "answer: take `most_common(1)[0][0]`.")
    for rows in (0, 1):  # the number of different answers among the training rows, or the test rows
        if all(_same(value, 1 / len(set(_answers(case[rows], case[2])))) for value, case in zip(values, cases)):
            return not_yet("that is the random baseline, 1/k for k different answers: how often a guess is right. "
                           "The majority baseline always gives the most common training answer of the category, "
                           "then counts how often that is right on its test rows.")
    if all(_same(value, values[0]) for value in values):
        return not_yet(f"your function returns {values[0]:.4g} on every call, whatever rows and category it is given: "
                       "it does not use its arguments. Compute the baseline from `train`, `test` and `category`.")
    return None


def _picked_by_name_feedback(values: list[float], cases: list[tuple]):
    """The hint for a function that scores one answer whatever the counts (written in, or max() of the names)."""
    names = {a for case in cases for a in _answers(case[0], case[2]) + _answers(case[1], case[2])}
    picks = [lambda train, category, name=name: name for name in sorted(names)]
    picks.append(lambda train, category: max(set(_answers(train, category))))
    for pick in picks:
        if all(_same(value, _scored(train, test, category, pick(train, category)))
               for value, (train, test, category) in zip(values, cases)):
            train, test, category = next(case for value, case in zip(values, cases) if not _same(value, _right(*case)))
            return not_yet(f"on rows the check built, your function scores {pick(train, category)!r}, and that is not "
                           f"the most common training answer there ({_majority(train, category)!r}). Choose the "
                           "answer by how often it appears among the training rows of the category "
                           "(`Counter(answers).most_common(1)[0][0]`), not by its name or a fixed value.")
    return None


def _function_feedback(values: list[float], cases: list[tuple]):
    """None when the function is right on every built call; else the hint for its mistake."""
    rights = [_right(*case) for case in cases]
    wrong = [i for i, (value, right) in enumerate(zip(values, rights)) if not _same(value, right)]
    if not wrong:
        return None
    (_, _, category), (_, _, other) = cases[0], cases[1]
    if _same(values[0], values[1]) and not _same(rights[0], rights[1]):  # the same rows, two categories
        return not_yet("your function gives the same result whatever `category` it is given: filter the rows by "
                       f"`category`. On rows the check built, it returns {values[0]:.4g} for both {category!r} and "
                       f"{other!r}, whose baselines differ.")
    # the first call it gets wrong, of the category asked for if it gets one wrong
    i = next((i for i in wrong if cases[i][2] == category), wrong[0])
    said = f"on rows the check built, your function returns {values[i]:.4g} for {cases[i][2]!r}: "
    for mistake, hint in _FUNCTION_MISTAKES:
        if all(_same(value, mistake(*case)) for value, case in zip(values, cases)):
            return not_yet(said + hint(cases[i][2]))
    if all(_same(values[j], rights[j]) or rounded_too_far(values[j], rights[j]) for j in range(len(cases))):
        return not_yet(ROUNDED_HINT)
    picked = _picked_by_name_feedback(values, cases)
    if picked is not None:
        return picked
    return not_yet(said + f"the baseline there is {rights[i]:.4g}. Find the most common `official_answer` among the "
                   f"training rows of {cases[i][2]}, then the share of its test rows that have that answer.")


@friendly
def check_majority_baseline(majority_accuracy, *, train, test, category: str):
    """`majority_accuracy`: the test accuracy of always giving `category`'s most common training answer.
    A number, or a function `majority_accuracy(train, test, category)` returning it: a function is also
    called on rows built here, under `category` and a second category, where each usual mistake shows."""
    if not callable(majority_accuracy):
        majority_accuracy = plain_number(majority_accuracy)
        if not is_number(majority_accuracy):
            return not_yet(f"majority_accuracy should be a number between 0 and 1, not {type(majority_accuracy).__name__}.")
        return _majority_feedback(majority_accuracy, train, test, category)
    cases = _built_cases(train, category)
    values = []
    for case in [*cases, (train, test, category)]:  # the built rows first: there each mistake gives its own numbers
        value = plain_number(majority_accuracy(*case))
        if value is None or value is Ellipsis:
            return not_yet(PLACEHOLDER_HINT + " (Your function returns None: give it a `return`.)")
        if not is_number(value):
            return not_yet(f"majority_accuracy should return a number between 0 and 1, not {type(value).__name__}.")
        values.append(value)
    feedback = _ignores_rows_feedback(values, [*cases, (train, test, category)])
    if feedback is None:
        feedback = _function_feedback(values[:-1], cases)
    if feedback is not None:  # a Feedback, false as it says Not yet
        return feedback
    return _majority_feedback(values[-1], train, test, category)
