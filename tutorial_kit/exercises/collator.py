"""Checks for the exercises of notebook 02 · Build the collator.

    from tutorial_kit.exercises import collator as exercises
    exercises.check_batch_labels(batch_labels, processor=processor, rows=rows)
"""
from __future__ import annotations

import math
import numbers
from functools import lru_cache

import numpy as np
import torch

from helpers.collator import IGNORE_INDEX, VoxtralAudioCollator
from tutorial_kit.exercises import PLACEHOLDER_HINT, ROUNDED_HINT, correct, friendly, not_yet, plain_number, rounded_too_far

RETURNS_NONE = PLACEHOLDER_HINT + " (Your function returns None: give it a `return`.)"


@lru_cache(maxsize=4)
def _collator(processor) -> VoxtralAudioCollator:
    """One collator per processor, so its prompt tokens are computed once however often a check runs."""
    return VoxtralAudioCollator(processor)


def _prompt_lengths(collator: VoxtralAudioCollator, rows: list[dict]) -> list[int]:
    return [len(collator.prompt_ids(row.get("category"), collator.row_features(row, i).shape[0], row.get("question")))
            for i, row in enumerate(rows)]


def _labels_with(input_ids: torch.Tensor, attention_mask: torch.Tensor, masked: list[int], pad_label: int = IGNORE_INDEX,
                 prompt_label: int = IGNORE_INDEX) -> torch.Tensor:
    """Labels masking the first `masked[i]` tokens of row i: the right answer, or a mistake, by its arguments."""
    labels = input_ids.clone()
    for i, n in enumerate(masked):
        labels[i, :n] = prompt_label
    labels[attention_mask == 0] = pad_label
    return labels


def _shifted_by_one(labels: torch.Tensor, input_ids: torch.Tensor) -> bool:
    """Every learned label is the token id one position later (or earlier), not its own."""
    learned = labels != IGNORE_INDEX
    if not learned.any() or torch.equal(labels[learned], input_ids[learned]):
        return False
    for got, ids in ((labels[:, :-1], input_ids[:, 1:]), (labels[:, 1:], input_ids[:, :-1])):
        inside = got != IGNORE_INDEX
        if int(inside.sum()) == int(learned.sum()) and torch.equal(got[inside], ids[inside]):
            return True
    return False


@friendly
def check_batch_labels(batch_labels, *, processor, rows: list[dict]):
    """`batch_labels(input_ids, attention_mask, prompt_lengths)` must return the labels the collator makes."""
    if not callable(batch_labels):
        return not_yet("`batch_labels` should be a function: `def batch_labels(input_ids, attention_mask, prompt_lengths): ...`.")
    collator = _collator(processor)  # pads on the right, for training
    batch, lengths = collator(rows), _prompt_lengths(collator, rows)
    ids, mask, expected = batch["input_ids"], batch["attention_mask"], batch["labels"]
    ids_given, mask_given = ids.clone(), mask.clone()
    given = batch_labels(ids_given, mask_given, list(lengths))
    if given is None or given is Ellipsis:
        return not_yet(RETURNS_NONE)
    # the same batch's input_ids go to the model: labels written into them would become its input
    if not torch.equal(ids, ids_given):
        return not_yet("your function modified its `input_ids` argument in place; the model still needs it as it "
                       "was (-100 is not a token id it can read). `labels = input_ids` is the same tensor, "
                       "not a copy: clone first, `labels = input_ids.clone()`, or use `masked_fill` (not `masked_fill_`).")
    if not torch.equal(mask, mask_given):
        return not_yet("your function modified its `attention_mask` argument in place: it must not change its inputs, "
                       "which the model reads as they were. Clone before writing, `mask = attention_mask.clone()`, or "
                       "build a new tensor (`attention_mask == 0`).")
    if not isinstance(given, torch.Tensor):
        return not_yet(f"you returned a {type(given).__name__}; the labels must be a torch.LongTensor, like `input_ids` "
                       "(the Trainer stacks and moves tensors, not lists). Build them from `input_ids.clone()`.")
    if given.shape != expected.shape:
        shifted = given.dim() == 2 and given.shape[0] == expected.shape[0] and given.shape[1] == expected.shape[1] - 1
        return not_yet(f"your labels have shape {tuple(given.shape)}; they need one label per input id: {tuple(expected.shape)}."
                       + (" Do not shift them by one: the model shifts them itself." if shifted else ""))
    if given.dtype != torch.long:
        return not_yet(f"your labels are a {given.dtype} tensor; they must be a torch.LongTensor (int64), the type "
                       "the loss takes for token ids. Start from `input_ids.clone()`, and keep -100 an int.")
    if torch.equal(given, expected):
        learned = int((expected != IGNORE_INDEX).sum())
        return correct(f"{learned} of the batch's {int(mask.sum())} real tokens are learned (the answers and their end of "
                       "sequence); the prompt and the padding add nothing to the loss.")
    if torch.equal(given, _labels_with(ids, mask, lengths, pad_label=0, prompt_label=0)):
        return not_yet("use -100, not 0: -100 is the label the loss ignores (CrossEntropyLoss's ignore_index); "
                       "0 is a real token id the model would be trained to say.")
    if torch.equal(given, _labels_with(ids, torch.ones_like(mask), lengths)):  # pads kept as token ids
        return not_yet("the padding is learned: set the labels to -100 where attention_mask is 0 too, or the model "
                       "learns to say pad tokens after its answer.")
    if torch.equal(given, _labels_with(ids, mask, [n - 1 for n in lengths])):
        return not_yet("one token too few masked: the prompt's last token (`[/INST]`) is learned. Mask the first "
                       "prompt_length tokens of each row: positions 0 to prompt_length - 1.")
    if torch.equal(given, _labels_with(ids, mask, [n + 1 for n in lengths])):
        return not_yet("one token too many masked: the first token of the answer is not learned. The answer starts at "
                       "position prompt_length.")
    ends = mask.sum(dim=1) - 1
    eos_masked = expected.clone()
    eos_masked[torch.arange(len(rows)), ends] = IGNORE_INDEX
    if torch.equal(given, eos_masked):
        return not_yet("the end-of-sequence token is learned too: it teaches the model to stop after its answer.")
    if _shifted_by_one(given, ids):
        return not_yet("your labels are shifted by one position. Give each position its own token id: the model shifts "
                       "them itself, so that position t predicts token t + 1, inside its loss.")
    answers_masked = torch.where((expected == IGNORE_INDEX) & (mask == 1), ids, IGNORE_INDEX)
    if torch.equal(given, answers_masked):
        return not_yet("the other way round: the prompt gets -100 and the answer keeps its token ids.")
    row = int(torch.nonzero((given != expected).any(dim=1))[0])
    return not_yet(f"row {row} differs from the collator's labels. Expected -100 on its first {lengths[row]} tokens and on "
                   "its padding (attention_mask 0), and its token ids in between.")


def _as_token_lists(sequences) -> list[list[int]] | None:
    try:
        return [[int(t) for t in torch.as_tensor(s).reshape(-1).tolist()] for s in sequences]
    except (TypeError, ValueError):
        return None


@friendly
def check_unpadded_prompts(unpadded_prompts, *, processor, rows: list[dict]):
    """`unpadded_prompts(input_ids, attention_mask)`: each row's prompt, without the left padding."""
    if not callable(unpadded_prompts):
        return not_yet("`unpadded_prompts` should be a function: `def unpadded_prompts(input_ids, attention_mask): ...`.")
    collator = _collator(processor)
    batch = collator.prompts(rows)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    expected = [collator.prompt_ids(row.get("category"), collator.row_features(row, i).shape[0], row.get("question"))
                for i, row in enumerate(rows)]
    if len({len(e) for e in expected}) < 2:
        raise ValueError("check_unpadded_prompts needs rows whose prompts differ in length (rows of several categories).")
    given = unpadded_prompts(ids.clone(), mask.clone())
    if given is None or given is Ellipsis:
        return not_yet(RETURNS_NONE)
    if isinstance(given, torch.Tensor) and given.dim() == 2 and given.shape == ids.shape:
        return not_yet("a 2-D tensor keeps every row as long as the longest: return a list with one sequence per row.")
    given = _as_token_lists(given)
    if given is None or len(given) != len(rows):
        return not_yet(f"return a list of {len(rows)} sequences of token ids, one per row.")
    if given == expected:
        return correct("with left padding the pads come first, so a prompt is the last sum(attention_mask) tokens "
                       "(or the tokens where the mask is 1). Every prompt ends in `[/INST]`, where the answer starts.")
    if given == [row[: int(n)] for row, n in zip(ids.tolist(), mask.sum(dim=1))]:
        return not_yet("that is `ids[:sum(attention_mask)]`, the published guide's bug: it assumes right padding. With "
                       "left padding it keeps the pads and cuts off the end of each shorter prompt, `[/INST]` included.")
    if given == ids.tolist():
        return not_yet("these still hold the padding: keep only the positions where attention_mask is 1.")
    row = next(i for i, (g, e) in enumerate(zip(given, expected)) if g != e)
    mine, theirs = given[row], expected[row]
    start = next((i for i in range(len(theirs) - len(mine) + 1) if theirs[i:i + len(mine)] == mine), None)
    if mine and start is not None:  # a piece of the prompt: tokens lost, no pads kept
        if start > 0 and start + len(mine) == len(theirs):
            where = "its first token, `<s>`" if start == 1 else f"its first {start} tokens, from `<s>` on"
        else:
            where = "its last tokens: a prompt runs to the end, ending in `[/INST]`" if start == 0 else \
                "tokens at both ends"
        return not_yet(f"row {row}: you returned {len(mine)} of its {len(theirs)} prompt tokens, without {where}. "
                       "Keep every position where attention_mask is 1.")
    return not_yet(f"row {row}: expected its {len(theirs)} prompt tokens, ending in `[/INST]`; you returned "
                   f"{len(mine)} tokens. Where do the pads sit in a left-padded row?")





def _one_per_row(answer) -> bool:
    """Several numbers (a tensor, an array or a list): one share per row of the batch, say."""
    if isinstance(answer, torch.Tensor):
        return answer.numel() > 1
    if isinstance(answer, np.ndarray):
        return answer.size > 1
    return isinstance(answer, (list, tuple)) and len(answer) > 1


@friendly
def check_learned_share(learned_share, *, batch: dict):
    """`learned_share`: the fraction of the batch's real tokens (attention_mask 1) that are learned."""
    labels, mask = batch["labels"], batch["attention_mask"]
    learned_share = plain_number(learned_share)
    if _one_per_row(learned_share):
        return not_yet("one number for the whole batch, not one per row: add up the learned tokens of all rows and "
                       "the real tokens of all rows, then divide.")
    if not isinstance(learned_share, (numbers.Real, torch.Tensor)) or isinstance(learned_share, bool):
        return not_yet(f"learned_share should be a number between 0 and 1, not {type(learned_share).__name__}.")
    if not (labels == IGNORE_INDEX).any() or (labels[mask == 0] != IGNORE_INDEX).any():  # prompt, padding: -100
        return not_yet("your cell changed `batch[\"labels\"]` in place; run the cell that builds `batch` again and "
                       "count without writing into it (`labels != -100`).")
    share = float(learned_share)
    learned, real = int((labels != IGNORE_INDEX).sum()), int(mask.sum())
    expected = learned / real
    if math.isclose(share, expected, rel_tol=1e-4):
        return correct(f"{learned} of {real} tokens ({expected:.1%}): the loss comes from the answers alone, so its "
                       "value is an average over very few tokens per row.")
    if rounded_too_far(share, expected):
        return not_yet(ROUNDED_HINT)
    if share == learned:
        return not_yet("that is the number of learned tokens; divide it by the number of real tokens (attention_mask 1).")
    if math.isclose(share, 100 * expected, rel_tol=1e-4):
        return not_yet("right value, as a percentage: give it as a fraction between 0 and 1.")
    if math.isclose(share, learned / labels.numel(), rel_tol=1e-4):
        return not_yet("you divided by every position, padding included: count only the real tokens (attention_mask 1).")
    if math.isclose(share, 1 - expected, rel_tol=1e-4):
        return not_yet("that is the share of masked tokens (-100); the question asks for the learned ones.")
    per_row = (labels != IGNORE_INDEX).sum(dim=1) / mask.sum(dim=1)
    if math.isclose(share, float(per_row.mean()), rel_tol=1e-4):
        return not_yet("that is the mean of the per-row shares: a short row weighs as much in it as a long one. "
                       "Pool the counts: all the learned tokens of the batch divided by all its real tokens.")
    if math.isclose(share, (learned - len(labels)) / real, rel_tol=1e-4):
        return not_yet("the end-of-sequence token of each row is learned too: count every label that is not -100.")
    return not_yet("count the labels that are not -100 and the positions where attention_mask is 1; "
                   "divide the first by the second.")
