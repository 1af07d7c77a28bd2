"""The checks of notebook 04's exercises: the placeholder gets its hint, plausible mistakes get theirs,
the right answer passes, and a learner function that raises gets a hint instead of a traceback."""
import math
import re

import pytest
from scipy.stats import binomtest

from tutorial_kit.exercises import PLACEHOLDER_HINT
from tutorial_kit.exercises import evaluation as exercises


def placeholder(*args):
    ...


def raises(*args):
    raise KeyError("oops")


def assert_hint(feedback, words: str):
    assert not feedback and words in feedback.message, feedback.message


# normalize_validity ---------------------------------------------------------------------------------------------

def right_validity(text):
    words = re.findall(r"[a-z']+", text.lower())
    if "invalid" in words:
        return "invalid"
    if "valid" not in words:
        return None
    before = words[:words.index("valid")]
    return "invalid" if before[-2:] and {"not", "isn't"} & set(before[-2:]) else "valid"


def substring_validity(text):
    text = text.lower()
    return "valid" if "valid" in text else None


def no_negation_validity(text):
    words = re.findall(r"[a-z']+", text.lower())
    return "invalid" if "invalid" in words else "valid" if "valid" in words else None


def capitalised_validity(text):
    answer = right_validity(text)
    return answer.capitalize() if answer else None


def case_sensitive_validity(text):  # tests "invalid" first, but never lower-cases the reply
    if "invalid" in text:
        return "invalid"
    if "not valid" in text or "isn't valid" in text or "not deductively valid" in text:
        return "invalid"
    return "valid" if "valid" in text else None


def guessing_validity(text):
    return right_validity(text) or "valid"


def any_negation_validity(text):  # a 'not' anywhere in the reply taken as negating 'valid'
    text = text.lower()
    if "valid" not in text:
        return None
    return "invalid" if "invalid" in text or "not" in text or "n't" in text else "valid"


def test_validity_placeholder_gets_the_placeholder_hint():
    assert_hint(exercises.check_normalize_validity(...), PLACEHOLDER_HINT)
    assert_hint(exercises.check_normalize_validity(placeholder), PLACEHOLDER_HINT)


def test_validity_mistakes_get_their_hints():
    assert_hint(exercises.check_normalize_validity(substring_validity), "look for 'invalid' first")
    assert_hint(exercises.check_normalize_validity(no_negation_validity), "negation")
    assert_hint(exercises.check_normalize_validity(capitalised_validity), "lower case")
    assert_hint(exercises.check_normalize_validity(guessing_validity), "return None")
    feedback = exercises.check_normalize_validity(case_sensitive_validity)
    assert_hint(feedback, "lower-case the reply first")
    assert "contains the letters" not in feedback.message
    assert_hint(exercises.check_normalize_validity(right_validity("valid")), "pass the function itself")
    feedback = exercises.check_normalize_validity(any_negation_validity)
    assert_hint(feedback, "only when it is about 'valid'")
    assert "not sure" in feedback.message or "nothing" in feedback.message


def listed_phrases_validity(text):  # exactly the phrases the exercise text lists
    text = text.lower()
    for phrase in ("invalid", "not valid", "isn't valid", "not deductively valid"):
        if phrase in text:
            return "invalid"
    return "valid" if "valid" in text else None


def test_validity_negation_a_word_away_gets_a_hint():
    feedback = exercises.check_normalize_validity(listed_phrases_validity)
    assert_hint(feedback, "a negation may have a word between it and 'valid' ('not logically valid', "
                          "'not a valid argument')")


def test_validity_right_answer_passes_and_errors_become_hints():
    assert exercises.check_normalize_validity(right_validity)

    def solution(reply):  # notebooks/solutions/04_inference_solutions.ipynb
        text = reply.lower().replace("’", "'")
        if re.search(r"\binvalid\b|\b(?:not|isn't) (?:\w+ )?valid\b", text):
            return "invalid"
        return "valid" if re.search(r"\bvalid\b", text) else None

    assert exercises.check_normalize_validity(solution)
    assert_hint(exercises.check_normalize_validity(raises), "KeyError")


# wilson_95 ------------------------------------------------------------------------------------------------------

def right_wilson(k, n):
    interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return interval.low, interval.high


def test_wilson_placeholder_and_mistakes():
    assert_hint(exercises.check_wilson_95(placeholder), PLACEHOLDER_HINT)

    def wald(k, n):
        p = k / n
        half = 1.96 * math.sqrt(p * (1 - p) / n)
        return p - half, p + half

    def ninety(k, n):
        interval = binomtest(k, n).proportion_ci(confidence_level=0.90, method="wilson")
        return interval.low, interval.high

    def clipped_wald(k, n):
        low, high = wald(k, n)
        return max(0.0, low), min(1.0, high)

    assert_hint(exercises.check_wilson_95(wald), "Wald")
    assert_hint(exercises.check_wilson_95(clipped_wald), "clipped to [0, 1]")
    assert_hint(exercises.check_wilson_95(ninety), "90%")
    assert_hint(exercises.check_wilson_95(lambda k, n: tuple(100 * x for x in right_wilson(k, n))), "percentages")
    assert_hint(exercises.check_wilson_95(lambda k, n: right_wilson(k, n)[::-1]), "(low, high)")
    assert_hint(exercises.check_wilson_95(lambda k, n: k / n), "a pair")
    feedback = exercises.check_wilson_95(lambda k, n: tuple(round(x, 2) for x in right_wilson(k, n)))
    assert_hint(feedback, "rounded too far")
    assert "formula" not in feedback.message


def test_wilson_right_answer_passes_and_errors_become_hints():
    assert exercises.check_wilson_95(right_wilson)

    def by_formula(k, n, z=1.96):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return centre - half, centre + half

    assert exercises.check_wilson_95(by_formula)
    # any pair of numbers will do: a numpy array, a list, numpy floats
    import numpy as np

    assert exercises.check_wilson_95(lambda k, n: np.array(right_wilson(k, n)))
    assert exercises.check_wilson_95(lambda k, n: [np.float64(x) for x in right_wilson(k, n)])
    assert_hint(exercises.check_wilson_95(lambda k, n: np.array([right_wilson(k, n)])), "a pair")
    assert_hint(exercises.check_wilson_95(lambda k, n: ("low", "high")), "a pair")
    assert_hint(exercises.check_wilson_95(lambda k, n: (0, 1 / (k - k))), "ZeroDivisionError")


# fixed_broken_p (McNemar) ---------------------------------------------------------------------------------------

def right_mcnemar(before, after):
    fixed = sum((not b) and a for b, a in zip(before, after))
    broken = sum(b and not a for b, a in zip(before, after))
    p = binomtest(fixed, fixed + broken).pvalue if fixed + broken else 1.0
    return fixed, broken, p


def test_paired_results_disagree_in_both_directions():
    before, after = exercises.paired_results()
    fixed, broken, _ = right_mcnemar(before, after)
    assert fixed > broken > 0


def test_mcnemar_placeholder_and_mistakes():
    assert_hint(exercises.check_mcnemar(placeholder), PLACEHOLDER_HINT)

    def swapped(before, after):
        fixed, broken, p = right_mcnemar(before, after)
        return broken, fixed, p

    def one_sided(before, after):
        fixed, broken, _ = right_mcnemar(before, after)
        return fixed, broken, binomtest(fixed, fixed + broken, alternative="greater").pvalue if fixed + broken else 0.5

    def over_all_questions(before, after):
        fixed, broken, _ = right_mcnemar(before, after)
        return fixed, broken, binomtest(fixed, len(before)).pvalue

    def less(before, after):
        fixed, broken, p = right_mcnemar(before, after)
        return fixed, broken, binomtest(fixed, fixed + broken, alternative="less").pvalue if fixed + broken else p

    def greater(before, after):
        fixed, broken, p = right_mcnemar(before, after)
        return fixed, broken, binomtest(fixed, fixed + broken, alternative="greater").pvalue if fixed + broken else p

    def result_object(before, after):
        fixed, broken, _ = right_mcnemar(before, after)
        return fixed, broken, binomtest(fixed, fixed + broken) if fixed + broken else 1.0

    assert_hint(exercises.check_mcnemar(swapped), "swapped")
    for answer in (less, greater):
        feedback = exercises.check_mcnemar(answer)
        assert_hint(feedback, "one-sided")
        assert "two-sided" in feedback.message
    feedback = exercises.check_mcnemar(result_object)
    assert_hint(feedback, "binomtest(...).pvalue")
    assert "TypeError" not in feedback.message and "check_mcnemar" not in feedback.message
    assert_hint(exercises.check_mcnemar(lambda before, after: (*right_mcnemar(before, after)[:2], "0.5")), "a number")
    assert_hint(exercises.check_mcnemar(one_sided), "one-sided")
    assert_hint(exercises.check_mcnemar(over_all_questions), "exact binomial test")
    assert_hint(exercises.check_mcnemar(lambda before, after: right_mcnemar(before, after)[:2]), "three values")


def test_mcnemar_without_disagreements_gets_a_plain_hint():
    def unguarded(before, after):  # binomtest(0, 0) raises inside scipy
        fixed = sum((not b) and a for b, a in zip(before, after))
        broken = sum(b and not a for b, a in zip(before, after))
        return fixed, broken, binomtest(fixed, fixed + broken).pvalue

    def by_hand_share(before, after):  # 0 / 0 on identical lists
        fixed, broken, p = right_mcnemar(before, after)
        return fixed, broken, p if fixed / (fixed + broken) else p

    def not_a_number(before, after):
        fixed, broken, p = right_mcnemar(before, after)
        return fixed, broken, p if fixed + broken else float("nan")

    for answer, error in ((unguarded, "ValueError"), (by_hand_share, "ZeroDivisionError"), (not_a_number, "nan")):
        feedback = exercises.check_mcnemar(answer)
        assert_hint(feedback, "the two models never disagree: fixed = broken = 0")
        assert "p = 1.0" in feedback.message and error in feedback.message
        assert "_validate_int" not in feedback.message and "line" not in feedback.message


def by_hand_mcnemar(before, after, cap=True, guard=True):
    fixed = sum((not b) and a for b, a in zip(before, after))
    broken = sum(b and not a for b, a in zip(before, after))
    if guard and fixed + broken == 0:
        return fixed, broken, 1.0
    tail = sum(math.comb(fixed + broken, i) for i in range(min(fixed, broken) + 1)) / 2 ** (fixed + broken)
    return fixed, broken, min(1.0, 2 * tail) if cap else 2 * tail


def test_mcnemar_by_hand_must_cap_the_doubled_tail_at_one():
    """With as many fixed as broken the doubled tail counts the middle term twice: above 1 without a cap."""
    assert exercises.check_mcnemar(by_hand_mcnemar)
    for answer in (lambda b, a: by_hand_mcnemar(b, a, cap=False), lambda b, a: by_hand_mcnemar(b, a, cap=False, guard=False)):
        feedback = exercises.check_mcnemar(answer)
        assert_hint(feedback, "cannot exceed 1")
        assert "binomtest(0, 0)" not in feedback.message and "one-sided" not in feedback.message


def test_mcnemar_half_for_no_disagreement_is_not_called_one_sided():
    def half_when_equal(before, after):
        fixed, broken, p = right_mcnemar(before, after)
        return fixed, broken, p if fixed + broken else 0.5

    feedback = exercises.check_mcnemar(half_when_equal)
    assert_hint(feedback, "never disagree")
    assert "one-sided" not in feedback.message


@pytest.mark.parametrize("decimals", [2, 3, 4])
def test_mcnemar_rounded_p_value_gets_the_rounded_hint(decimals):
    def rounded(before, after):
        fixed, broken, p = right_mcnemar(before, after)
        return fixed, broken, round(p, decimals)

    feedback = exercises.check_mcnemar(rounded)
    assert_hint(feedback, "rounded too far")
    assert "chi-squared" not in feedback.message


def test_mcnemar_wrong_p_value_is_printed_with_digits_that_differ():
    def slightly_off(before, after):
        fixed, broken, p = right_mcnemar(before, after)
        return fixed, broken, p * 1.0001

    feedback = exercises.check_mcnemar(slightly_off)
    assert_hint(feedback, "exact binomial test")
    shown = re.findall(r"p-value (\S+) should be (\S+):", feedback.message)
    assert shown and shown[0][0] != shown[0][1], feedback.message


def test_mcnemar_right_answer_passes_and_errors_become_hints():
    assert exercises.check_mcnemar(right_mcnemar)
    assert_hint(exercises.check_mcnemar(lambda before, after: before["x"]), "TypeError")


@pytest.mark.parametrize("check", [exercises.check_normalize_validity, exercises.check_wilson_95, exercises.check_mcnemar])
def test_a_value_instead_of_a_function_gets_a_hint(check):
    assert_hint(check(3), "pass the function itself")
