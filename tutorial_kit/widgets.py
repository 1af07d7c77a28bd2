"""ipywidgets browsers and the upload-your-own-recording cell.

Widgets render headless, but their callbacks only fire in a live notebook, so each widget's
logic lives in a plain method (`select`, `ask`) that tests call directly. Views are `HTML`
widgets whose value is replaced (card + `<audio>` tag): displaying an IPython `Audio` inside an
`Output` widget hung headless execution (nbclient) after matplotlib figures had been shown.
"""
from __future__ import annotations

import base64
import html

import ipywidgets as widgets
from IPython.display import HTML, Audio

from helpers.audio import SAMPLING_RATE, load_audio
from helpers.evaluate import generate_answers, normalize_answer
from helpers.tasks import INSTRUCTIONS


def player(audio, sampling_rate: int = SAMPLING_RATE) -> Audio:
    """An audio player that also renders on GitHub and in static HTML (no widget manager needed)."""
    return Audio(load_audio(audio, sampling_rate), rate=SAMPLING_RATE, autoplay=False)


def audio_tag(audio, sampling_rate: int | None = None) -> str:
    """An HTML `<audio>` player with the clip embedded as a WAV data URI."""
    from helpers.audio import wav_bytes

    data = base64.b64encode(wav_bytes(load_audio(audio, sampling_rate))).decode("ascii")
    return f'<audio controls preload="none" src="data:audio/wav;base64,{data}"></audio>'


def row_card(row: dict, extra: dict | None = None, audio=None) -> str:
    """A small HTML card: category, answer, duration and, where the dataset has it, the transcript.
    Pass the already decoded 16 kHz `audio` to skip decoding the row's audio again."""
    if audio is None:
        audio = load_audio(row["audio"], index=row.get("id"))
    seconds = len(audio) / SAMPLING_RATE
    lines = [f"<b>id</b> {row.get('id', '?')} &middot; <b>category</b> {html.escape(str(row.get('category')))}"
             f" &middot; <b>answer</b> {html.escape(str(row.get('official_answer')))} &middot; {seconds:.1f} s"]
    for key, value in (extra or {}).items():
        lines.append(f"<b>{html.escape(key)}</b> {html.escape(str(value))}")
    if row.get("transcript"):
        lines.append(f"<i>{html.escape(row['transcript'])}</i>")
    return "<br>".join(lines)


def card_with_player(row: dict, extra: dict | None = None) -> str:
    """Player and card for one row, decoding its audio once."""
    audio = load_audio(row["audio"], index=row.get("id"))
    return audio_tag(audio, SAMPLING_RATE) + "<br>" + row_card(row, extra, audio=audio)


class AudioBrowser:
    """Category dropdown + index slider + player + card, over a dataset."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.by_category: dict[str, list[int]] = {}
        for index, category in enumerate(dataset["category"]):
            self.by_category.setdefault(str(category), []).append(index)
        categories = sorted(self.by_category)
        self.category = widgets.Dropdown(options=categories, value=categories[0], description="category")
        self.position = widgets.IntSlider(min=0, max=len(self.by_category[categories[0]]) - 1, description="#")
        self.view = widgets.HTML()
        self.category.observe(self._on_category, names="value")
        self.position.observe(lambda change: self._render(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.category, self.position]), self.view])

    def select(self, category: str, position: int) -> int:
        """The dataset index shown for `category`'s `position`-th row (raises on a bad choice)."""
        if category not in self.by_category:
            raise ValueError(f"No rows of category {category!r}; choose one of {sorted(self.by_category)}.")
        indices = self.by_category[category]
        if not 0 <= position < len(indices):
            raise ValueError(f"Category {category!r} has {len(indices)} rows; position {position} is out of range.")
        return indices[position]

    def _on_category(self, change):
        self.position.max = len(self.by_category[change["new"]]) - 1
        self.position.value = 0
        self._render()

    def _render(self):
        index = self.select(self.category.value, self.position.value)
        row = self.dataset[index]
        self.view.value = card_with_player(row)

    def show(self):
        self._render()
        return self.widget


def wrong_answers(result, dataset, limit: int = 50):
    """Dropdown over the wrong (or unparseable) predictions of an evaluation, with player and card."""
    wrong = result.wrong()[:limit]
    if not wrong:
        return HTML("<b>No wrong answers.</b>")
    by_id = {row_id: i for i, row_id in enumerate(dataset["id"])} if "id" in dataset.column_names else {}
    options = [(f"{p['category']} #{p['id']}: said {p['prediction']!r}, answer {p['answer']!r}", k)
               for k, p in enumerate(wrong)]
    choice = widgets.Dropdown(options=options, description="wrong", layout=widgets.Layout(width="90%"))
    view = widgets.HTML()

    def render(change=None):
        p = wrong[choice.value]
        row = dataset[by_id.get(p["id"], p["id"])]
        view.value = card_with_player(row, {"model said": p["prediction"], "parsed as": p["parsed"]})

    choice.observe(render, names="value")
    render()
    return widgets.VBox([choice, view])


class AskYourOwn:
    """Upload a recording, pick the kind of question, and ask the model."""

    def __init__(self, model, processor, max_new_tokens: int = 16):
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens
        self.upload = widgets.FileUpload(accept="audio/*,.wav,.mp3,.flac,.ogg,.m4a", multiple=False,
                                         description="recording")
        self.category = widgets.Dropdown(options=sorted(INSTRUCTIONS) + ["other"], value="navigate",
                                         description="question")
        self.button = widgets.Button(description="Ask", button_style="primary")
        self.view = widgets.HTML()
        self.button.on_click(self._on_click)
        self.widget = widgets.VBox([widgets.HBox([self.upload, self.category, self.button]), self.view])

    def ask(self, uploaded, category: str) -> dict:
        """Answer an uploaded file (FileUpload's value: a tuple of dicts with `name` and `content`).

        Returns the raw answer, the parsed answer and the audio length; raises `ValueError` that
        names the file when there is none or it cannot be read.
        """
        if not uploaded:
            raise ValueError("Upload a recording first (wav, mp3, flac, ...).")
        item = uploaded[0]
        name = item.get("name", "upload")
        audio = load_audio(bytes(item["content"]), index=f"file {name!r}")
        row = {"audio": {"array": audio, "sampling_rate": SAMPLING_RATE},
               "category": None if category == "other" else category}
        text = generate_answers(self.model, self.processor, [row], max_new_tokens=self.max_new_tokens)[0]
        return {"file": name, "seconds": len(audio) / SAMPLING_RATE, "answer": text,
                "parsed": normalize_answer(text, row["category"])}

    def _on_click(self, _button):
        try:
            result = self.ask(self.upload.value, self.category.value)
        except ValueError as error:
            self.view.value = f"<b style='color:#C44E52'>{html.escape(str(error))}</b>"
            return
        self.view.value = (f"<b>{html.escape(result['file'])}</b> ({result['seconds']:.1f} s): "
                           f"model says <b>{html.escape(result['answer'])}</b> (parsed: {result['parsed']})")

    def show(self):
        return self.widget
