import warnings

import numpy as np
import pytest

from helpers import tasks
from helpers.tasks import (
    GENERIC_INSTRUCTION,
    INSTRUCTIONS,
    answer_text,
    build_conversation,
)

AUDIO = {"array": np.zeros(16000, np.float32), "sampling_rate": 16000}


@pytest.mark.parametrize("category, must_say", [
    ("navigate", "Yes or No"), ("web_of_lies", "Yes or No"),
    ("formal_fallacies", "valid or invalid"), ("object_counting", "number"),
])
def test_instructions_name_the_answer_format(category, must_say):
    conversation = build_conversation({"audio": AUDIO, "category": category})
    assert [m["role"] for m in conversation] == ["user"]  # no system turn
    audio, text = conversation[0]["content"]
    assert audio["type"] == "audio" and audio["base64"]
    assert text == {"type": "text", "text": INSTRUCTIONS[category]} and must_say in text["text"]


def test_navigate_asks_the_yes_no_question_not_a_direction():
    assert "return to the starting point" in INSTRUCTIONS["navigate"]


def test_answer_turn():
    conversation = build_conversation({"audio": AUDIO, "category": "navigate"}, answer="Yes")
    assert conversation[-1] == {"role": "assistant", "content": "Yes"}


def test_unknown_category_warns_once_and_uses_generic(monkeypatch):
    monkeypatch.setattr(tasks, "_warned_categories", set())
    with pytest.warns(UserWarning, match="Unknown or missing category 'sports'"):
        conversation = build_conversation({"audio": AUDIO, "category": "sports"})
    assert conversation[0]["content"][1]["text"] == GENERIC_INSTRUCTION
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_conversation({"audio": AUDIO, "category": "sports"})  # no second warning
    with pytest.warns(UserWarning, match="category None"):
        build_conversation({"audio": AUDIO})


def test_answer_text_normalises_and_refuses():
    assert answer_text(7) == "7" and answer_text(7.0) == "7" and answer_text(" Yes ") == "Yes"
    assert answer_text("Größe ✓") == "Größe ✓"
    with pytest.raises(ValueError, match="sample 4: missing 'official_answer'"):
        answer_text(None, 4)
    with pytest.raises(ValueError, match="sample 5: empty 'official_answer'"):
        answer_text("  ", 5)


def test_missing_audio():
    with pytest.raises(ValueError, match="sample 9: missing 'audio'"):
        build_conversation({"id": 9, "category": "navigate"})
