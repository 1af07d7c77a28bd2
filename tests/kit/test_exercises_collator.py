"""Notebook 02's exercise checks: the right answer passes, the usual mistakes get their own hint, nothing raises."""
import pytest
import torch

from helpers.collator import VoxtralAudioCollator
from tutorial_kit.exercises import PLACEHOLDER_HINT
from tutorial_kit.exercises import collator as exercises


@pytest.fixture(scope="module")
def rows(splits):
    """The first training row of each category: their prompts differ in length, so the batch has padding."""
    firsts = {}
    for index, category in enumerate(splits["train"]["category"]):
        firsts.setdefault(category, index)
    return [splits["train"][i] for i in sorted(firsts.values())]


def masked(input_ids, attention_mask, prompt_lengths, shift=0, value=-100, mask_padding=True):
    labels = input_ids.clone()
    for i, n in enumerate(prompt_lengths):
        labels[i, : n + shift] = value
    if mask_padding:
        labels[attention_mask == 0] = value
    return labels


def without_eos(input_ids, attention_mask, prompt_lengths):
    labels = masked(input_ids, attention_mask, prompt_lengths)
    labels[torch.arange(len(labels)), attention_mask.sum(dim=1) - 1] = -100
    return labels


def inverted(input_ids, attention_mask, prompt_lengths):
    labels = input_ids.clone()
    for i, n in enumerate(prompt_lengths):
        labels[i, n:] = -100
    return labels


def in_place(input_ids, attention_mask, prompt_lengths):
    labels = input_ids  # the same tensor, not a copy
    for i, n in enumerate(prompt_lengths):
        labels[i, :n] = -100
    labels[attention_mask == 0] = -100
    return labels


def mask_changed_in_place(input_ids, attention_mask, prompt_lengths):
    for i, n in enumerate(prompt_lengths):
        attention_mask[i, :n] = 0  # the prompt and the padding, both 0 now: then one masked_fill
    return input_ids.masked_fill(attention_mask == 0, -100)


def by_position(input_ids, attention_mask, prompt_lengths):  # another right answer: no loop, no clone
    in_prompt = torch.arange(input_ids.shape[1]) < torch.tensor(prompt_lengths)[:, None]
    return input_ids.masked_fill(in_prompt | (attention_mask == 0), -100)


def test_batch_labels(processor, rows):
    assert exercises.check_batch_labels(masked, processor=processor, rows=rows)
    assert exercises.check_batch_labels(by_position, processor=processor, rows=rows)
    assert exercises.check_batch_labels(lambda input_ids, attention_mask, prompt_lengths: torch.tensor(
        masked(input_ids, attention_mask, prompt_lengths).tolist()), processor=processor, rows=rows)


@pytest.mark.parametrize(("answer", "hint"), [
    (..., PLACEHOLDER_HINT),
    (lambda input_ids, attention_mask, prompt_lengths: ..., PLACEHOLDER_HINT),
    ([[-100]], "should be a function"),
    (lambda input_ids, attention_mask, prompt_lengths: masked(input_ids, attention_mask, prompt_lengths, value=0),
     "use -100, not 0"),
    (lambda input_ids, attention_mask, prompt_lengths: masked(input_ids, attention_mask, prompt_lengths, mask_padding=False),
     "the padding is learned"),
    (lambda input_ids, attention_mask, prompt_lengths: masked(input_ids, attention_mask, prompt_lengths, shift=-1),
     "one token too few masked"),
    (lambda input_ids, attention_mask, prompt_lengths: masked(input_ids, attention_mask, prompt_lengths, shift=1),
     "one token too many masked"),
    (without_eos, "end-of-sequence token is learned too"),
    (inverted, "the other way round"),
    (lambda input_ids, attention_mask, prompt_lengths: input_ids[:, :-1], "one label per input id"),
    (lambda input_ids, attention_mask, prompt_lengths: input_ids, "row 0 differs"),
    (lambda input_ids, attention_mask, prompt_lengths: input_ids[99], "raised IndexError"),
    (in_place, "modified its `input_ids` argument in place"),
    (mask_changed_in_place, "modified its `attention_mask` argument in place"),
    (lambda input_ids, attention_mask, prompt_lengths: input_ids.masked_fill_(attention_mask == 0, -100),
     "clone first"),
    (lambda input_ids, attention_mask, prompt_lengths: masked(input_ids, attention_mask, prompt_lengths).tolist(),
     "you returned a list; the labels must be a torch.LongTensor"),
    (lambda input_ids, attention_mask, prompt_lengths: masked(input_ids, attention_mask, prompt_lengths).float(),
     "torch.float32 tensor; they must be a torch.LongTensor"),
])
def test_batch_labels_mistakes(processor, rows, answer, hint):
    feedback = exercises.check_batch_labels(answer, processor=processor, rows=rows)
    assert not feedback and hint in feedback.message


def test_batch_labels_attention_mask_changed_in_place(processor, rows):
    """The mask has its own sentence: nothing about -100 token ids or `labels = input_ids`."""
    feedback = exercises.check_batch_labels(mask_changed_in_place, processor=processor, rows=rows)
    assert not feedback and "must not change its inputs" in feedback.message and "clone" in feedback.message
    assert "token id" not in feedback.message and "labels = input_ids" not in feedback.message


def shifted_left(input_ids, attention_mask, prompt_lengths):  # what the model's loss does itself
    labels = masked(input_ids, attention_mask, prompt_lengths)
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)


def shifted_right(input_ids, attention_mask, prompt_lengths):
    labels = masked(input_ids, attention_mask, prompt_lengths)
    return torch.cat([torch.full_like(labels[:, :1], -100), labels[:, :-1]], dim=1)


def shift_then_mask(input_ids, attention_mask, prompt_lengths):
    ids = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1)
    return masked(ids, torch.cat([attention_mask[:, 1:], torch.zeros_like(attention_mask[:, :1])], dim=1),
                  prompt_lengths)


@pytest.mark.parametrize("answer", [
    shifted_left, shifted_right, shift_then_mask,
    lambda input_ids, attention_mask, prompt_lengths: masked(input_ids, attention_mask, prompt_lengths)[:, 1:],
])
def test_batch_labels_shifted_by_one_position(processor, rows, answer):
    feedback = exercises.check_batch_labels(answer, processor=processor, rows=rows)
    assert not feedback and "the model shifts them itself" in feedback.message, feedback.message


def test_unpadded_prompts(processor, rows):
    def right(input_ids, attention_mask):
        return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]

    def from_the_end(input_ids, attention_mask):  # another right answer, as tensors
        return [ids[len(ids) - int(mask.sum()):] for ids, mask in zip(input_ids, attention_mask)]

    assert exercises.check_unpadded_prompts(right, processor=processor, rows=rows)
    assert exercises.check_unpadded_prompts(from_the_end, processor=processor, rows=rows)


@pytest.mark.parametrize(("answer", "hint"), [
    (..., PLACEHOLDER_HINT),
    (lambda input_ids, attention_mask: ..., PLACEHOLDER_HINT),
    (lambda input_ids, attention_mask: [ids[: int(mask.sum())] for ids, mask in zip(input_ids, attention_mask)],
     "the published guide's bug"),
    (lambda input_ids, attention_mask: list(input_ids), "still hold the padding"),
    (lambda input_ids, attention_mask: input_ids, "a 2-D tensor"),
    (lambda input_ids, attention_mask: [input_ids[0][attention_mask[0].bool()]], "return a list of 4 sequences"),
    (lambda input_ids, attention_mask: [ids[mask.bool()][:-1] for ids, mask in zip(input_ids, attention_mask)],
     "ending in `[/INST]`"),
    (lambda input_ids, attention_mask: input_ids.unpad(), "raised AttributeError"),
])
def test_unpadded_prompts_mistakes(processor, rows, answer, hint):
    feedback = exercises.check_unpadded_prompts(answer, processor=processor, rows=rows)
    assert not feedback and hint in feedback.message


@pytest.fixture(scope="module")
def batch(processor, rows):
    return VoxtralAudioCollator(processor)(rows)


def test_learned_share(batch):
    learned, real = int((batch["labels"] != -100).sum()), int(batch["attention_mask"].sum())
    assert 0 < learned < real
    assert exercises.check_learned_share(learned / real, batch=batch)
    assert exercises.check_learned_share(torch.tensor(learned / real), batch=batch)


def test_learned_share_rounded_too_far(batch):
    """The right share rounded to the digits its own Correct message prints: the method is right, say so."""
    learned, real = int((batch["labels"] != -100).sum()), int(batch["attention_mask"].sum())
    share = learned / real
    for rounded in (round(share, 2), round(share, 3), float(f"{share:.2g}"), float(f"{share:.1g}")):
        if abs(rounded - share) <= 1e-4 * share:
            continue  # close enough to pass
        feedback = exercises.check_learned_share(rounded, batch=batch)
        assert not feedback and "right method, rounded too far" in feedback.message, (rounded, feedback.message)
    assert exercises.check_learned_share(0.006, batch={"labels": torch.tensor([[-100] * 994 + [1] * 6]),
                                                       "attention_mask": torch.ones(1, 1000, dtype=torch.long)})
    feedback = exercises.check_learned_share(0.006, batch={"labels": torch.tensor([[-100] * 9939 + [1] * 61]),
                                                           "attention_mask": torch.ones(1, 10000, dtype=torch.long)})
    assert not feedback and "rounded too far" in feedback.message


@pytest.mark.parametrize(("mistake", "hint"), [
    ("count", "number of learned tokens"),
    ("percent", "as a percentage"),
    ("all positions", "padding included"),
    ("masked share", "share of masked tokens"),
    ("without eos", "end-of-sequence token of each row"),
    ("text", "should be a number"),
    ("placeholder", PLACEHOLDER_HINT),
])
def test_learned_share_mistakes(batch, mistake, hint):
    learned, real = int((batch["labels"] != -100).sum()), int(batch["attention_mask"].sum())
    answer = {"count": learned, "percent": 100 * learned / real, "all positions": learned / batch["labels"].numel(),
              "masked share": 1 - learned / real, "without eos": (learned - len(batch["labels"])) / real,
              "text": f"{learned / real}", "placeholder": ...}[mistake]
    feedback = exercises.check_learned_share(answer, batch=batch)
    assert not feedback and hint in feedback.message


def per_row_shares(batch):
    return (batch["labels"] != -100).sum(1) / batch["attention_mask"].sum(1)


@pytest.mark.parametrize("answer", [per_row_shares, lambda batch: per_row_shares(batch).tolist(),
                                    lambda batch: per_row_shares(batch).numpy()])
def test_learned_share_one_per_row(batch, answer):
    feedback = exercises.check_learned_share(answer(batch), batch=batch)
    assert not feedback and "one number for the whole batch, not one per row" in feedback.message, feedback.message


@pytest.mark.parametrize("answer", [lambda batch: per_row_shares(batch).mean(),
                                    lambda batch: float(per_row_shares(batch).mean())])
def test_learned_share_mean_of_per_row_shares(batch, answer):
    learned, real = int((batch["labels"] != -100).sum()), int(batch["attention_mask"].sum())
    assert abs(float(answer(batch)) / (learned / real) - 1) > 1e-3  # rows of different lengths: not the pooled share
    feedback = exercises.check_learned_share(answer(batch), batch=batch)
    assert not feedback and "mean of the per-row shares" in feedback.message, feedback.message
    assert "Pool the counts" in feedback.message


def test_unpadded_prompts_that_lose_tokens_are_told_which(processor, rows):
    def without_first(input_ids, attention_mask):
        return [ids[mask.bool()][1:].tolist() for ids, mask in zip(input_ids, attention_mask)]

    def without_last(input_ids, attention_mask):
        return [ids[mask.bool()][:-1].tolist() for ids, mask in zip(input_ids, attention_mask)]

    for answer, lost in ((without_first, "without its first token, `<s>`"), (without_last, "without its last tokens")):
        feedback = exercises.check_unpadded_prompts(answer, processor=processor, rows=rows)
        assert not feedback and lost in feedback.message and "pads" not in feedback.message


def test_unpadded_prompts_cut_to_the_shortest_are_told_how_many_tokens_are_lost(processor, rows):
    """Every row cut to the shortest prompt: several tokens lost from the start, not one."""
    def shortest(input_ids, attention_mask):
        n_min = int(attention_mask.sum(dim=1).min())
        return [row[-n_min:] for row in input_ids]

    collator = VoxtralAudioCollator(processor)
    mask = collator.prompts(rows)["attention_mask"]
    lengths = mask.sum(dim=1).tolist()
    row = next(i for i, n in enumerate(lengths) if n > min(lengths))
    lost = lengths[row] - min(lengths)
    assert lost > 1
    feedback = exercises.check_unpadded_prompts(shortest, processor=processor, rows=rows)
    assert not feedback and f"row {row}:" in feedback.message, feedback.message
    assert f"without its first {lost} tokens, from `<s>` on" in feedback.message, feedback.message
    assert "first token," not in feedback.message


@pytest.mark.parametrize("write", ["every -100", "padding only"])
def test_learned_share_labels_changed_in_place(batch, write):
    """The learner's cell wrote into `batch["labels"]` before the check: the right share must not be rejected."""
    learned, real = int((batch["labels"] != -100).sum()), int(batch["attention_mask"].sum())
    changed = dict(batch, labels=batch["labels"].clone())
    labels = changed["labels"]
    if write == "every -100":
        labels[labels == -100] = 0
    else:
        assert (batch["attention_mask"] == 0).any()  # rows of different lengths: padding to write into
        labels[batch["attention_mask"] == 0] = 0
    feedback = exercises.check_learned_share(learned / real, batch=changed)
    assert not feedback and "changed `batch[\"labels\"]` in place" in feedback.message, feedback.message
