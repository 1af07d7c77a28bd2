"""The collator against the processor's own chat template, and the published recipe's defect."""
import numpy as np
import pytest
import torch

from helpers.audio import SAMPLING_RATE
from helpers.collator import IGNORE_INDEX, VoxtralAudioCollator
from helpers.published import published_collate
from helpers.tasks import build_conversation

END_INST = 4


def mixed_rows(splits, n=6):
    """Rows of every category with different prompt lengths."""
    rows, seen = [], set()
    for row in splits["train"]:
        key = (row["category"], len(row["transcript"]) // 40)
        if key not in seen:
            seen.add(key)
            rows.append(row)
        if len(rows) == n:
            break
    return rows


def reference_prompt(processor, row):
    return processor.apply_chat_template(build_conversation(row), tokenize=True, return_dict=True,
                                         add_generation_prompt=True)


def unpadded(batch, i, key="input_ids"):
    return batch[key][i][batch["attention_mask"][i].bool()].tolist()


def test_published_collator_cuts_prompts_when_padding_is_left(processor, splits):
    """The guide's `ids[:sum(mask)]` keeps the left pads and drops the prompt's end, [/INST] too."""
    assert processor.tokenizer.padding_side == "left"
    rows = mixed_rows(splits)
    batch = published_collate(processor, rows)
    lengths = [reference_prompt(processor, r)["input_ids"].shape[1] for r in rows]
    shorter = [i for i, n in enumerate(lengths) if n < max(lengths)]
    assert shorter
    for i in shorter:
        ids = unpadded(batch, i)
        assert ids[0] == processor.tokenizer.pad_token_id  # pads inside the sequence
        assert END_INST not in ids  # the end of the prompt is gone


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_each_row_of_a_mixed_batch_equals_the_row_alone(processor, splits, padding_side):
    rows = mixed_rows(splits)
    original_side = processor.tokenizer.padding_side
    processor.tokenizer.padding_side = padding_side  # must not matter
    try:
        collator = VoxtralAudioCollator(processor, padding_side=padding_side)
        batch = collator(rows)
        for i, row in enumerate(rows):
            alone = collator([row])
            ids = unpadded(batch, i)
            assert ids == alone["input_ids"][0].tolist()
            assert processor.tokenizer.pad_token_id not in ids
            prompt = reference_prompt(processor, row)["input_ids"][0].tolist()
            assert ids[:len(prompt)] == prompt and prompt[-1] == END_INST
            labels = unpadded(batch, i, "labels")
            answer = processor.tokenizer.encode(str(row["official_answer"]), add_special_tokens=False)
            assert labels == [IGNORE_INDEX] * len(prompt) + answer + [processor.tokenizer.eos_token_id]
            assert (batch["labels"][i][~batch["attention_mask"][i].bool()] == IGNORE_INDEX).all()
        expected_pad_col = 0 if padding_side == "left" else -1
        assert (batch["attention_mask"][:, expected_pad_col] == 0).any()
    finally:
        processor.tokenizer.padding_side = original_side


def test_features_equal_the_processor(processor, splits):
    rows = mixed_rows(splits, 3)
    batch = VoxtralAudioCollator(processor)(rows)
    expected = torch.cat([reference_prompt(processor, r)["input_features"] for r in rows])
    assert batch["input_features"].shape == (3, 128, 3000)
    torch.testing.assert_close(batch["input_features"], expected, rtol=0, atol=0)


def test_generation_prompts_are_left_padded_and_match_training(processor, splits):
    rows = mixed_rows(splits, 4)
    collator = VoxtralAudioCollator(processor)
    prompts, training = collator.prompts(rows), collator(rows)
    assert (prompts["input_ids"][:, -1] == END_INST).all()  # every prompt ends the batch
    for i, row in enumerate(rows):
        prompt = unpadded(prompts, i)
        assert unpadded(training, i)[:len(prompt)] == prompt  # trains on what it is asked
        assert prompt == reference_prompt(processor, row)["input_ids"][0].tolist()


def test_audio_over_30s_becomes_several_chunks(processor, splits):
    row = dict(splits["train"][0])
    speech = row["audio"].get_all_samples().data.numpy()[0]
    long = np.concatenate([speech] * (int(65 * SAMPLING_RATE / len(speech)) + 1))[:65 * SAMPLING_RATE]
    rows = [{**row, "audio": {"array": long, "sampling_rate": SAMPLING_RATE}}, splits["train"][1]]
    batch = VoxtralAudioCollator(processor)(rows)
    assert batch["input_features"].shape[0] == 3 + 1
    audio_tokens = (batch["input_ids"] == processor.audio_token_id).sum(dim=1).tolist()
    assert audio_tokens == [3 * 375, 375]
    # the last chunk holds the end of the audio, it is not silence: nothing was truncated
    last_chunk = batch["input_features"][2]
    assert last_chunk[:, :400].std() > 0.1
    reference = reference_prompt(processor, rows[0])
    torch.testing.assert_close(batch["input_features"][:3], reference["input_features"], rtol=0, atol=0)


def test_rows_straight_from_datasets_and_plain_dicts(processor, splits):
    row = splits["train"][0]
    speech = row["audio"].get_all_samples()
    as_dict = {**row, "audio": {"array": speech.data.numpy()[0], "sampling_rate": speech.sample_rate}}
    collator = VoxtralAudioCollator(processor)
    a, b = collator([row]), collator([as_dict])
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["input_features"], b["input_features"])


def test_dtype_cast_for_half_precision_models(processor, splits):
    batch = VoxtralAudioCollator(processor, dtype=torch.bfloat16)([splits["train"][0]])
    assert batch["input_features"].dtype == torch.bfloat16 and batch["input_ids"].dtype == torch.long


@pytest.mark.parametrize("row, message", [
    ({"id": 3, "category": "navigate", "official_answer": "Yes"}, "sample 3: missing 'audio'"),
    ({"id": 4, "category": "navigate", "audio": {"array": np.zeros(16000), "sampling_rate": 16000}},
     "sample 4: missing 'official_answer'"),
    ({"id": 5, "category": "navigate", "official_answer": "", "audio": {"array": np.zeros(16000), "sampling_rate": 16000}},
     "sample 5: empty 'official_answer'"),
    ({"id": 6, "official_answer": "Yes", "audio": {"array": np.zeros(10), "sampling_rate": 16000}},
     "sample 6: audio is 1 ms long"),
])
def test_bad_rows_name_the_sample(processor, row, message):
    with pytest.raises(ValueError, match=message):
        VoxtralAudioCollator(processor)([row])


def test_non_string_and_unicode_answers(processor):
    audio = {"array": np.zeros(16000, np.float32), "sampling_rate": 16000}
    batch = VoxtralAudioCollator(processor)([
        {"audio": audio, "category": "object_counting", "official_answer": 7},
        {"audio": audio, "category": "navigate", "official_answer": "Ja, natürlich ✓"},
    ])
    labels = [row[row != IGNORE_INDEX].tolist() for row in batch["labels"]]
    assert processor.tokenizer.decode(labels[0], skip_special_tokens=True) == "7"
    assert processor.tokenizer.decode(labels[1], skip_special_tokens=True) == "Ja, natürlich ✓"


def test_empty_batch():
    with pytest.raises(ValueError, match="empty batch"):
        VoxtralAudioCollator.__new__(VoxtralAudioCollator).encode([], with_answers=True)


def test_precomputed_features_collate_identically(processor, splits):
    from helpers.collator import precompute_features

    raw = splits["train"].select(range(6))
    cached = precompute_features(raw, processor, load_from_cache_file=False)
    assert "audio" not in cached.column_names and len(cached) == len(raw)
    collator = VoxtralAudioCollator(processor)
    a, b = collator([raw[i] for i in range(6)]), collator([cached[i] for i in range(6)])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the published per-batch way computes the same features
    torch.testing.assert_close(published_collate(processor, [raw[i] for i in range(6)])["input_features"],
                               b["input_features"], rtol=0, atol=0)
    cached.cleanup_cache_files()


def test_precompute_needs_audio_and_checks_shapes(processor, splits):
    from helpers.collator import precompute_features

    with pytest.raises(ValueError, match="no 'audio' column"):
        precompute_features(splits["train"].remove_columns("audio"), processor)
    with pytest.raises(ValueError, match=r"sample 8: input_features has shape \(128, 3000\)"):
        VoxtralAudioCollator(processor)([{"id": 8, "official_answer": "Yes", "input_features": np.zeros((128, 3000))}])
