"""Answer normalisation and batched evaluation with baselines.

The published recipe has no evaluation at all. A model that says "The answer is no." or
"seven" is right on Big Bench Audio, so answers are normalised to the dataset's formats
(`Yes`/`No`, `valid`/`invalid`, digits) before comparing, and anything that gives no answer
is counted as unparseable rather than silently wrong.

Built in notebook 04 (normalising replies, scoring, intervals, baselines).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import torch

from helpers.collator import VoxtralAudioCollator
from helpers.loading import model_device, model_dtype
from helpers.rows import row_id
from helpers.tasks import TASKS, answer_text

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
NUMBER_WORDS = {word: n for n, word in enumerate(_UNITS)}
for _t, _word in enumerate(_TENS, start=2):
    NUMBER_WORDS[_word] = 10 * _t
    for _u in range(1, 10):
        NUMBER_WORDS[f"{_word} {_UNITS[_u]}"] = NUMBER_WORDS[f"{_word}-{_UNITS[_u]}"] = 10 * _t + _u
_NUMBER_RE = re.compile(
    r"\b(?:" + "|".join(sorted((re.escape(w) for w in NUMBER_WORDS), key=len, reverse=True)) + r")\b|\b\d+\b"
)


def _yes_no(text: str) -> str | None:
    match = re.search(r"\b(yes|no)\b", text)
    return match.group(1).capitalize() if match else None


def _validity(text: str) -> str | None:
    if re.search(r"\binvalid\b|\bnot (?:\w+ )?valid\b|\bisn't (?:\w+ )?valid\b", text):
        return "invalid"
    return "valid" if re.search(r"\bvalid\b", text) else None


def _number(text: str) -> str | None:
    match = _NUMBER_RE.search(text.replace(",", ""))
    if not match:
        return None
    token = match.group(0)
    return str(int(token)) if token.isdigit() else str(NUMBER_WORDS[token])


def normalize_answer(text, category=None) -> str | None:
    """The answer in the dataset's format, or None when `text` gives none.

    "Yes." -> "Yes"; "The answer is no." -> "No"; "seven" / "There are 12." -> "7" / "12";
    "Invalid" / "The argument is not valid" -> "invalid". Unknown categories try all formats.
    """
    if text is None:
        return None
    text = " ".join(str(text).lower().replace("’", "'").split())
    if not text:
        return None
    readers = {"yes/no": _yes_no, "valid/invalid": _validity, "number": _number}
    task = TASKS.get(category)
    if task is not None:
        return readers[task.answer_kind](text)
    return _yes_no(text) or _validity(text) or _number(text)


@torch.inference_mode()
def generate_answers(model, processor, rows: list[dict], max_new_tokens: int = 16, collator=None) -> list[str]:
    """Greedy answers for a batch of rows (left-padded prompts, one `generate` call)."""
    collator = collator or VoxtralAudioCollator(processor, dtype=model_dtype(model))
    batch = collator.prompts(rows)
    batch = {k: v.to(model_device(model)) for k, v in batch.items()}
    output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=processor.tokenizer.pad_token_id)
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    return [processor.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_tokens]


@dataclass
class EvaluationResult:
    predictions: list[dict]
    table: object  # pandas.DataFrame, one row per category plus "overall"

    @property
    def accuracy(self) -> float:
        return float(self.table.loc["overall", "accuracy"])

    def wrong(self) -> list[dict]:
        return [p for p in self.predictions if not p["correct"]]


def baselines(answers_by_category: dict[str, list[str]], reference: dict[str, list[str]] | None = None) -> dict:
    """Majority-class and random-guess accuracy per category.

    The majority answer is taken from `reference` (the training split) when given, else from
    the evaluated answers; random guessing is uniform over the answers seen for the category.
    """
    reference = reference or answers_by_category
    out = {}
    for category, answers in answers_by_category.items():
        seen = reference.get(category) or answers
        majority = Counter(seen).most_common(1)[0][0]
        options = set(seen) | set(answers)
        out[category] = {
            "majority_answer": majority,
            "majority_baseline": sum(a == majority for a in answers) / len(answers),
            "random_baseline": 1 / len(options),
        }
    return out


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for an accuracy of `correct` out of `total`.

    With 25 questions per category an accuracy of 80% (20 of 25) is only known to lie between 61%
    and 91%, which is why every accuracy here comes with its interval.
    """
    from scipy.stats import binomtest

    interval = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass
class McNemarResult:
    only_after: int  # questions the second model answers right and the first wrong
    only_before: int  # and the other way round
    p_value: float
    summary: str


def mcnemar(before: list[dict], after: list[dict]) -> McNemarResult:
    """Exact McNemar test: did the second model (`after`) change accuracy on the same questions?

    Only the questions on which the two disagree carry information; under "no change" each of
    them is equally likely to favour either model, so their split is a fair coin's (exact
    binomial, two-sided).
    """
    from scipy.stats import binomtest

    if [p["id"] for p in before] != [p["id"] for p in after]:
        raise ValueError("McNemar's test compares two evaluations of the same rows, in the same order; "
                         f"got {len(before)} and {len(after)} rows with different ids.")
    only_after = sum(a["correct"] and not b["correct"] for b, a in zip(before, after))
    only_before = sum(b["correct"] and not a["correct"] for b, a in zip(before, after))
    discordant = only_after + only_before
    p_value = 1.0 if discordant == 0 else float(binomtest(only_after, discordant, 0.5).pvalue)
    verdict = ("a difference this lopsided would be rare (p < 0.05) if fine-tuning changed nothing"
               if p_value < 0.05 else "no evidence of a difference at this size: the change could be chance")
    summary = (f"Fine-tuning fixed {only_after} answers and broke {only_before} on the same {len(before)} "
               f"questions; exact McNemar p = {p_value:.3f}: {verdict}.")
    return McNemarResult(only_after, only_before, p_value, summary)


def accuracy_table(predictions: list[dict], reference: dict[str, list[str]] | None = None):
    """Per-category and overall accuracy with its Wilson 95% interval, unparseable rate and both
    baselines, as a DataFrame."""
    import pandas as pd

    by_category: dict[str, list[dict]] = {}
    for p in predictions:
        by_category.setdefault(str(p["category"]), []).append(p)
    base = baselines({c: [p["answer"] for p in ps] for c, ps in by_category.items()}, reference)
    rows = {}
    for category in sorted(by_category):
        ps = by_category[category]
        rows[category] = {
            "n": len(ps),
            "accuracy": sum(p["correct"] for p in ps) / len(ps),
            **dict(zip(("ci_low", "ci_high"), wilson_interval(sum(p["correct"] for p in ps), len(ps)))),
            "unparseable": sum(p["parsed"] is None for p in ps) / len(ps),
            "majority_baseline": base[category]["majority_baseline"],
            "random_baseline": base[category]["random_baseline"],
        }
    total = len(predictions)
    rows["overall"] = {
        "n": total,
        "accuracy": sum(p["correct"] for p in predictions) / total,
        **dict(zip(("ci_low", "ci_high"), wilson_interval(sum(p["correct"] for p in predictions), total))),
        "unparseable": sum(p["parsed"] is None for p in predictions) / total,
        # overall baselines weight each category by its share of the evaluated rows
        "majority_baseline": sum(rows[c]["majority_baseline"] * rows[c]["n"] for c in by_category) / total,
        "random_baseline": sum(rows[c]["random_baseline"] * rows[c]["n"] for c in by_category) / total,
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def evaluate(model, processor, dataset, batch_size: int = 16, max_new_tokens: int = 16,
             reference_dataset=None, progress: bool = True) -> EvaluationResult:
    """Batched greedy evaluation of `dataset` (rows with `audio`, `category`, `official_answer`).

    Returns every prediction (raw text, parsed answer, correct or not) and a table of accuracy
    per category and overall beside the majority-class and random baselines (majority taken
    from `reference_dataset`, e.g. the train split, when given) and the unparseable rate.
    """
    from huggingface_hub.utils import tqdm  # tqdm.auto's bar that HF_HUB_DISABLE_PROGRESS_BARS turns off too

    if len(dataset) == 0:
        raise ValueError("Cannot evaluate an empty dataset.")
    collator = VoxtralAudioCollator(processor, dtype=model_dtype(model))
    predictions = []
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="evaluating", disable=not progress):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        texts = generate_answers(model, processor, rows, max_new_tokens=max_new_tokens, collator=collator)
        for offset, (row, text) in enumerate(zip(rows, texts)):
            name = row_id(row, start + offset)
            answer = answer_text(row.get("official_answer"), name)
            parsed = normalize_answer(text, row.get("category"))
            predictions.append({
                "id": name, "category": row.get("category"), "answer": answer, "prediction": text,
                "parsed": parsed, "correct": parsed is not None and parsed == normalize_answer(answer, row.get("category")),
            })
    reference = None
    if reference_dataset is not None:
        reference = {}
        for category, answer in zip(reference_dataset["category"], reference_dataset["official_answer"]):
            reference.setdefault(str(category), []).append(str(answer))
    return EvaluationResult(predictions=predictions, table=accuracy_table(predictions, reference))
