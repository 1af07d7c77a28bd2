"""The frozen audio tower run once per row gives the update the full forward pass gives."""
import numpy as np
import pytest
import torch
from datasets import Dataset
from training_runs import lora_weights, max_difference, tiny_trainer

from helpers.collator import TOWER_OUTPUT, VoxtralAudioCollator
from helpers.frozen_tower import cache_tower_outputs, storage_dtype, tower_output_given
from helpers.lora import add_lora, audio_tower, freeze_audio_tower, lora_config
from helpers.training import make_trainer

TOLERANCE = 1e-6  # float32


@pytest.fixture()
def lora_model(fresh_model):
    """LoRA on the tiny model, B drawn away from zero so every LoRA weight gets a gradient."""
    torch.manual_seed(0)
    model = add_lora(freeze_audio_tower(fresh_model), lora_config(lora_dropout=0.0))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.02)
    return model


@pytest.fixture(scope="module")
def rows(splits):
    """Six rows of the tiny dataset and one of 41 s, which takes two 30-s chunks."""
    some = [{**row, "audio": {"array": np.asarray(row["audio"]["array"], np.float32),
                              "sampling_rate": row["audio"]["sampling_rate"]}} for row in splits["train"].select(range(6))]
    long_clip = np.random.default_rng(0).normal(0, 0.1, 41 * 16000).astype(np.float32)
    some.append({**some[0], "id": 10_000, "audio": {"array": long_clip, "sampling_rate": 16000}})
    return some


def loss_and_gradients(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def test_stored_tower_output_gives_the_same_loss_and_lora_gradients(lora_model, processor, profile, rows, tmp_path):
    plain = Dataset.from_list(rows)
    cached = cache_tower_outputs(plain, lora_model, processor, batch_size=3)
    assert TOWER_OUTPUT in cached.column_names and "audio" not in cached.column_names
    chunks = [1 + (len(row["audio"]["array"]) - 1) // (30 * 16000) for row in rows]
    assert chunks[-1] == 2 and [len(cached[i][TOWER_OUTPUT]) for i in range(len(rows))] == chunks

    trainer = make_trainer(lora_model, processor, profile, plain, output_dir=tmp_path, cache_tower_output=False)
    collator = VoxtralAudioCollator(processor)
    recomputed = collator(rows)
    stored = collator([cached[i] for i in range(len(rows))])
    assert "input_features" in recomputed and "input_features" not in stored
    assert torch.equal(recomputed["input_ids"], stored["input_ids"])

    loss, gradients = loss_and_gradients(trainer, recomputed)
    stored_loss, stored_gradients = loss_and_gradients(trainer, stored)
    assert abs(loss - stored_loss) <= TOLERANCE
    assert gradients.keys() == stored_gradients.keys() and any("multi_modal_projector" in n for n in gradients)
    assert max_difference(gradients, stored_gradients) <= TOLERANCE
    assert all(g.abs().sum() > 0 for g in gradients.values())  # every LoRA weight took part


def test_the_tower_is_back_after_the_block(lora_model):
    tower = audio_tower(lora_model)
    with tower_output_given(lora_model):
        assert audio_tower(lora_model) is not tower
    assert audio_tower(lora_model) is tower


def test_three_epochs_with_the_tower_once_train_the_same_adapter(profile, featurized, tmp_path):
    adapters, eval_losses = {}, {}
    for cache in (False, True):
        trainer, _ = tiny_trainer(profile, featurized.select(range(8)), tmp_path / str(cache), lora_dropout=0.0,
                                  eval_rows=featurized.select(range(8, 12)), max_steps=-1, num_train_epochs=3,
                                  save_strategy="no", eval_strategy="steps", eval_steps=2, cache_tower_output=cache)
        assert (TOWER_OUTPUT in trainer.train_dataset.column_names) == cache
        assert (TOWER_OUTPUT in trainer.eval_dataset.column_names) == cache
        trainer.train()
        assert trainer.state.global_step == 6
        adapters[cache] = lora_weights(trainer)
        eval_losses[cache] = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
        assert len(eval_losses[cache]) == 3
    assert max_difference(adapters[False], adapters[True]) <= TOLERANCE
    assert max(abs(a - b) for a, b in zip(eval_losses[False], eval_losses[True])) <= TOLERANCE


def test_a_tower_that_trains_is_refused(fresh_model, processor, splits):
    with pytest.raises(ValueError, match="freeze_audio_tower"):
        cache_tower_outputs(splits["train"].select(range(2)), fresh_model, processor)


def test_a_batch_mixing_stored_and_recomputed_rows_names_the_rows(lora_model, processor, featurized):
    cached = cache_tower_outputs(featurized.select(range(2)), lora_model, processor)
    with pytest.raises(ValueError, match=r"without: sample \S+\)"):
        VoxtralAudioCollator(processor)([cached[0], featurized[1]])


def test_storage_keeps_every_value_exactly():
    assert storage_dtype(torch.float16) == "float16"
    assert storage_dtype(torch.float32) == storage_dtype(torch.bfloat16) == "float32"
    values = torch.randn(1000).to(torch.bfloat16)
    assert torch.equal(torch.from_numpy(values.float().numpy().astype(storage_dtype(torch.bfloat16))).to(torch.bfloat16),
                       values)


def test_a_split_read_once_is_not_cached(lora_model, processor, profile, splits, tmp_path, capsys):
    from helpers.training import reads_per_row, training_arguments

    args = training_arguments(profile, tmp_path, max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                              eval_steps=2)
    assert reads_per_row(args, 16) == (0.5, 1)  # 2 steps of 4 rows over 16 rows; one evaluation
    assert reads_per_row(args, 4) == (2.0, 1)
    trainer = make_trainer(lora_model, processor, profile, splits["train"].select(range(16)), splits["test"].select(range(4)),
                           output_dir=tmp_path, max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                           eval_steps=2)
    assert TOWER_OUTPUT not in trainer.train_dataset.column_names and "input_features" in trainer.train_dataset.column_names
    assert TOWER_OUTPUT not in trainer.eval_dataset.column_names and "input_features" in trainer.eval_dataset.column_names
    assert "reads each training row 0.5 time(s), so computing its output ahead would not save time" in capsys.readouterr().out
