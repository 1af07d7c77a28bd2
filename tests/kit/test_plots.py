"""tutorial_kit.plots: the figures are built from real data and show what they claim, readable at notebook width."""
import io

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

matplotlib.use("Agg")

from helpers.audio import load_audio
from helpers.collator import VoxtralAudioCollator  # noqa: E402
from helpers.data import duration_seconds  # noqa: E402
from tutorial_kit import (
    plots,  # noqa: E402
    )

matplotlib.use("Agg")


def test_category_balance_has_a_bar_per_answer(splits):
    fig = plots.category_balance(splits["train"])
    bars = fig.axes[0].patches
    counts = sum(len(set(a for c2, a in zip(splits["train"]["category"], splits["train"]["official_answer"]) if c2 == c))
                 for c in set(splits["train"]["category"]))
    assert len(bars) == counts
    assert sum(b.get_height() for b in bars) == len(splits["train"])
    assert displayed_font_px(fig) >= 10


def displayed_font_px(fig, display_width_px: int = 800) -> float:
    """The smallest text in the figure, in screen pixels, once a notebook shows it at most
    `display_width_px` wide (the inline backend saves at 100 dpi with a tight bounding box)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    width_px = plt.imread(io.BytesIO(buffer.getvalue())).shape[1]
    scale = min(1.0, display_width_px / width_px)
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    return min(t.get_fontsize() for t in texts) * 100 / 72 * scale


def test_durations_one_panel_per_category_with_the_chunk_boundary(splits):
    train = splits["train"]
    seconds = duration_seconds(train)
    fig = plots.durations(seconds, train["category"])
    categories = sorted(set(train["category"]))
    assert len(fig.axes) == len(categories)
    for ax, category in zip(fig.axes, categories):
        assert category in ax.get_title(loc="left")
        assert sum(bar.get_height() for bar in ax.containers[0]) == train["category"].count(category)
        assert any(list(line.get_xdata()) == [30, 30] for line in ax.lines), f"{category}: no 30-s line"
        assert ax.get_xlim() == fig.axes[0].get_xlim() and ax.get_xlim()[1] > 30
    assert displayed_font_px(fig) >= 10


def test_durations_refuses_mismatched_lists():
    with pytest.raises(ValueError, match="3 durations but 2 categories"):
        plots.durations([1.0, 2.0, 3.0], ["navigate", "navigate"])


def test_waveform_and_mel(splits, processor):
    row = splits["test"][0]
    features = VoxtralAudioCollator(processor)([row])["input_features"]
    fig = plots.waveform_and_mel(load_audio(row["audio"]), features[0])
    assert fig.axes[1].images[0].get_array().shape == (128, 3000)
    assert displayed_font_px(fig) >= 10


def test_loss_curves():
    history = [{"loss": 3.0, "step": 1}, {"loss": 2.0, "step": 2}, {"eval_loss": 2.5, "step": 2}]
    fig = plots.loss_curves(history)
    assert [len(line.get_xdata()) for line in fig.axes[0].lines] == [2, 1]
    with pytest.raises(ValueError, match="no 'loss'"):
        plots.loss_curves([{"train_runtime": 1.0}])


def fake_predictions():
    """Predictions shaped like `helpers.evaluate.evaluate`'s: every category, numbers up to 12, some unparseable."""
    rng = np.random.default_rng(0)
    options = {"formal_fallacies": ["valid", "invalid"], "navigate": ["Yes", "No"], "web_of_lies": ["Yes", "No"],
               "object_counting": [str(n) for n in range(2, 13)]}
    predictions = []
    for category, answers in options.items():
        for _ in range(25):
            answer = str(rng.choice(answers))
            parsed = answer if rng.random() < 0.6 else (None if rng.random() < 0.2 else str(rng.choice(answers)))
            predictions.append({"category": category, "answer": answer, "parsed": parsed})
    return predictions


def test_confusion_matrices_count_every_prediction():
    predictions = [
        {"category": "navigate", "answer": "Yes", "parsed": "No"},
        {"category": "navigate", "answer": "Yes", "parsed": None},
        {"category": "object_counting", "answer": "3", "parsed": "12"},
    ]
    fig = plots.confusion_matrices(predictions)
    totals = [ax.images[0].get_array().sum() for ax in fig.axes if ax.images]
    assert totals == [2, 1]


def test_confusion_matrices_readable_in_a_grid():
    predictions = fake_predictions()
    fig = plots.confusion_matrices(predictions)
    panels = [ax for ax in fig.axes if ax.images]
    categories = sorted({p["category"] for p in predictions})
    assert [ax.get_title().split(":")[0] for ax in panels] == categories
    assert [ax.get_subplotspec().rowspan.start for ax in panels] == [0, 0, 1, 1], "two panels per row"
    for ax, category in zip(panels, categories):
        rows = [p for p in predictions if p["category"] == category]
        assert ax.images[0].get_array().sum() == len(rows)
        right = sum(p["parsed"] == p["answer"] for p in rows)
        assert f"{right}/{len(rows)}" in ax.get_title()
        cells = [t for t in ax.texts if t.get_text().isdigit()]
        assert sum(int(t.get_text()) for t in cells) == len(rows), "every non-empty cell shows its count"
    assert displayed_font_px(fig) >= 10


def test_token_table_marks_learned_tokens(processor, splits):
    batch = VoxtralAudioCollator(processor)([splits["train"][0]])
    page = plots.token_table_html(processor.tokenizer, batch["input_ids"][0], batch["labels"][0])
    assert "[AUDIO] x375" in page and page.count("#55A868;color:white") == (batch["labels"][0] != -100).sum()


def test_the_path_diagram_reads_its_numbers_from_the_config(model_and_processor):
    from transformers import VoxtralConfig

    def texts(fig):
        return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])

    full = texts(plots.voxtral_path_diagram(VoxtralConfig()))
    for number in ("128 mel bins × 3,000 frames", "1,500 positions × 1,280 numbers", "375 tokens × 3,072 numbers",
                   "32 transformer layers", "stacks 4 neighbouring positions"):
        assert number in full, number
    assert "small stand-in" not in full
    tiny = texts(plots.voxtral_path_diagram(model_and_processor[0].config))
    assert "1,500 positions × 64 numbers" in tiny and "small stand-in" in tiny and "1,280 and 3,072" in tiny
    plt.close("all")


def test_log_mel_steps_draws_each_step(splits, processor):
    import torch

    extractor = processor.feature_extractor
    audio = load_audio(splits["test"][0]["audio"])
    window = torch.hann_window(extractor.n_fft)
    power = torch.stft(torch.from_numpy(audio), extractor.n_fft, extractor.hop_length, window=window,
                       return_complex=True).abs() ** 2
    mel_filters = torch.from_numpy(np.asarray(extractor.mel_filters, dtype=np.float32))
    log_mel = VoxtralAudioCollator(processor).audio_features(audio)[0]
    fig = plots.log_mel_steps(audio, power, mel_filters, log_mel, n_fft=extractor.n_fft,
                              hop_length=extractor.hop_length, sampling_rate=16000)
    assert len([ax for ax in fig.axes if ax.has_data()]) >= 5
    plt.close(fig)
