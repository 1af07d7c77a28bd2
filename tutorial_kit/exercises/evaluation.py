"""Checks for the exercises of notebook 04 (inference and evaluation).

    from tutorial_kit.exercises import evaluation as exercises
    exercises.check_normalize_validity(normalize_validity)
"""
from __future__ import annotations

import math
import random

from helpers.evaluate import mcnemar, normalize_answer, wilson_interval
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

# Replies a model really gives to "valid or invalid?", with the traps a first attempt falls into.
VALIDITY_REPLIES = (
    "valid", "Invalid.", "VALID!", "The argument is valid.", "The argument is not valid",
    "It is not deductively valid.", "This argument isn't valid.", "invalid, because the conclusion does not follow",
    "maybe", "I am not sure.", "",
    # a negation a word away from 'valid', unlike the phrases the exercise text lists: still invalid
    "The argument is not logically valid.", "It is not a valid argument.",
    # a negation that is about something else: still valid
    "I'm not sure, but I think it is valid.", "Valid: nothing is missing.",
)
WORD_BETWEEN = ("The argument is not logically valid.", "It is not a valid argument.")
UNRELATED_NEGATIONS = ("I'm not sure, but I think it is valid.", "Valid: nothing is missing.")


def _still_placeholder(outputs) -> bool:
    """A function whose body is still `...` returns None for everything."""
    return all(output is None for output in outputs)


@friendly
def check_normalize_validity(normalize_validity) -> object:
    """`normalize_validity(text)` -> "valid", "invalid" or None, on replies to a formal-fallacies question."""
    if not callable(normalize_validity):
        return not_yet("pass the function itself, `normalize_validity`, without calling it.")
    got = {reply: normalize_validity(reply) for reply in VALIDITY_REPLIES}
    if _still_placeholder(got.values()):
        return not_yet(PLACEHOLDER_HINT)
    expected = {reply: normalize_answer(reply, "formal_fallacies") for reply in VALIDITY_REPLIES}
    wrong = {reply: answer for reply, answer in got.items() if answer != expected[reply]}
    if not wrong:
        return correct("'invalid' contains 'valid', and 'not valid' means invalid, so the order of the tests matters. "
                       "A reader that gets it wrong marks right answers wrong, and wrong ones right.")
    reply, answer = next(iter(wrong.items()))
    if isinstance(answer, str) and answer.lower() == expected[reply] and answer != expected[reply]:
        return not_yet(f"for {reply!r} you return {answer!r}; the dataset writes its answers in lower case: "
                       f"{expected[reply]!r}.")
    if normalize_validity("invalid") == "invalid" and got["Invalid."] != "invalid":
        return not_yet(f"'invalid' gives 'invalid', but 'Invalid.' gives {got['Invalid.']!r}: models capitalise their "
                       "replies. lower-case the reply first (reply.lower()), then look for the words.")
    if got["Invalid."] == "valid":
        return not_yet("'invalid' contains the letters 'valid': look for 'invalid' first (or match whole words).")
    negated = ("The argument is not valid", "It is not deductively valid.", "This argument isn't valid.")
    if any(got[r] == "valid" for r in negated):
        return not_yet("a negation flips the answer: 'not valid', 'not deductively valid' and \"isn't valid\" all "
                       "mean 'invalid'.")
    if any(got[r] == "valid" for r in WORD_BETWEEN):
        return not_yet("a negation may have a word between it and 'valid' ('not logically valid', 'not a valid "
                       "argument'): both mean 'invalid'.")
    misread = [r for r in UNRELATED_NEGATIONS if got[r] == "invalid"]
    if misread:
        return not_yet(f"you read {misread[0]!r} as 'invalid'. A negation flips the answer only when it is about "
                       "'valid' ('not valid', \"isn't valid\", at most one word between): look for it right before "
                       "'valid', not anywhere in the reply.")
    if got["VALID!"] is None or got["The argument is valid."] is None:
        return not_yet("lower-case the reply first, and find the word anywhere in it, not only as the whole reply.")
    if expected[reply] is None:
        return not_yet(f"{reply!r} gives no answer: return None, so it counts as unparseable instead of as a guess "
                       f"(you returned {answer!r}).")
    return not_yet(f"for {reply!r} you return {answer!r}; expected {expected[reply]!r}.")


WILSON_CASES = ((12, 25), (20, 25), (0, 8), (8, 8), (87, 100), (1, 3))


def _wald(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    half = z * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


def _close(a, b, tolerance: float = 1e-3) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


def _number_pair(value) -> tuple[float, float] | None:
    """Any two numbers in a row (tuple, list, numpy array) as floats; None for anything else."""
    if isinstance(value, str | bytes | dict):
        return None
    try:
        low, high = value
        return float(low), float(high)
    except (TypeError, ValueError):
        return None


def _clipped(interval: tuple[float, float]) -> tuple[float, float]:
    return max(0.0, interval[0]), min(1.0, interval[1])


@friendly
def check_wilson_95(wilson_95) -> object:
    """`wilson_95(correct, total)` -> (low, high), the Wilson 95% interval as fractions between 0 and 1."""
    if not callable(wilson_95):
        return not_yet("pass the function itself, `wilson_95`, without calling it.")
    got = {case: wilson_95(*case) for case in WILSON_CASES}
    if _still_placeholder(got.values()):
        return not_yet(PLACEHOLDER_HINT)
    pairs = {case: _number_pair(interval) for case, interval in got.items()}
    for case, interval in got.items():
        if pairs[case] is None:
            return not_yet(f"wilson_95{case} returned {interval!r}; return a pair of numbers (low, high).")
    got = pairs
    expected = {case: wilson_interval(*case) for case in WILSON_CASES}
    if all(_close(got[c], expected[c]) for c in WILSON_CASES):
        low, high = expected[(12, 25)]
        return correct(f"12 of 25 right is 48%, but anything from {low:.0%} to {high:.0%} fits: at 25 questions a "
                       f"category's accuracy is known to about ±{50 * (high - low):.0f} points.")
    if all(_close(got[c], (100 * expected[c][0], 100 * expected[c][1]), 0.1) for c in WILSON_CASES):
        return not_yet("return fractions between 0 and 1, not percentages.")
    if all(_close(got[c], expected[c][::-1]) for c in WILSON_CASES):
        return not_yet("return (low, high), in that order.")
    if all(_close(got[c], _clipped(_wald(*c))) for c in WILSON_CASES) and any(
            not _close(got[c], _wald(*c)) for c in WILSON_CASES):
        return not_yet("that is the normal (Wald) interval p ± z·√(p(1-p)/n), clipped to [0, 1]: clipping hides that it "
                       "leaves the range, but at 0 of 8 it still has no width. Use Wilson's centre and half-width from "
                       "the exercise text; they stay inside [0, 1] by themselves.")
    if all(_close(got[c], _wald(*c)) for c in WILSON_CASES):
        return not_yet("that is the normal (Wald) interval p ± z·√(p(1-p)/n): at 0 of 8 it has no width at all, and "
                       "it can leave [0, 1]. Wilson's centre moves towards 1/2 and its width has an extra z²/4n² term.")
    if all(_close(got[c], wilson_interval(*c, confidence=0.90)) for c in WILSON_CASES):
        return not_yet("that is the 90% interval (z = 1.645); a 95% interval uses z = 1.96.")
    if all(all(rounded_too_far(g, e) or math.isclose(g, e, abs_tol=1e-3) for g, e in zip(got[c], expected[c]))
           for c in WILSON_CASES):
        return not_yet(ROUNDED_HINT)
    case = next(c for c in WILSON_CASES if not _close(got[c], expected[c]))
    return not_yet(f"wilson_95{case} returned ({got[case][0]:.3f}, {got[case][1]:.3f}); expected "
                   f"({expected[case][0]:.3f}, {expected[case][1]:.3f}). The formula is in the exercise text.")


def paired_results(seed: int = 4, size: int = 100) -> tuple[list[bool], list[bool]]:
    """Two models' right/wrong on the same `size` questions: the second fixes more than it breaks."""
    rng = random.Random(seed)
    before = [rng.random() < 0.55 for _ in range(size)]
    after = [b if rng.random() < 0.8 else rng.random() < 0.75 for b in before]
    return before, after


NO_DISAGREEMENT_HINT = (
    "here the two models never disagree: fixed = broken = 0. `binomtest(0, 0)` raises, since 0 tosses test "
    "nothing. No disagreement is no evidence of a change: return p = 1.0 when fixed + broken is 0.")


def _expected_mcnemar(before, after):
    as_predictions = [[{"id": i, "correct": c} for i, c in enumerate(side)] for side in (before, after)]
    return mcnemar(*as_predictions)


@friendly
def check_mcnemar(fixed_broken_p) -> object:
    """`fixed_broken_p(before, after)` -> (fixed, broken, p_value) for two lists of booleans."""
    from scipy.stats import binomtest

    if not callable(fixed_broken_p):
        return not_yet("pass the function itself, `fixed_broken_p`, without calling it.")
    as_many_fixed_as_broken = ([True] * 4 + [False] * 4 + [True, False], [False] * 4 + [True] * 4 + [True, False])
    cases = [paired_results(seed) for seed in (4, 11)] + [as_many_fixed_as_broken,
                                                           ([True, False, True], [True, False, True])]
    results = []
    for before, after in cases:
        try:
            results.append(fixed_broken_p(list(before), list(after)))
        except Exception as error:  # noqa: BLE001 - the error comes from the learner's code
            if any(b != a for b, a in zip(before, after)):
                raise  # `friendly` names the error
            # the error is raised deep inside scipy; name its cause instead of scipy's frame
            return not_yet(f"{NO_DISAGREEMENT_HINT} (Your function raised {type(error).__name__} on two identical lists.)")
    if _still_placeholder(results):
        return not_yet(PLACEHOLDER_HINT)
    for result in results:
        if not isinstance(result, tuple | list) or len(result) != 3:
            return not_yet(f"return three values (fixed, broken, p_value); got {result!r}.")
    results = [(*result[:2], plain_number(result[2])) for result in results]
    for *_, p_value in results:
        if hasattr(p_value, "pvalue"):
            return not_yet(f"your p_value is a {type(p_value).__name__} object, the whole test result: "
                           "return binomtest(...).pvalue, a number.")
        if not is_number(p_value):
            return not_yet(f"p_value should be a number between 0 and 1; you returned a {type(p_value).__name__} "
                           f"({p_value!r}).")
    for (before, after), (fixed, broken, p_value) in zip(cases, results):
        expected = _expected_mcnemar(before, after)
        if (fixed, broken) == (expected.only_before, expected.only_after) and fixed != broken:
            return not_yet("fixed and broken are swapped: 'fixed' counts questions wrong before and right after.")
        if (fixed, broken) != (expected.only_after, expected.only_before):
            same = sum(b == a for b, a in zip(before, after))
            if fixed + broken == same:
                return not_yet("count the questions where the two models disagree, not where they agree.")
            return not_yet(f"on {len(before)} questions you count {fixed} fixed and {broken} broken; expected "
                           f"{expected.only_after} and {expected.only_before}. Fixed: wrong before and right after.")
        if not math.isclose(float(p_value), expected.p_value, rel_tol=1e-6, abs_tol=1e-12):
            if float(p_value) > 1:
                return not_yet(f"with {fixed} fixed and {broken} broken you return p = {float(p_value):.3f}, but a "
                               "p-value cannot exceed 1. Doubling one tail counts the middle outcome twice when the "
                               "split is even: cap the result at 1, min(1, 2 × tail).")
            if fixed + broken == 0:
                return not_yet(NO_DISAGREEMENT_HINT + f" (You returned p = {float(p_value)!r}.)")
            one_sided = [binomtest(fixed, fixed + broken, alternative=side).pvalue
                         for side in ("less", "greater")] if fixed + broken else []
            if math.isclose(2 * float(p_value), expected.p_value, rel_tol=1e-6) or any(
                    math.isclose(float(p_value), p, rel_tol=1e-6) for p in one_sided):
                return not_yet("that is a one-sided p-value (alternative=\"less\" or \"greater\"): the question is "
                               "whether fine-tuning changed accuracy in either direction, so use the two-sided test, "
                               "`binomtest`'s default (alternative=\"two-sided\").")
            if rounded_too_far(float(p_value), expected.p_value):
                return not_yet(ROUNDED_HINT)
            return not_yet(f"the counts are right ({fixed}, {broken}); the p-value {float(p_value):.6g} should be "
                           f"{expected.p_value:.6g}: an exact binomial test of `fixed` successes out of fixed + broken "
                           "tosses of a fair coin, not a chi-squared approximation or a test over all questions.")
    expected = _expected_mcnemar(*cases[0])
    verdict = "rare for a fair coin" if expected.p_value < 0.05 else "a split a fair coin often gives, so no evidence yet"
    return correct(f"{expected.only_after} fixed against {expected.only_before} broken gives p = {expected.p_value:.3f}: "
                   f"{verdict}. The questions both models get right, or both wrong, say nothing about which is better.")
