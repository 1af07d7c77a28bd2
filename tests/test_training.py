"""A real (tiny) Trainer run: the loss falls, the adapter round-trips, an interrupted run resumes exactly."""
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from helpers.evaluate import generate_answers
from helpers.model import add_lora, freeze_audio_tower, load_model_and_processor, make_trainer, save_adapter


def lora_model(profile):
    model, processor = load_model_and_processor(profile)
    return add_lora(freeze_audio_tower(model)), processor


def test_training_lowers_loss_and_adapter_reloads_identically(profile, splits, tmp_path):
    torch.manual_seed(0)
    model, processor = lora_model(profile)
    trainer = make_trainer(model, processor, profile, splits["train"], splits["test"].select(range(8)),
                           output_dir=tmp_path / "run", max_steps=12, logging_steps=1, eval_steps=12,
                           save_strategy="no")
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert after < before - 0.2, (before, after)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3

    folder = save_adapter(model, processor, tmp_path / "adapter")
    assert (folder / "adapter_model.safetensors").exists() and (folder / "tekken.json").exists()
    assert not list(folder.glob("*.bin"))
    rows = [splits["test"][i] for i in range(6)]
    model.eval()
    expected = generate_answers(model, processor, rows, max_new_tokens=5)
    reloaded, reloaded_processor = load_model_and_processor(profile, adapter=folder)
    assert generate_answers(reloaded, reloaded_processor, rows, max_new_tokens=5) == expected
    base, _ = load_model_and_processor(profile)
    assert generate_answers(base, processor, rows, max_new_tokens=5) != expected  # the adapter matters


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True  # as if the Colab runtime died here
        return control


def adapter_weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def test_interrupted_training_resumes_to_the_same_adapter(profile, splits, tmp_path):
    train = splits["train"].select(range(48))
    settings = dict(max_steps=6, save_steps=3, save_strategy="steps", logging_steps=1, per_device_train_batch_size=4)

    torch.manual_seed(0)
    model, processor = lora_model(profile)
    make_trainer(model, processor, profile, train, output_dir=tmp_path / "straight", **settings).train()
    straight = save_adapter(model, processor, tmp_path / "straight_adapter")

    torch.manual_seed(0)
    model, processor = lora_model(profile)
    make_trainer(model, processor, profile, train, output_dir=tmp_path / "broken", callbacks=[StopAt(3)], **settings).train()
    assert (tmp_path / "broken" / "checkpoint-3").exists()

    torch.manual_seed(123)  # a fresh session: nothing in memory survives
    model, processor = lora_model(profile)
    trainer = make_trainer(model, processor, profile, train, output_dir=tmp_path / "broken", **settings)
    trainer.train(resume_from_checkpoint=True)
    resumed = save_adapter(model, processor, tmp_path / "resumed_adapter")

    a, b = adapter_weights(straight), adapter_weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    first = adapter_weights(tmp_path / "broken" / "checkpoint-3")
    assert any(not torch.equal(first[k], b[k]) for k in b)  # it did train past the interruption
