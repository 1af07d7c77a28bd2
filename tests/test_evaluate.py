import pytest

from helpers.evaluate import (
    accuracy_table,
    baselines,
    evaluate,
    generate_answers,
    normalize_answer,
)
from helpers.published import published_generate


@pytest.mark.parametrize("text, category, expected", [
    ("Yes.", "navigate", "Yes"), ("The answer is no.", "web_of_lies", "No"), ("NO", "navigate", "No"),
    ("yes, you return", "navigate", "Yes"), ("Nope, not sure", "navigate", None), ("", "navigate", None),
    ("seven", "object_counting", "7"), ("There are 12.", "object_counting", "12"),
    ("I have twenty-one items", "object_counting", "21"), ("twenty one", "object_counting", "21"),
    ("1,000", "object_counting", "1000"), ("none", "object_counting", None), ("07", "object_counting", "7"),
    ("Invalid", "formal_fallacies", "invalid"), ("The argument is not valid", "formal_fallacies", "invalid"),
    ("valid", "formal_fallacies", "valid"), ("It is deductively valid.", "formal_fallacies", "valid"),
    ("The argument isn't valid.", "formal_fallacies", "invalid"), ("maybe", "formal_fallacies", None),
    (None, "navigate", None), ("Yes", None, "Yes"), ("8", "mystery", "8"), ("hmm", "mystery", None),
])
def test_normalize_answer(text, category, expected):
    assert normalize_answer(text, category) == expected


def test_dataset_answers_normalise_to_themselves(splits):
    for row in splits["train"]:
        assert normalize_answer(row["official_answer"], row["category"]) == row["official_answer"]


def test_baselines():
    result = baselines({"navigate": ["Yes", "Yes", "No", "Yes"]}, reference={"navigate": ["No", "No", "Yes"]})
    assert result["navigate"] == {"majority_answer": "No", "majority_baseline": 0.25, "random_baseline": 0.5}


def test_accuracy_table_counts_unparseable():
    predictions = [
        {"category": "navigate", "answer": "Yes", "parsed": "Yes", "correct": True},
        {"category": "navigate", "answer": "Yes", "parsed": None, "correct": False},
        {"category": "object_counting", "answer": "3", "parsed": "4", "correct": False},
        {"category": "object_counting", "answer": "5", "parsed": "5", "correct": True},
    ]
    table = accuracy_table(predictions)
    assert table.loc["navigate", "accuracy"] == 0.5 and table.loc["navigate", "unparseable"] == 0.5
    assert table.loc["overall", "accuracy"] == 0.5 and table.loc["overall", "n"] == 4
    assert table.loc["object_counting", "random_baseline"] == 0.5


def test_evaluate_table_and_batched_equals_one_at_a_time(model_and_processor, splits, profile):
    model, processor = model_and_processor
    test = splits["test"]
    batched = evaluate(model, processor, test, batch_size=16, max_new_tokens=profile.max_new_tokens,
                       reference_dataset=splits["train"], progress=False)
    single = evaluate(model, processor, test, batch_size=1, max_new_tokens=profile.max_new_tokens, progress=False)
    assert [p["prediction"] for p in batched.predictions] == [p["prediction"] for p in single.predictions]
    table = batched.table
    assert set(table.index) == {"formal_fallacies", "navigate", "object_counting", "web_of_lies", "overall"}
    assert {"n", "accuracy", "unparseable", "majority_baseline", "random_baseline"} <= set(table.columns)
    assert table.loc["overall", "n"] == len(test)
    assert 0 <= batched.accuracy <= 1 and batched.accuracy == table.loc["overall", "accuracy"]
    assert len(batched.wrong()) == sum(not p["correct"] for p in batched.predictions)


def test_batched_generation_equals_the_published_one_at_a_time_way(model_and_processor, splits):
    model, processor = model_and_processor
    rows = [splits["test"][i] for i in range(8)]
    ours = generate_answers(model, processor, rows, max_new_tokens=6)
    assert ours == [published_generate(model, processor, row, max_new_tokens=6) for row in rows]


def test_evaluate_refuses_an_empty_dataset(model_and_processor, splits):
    with pytest.raises(ValueError, match="empty dataset"):
        evaluate(*model_and_processor, splits["test"].select([]))


def _predictions(correct: list[bool], category="navigate", start=0):
    return [{"id": start + i, "category": category, "answer": "Yes", "prediction": "Yes" if ok else "No",
             "parsed": "Yes" if ok else "No", "correct": ok} for i, ok in enumerate(correct)]


def test_accuracy_table_has_wilson_intervals():
    from helpers.evaluate import accuracy_table, wilson_interval

    low, high = wilson_interval(20, 25)
    # Wilson score interval, z = 1.96: centre (k + z^2/2) / (n + z^2), half-width z*sqrt(k(n-k)/n + z^2/4) / (n + z^2)
    z = 1.959964
    centre = (20 + z * z / 2) / (25 + z * z)
    half = z * ((20 * 5 / 25 + z * z / 4) ** 0.5) / (25 + z * z)
    assert low == pytest.approx(centre - half, abs=1e-4) and high == pytest.approx(centre + half, abs=1e-4)
    assert wilson_interval(0, 25)[0] == 0 and wilson_interval(25, 25)[1] == pytest.approx(1)
    assert high - low > 0.3  # 25 rows: about +-16 points around 80%
    table = accuracy_table(_predictions([True] * 20 + [False] * 5))
    assert table.loc["overall", "ci_low"] == pytest.approx(low) and table.loc["overall", "ci_high"] == pytest.approx(high)


def test_mcnemar_exact_on_the_same_rows():
    from helpers.evaluate import mcnemar

    before = _predictions([False] * 8 + [True] * 1 + [True] * 10 + [False] * 6)
    after = _predictions([True] * 8 + [False] * 1 + [True] * 10 + [False] * 6)
    result = mcnemar(before, after)
    assert (result.only_after, result.only_before) == (8, 1)
    assert result.p_value == pytest.approx(2 * (1 + 9) / 2**9)  # exact binomial, two-sided
    assert "8" in result.summary and "1" in result.summary and "0.039" in result.summary
    same = mcnemar(before, before)
    assert same.p_value == 1.0 and "no evidence" in same.summary.lower()
    with pytest.raises(ValueError, match="same rows"):
        mcnemar(before, after[:-1])
