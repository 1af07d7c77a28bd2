"""A small spoken dataset with Big Bench Audio's schema, for the offline `tiny` profile.

Questions are generated in the style of the four BIG-Bench Hard tasks that Big Bench Audio
speaks aloud, each answer computed by the generator, then spoken by espeak-ng with several
voices and speeds and resampled to 16 kHz. The folder layout is the Hub's: audio files plus a
`metadata.jsonl` naming them in `file_name`, so `datasets.load_dataset(folder)` reads it.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np

from helpers.audio import SAMPLING_RATE, load_audio
from helpers.tasks import CATEGORIES

PER_CATEGORY = 48
SEED = 2024
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
SPEEDS = (150, 165, 180, 195)
# One question in eight is read slowly and repeated until it lasts over 30 s, so it takes two 30-s chunks,
# as Big Bench Audio's longest questions do: the two-chunk path runs in the tiny profile too.
LONG_EVERY = 8
LONG_SPEED = 130
LONG_SECONDS = 30.0

NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
PEOPLE = [
    "Alice", "Bernard", "Carla", "Dmitri", "Elena", "Fidel", "Gwen", "Hamid", "Inga", "Jerry",
    "Kofi", "Lena", "Millicent", "Noor", "Oscar", "Priya", "Raymond", "Sherrie", "Tomas", "Vina",
]
# object_counting kinds; the distractors come from the other kinds.
KINDS = {
    "fruits": ["apple", "banana", "peach", "plum", "grape", "orange", "strawberry", "nectarine"],
    "vegetables": ["carrot", "onion", "potato", "cabbage", "lettuce head", "yam", "garlic"],
    "animals": ["cat", "dog", "goat", "pig", "rabbit", "snake", "cow", "duck"],
    "musical instruments": ["piano", "flute", "trumpet", "violin", "drum", "clarinet", "trombone"],
}
PLURALS = {"peach": "peaches", "strawberry": "strawberries", "potato": "potatoes",
           "lettuce head": "lettuce heads"}
PREDICATES = [
    "fan of Chelsea", "cousin of Maria", "friend of Oliver", "expert of Ajax", "classmate of Ruth",
    "customer of Lush", "ancestor of Dana", "critic of Porto", "neighbour of Ida", "member of Sevilla",
]


def plural(noun: str) -> str:
    return PLURALS.get(noun, noun + "s")


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


# ---------------------------------------------------------------------------- navigate
def navigate(rng: random.Random, answer_yes: bool) -> tuple[str, str]:
    """BBH `navigate`: do you return to the starting point? Answer `Yes`/`No`."""
    while True:
        if rng.random() < 0.5:
            text, x, y = _navigate_face_forward(rng, answer_yes)
        else:
            text, x, y = _navigate_turns(rng, answer_yes)
        if ((x, y) == (0, 0)) == answer_yes:
            return "If you follow these instructions, do you return to the starting point? " + text, (
                "Yes" if answer_yes else "No")


def _navigate_face_forward(rng, answer_yes):
    moves = {"forward": (0, 1), "backward": (0, -1), "left": (-1, 0), "right": (1, 0)}
    steps = []
    for _ in range(rng.randint(2, 3)):
        direction = rng.choice(list(moves))
        steps.append((rng.randint(1, 9), direction))
    if answer_yes:  # undo the walk, in a shuffled order
        opposite = {"forward": "backward", "backward": "forward", "left": "right", "right": "left"}
        steps += [(n, opposite[d]) for n, d in steps]
        rng.shuffle(steps)
    x = sum(n * moves[d][0] for n, d in steps)
    y = sum(n * moves[d][1] for n, d in steps)
    words = ["Always face forward."] + [f"Take {n} step{'s' if n > 1 else ''} {d}." for n, d in steps]
    return " ".join(words), x, y


def _navigate_turns(rng, answer_yes):
    heading, x, y = 0, 0, 0  # 0 north, 1 east, 2 south, 3 west
    words = []
    if answer_yes:
        n = rng.randint(1, 9)
        plan = [("step", n), ("turn", "around"), ("step", n)]
        if rng.random() < 0.5:
            plan.append(("turn", rng.choice(["left", "right"])))
    else:
        plan = []
        for _ in range(rng.randint(3, 5)):
            plan.append(("step", rng.randint(1, 9)) if rng.random() < 0.6 else
                        ("turn", rng.choice(["left", "right", "around"])))
    for kind, value in plan:
        if kind == "turn":
            heading = (heading + {"left": 3, "right": 1, "around": 2}[value]) % 4
            words.append(f"Turn {value}.")
        else:
            dx, dy = [(0, 1), (1, 0), (0, -1), (-1, 0)][heading]
            x, y = x + value * dx, y + value * dy
            words.append(f"Take {value} step{'s' if value > 1 else ''}.")
    return " ".join(words), x, y


# ---------------------------------------------------------------------------- web_of_lies
def web_of_lies(rng: random.Random, answer_yes: bool) -> tuple[str, str]:
    """BBH `web_of_lies`: a chain of people who say the previous one lies or tells the truth."""
    people = rng.sample(PEOPLE, 5)
    truthful = rng.random() < 0.5
    sentences = [f"{people[0]} {'tells the truth' if truthful else 'lies'}."]
    for i in range(1, 5):
        claim_true = rng.random() < 0.5
        if i == 4:  # choose the last claim so the answer comes out as asked
            claim_true = (truthful == answer_yes)
        sentences.append(f"{people[i]} says {people[i - 1]} {'tells the truth' if claim_true else 'lies'}.")
        truthful = (claim_true == truthful)
    text = "Question: " + " ".join(sentences) + f" Does {people[4]} tell the truth?"
    return text, "Yes" if truthful else "No"


# ---------------------------------------------------------------------------- object_counting
def object_counting(rng: random.Random, target: int) -> tuple[str, str]:
    """BBH `object_counting`: items of one kind among distractors; answer an integer string."""
    kind = rng.choice(list(KINDS))
    others = [item for k, items in KINDS.items() if k != kind for item in items]
    counts, remaining = [], target
    for item in rng.sample(KINDS[kind], len(KINDS[kind])):
        if remaining == 0:
            break
        n = min(remaining, rng.choice([1, 1, 2, 3]))
        counts.append((item, n))
        remaining -= n
    if remaining:  # ran out of distinct items: top up the first
        counts[0] = (counts[0][0], counts[0][1] + remaining)
    counts += [(item, rng.choice([1, 2])) for item in rng.sample(others, rng.randint(1, 3))]
    rng.shuffle(counts)
    phrases = [article(item) if n == 1 else f"{NUMBER_WORDS.get(n, str(n))} {plural(item)}" for item, n in counts]
    listing = ", ".join(phrases[:-1]) + ", and " + phrases[-1]
    return f"I have {listing}. How many {kind} do I have?", str(target)


# ---------------------------------------------------------------------------- formal_fallacies
# (premises, conclusion, valid). P, Q, R are predicates, X a named person.
FALLACY_FORMS = [
    (["every P is Q", "every Q is R"], "every P is R", True),
    (["every P is Q", "X is P"], "X is Q", True),
    (["every P is Q", "X is not Q"], "X is not P", True),
    (["no P is Q", "X is P"], "X is not Q", True),
    (["every P is Q", "no Q is R"], "no P is R", True),
    (["every P is Q", "X is Q"], "X is P", False),
    (["every P is Q", "X is not P"], "X is not Q", False),
    (["every P is Q", "every P is R"], "every Q is R", False),
    (["every P is Q"], "every Q is P", False),
    (["no P is Q", "no Q is R"], "no P is R", False),
]


def _phrase(form: str, names: dict) -> str:
    words = form.split()
    if words[0] in ("every", "no"):
        return f"{words[0].capitalize()} {names[words[1]]} is {article(names[words[3]])}"
    negated = words[2] == "not"
    return f"{names[words[0]]} is {'not ' if negated else ''}{article(names[words[-1]])}"


def formal_fallacies(rng: random.Random, valid: bool) -> tuple[str, str]:
    """BBH `formal_fallacies`: a short syllogism; answer `valid`/`invalid`."""
    premises, conclusion, _ = rng.choice([f for f in FALLACY_FORMS if f[2] == valid])
    p, q, r = rng.sample(PREDICATES, 3)
    names = {"P": p, "Q": q, "R": r, "X": rng.choice(PEOPLE)}
    ordinals = ["First", "Second"]
    said = " ".join(f"{ordinals[i]}, {_phrase(s, names)}." for i, s in enumerate(premises))
    text = (f"Here comes an argument. {said} Hence, {_phrase(conclusion, names)}. "
            "Is the argument, given the explicitly stated premises, deductively valid or invalid?")
    return text, "valid" if valid else "invalid"


def generate_questions(per_category: int = PER_CATEGORY, seed: int = SEED) -> list[dict]:
    """Deterministic question set: `per_category` rows per category, answers balanced."""
    rng = random.Random(seed)
    rows = []
    for category in CATEGORIES:
        for i in range(per_category):
            if category == "object_counting":
                text, answer = object_counting(rng, target=2 + i % 9)
            else:
                maker = {"navigate": navigate, "web_of_lies": web_of_lies, "formal_fallacies": formal_fallacies}
                text, answer = maker[category](rng, i % 2 == 0)
            rows.append({"category": category, "official_answer": answer, "transcript": text})
    order = list(range(len(rows)))
    rng.shuffle(order)  # the Hub dataset interleaves categories too
    return [{"id": n, **rows[k]} for n, k in enumerate(order)]


# ---------------------------------------------------------------------------- speech
def espeak(text: str, voice: str = "en-us", speed: int = 175, word_gap: int | None = None,
           wav_file: Path | None = None) -> bytes:
    """Run espeak-ng on `text`: the WAV bytes it speaks at its own 22050 Hz, or nothing when `wav_file` is given
    (it writes there). A `RuntimeError` that says how to install it, or what it said when it failed."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: `sudo apt-get install espeak-ng` (or run `make setup`).")
    command = ["espeak-ng", "-v", voice, "-s", str(speed)]
    command += ["-g", str(word_gap)] if word_gap is not None else []
    command += ["-w", str(wav_file)] if wav_file is not None else ["--stdout"]
    try:
        return subprocess.run([*command, text], check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"espeak-ng could not speak with voice {voice!r}: "
                           f"{error.stderr.decode(errors='replace').strip()}") from error


def speak(text: str, voice: str = "en-us", speed: int = 175) -> np.ndarray:
    """Speak `text` with espeak-ng; returns float32 mono audio at 16 kHz."""
    import io

    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(espeak(text, voice, speed)), dtype="float32")
    return load_audio(audio, rate)  # resampled to 16 kHz like every other input


def read_slowly_past(seconds: float, text: str, voice: str) -> tuple[str, np.ndarray]:
    """(what was said, the audio): `text` read at `LONG_SPEED` and repeated until it lasts over `seconds`."""
    spoken = text
    audio = speak(spoken, voice, LONG_SPEED)
    while len(audio) <= seconds * SAMPLING_RATE:
        spoken = f"{spoken} Once more: {text}"
        audio = speak(spoken, voice, LONG_SPEED)
    return spoken, audio


def write_dataset(folder: Path, per_category: int = PER_CATEGORY, seed: int = SEED) -> Path:
    """Write audio files and `metadata.jsonl` (Hub layout) for the tiny dataset."""
    import soundfile as sf

    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 1)
    with open(folder / "metadata.jsonl", "w") as meta:
        for row in generate_questions(per_category, seed):
            file_name = f"data/question_{row['id']}.flac"
            voice, speed = rng.choice(VOICES), rng.choice(SPEEDS)
            if row["id"] % LONG_EVERY == LONG_EVERY - 1:
                row["transcript"], audio = read_slowly_past(LONG_SECONDS, row["transcript"], voice)
            else:
                audio = speak(row["transcript"], voice, speed)
            sf.write(folder / file_name, audio, SAMPLING_RATE, format="FLAC", subtype="PCM_16")
            meta.write(json.dumps({"file_name": file_name, **row}) + "\n")
    return folder
