"""The microphone demo, served for real on 127.0.0.1 and called through gradio_client.

The recordings are the ones that break notebook uploads: a 10-s 44.1 kHz stereo WAV over 1 MB
(ipywidgets' FileUpload drops files of 1 MB or more in Colab), an MP3, and unusable files
(damaged, empty, too short, silent). Every answer is compared with `generate_answers` on the same
audio, so the app cannot pass by returning canned text. The tests that serve the app are
`extended` (about 30 s together); the quick ones check the app's parts and how it is launched.
"""
import io
import os
import socket
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
import soundfile as sf

from helpers.audio import SAMPLING_RATE, load_audio
from helpers.evaluate import generate_answers
from helpers.tasks import CATEGORIES

try:
    import gradio  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise  # CI installs the `demo` extra: without gradio the setup is broken, not the test optional
    pytest.skip("the demo needs gradio: pip install -e '.[demo]'", allow_module_level=True)
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from tutorial_kit import demo as demo_module  # noqa: E402

MAX_NEW_TOKENS = 4
QUESTION = ("Always face forward. Take three steps left. Take three steps right. Take two steps forward. "
            "Take two steps backward. Do you return to the starting point?")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def espeak(text: str) -> tuple[np.ndarray, int]:
    """espeak-ng's own output (22.05 kHz mono), before any resampling of ours."""
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", text],
                         check=True, capture_output=True).stdout
    return sf.read(io.BytesIO(wav), dtype="float32")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    from scipy.signal import resample_poly

    folder = tmp_path_factory.mktemp("recordings")
    speech, rate = espeak(QUESTION)
    assert rate == 22050
    at_44k = resample_poly(speech, 2, 1)[: 10 * 44100]
    at_44k = np.pad(at_44k, (0, 10 * 44100 - len(at_44k)))  # 10 s exactly: speech, then quiet
    stereo = np.stack([at_44k, 0.7 * at_44k], axis=1)  # channels differ, so mono is really a mix
    files = {"question_44k_stereo.wav": folder / "question_44k_stereo.wav",
             "question.mp3": folder / "question.mp3"}
    sf.write(files["question_44k_stereo.wav"], stereo, 44100, subtype="PCM_16")
    sf.write(files["question.mp3"], speech, rate, format="MP3")
    for name, content in {"broken.wav": b"RIFF\x24\x00\x00\x00WAVEthis is not audio at all",
                          "empty.wav": b""}.items():
        files[name] = folder / name
        files[name].write_bytes(content)
    files["short.wav"] = folder / "short.wav"
    sf.write(files["short.wav"], 0.3 * np.sin(np.arange(800) / 5.0), SAMPLING_RATE)  # 50 ms
    files["silent.wav"] = folder / "silent.wav"
    sf.write(files["silent.wav"], np.zeros(2 * SAMPLING_RATE), SAMPLING_RATE, subtype="PCM_16")
    return files


@pytest.fixture(scope="module")
def served(model_and_processor):
    """The app on a free port of 127.0.0.1 and a real client for it; closed at the end."""
    model, processor = model_and_processor
    app = demo_module.build_demo(model, processor, max_new_tokens=MAX_NEW_TOKENS)
    demo_module.launch_demo(app, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        yield app, Client(app.local_url, verbose=False)
    finally:
        app.close()


def expected_answer(model_and_processor, path, category) -> str:
    model, processor = model_and_processor
    row = {"audio": {"array": load_audio(str(path)), "sampling_rate": SAMPLING_RATE}, "category": category}
    return generate_answers(model, processor, [row], max_new_tokens=MAX_NEW_TOKENS)[0]


def test_importing_the_demo_module_does_not_import_gradio():
    code = "import sys, helpers, tutorial_kit.demo; print('gradio' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert loaded.strip() == "False"


def test_the_app_has_microphone_upload_and_the_four_kinds_of_question(model_and_processor):
    import gradio as gr

    app = demo_module.build_demo(*model_and_processor)
    audio = [block for block in app.blocks.values() if isinstance(block, gr.Audio)]
    dropdown = [block for block in app.blocks.values() if isinstance(block, gr.Dropdown)]
    assert len(audio) == 1 and audio[0].sources == ["microphone", "upload"] and audio[0].type == "filepath"
    assert len(dropdown) == 1 and [value for _, value in dropdown[0].choices] == list(CATEGORIES)
    assert all(label != value and "_" not in label for label, value in dropdown[0].choices)
    assert any(isinstance(block, gr.Button) and block.value == "Ask" for block in app.blocks.values())


@pytest.mark.extended
def test_recordings_in_any_format_are_answered_by_the_model(served, recordings, model_and_processor):
    app, client = served
    wav = recordings["question_44k_stereo.wav"]
    info = sf.info(wav)
    assert (info.samplerate, info.channels, info.duration) == (44100, 2, 10.0) and wav.stat().st_size > 1_000_000
    assert list(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == ["/ask"]
    for path, category in [(wav, "navigate"), (recordings["question.mp3"], "object_counting")]:
        answer = client.predict(handle_file(str(path)), category, api_name="/ask")
        assert isinstance(answer, str)
        assert answer == expected_answer(model_and_processor, path, category)


@pytest.mark.extended
@pytest.mark.parametrize("name, words", [
    ("broken.wav", "could not be decoded as audio"),
    ("empty.wav", "is empty (0 bytes)"),
    ("short.wav", "at least 0.1 s is needed"),
    ("silent.wav", "is silent"),
])
def test_unusable_files_get_a_readable_message_and_the_app_keeps_answering(served, recordings, name, words,
                                                                            model_and_processor):
    app, client = served
    with pytest.raises(AppError) as raised:
        client.predict(handle_file(str(recordings[name])), "web_of_lies", api_name="/ask")
    message = str(raised.value)
    assert name in message and words in message, message
    assert "Traceback" not in message and "/tmp" not in message and ".cpp" not in message
    wav = recordings["question_44k_stereo.wav"]
    answer = client.predict(handle_file(str(wav)), "formal_fallacies", api_name="/ask")
    assert answer == expected_answer(model_and_processor, wav, "formal_fallacies")


@pytest.mark.extended
def test_asking_without_a_recording_says_what_to_do(served):
    app, client = served
    with pytest.raises(AppError, match="Record a question with the microphone or upload a file"):
        client.predict(None, "navigate", api_name="/ask")


@pytest.mark.extended
def test_launching_again_closes_the_previous_app(model_and_processor):
    first = demo_module.build_demo(*model_and_processor)
    second = demo_module.build_demo(*model_and_processor)
    try:
        demo_module.launch_demo(first, server_name="127.0.0.1", server_port=free_port(), quiet=True)
        assert first.is_running
        demo_module.launch_demo(second, server_name="127.0.0.1", server_port=free_port(), quiet=True)
        assert second.is_running and not first.is_running  # one model server per notebook, not one per run
    finally:
        first.close()
        second.close()


class RecordedLaunch:
    """Stands in for a Blocks app where a real launch would open a public tunnel (no network here)."""

    share_url = "https://0123456789abcdef.gradio.live"
    is_running = False

    def launch(self, **options):
        self.options = options

    def close(self):
        pass


def test_in_colab_the_app_opens_through_a_share_link_in_a_new_tab(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objects: shown.extend(objects))
    app = RecordedLaunch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        demo_module.launch_demo(app)
    assert app.options["share"] is True and app.options["inline"] is False
    said = capsys.readouterr().out
    assert "microphone" in said and "new tab" in said and "public" in said
    assert any(RecordedLaunch.share_url in getattr(item, "data", "") for item in shown)


def test_outside_colab_the_app_is_shown_inline_without_a_public_link(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    app = RecordedLaunch()
    demo_module.launch_demo(app)
    assert app.options["share"] is False and app.options.get("inline") is None  # gradio: inline in notebooks


def test_outside_colab_gradio_does_not_advise_a_public_link(monkeypatch, capsys):
    """Gradio's own launch message ends '* To create a public link, set `share=True`', advice a learner
    on their own machine does not need: launch quietly and say where the app is instead."""
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    app = RecordedLaunch()
    app.local_url = "http://127.0.0.1:7860/"
    demo_module.launch_demo(app)
    assert app.options["quiet"] is True
    said = capsys.readouterr().out
    assert "http://127.0.0.1:7860/" in said and "share" not in said
