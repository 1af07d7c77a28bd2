"""Figures the notebooks show. Each returns its matplotlib Figure so tests and notebooks can save it."""
from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import MaxNLocator

from helpers.audio import CHUNK_SECONDS, SAMPLING_RATE
from helpers.data import category_counts

COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C",
          "#CCB974", "#64B5CD", "#1f77b4", "#ff7f0e"]


def category_balance(dataset, title: str = "Rows per category and answer"):
    """Stacked bars: how many rows each category has, split by answer."""
    counts = category_counts(dataset)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    categories = list(counts)
    for i, category in enumerate(categories):
        bottom = 0
        answers = sorted(counts[category], key=_answer_order)
        for j, answer in enumerate(answers):
            n = counts[category][answer]
            ax.bar(i, n, bottom=bottom, color=COLORS[j % len(COLORS)], edgecolor="white")
            if n >= max(2, 0.06 * sum(counts[category].values())):
                ax.text(i, bottom + n / 2, answer, ha="center", va="center", fontsize=9, color="white")
            bottom += n
    ax.set_xticks(range(len(categories)), categories)
    ax.set_ylabel("rows")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def durations(seconds: list[float], categories: list[str]):
    """Audio durations, one histogram per category on a shared time axis, the 30-s chunk boundary marked.

    Small multiples rather than overlaid histograms: each category stays visible, none hides another.
    """
    seconds, categories = np.asarray(seconds, dtype=float), np.asarray(categories)
    if len(seconds) != len(categories):
        raise ValueError(f"{len(seconds)} durations but {len(categories)} categories: give one category per clip.")
    if len(seconds) == 0:
        raise ValueError("No durations to plot: the dataset is empty.")
    names = sorted(set(categories.tolist()))
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.3 + 1.35 * len(names)), sharex=True, squeeze=False)
    bins = np.linspace(0, max(CHUNK_SECONDS * 1.15, seconds.max() * 1.05), 46)
    for i, (ax, category) in enumerate(zip(axes[:, 0], names)):
        mine = seconds[categories == category]
        ax.hist(mine, bins=bins, color=COLORS[i % len(COLORS)])
        ax.axvspan(CHUNK_SECONDS, bins[-1], color="grey", alpha=0.12, linewidth=0)
        for boundary in np.arange(CHUNK_SECONDS, bins[-1], CHUNK_SECONDS):
            ax.axvline(boundary, color="black", linestyle="--", linewidth=1.2)
        longer = int((mine > CHUNK_SECONDS).sum())
        ax.set_title(f"{category}: {len(mine)} clips, median {np.median(mine):.1f} s, {longer} over 30 s",
                     loc="left", fontsize=10)
        ax.set_ylabel("clips", fontsize=10)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))  # counts of clips: no fractional ticks
        ax.tick_params(labelsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1, 0].set_xlim(0, bins[-1])
    axes[-1, 0].set_xlabel("duration (s)", fontsize=10)
    boundaries = len(np.arange(CHUNK_SECONDS, bins[-1], CHUNK_SECONDS))
    fig.suptitle("Audio durations: each clip is padded to whole 30-s chunks\n"
                 f"(dashed: {'the chunk boundary' if boundaries == 1 else 'chunk boundaries'}; "
                 "a clip in the grey area costs two chunks or more)", fontsize=11)
    fig.tight_layout()
    return fig


def waveform_and_mel(audio: np.ndarray, features, title: str = ""):
    """The waveform and the log-mel features Voxtral sees (one 30-s chunk: 128 x 3000 frames)."""
    features = np.asarray(features)
    if features.ndim == 3:  # (chunks, 128, 3000) -> one long strip
        features = np.concatenate(list(features), axis=-1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.5, 4.8), gridspec_kw={"height_ratios": [1, 2]},
                                      sharex=True, layout="constrained")
    t = np.arange(len(audio)) / SAMPLING_RATE
    top.plot(t, audio, linewidth=0.4, color=COLORS[0])
    top.set_xlim(0, features.shape[-1] / 100)
    top.set_ylabel("amplitude")
    top.set_title(title or "Waveform and log-mel features")
    image = bottom.imshow(features, aspect="auto", origin="lower", cmap="magma",
                          extent=[0, features.shape[-1] / 100, 0, features.shape[0]])
    bottom.axvline(len(audio) / SAMPLING_RATE, color="white", linestyle="--", linewidth=1)
    bottom.text(len(audio) / SAMPLING_RATE, features.shape[0] * 0.9, "  end of speech: padding after",
                color="white", fontsize=9)
    bottom.set_xlabel("time (s); 100 mel frames per second")
    bottom.set_ylabel("mel bin")
    # beside both panels, so the waveform and the features share one time axis
    fig.colorbar(image, ax=[top, bottom], pad=0.01, label="log-mel", shrink=0.66, anchor=(0.0, 0.0))
    return fig


def log_mel_steps(audio: np.ndarray, power, mel_filters, log_mel, *, n_fft: int, hop_length: int,
                  sampling_rate: int = SAMPLING_RATE, title: str = ""):
    """From waveform to log-mel, one panel per step, on the speech part of one clip.

    `power`: the STFT's power (frequencies x frames); `mel_filters`: (frequencies, mel bins), as
    `WhisperFeatureExtractor.mel_filters`; `log_mel`: (mel bins, frames), the features the model sees.
    """
    power, mel_filters, log_mel = (np.asarray(a, dtype=float) for a in (power, mel_filters, log_mel))
    audio = np.asarray(audio, dtype=float)
    frames_per_second = sampling_rate / hop_length
    seconds = len(audio) / sampling_rate
    shown = min(power.shape[-1], int(np.ceil(seconds * frames_per_second)))  # the speech, not the padding after it
    hz = np.linspace(0, sampling_rate / 2, power.shape[0])
    window_ms, hop_ms = 1000 * n_fft / sampling_rate, 1000 * hop_length / sampling_rate

    fig, (wave, zoom, spectrum, filters, mel) = plt.subplots(
        5, 1, figsize=(8.5, 13), layout="constrained", gridspec_kw={"height_ratios": [1, 1.1, 1.5, 1.1, 1.5]})

    # 1. the waveform, and where the zoom below looks: around its loudest sample
    t = np.arange(len(audio)) / sampling_rate
    wave.plot(t, audio, linewidth=0.4, color=COLORS[0])
    width = 2 * n_fft + 2 * hop_length
    start = max(0, min(int(np.argmax(np.abs(audio))) - n_fft, len(audio) - width))
    wave.axvspan(start / sampling_rate, (start + width) / sampling_rate, color=COLORS[1], alpha=0.5)
    wave.set_xlim(0, shown / frames_per_second)
    wave.set_xlabel("time (s)")
    wave.set_ylabel("amplitude")
    wave.set_title(f"1. The waveform: {sampling_rate:,} samples per second (orange: the stretch zoomed in below)",
                   loc="left", fontsize=10)

    # 2. three windows of the STFT, one hop apart
    stretch = audio[start:start + width]
    ms = 1000 * np.arange(len(stretch)) / sampling_rate
    zoom.plot(ms, stretch / (np.abs(stretch).max() or 1), linewidth=0.8, color=COLORS[0])
    lefts = [hop_length // 2 + k * hop_length for k in range(3)]
    peaks = [1000 * (left + n_fft / 2) / sampling_rate for left in lefts]
    for k, (left, peak) in enumerate(zip(lefts, peaks)):
        x = 1000 * (left + np.arange(n_fft)) / sampling_rate
        zoom.plot(x, np.hanning(n_fft), color=COLORS[1 + k], linewidth=1.8)
        zoom.text(peak, 1.06, f"frame {k + 1}", color=COLORS[1 + k], ha="center", va="bottom", fontsize=9)
    zoom.annotate("", xy=(peaks[1], 1.42), xytext=(peaks[0], 1.42), arrowprops={"arrowstyle": "->", "linewidth": 1.2})
    zoom.text(peaks[1] + 1, 1.42, f"hop: {hop_length} samples = {hop_ms:g} ms", va="center", fontsize=9)
    zoom.annotate("", xy=(1000 * (lefts[0] + n_fft) / sampling_rate, -1.3),
                  xytext=(1000 * lefts[0] / sampling_rate, -1.3), arrowprops={"arrowstyle": "<->", "linewidth": 1.2})
    zoom.text(1000 * (lefts[0] + n_fft) / sampling_rate + 1, -1.3,
              f"window: {n_fft} samples = {window_ms:g} ms (Hann shape)", va="center", fontsize=9)
    zoom.set_ylim(-1.55, 1.6)
    zoom.set_xlim(0, ms[-1])
    zoom.set_xlabel("time within the orange stretch (ms)")
    zoom.set_ylabel("amplitude (scaled)")
    zoom.set_title(f"2. STFT: a {n_fft}-sample ({window_ms:g} ms) window every {hop_length} samples ({hop_ms:g} ms), "
                   f"so {frames_per_second:g} frames per second", loc="left", fontsize=10)

    # 3. the power of each frame at each frequency
    log_power = np.log10(np.maximum(power[:, :shown], 1e-10))
    image = spectrum.imshow(log_power, aspect="auto", origin="lower", cmap="magma", vmin=log_power.max() - 8,
                            extent=[0, shown / frames_per_second, 0, hz[-1]])
    # colour bars inside the margin, so panels 1, 3 and 5 keep one time axis width
    fig.colorbar(image, cax=spectrum.inset_axes([1.015, 0, 0.018, 1]), label="power, shown on a log10 scale")
    spectrum.set_xlabel("time (s)")
    spectrum.set_ylabel("frequency (Hz)")
    spectrum.set_title(f"3. Each window's power at {power.shape[0]} frequencies, 0 to {hz[-1]:,.0f} Hz "
                       "(one column per frame)", loc="left", fontsize=10)

    # 4. the mel filters: each pools a band of frequencies into one mel bin
    for i in range(mel_filters.shape[1]):
        highlighted = i % 16 == 0
        weights = mel_filters[:, i] / (mel_filters[:, i].max() or 1)
        nonzero = np.flatnonzero(weights)
        band = slice(max(nonzero.min() - 1, 0), nonzero.max() + 2) if len(nonzero) else slice(0, 0)
        filters.plot(hz[band], weights[band], linewidth=1.5 if highlighted else 0.5,
                     color=COLORS[3] if highlighted else "#b0b0b0", zorder=3 if highlighted else 2)
    filters.set_xlim(0, hz[-1])
    filters.set_xlabel("frequency (Hz)")
    filters.set_ylabel("weight (scaled)")
    filters.set_title(f"4. {mel_filters.shape[1]} mel filters (red: every 16th): narrow bands at low frequencies, "
                      "wide ones at high", loc="left", fontsize=10)

    # 5. log-mel: what the encoder reads
    image = mel.imshow(log_mel[:, :shown], aspect="auto", origin="lower", cmap="magma",
                       extent=[0, shown / frames_per_second, 0, log_mel.shape[0]])
    fig.colorbar(image, cax=mel.inset_axes([1.015, 0, 0.018, 1]), label="log-mel value")
    mel.set_xlabel("time (s)")
    mel.set_ylabel("mel bin")
    mel.set_title("5. Log-mel: each filter's sum of power, then log10, floor and scale", loc="left", fontsize=10)
    fig.suptitle(title or "From waveform to log-mel features", fontsize=11)
    return fig


def _box(ax, x, y, width, height, text, color):
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.01,rounding_size=0.02",
                                facecolor=color, edgecolor="black", linewidth=1, alpha=0.9))
    ax.text(x, y, text, ha="center", va="center", fontsize=10)


def voxtral_path_diagram(config, *, chunk_seconds: int = CHUNK_SECONDS, sampling_rate: int = SAMPLING_RATE,
                         hop_length: int = 160, full_widths: tuple[int, int] = (1280, 3072)):
    """The path of one 30-s chunk through Voxtral, with the sizes read from the model's `config`.

    `full_widths`: the encoder's and the language model's widths at full size (Voxtral-Mini-3B),
    named in a note when `config` is a smaller model.
    """
    audio, text = config.audio_config, config.text_config
    positions = audio.max_source_positions                       # after the stride-2 convolution
    frames = chunk_seconds * sampling_rate // hop_length          # log-mel frames per chunk
    stack = audio.intermediate_size // audio.hidden_size         # positions the projector stacks per token
    tokens = positions // stack
    stages = [
        (f"audio: one {chunk_seconds}-s chunk\n{chunk_seconds * sampling_rate:,} samples at {sampling_rate // 1000} kHz",
         f"STFT (hop {hop_length} samples) + {audio.num_mel_bins} mel filters + log"),
        (f"log-mel features\n{audio.num_mel_bins} mel bins × {frames:,} frames",
         f"encoder: a convolution with stride 2 halves the frames,\nthen {audio.num_hidden_layers} transformer layers"),
        (f"encoder output\n{positions:,} positions × {audio.hidden_size:,} numbers (encoder width)",
         f"projector: stacks {stack} neighbouring positions ({stack} × {audio.hidden_size:,} = "
         f"{audio.intermediate_size:,} numbers),\nthen maps them to the language model's width"),
        (f"audio tokens\n{tokens} tokens × {text.hidden_size:,} numbers (language model width)",
         f"they replace the {tokens} [AUDIO] placeholders in the prompt"),
        (f"language model ({text.num_hidden_layers} layers)\nreads audio tokens and text tokens, writes the answer", None),
    ]
    fig, ax = plt.subplots(figsize=(8.5, 7.2))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    colors = ["#dce6f2", "#f5e0cc", "#dbeed8", "#f3d6d7", "#e3dcef"]
    height, gap = 0.105, 0.195
    for i, (label, step) in enumerate(stages):
        y = 0.9 - i * gap
        _box(ax, 0.33, y, 0.6, height, label, colors[i])
        if step:
            ax.annotate("", xy=(0.33, y - gap + height / 2 + 0.005), xytext=(0.33, y - height / 2 - 0.005),
                        arrowprops={"arrowstyle": "-|>", "color": "black", "linewidth": 1.2})
            ax.text(0.35, y - gap / 2, step, ha="left", va="center", fontsize=9, color="#333333")
    note = (f"This model: encoder width {audio.hidden_size:,}, language model width {text.hidden_size:,}."
            if (audio.hidden_size, text.hidden_size) == full_widths else
            f"This model is a small stand-in: encoder width {audio.hidden_size:,}, language model width "
            f"{text.hidden_size:,}.\nAt full size (Voxtral-Mini-3B) they are {full_widths[0]:,} and {full_widths[1]:,}; "
            "the frame, position and token counts are the same.")
    ax.text(0.03, 0.0, note, ha="left", va="bottom", fontsize=9, style="italic")
    ax.set_title(f"One {chunk_seconds}-s chunk through Voxtral: {tokens} audio tokens "
                 f"({tokens / chunk_seconds:g} per second)", fontsize=11)
    fig.tight_layout()
    return fig


def loss_curves(log_history: list[dict], title: str = "Training and evaluation loss"):
    """Train and eval loss against the optimizer step, from `trainer.state.log_history`."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if not train and not evals:
        raise ValueError("log_history has no 'loss' or 'eval_loss' entries: did training log anything?")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if train:
        ax.plot(*zip(*train), label="train loss", color=COLORS[0])
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color=COLORS[1])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (answer tokens)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def confusion_matrices(predictions: list[dict], title: str = "Answers given (columns) for each true answer (rows)"):
    """One confusion matrix per category, two per row; unparseable answers get their own column.

    Each panel's title says how many answers were right; each non-empty cell shows its count.
    """
    categories = sorted({str(p["category"]) for p in predictions})
    if not categories:
        raise ValueError("No predictions to plot.")
    columns = min(2, len(categories))
    rows_of_panels = -(-len(categories) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.6 * columns, 4.3 * rows_of_panels), squeeze=False)
    for ax, category in zip(axes.flat, categories):
        rows = [p for p in predictions if str(p["category"]) == category]
        # the same answers on both axes, in order, so right answers lie on the diagonal
        truth = sorted({p["answer"] for p in rows} | {p["parsed"] for p in rows if p["parsed"] is not None},
                       key=_answer_order)
        given = truth + ["(none)"]
        matrix = np.zeros((len(truth), len(given)), dtype=int)
        for p in rows:
            matrix[truth.index(p["answer"]), given.index(p["parsed"] if p["parsed"] is not None else "(none)")] += 1
        ax.imshow(matrix, cmap="Blues", vmin=0)
        cell_font = 10 if len(given) <= 8 else 9
        for (i, j), n in np.ndenumerate(matrix):
            if n:
                ax.text(j, i, n, ha="center", va="center", fontsize=cell_font,
                        color="white" if n > matrix.max() / 2 else "black")
        ax.axvline(len(truth) - 0.5, color="grey", linewidth=1)  # unparseable answers, apart
        ax.set_xticks(range(len(given)), given, rotation=90 if len(given) > 6 else 0, fontsize=9)
        ax.set_yticks(range(len(truth)), truth, fontsize=9)
        ax.set_xlabel("model answer", fontsize=10)
        ax.set_ylabel("true answer", fontsize=10)
        right = sum(p["correct"] if "correct" in p else p["parsed"] == p["answer"] for p in rows)
        ax.set_title(f"{category}: {right}/{len(rows)} right", fontsize=11)
    for ax in list(axes.flat)[len(categories):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _answer_order(answer: str):
    return (not answer.isdigit(), int(answer) if answer.isdigit() else 0, answer)


def token_table_html(tokenizer, input_ids, labels, ignore_index: int = -100) -> str:
    """Tokens of one training row as coloured HTML: grey = masked (-100, not learned),
    green = learned. Runs of `[AUDIO]` are folded into one chip with their count."""
    chips, i = [], 0
    input_ids, labels = list(map(int, input_ids)), list(map(int, labels))
    while i < len(input_ids):
        token = tokenizer.convert_ids_to_tokens(input_ids[i])
        j = i
        while j + 1 < len(input_ids) and input_ids[j + 1] == input_ids[i] and token in ("[AUDIO]", "<pad>"):
            j += 1
        learned = labels[i] != ignore_index
        text = html.escape(token if j == i else f"{token} x{j - i + 1}")
        style = ("background:#55A868;color:white" if learned else "background:#e5e5e5;color:#555")
        chips.append(f'<span style="{style};padding:1px 4px;margin:1px;border-radius:3px;'
                     f'display:inline-block;font-family:monospace;font-size:12px">{text}</span>')
        i = j + 1
    legend = ('<div style="margin-bottom:4px;font-size:12px"><b>grey</b>: label -100, not learned; '
              '<b style="color:#55A868">green</b>: learned (answer + end of sequence)</div>')
    return legend + "<div>" + "".join(chips) + "</div>"
