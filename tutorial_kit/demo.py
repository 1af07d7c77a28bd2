"""Talk to your model: a small Gradio app with a microphone, for Jupyter and Colab.

`build_demo(model, processor)` makes the app: record (or upload) a question, pick its kind,
press **Ask**. Audio goes through the same `load_audio` and `generate_answers` as training and
evaluation, so the app hears exactly what the evaluation measured. `launch_demo(app)` shows it
inline in Jupyter and VS Code, and through a share link opened in a new tab in Colab, where the
browser refuses the microphone to anything inside the notebook's output.

The app is also an API: `gradio_client.Client(url).predict(handle_file(path), "navigate",
api_name="/ask")` returns the answer text.

gradio is imported inside the functions: it takes seconds to import, and the rest of the
tutorial does not need it.
"""
from __future__ import annotations

import html
import math
import sys
from pathlib import Path

import numpy as np

from helpers.audio import SAMPLING_RATE, load_audio
from helpers.evaluate import generate_answers
from helpers.tasks import TASKS

CATEGORY_LABELS = {category: task.label for category, task in TASKS.items()}

# A microphone that is muted, or that the browser was not allowed to use, records digital silence;
# even a quiet room stays above -60 dBFS, and speech peaks far higher.
SILENCE_DBFS = -60.0
UNREADABLE = ("could not be decoded as audio: the file is damaged, or not in a sound format ffmpeg reads "
              "(wav, mp3, flac, ogg, m4a, webm).")
NO_RECORDING = "Record a question with the microphone or upload a file first, then press Ask."
COLAB_NOTE = (
    "Colab: the browser does not let the notebook's output use your microphone, so the app opens "
    "through a temporary public share link instead. Open it in a new tab (link below). Anyone who "
    "has the link can use your model while this notebook runs; `demo.close()` stops it. "
    "Uploading a file works in both places."
)

_running = []  # the app launched last, so a re-run cell replaces it instead of starting another


def _peak_dbfs(audio: np.ndarray) -> float:
    peak = float(np.max(np.abs(audio)))
    return -math.inf if peak == 0 else 20 * math.log10(peak)


def recording_for_model(path) -> np.ndarray:
    """16 kHz mono audio of the file at `path`, or a `ValueError` whose text a learner can act on.

    The message names the file by its own name, not by the temporary path the server stored it under.
    """
    if path is None:
        raise ValueError(NO_RECORDING)
    name = Path(path).name
    if Path(path).exists() and Path(path).stat().st_size == 0:
        raise ValueError(f"{name!r} is empty (0 bytes): record again or choose another file.")
    try:
        audio = load_audio(str(path))
    except ValueError as error:
        if error.__cause__ is not None:  # the decoder failed: its own text is about C++ internals
            raise ValueError(f"{name!r} {UNREADABLE}") from None
        # load_audio's problems (too short, too long, NaN...) read well after the file's name
        raise ValueError(f"{name!r}: {str(error).removeprefix('audio: ')}") from None
    level = _peak_dbfs(audio)
    if level < SILENCE_DBFS:
        loudness = "contains only silence" if level == -math.inf else f"never gets louder than {level:.0f} dBFS"
        raise ValueError(
            f"{name!r} is silent: it {loudness}. Check that the microphone is switched on, not muted and "
            "allowed in the browser (the icon in the address bar), then record again."
        )
    return audio


def answer_recording(model, processor, path, category: str, max_new_tokens: int = 16) -> str:
    """The model's answer to the recording at `path`, asked with `category`'s instruction."""
    if category not in CATEGORY_LABELS:
        raise ValueError(f"Unknown kind of question {category!r}; choose one of {list(CATEGORY_LABELS)}.")
    audio = recording_for_model(path)
    row = {"audio": {"array": audio, "sampling_rate": SAMPLING_RATE}, "category": category}
    return generate_answers(model, processor, [row], max_new_tokens=max_new_tokens)[0]


def build_demo(model, processor, max_new_tokens: int = 16, title: str = "Ask Voxtral about a recording"):
    """A Gradio Blocks app: microphone or upload, the kind of question, **Ask**, the answer.

    Its API endpoint `/ask` takes (audio file path, category) and returns the answer text.
    Unusable audio shows a message in the app (and reaches API clients as an error with the
    same text); the app keeps answering afterwards.
    """
    import gradio as gr

    def ask(path, category):
        try:
            return answer_recording(model, processor, path, category, max_new_tokens)
        except ValueError as error:
            # a message to act on rather than a traceback; gr.Error renders HTML, hence the escaping
            raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"## {title}\n"
            "Record a question in the style of one of the four tasks (or upload a wav, mp3, flac... "
            "file, any sample rate, mono or stereo), choose what kind of question it is, then press **Ask**."
        )
        with gr.Row():
            audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Your question",
                             buttons=["download"])
            with gr.Column():
                category = gr.Dropdown(choices=[(label, key) for key, label in CATEGORY_LABELS.items()],
                                       value="navigate", label="Kind of question")
                button = gr.Button("Ask", variant="primary")
                answer = gr.Textbox(label="Answer", interactive=False)
        button.click(ask, inputs=[audio, category], outputs=answer, api_name="ask")
        # An answer belongs to one recording and one kind of question: a new choice clears it
        # (in the browser alone, so it is no API endpoint).
        gr.on([audio.change, category.change], fn=None, js="() => ''", outputs=answer)
    return demo


def launch_demo(demo, **launch_options):
    """Start `demo` without blocking the notebook and return it; `demo.close()` stops it.

    Jupyter, JupyterLab, VS Code: shown inline, served on this machine only. Colab: the
    microphone does not work inside the notebook's output (the frame is not allowed to use it),
    so the app gets a public share link that opens in a new tab, and a note says why.
    A notebook served from another machine (JupyterHub, a cloud VM) cannot show an app that
    listens on its own 127.0.0.1: pass `share=True` there too.
    Any `launch_options` go to `gr.Blocks.launch` (e.g. `server_port=7861`, `share=False`).
    """
    in_colab = "google.colab" in sys.modules
    for previous in _running:
        previous.close()
    _running.clear()
    launch_options.setdefault("share", in_colab)
    if in_colab:
        launch_options.setdefault("inline", False)
        print(COLAB_NOTE)
    launch_options.setdefault("prevent_thread_lock", True)
    launch_options.setdefault("show_error", True)
    launch_options.setdefault("quiet", True)  # gradio's message advises share=True, which only Colab needs here
    demo.launch(**launch_options)
    _running.append(demo)
    if not in_colab and getattr(demo, "local_url", None):
        print(f"The app runs on this machine at {demo.local_url} and below.")
    if in_colab and demo.share_url:
        from IPython.display import HTML, display

        display(HTML(f'<a href="{html.escape(demo.share_url)}" target="_blank" rel="noopener" '
                     'style="font-size:1.2em">Open the app in a new tab</a>'))
    elif in_colab:
        print("No share link could be made (is the runtime offline?). Upload a file in the notebook instead.")
    return demo
