"""The four Big Bench Audio tasks, and the one prompt builder used for training, evaluation and the pipeline.

Everything the tutorial knows about a category lives here: its instruction, the kind of answer
it expects, and its label in the demo. A new category needs one `Task` entry.

The published recipe trains on per-category prompts but asks a different, generic question at
inference time, so the model is evaluated on a prompt it never saw. Here both go through
`build_conversation`, and a test checks the tokens match.

Built in notebooks 01 and 02 (the four tasks, the prompt).
"""
from __future__ import annotations

import base64
import warnings
from dataclasses import dataclass

from helpers.rows import sample_name


@dataclass(frozen=True)
class Task:
    instruction: str  # what the model is asked, after the audio
    answer_kind: str  # "yes/no", "valid/invalid" or "number": how a reply is normalised
    label: str  # how the demo names it


TASKS = {
    "formal_fallacies": Task(
        "Listen to the argument. Is the argument, given the explicitly stated premises, "
        "deductively valid or invalid? Answer with one word: valid or invalid.",
        "valid/invalid", "Formal fallacies (valid / invalid)"),
    "navigate": Task(
        "Listen to the instructions. If you follow these instructions, do you return to the "
        "starting point? Answer with one word: Yes or No.",
        "yes/no", "Navigate (Yes / No)"),
    "object_counting": Task(
        "Listen to the question about the things I have. Answer with a single number, in digits.",
        "number", "Object counting (a number)"),
    "web_of_lies": Task(
        "Listen to the statements about who lies and who tells the truth, then answer the "
        "question. Answer with one word: Yes or No.",
        "yes/no", "Web of lies (Yes / No)"),
}
CATEGORIES = tuple(TASKS)
INSTRUCTIONS = {category: task.instruction for category, task in TASKS.items()}


GENERIC_INSTRUCTION = "Listen to the question and answer it. Give only the answer, as briefly as possible."

_warned_categories: set = set()


def instruction_for(category) -> str:
    """The instruction for a category; a generic one (with a single warning) for unknown ones."""
    if category in TASKS:
        return TASKS[category].instruction
    if category not in _warned_categories:
        _warned_categories.add(category)
        warnings.warn(
            f"Unknown or missing category {category!r}: using the generic instruction "
            f"{GENERIC_INSTRUCTION!r}. Known categories: {list(CATEGORIES)}.",
            stacklevel=3,
        )
    return GENERIC_INSTRUCTION


def answer_text(answer, index=None) -> str:
    """The answer as the string the model learns: `7` becomes "7"; empty answers are refused."""
    where = sample_name(index=index)
    if answer is None:
        raise ValueError(f"{where}: missing 'official_answer'; a training row needs an answer.")
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    text = str(answer).strip()
    if not text:
        raise ValueError(f"{where}: empty 'official_answer'; a training row needs an answer.")
    return text


def row_instruction(sample: dict) -> str:
    """What the model is asked after the audio: the row's own `question` when it has one (your own data,
    `tutorial_kit.own_data`), else its category's instruction."""
    question = sample.get("question")
    if isinstance(question, str) and question.strip():
        return question.strip()
    return instruction_for(sample.get("category"))


def audio_content(audio) -> dict:
    """A chat `audio` entry for Voxtral's processor: base64 WAV of the (16 kHz mono) audio."""
    from helpers.audio import load_audio, wav_bytes

    return {"type": "audio", "base64": base64.b64encode(wav_bytes(load_audio(audio))).decode("ascii")}


def build_conversation(sample: dict, answer=None) -> list[dict]:
    """Chat messages for one sample: a user turn with the audio and its instruction (`row_instruction`),
    plus an assistant turn with `answer` when given. No system turn: Voxtral has none.

    `sample` needs `audio` (anything `helpers.audio.load_audio` accepts) and may have `category`.
    """
    if sample.get("audio") is None:
        raise ValueError(f"{sample_name(sample)}: missing 'audio'; there is nothing to ask about.")
    content = [audio_content(sample["audio"]), {"type": "text", "text": row_instruction(sample)}]
    conversation = [{"role": "user", "content": content}]
    if answer is not None:
        conversation.append({"role": "assistant", "content": answer_text(answer, sample.get("id"))})
    return conversation
