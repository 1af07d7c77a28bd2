"""tutorial_kit.widgets: the widgets' logic, run without a browser (tests/scenarios/test_browser.py clicks them)."""
import io
import warnings
from datetime import UTC, datetime

import matplotlib
import numpy as np
import pytest
import soundfile as sf

matplotlib.use("Agg")

from helpers.audio import load_audio
from helpers.evaluate import evaluate  # noqa: E402
from tutorial_kit import (
    widgets,  # noqa: E402
)

matplotlib.use("Agg")


def test_audio_browser_selects_rows_of_the_category(splits):
    browser = widgets.AudioBrowser(splits["test"])
    index = browser.select("web_of_lies", 2)
    assert splits["test"][index]["category"] == "web_of_lies"
    assert browser.widget is browser.show()
    browser.category.value = "navigate"  # the observer resets the slider to the new category
    assert browser.position.value == 0 and browser.position.max == len(browser.by_category["navigate"]) - 1
    browser.position.value = 1
    shown = splits["test"][browser.select("navigate", 1)]
    assert f"<b>id</b> {shown['id']} " in browser.view.value and "<audio controls" in browser.view.value
    with pytest.raises(ValueError, match="position 99 is out of range"):
        browser.select("navigate", 99)
    with pytest.raises(ValueError, match="No rows of category 'sports'"):
        browser.select("sports", 0)


def test_describe_and_player(splits):
    row = splits["test"][0]
    card = widgets.row_card(row, {"model said": "<b>x</b>"})
    assert row["category"] in card and "&lt;b&gt;x&lt;/b&gt;" in card
    wav = sf.info(io.BytesIO(widgets.player(row["audio"]).data))
    assert wav.samplerate == 16000 and abs(wav.duration - len(load_audio(row["audio"])) / 16000) < 0.01


def test_wrong_answers_browser(model_and_processor, splits):
    result = evaluate(*model_and_processor, splits["test"].select(range(4)), max_new_tokens=3, progress=False)
    box = widgets.wrong_answers(result, splits["test"])
    assert len(box.children[0].options) == len(result.wrong())
    first = result.wrong()[0]
    assert f"<b>id</b> {first['id']} " in box.children[1].value and "model said" in box.children[1].value


def wav_upload(audio, rate, name="mine.wav"):
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV")
    return ({"name": name, "type": "audio/wav", "size": buffer.tell(), "content": memoryview(buffer.getvalue())},)


def test_ask_your_own_recording(model_and_processor, splits):
    model, processor = model_and_processor
    asker = widgets.AskYourOwn(model, processor, max_new_tokens=4)
    speech = load_audio(splits["test"][0]["audio"])
    stereo_44k = np.stack([speech, speech], axis=1).repeat(2, axis=0)[: len(speech) * 2]  # 32 kHz stereo
    result = asker.ask(wav_upload(stereo_44k, 32000), "navigate")
    assert result["file"] == "mine.wav" and abs(result["seconds"] - len(speech) / 16000) < 0.05
    direct = widgets.generate_answers(model, processor, [{"audio": {"array": speech, "sampling_rate": 16000},
                                                          "category": "navigate"}], max_new_tokens=4)[0]
    assert isinstance(result["answer"], str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert asker.ask(wav_upload(speech, 16000), "other")["file"] == "mine.wav"
    assert asker.ask(wav_upload(speech, 16000), "navigate")["answer"] == direct


def test_ask_without_or_with_a_broken_upload(model_and_processor):
    asker = widgets.AskYourOwn(*model_and_processor)
    with pytest.raises(ValueError, match="Upload a recording first"):
        asker.ask((), "navigate")
    broken = ({"name": "notes.mp3", "type": "audio/mpeg", "size": 16,
               "last_modified": datetime.now(UTC),
               "content": memoryview(b"not audio at all")},)
    with pytest.raises(ValueError, match="file 'notes.mp3': could not decode audio"):
        asker.ask(broken, "navigate")
    asker.upload.value = broken
    asker._on_click(asker.button)  # what the button does: the error is shown, not raised
    assert "could not decode audio" in asker.view.value
