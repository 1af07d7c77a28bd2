"""helpers.training: the arguments of the recipe, the answer-only loss, and a real (tiny) Trainer run (the loss
falls, the adapter round-trips, an interrupted run resumes exactly)."""
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from helpers import hardware, training
from helpers.evaluate import generate_answers
from helpers.loading import load_model_and_processor, save_adapter
from helpers.lora import (
    add_lora,
    freeze_audio_tower,
)
from helpers.profiles import get_profile
from helpers.training import make_trainer, training_arguments


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


def test_loss_on_answer_positions_only_equals_the_full_logits_loss(profile, splits, tmp_path):
    """The head and the loss computed where labels are learned (the answer, a few tokens) give the
    loss and the LoRA gradients of the full-logits way; compared in float32 to 1e-6 (relative)."""
    from transformers import Trainer

    from helpers.collator import VoxtralAudioCollator
    from helpers.training import AnswerLossTrainer

    model, processor = lora_model(profile)
    model.train()
    rows = [splits["train"][i] for i in range(4)]
    batch = VoxtralAudioCollator(processor)(rows)
    assert (batch["labels"] != -100).sum() < 0.05 * batch["labels"].numel()  # few positions carry a label

    trainer = make_trainer(model, processor, profile, splits["train"].select(range(8)),
                           output_dir=tmp_path, precompute=False)
    assert isinstance(trainer, AnswerLossTrainer)
    results = {}
    for name, compute in (("full logits", Trainer.compute_loss), ("answer only", AnswerLossTrainer.compute_loss)):
        for items in (None, torch.tensor(int((batch["labels"][:, 1:] != -100).sum()) + 5)):
            model.zero_grad()
            torch.manual_seed(0)  # the same LoRA dropout masks in both
            loss = compute(trainer, model, dict(batch), num_items_in_batch=items)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
            results[name, items is None] = (loss.detach(), grads)
    for mean in (True, False):
        (ours, our_grads), (theirs, their_grads) = results["answer only", mean], results["full logits", mean]
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
        assert our_grads.keys() == their_grads.keys() and len(our_grads) > 0
        for name in our_grads:
            torch.testing.assert_close(our_grads[name], their_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_frozen_audio_tower_is_not_recomputed_or_back_propagated(profile, splits):
    """With activation checkpointing, transformers makes every sub-model's input embeddings require
    gradients (`enable_input_require_grads`), the audio tower's included: its 32 frozen layers would
    be recomputed and back-propagated through for nothing. Frozen, the tower's output carries no
    gradient, and the LoRA gradients are unchanged."""
    from helpers.collator import VoxtralAudioCollator
    from helpers.lora import audio_tower

    model, processor = lora_model(profile)
    model.train()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    batch = VoxtralAudioCollator(processor)([splits["train"][i] for i in range(2)])
    seen = []
    handle = audio_tower(model).register_forward_hook(lambda m, i, out: seen.append(out.last_hidden_state.requires_grad))
    backward_in_tower = []
    for layer in audio_tower(model).layers:
        layer.register_full_backward_hook(lambda *a: backward_in_tower.append(1))
    torch.manual_seed(0)
    model(**batch).loss.backward()
    handle.remove()
    assert seen == [False] and backward_in_tower == []
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())

    model.zero_grad()
    model.activation_checkpointing_disable()
    torch.manual_seed(0)
    model(**batch).loss.backward()
    for name, grad in grads.items():  # the same LoRA gradients as without checkpointing
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad, rtol=1e-5, atol=1e-7, msg=name)


def test_time_budget_stops_with_a_checkpoint_and_the_next_run_resumes(profile, splits, tmp_path, monkeypatch, capsys):
    import time as clock
    from dataclasses import replace

    from helpers.training import TimeBudget
    from tutorial_kit.checkpoints import last_complete_checkpoint
    from tutorial_kit.resume import train

    minutes = iter(range(1000))  # each step end reads the clock once: one "minute" per step
    monkeypatch.setattr(clock, "monotonic", lambda: 60.0 * next(minutes))
    budgeted = replace(profile, train_minutes=2, max_train_steps=6, eval_steps=100)
    rows = splits["train"].select(range(16))
    model, processor = lora_model(profile)
    trainer = make_trainer(model, processor, budgeted, rows, output_dir=tmp_path, per_device_train_batch_size=2,
                           gradient_accumulation_steps=1)
    assert any(isinstance(c, TimeBudget) for c in trainer.callback_handler.callbacks)
    train(trainer)
    assert trainer.state.global_step == 2  # minute 0 at the start, 1 after step 1, 2 after step 2: stop
    assert "Time budget of 2 min reached after step 2 of 6" in capsys.readouterr().out
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-2"

    model, processor = lora_model(profile)
    trainer = make_trainer(model, processor, replace(budgeted, train_minutes=None), rows, output_dir=tmp_path,
                           per_device_train_batch_size=2, gradient_accumulation_steps=1)
    train(trainer)
    assert "Resuming from checkpoint-2" in capsys.readouterr().out and trainer.state.global_step == 6


def test_time_budget_from_the_environment(monkeypatch):
    from helpers.profiles import get_profile

    monkeypatch.setenv("VOXTRAL_TRAIN_MINUTES", "25")
    assert get_profile("full").train_minutes == 25 and "at most 25 minutes" in get_profile("full").describe()
    monkeypatch.setenv("VOXTRAL_TRAIN_MINUTES", "soon")
    with pytest.raises(ValueError, match="VOXTRAL_TRAIN_MINUTES"):
        get_profile("full")


def test_full_training_arguments_follow_the_recipe(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # TrainingArguments would touch a faked GPU
    monkeypatch.setattr(training, "training_plan", lambda profile: hardware.TrainingPlan(8, 2, False, "test"))
    args = training_arguments(get_profile("full"), tmp_path)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.activation_checkpointing) == (8, 2, False)
    assert args.learning_rate == 2e-4 and args.num_train_epochs == 3
    assert args.lr_scheduler_type.value == "cosine" and args.warmup_steps == 0.1 and args.weight_decay == 0.01
    assert not args.push_to_hub and not args.remove_unused_columns
    assert not args.bf16 and not args.fp16  # no GPU here


def test_tiny_training_arguments_and_overrides(tmp_path):
    args = training_arguments(get_profile("tiny"), tmp_path, max_steps=3)
    assert args.max_steps == 3 and not args.activation_checkpointing


def test_push_to_hub_needs_a_login(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "hub_token", lambda: None)
    with pytest.raises(RuntimeError, match="needs a Hugging Face login"):
        training_arguments(get_profile("tiny"), tmp_path, push_to_hub=True, hub_model_id="me/voxtral-lora")


def test_push_to_hub_names_its_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "hub_token", lambda: "a-token")
    with pytest.raises(ValueError, match="hub_model_id"):
        training_arguments(get_profile("tiny"), tmp_path, push_to_hub=True)
    args = training_arguments(get_profile("tiny"), tmp_path, push_to_hub=True, hub_model_id="me/voxtral-lora")
    assert args.push_to_hub and args.hub_model_id == "me/voxtral-lora"
