"""Figures the notebooks show. Each returns its matplotlib Figure so tests and notebooks can save it."""
from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np

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
                ax.text(i, bottom + n / 2, answer, ha="center", va="center", fontsize=8, color="white")
            bottom += n
    ax.set_xticks(range(len(categories)), categories)
    ax.set_ylabel("rows")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def durations(seconds: list[float], categories: list[str]):
    """Histogram of audio durations per category, with the 30-s chunk boundary marked."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    seconds, categories = np.asarray(seconds), np.asarray(categories)
    bins = np.linspace(0, max(CHUNK_SECONDS * 1.1, seconds.max() * 1.05), 40)
    for i, category in enumerate(sorted(set(categories))):
        ax.hist(seconds[categories == category], bins=bins, alpha=0.6, label=category, color=COLORS[i])
    ax.axvline(CHUNK_SECONDS, color="black", linestyle="--", linewidth=1)
    ax.text(CHUNK_SECONDS, ax.get_ylim()[1] * 0.95, " 30 s: one chunk", va="top", fontsize=8)
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("rows")
    ax.set_title("Audio durations: everything under 30 s costs one 30-s chunk")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def waveform_and_mel(audio: np.ndarray, features, title: str = ""):
    """The waveform and the log-mel features Voxtral sees (one 30-s chunk: 128 x 3000 frames)."""
    features = np.asarray(features)
    if features.ndim == 3:  # (chunks, 128, 3000) -> one long strip
        features = np.concatenate(list(features), axis=-1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5), gridspec_kw={"height_ratios": [1, 2]})
    t = np.arange(len(audio)) / SAMPLING_RATE
    top.plot(t, audio, linewidth=0.4, color=COLORS[0])
    top.set_xlim(0, features.shape[-1] / 100)
    top.set_ylabel("amplitude")
    top.set_title(title or "Waveform and log-mel features")
    image = bottom.imshow(features, aspect="auto", origin="lower", cmap="magma",
                          extent=[0, features.shape[-1] / 100, 0, features.shape[0]])
    bottom.axvline(len(audio) / SAMPLING_RATE, color="white", linestyle="--", linewidth=1)
    bottom.text(len(audio) / SAMPLING_RATE, features.shape[0] * 0.9, "  end of speech: padding after",
                color="white", fontsize=8)
    bottom.set_xlabel("time (s); 100 mel frames per second")
    bottom.set_ylabel("mel bin")
    fig.colorbar(image, ax=bottom, pad=0.01, label="log-mel")
    fig.tight_layout()
    return fig


def loss_curves(log_history: list[dict], title: str = "Training and evaluation loss"):
    """Train and eval loss against the optimiser step, from `trainer.state.log_history`."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if not train and not evals:
        raise ValueError("log_history has no 'loss' or 'eval_loss' entries: did training log anything?")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if train:
        ax.plot(*zip(*train), label="train loss", color=COLORS[0])
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color=COLORS[1])
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy (answer tokens)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def confusion_matrices(predictions: list[dict], title: str = "Answers given (columns) for each true answer (rows)"):
    """One confusion matrix per category; unparseable answers get their own column."""
    categories = sorted({str(p["category"]) for p in predictions})
    fig, axes = plt.subplots(1, len(categories), figsize=(4.2 * len(categories), 4.2), squeeze=False)
    for ax, category in zip(axes[0], categories):
        rows = [p for p in predictions if str(p["category"]) == category]
        truth = sorted({p["answer"] for p in rows}, key=_answer_order)
        given = truth + sorted({p["parsed"] for p in rows if p["parsed"] not in truth and p["parsed"] is not None},
                               key=_answer_order) + ["(none)"]
        matrix = np.zeros((len(truth), len(given)), dtype=int)
        for p in rows:
            matrix[truth.index(p["answer"]), given.index(p["parsed"] if p["parsed"] is not None else "(none)")] += 1
        ax.imshow(matrix, cmap="Blues")
        for (i, j), n in np.ndenumerate(matrix):
            if n:
                ax.text(j, i, n, ha="center", va="center", color="white" if n > matrix.max() / 2 else "black")
        ax.set_xticks(range(len(given)), given, rotation=45 if len(given) > 4 else 0)
        ax.set_yticks(range(len(truth)), truth)
        ax.set_xlabel("model answer")
        ax.set_ylabel("true answer")
        ax.set_title(category)
    fig.suptitle(title)
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
