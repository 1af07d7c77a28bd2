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
        ax.axvline(CHUNK_SECONDS, color="black", linestyle="--", linewidth=1.2)
        longer = int((mine > CHUNK_SECONDS).sum())
        ax.set_title(f"{category}: {len(mine)} clips, median {np.median(mine):.1f} s, {longer} over 30 s",
                     loc="left", fontsize=10)
        ax.set_ylabel("clips", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1, 0].set_xlim(0, bins[-1])
    axes[-1, 0].set_xlabel("duration (s)", fontsize=10)
    fig.suptitle("Audio durations: each clip is padded to whole 30-s chunks\n"
                 "(dashed line: 30 s; a clip in the grey area costs a second chunk)", fontsize=11)
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
