"""The tiny dataset: schema, balance, audio, and every answer re-derived by an independent solver
that reads only the spoken transcript."""
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from helpers.tasks import CATEGORIES
from tutorial_kit.tiny import synthetic

WORDS = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5}
# Written for the test, not imported from the generator.
KIND_OF = {}
for kind, items in {
    "fruits": "apple banana peach plum grape orange strawberry nectarine",
    "vegetables": "carrot onion potato cabbage lettuce yam garlic",
    "animals": "cat dog goat pig rabbit snake cow duck",
    "musical instruments": "piano flute trumpet violin drum clarinet trombone",
}.items():
    for item in items.split():
        KIND_OF[item] = kind


def solve_navigate(text):
    x = y = 0
    heading = 0
    face_forward = "Always face forward." in text
    body = text.split("starting point?")[1]
    for sentence in re.findall(r"[^.]+\.", body):
        sentence = sentence.strip()
        if sentence.startswith("Turn"):
            heading = (heading + {"left": -1, "right": 1, "around": 2}[sentence.split()[1].rstrip(".")]) % 4
        elif sentence.startswith("Take"):
            words = sentence.rstrip(".").split()
            n = int(words[1])
            direction = words[3] if len(words) > 3 else None
            if face_forward:
                dx, dy = {"forward": (0, 1), "backward": (0, -1), "left": (-1, 0), "right": (1, 0)}[direction]
            else:
                dx, dy = [(0, 1), (1, 0), (0, -1), (-1, 0)][heading]
            x, y = x + n * dx, y + n * dy
    return "Yes" if (x, y) == (0, 0) else "No"


def solve_web_of_lies(text):
    truth = {}
    for sentence in re.findall(r"[A-Z][a-z]+ (?:says [A-Z][a-z]+ )?(?:tells the truth|lies)\.", text):
        words = sentence.rstrip(".").split()
        says_truth = sentence.endswith("tells the truth.")
        if "says" in words:
            truth[words[0]] = truth[words[2]] == says_truth
        else:
            truth[words[0]] = says_truth
    asked = re.search(r"Does ([A-Z][a-z]+) tell the truth\?", text).group(1)
    return "Yes" if truth[asked] else "No"


def solve_object_counting(text):
    kind = re.search(r"How many (.+) do I have\?", text).group(1)
    listing = text.split("I have ")[1].split(". How many")[0].replace(", and ", ", ")
    total = 0
    for phrase in listing.split(", "):
        count, item = phrase.split(" ", 1)
        item = item.split()[0]
        if item.endswith("ies"):
            stem = item[:-3] + "y"
        else:
            stem = item[:-2] if item.endswith(("oes", "ches")) else item.rstrip("s")
        assert stem in KIND_OF, f"test lexicon does not know {item!r}"
        if KIND_OF[stem] == kind:
            total += WORDS.get(count) or int(count)
    return str(total)


def _parse_statement(sentence):
    sentence = sentence.strip().rstrip(".")
    m = re.match(r"(Every|No) (.+?) is an? (.+)$", sentence)
    if m:
        return (m.group(1).lower(), m.group(2), m.group(3))
    m = re.match(r"([A-Z][a-z]+) is (not )?an? (.+)$", sentence)
    assert m, f"cannot parse {sentence!r}"
    return ("not" if m.group(2) else "is", m.group(1), m.group(3))


def _holds(statement, extension):
    kind, a, b = statement
    if kind == "every":
        return extension[a] <= extension[b]
    if kind == "no":
        return not (extension[a] & extension[b])
    if kind == "is":
        return a in extension[b]
    return a not in extension[b]


def solve_formal_fallacies(text):
    """Valid iff no model over the named people plus two others makes the premises true and
    the conclusion false (enough for these one- and two-premise forms)."""
    body = text.split("Here comes an argument. ")[1].split(" Is the argument")[0]
    premises_text, conclusion_text = body.split(" Hence, ")
    statements = re.findall(r"(?:First|Second), [^.]+\.", premises_text)
    premises = [_parse_statement(re.sub(r"^(First|Second), ", "", s)) for s in statements]
    conclusion = _parse_statement(conclusion_text)
    statements = premises + [conclusion]
    predicates = sorted({s[2] for s in statements} | {s[1] for s in statements if s[0] in ("every", "no")})
    people = sorted({s[1] for s in statements if s[0] in ("is", "not")})
    domain = people + ["someone", "someone else"]
    for bits in itertools.product([False, True], repeat=len(domain) * len(predicates)):
        extension = {p: {d for j, d in enumerate(domain) if bits[i * len(domain) + j]} for i, p in enumerate(predicates)}
        if all(_holds(p, extension) for p in premises) and not _holds(conclusion, extension):
            return "invalid"
    return "valid"


SOLVERS = {"navigate": solve_navigate, "web_of_lies": solve_web_of_lies,
           "object_counting": solve_object_counting, "formal_fallacies": solve_formal_fallacies}


@pytest.fixture(scope="module")
def questions():
    return synthetic.generate_questions()


def test_every_answer_matches_an_independent_solver(questions):
    wrong = [(q["id"], q["category"], q["official_answer"], SOLVERS[q["category"]](q["transcript"]))
             for q in questions if SOLVERS[q["category"]](q["transcript"]) != q["official_answer"]]
    assert not wrong, wrong[:5]


def test_solvers_catch_a_broken_generator(questions, monkeypatch):
    """The check above can fail: flip the generator's navigate answers and it must go red."""
    original = synthetic.navigate
    monkeypatch.setattr(synthetic, "navigate",
                        lambda rng, yes: (lambda t, a: (t, "No" if a == "Yes" else "Yes"))(*original(rng, yes)))
    broken = synthetic.generate_questions()
    assert any(SOLVERS[q["category"]](q["transcript"]) != q["official_answer"] for q in broken)


def test_schema_balance_and_formats(questions):
    assert len(questions) == 4 * synthetic.PER_CATEGORY
    assert [q["id"] for q in questions] == list(range(len(questions)))
    counts = Counter(q["category"] for q in questions)
    assert set(counts) == set(CATEGORIES) and min(counts.values()) >= 40
    answers = {c: Counter(q["official_answer"] for q in questions if q["category"] == c) for c in CATEGORIES}
    assert set(answers["navigate"]) == set(answers["web_of_lies"]) == {"Yes", "No"}
    assert set(answers["formal_fallacies"]) == {"valid", "invalid"}
    assert all(a.isdigit() for a in answers["object_counting"]) and len(answers["object_counting"]) > 3
    for c in ("navigate", "web_of_lies", "formal_fallacies"):
        assert min(answers[c].values()) >= 0.4 * counts[c]


def test_generation_is_deterministic(questions):
    assert synthetic.generate_questions() == questions


def test_dataset_folder_has_the_hub_layout(profile):
    folder = Path(profile.dataset_id)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"file_name", "id", "category", "official_answer", "transcript"}
    assert all((folder / r["file_name"]).exists() for r in rows)


def test_loaded_dataset_schema_and_audio(splits):
    from helpers.audio import load_audio

    row = splits["train"][0]
    assert {"id", "category", "official_answer", "audio", "transcript"} <= set(row)
    audio = load_audio(row["audio"])
    assert audio.dtype == np.float32 and 1 < len(audio) / 16000 < 30
    assert np.abs(audio).max() > 0.05  # speech, not silence


def test_speak_returns_16khz_audio_whose_length_fits_the_words():
    short = synthetic.speak("Yes.")
    long = synthetic.speak("If you follow these instructions, do you return to the starting point?")
    assert short.dtype == np.float32
    assert 0.2 < len(short) / 16000 < 1.5
    assert 2 < len(long) / 16000 < 8
