"""Training with `transformers.Trainer`: the arguments, the answer-only loss, and `make_trainer` (notebook 03).

`training_arguments` holds the recipe's hyper-parameters; `AnswerLossTrainer` computes the output head and the
loss only where a token is learned (the answer), instead of over the whole audio-filled prompt: same loss, same
gradients, a fraction of the work and memory of the 131072-word head; `make_trainer` wires them with the collator.
Notebook 03 builds `TrainingArguments(...)` and the Trainer itself, then uses these.

Resuming after a dying runtime, out-of-memory step-down and full-disk handling are machinery around this:
`tutorial_kit.resume.train(trainer)`.
"""
from __future__ import annotations

import os

import torch
from transformers import Trainer, TrainerCallback

from helpers.collator import IGNORE_INDEX, TOWER_OUTPUT, VoxtralAudioCollator, precompute_features
from helpers.frozen_tower import cache_tower_outputs, tower_output_given
from helpers.hardware import pick_dtype, training_plan
from helpers.loading import LOGIN_ADVICE, hub_token, model_dtype
from helpers.profiles import SEED, Profile


def planned_steps(trainer) -> int:
    """The optimizer steps the trainer's arguments and dataset make, as Trainer counts them."""
    return trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]


class TimeBudget(TrainerCallback):
    """Stop training once `minutes` have passed, with a checkpoint of the last step, and say how
    far it got. Running the training cell again (`train(trainer)`) continues from there: a room
    of learners can train for the minutes a schedule allows, and finish later."""

    def __init__(self, minutes: float):
        if minutes <= 0:
            raise ValueError(f"A time budget must be positive; got {minutes} minutes.")
        self.minutes = minutes
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        import time

        self.started = time.monotonic()
        self.stopped_at = None

    def on_step_end(self, args, state, control, **kwargs):
        import time

        elapsed = (time.monotonic() - self.started) / 60
        if elapsed >= self.minutes and state.global_step < state.max_steps:
            control.should_training_stop = control.should_save = True
            self.stopped_at = state.global_step
            print(f"Time budget of {self.minutes:g} min reached after step {state.global_step} of {state.max_steps} "
                  f"({100 * state.global_step / state.max_steps:.0f}%): saving checkpoint-{state.global_step}. "
                  "Run the training cell again to continue from there.")
        return control


class AnswerLossTrainer(Trainer):
    """A `Trainer` whose loss projects only the learned positions onto the vocabulary.

    The default causal-LM loss computes logits for every position (a batch of 16 x 440 tokens x
    131072 words is 3.7 GB in float32) and then ignores all but the few answer tokens. Here the
    model is asked for the logits of those positions only (`logits_to_keep`), and the loss is
    the same token-level cross-entropy, normalised the way the default one is.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        targets = labels[:, 1:]  # position t predicts token t + 1
        keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().flatten()
        if TOWER_OUTPUT in inputs:  # the frozen tower's output, computed once per row (helpers.frozen_tower)
            inputs["input_features"] = inputs.pop(TOWER_OUTPUT)
            with tower_output_given(self.accelerator.unwrap_model(model)):
                outputs = model(**inputs, logits_to_keep=keep)
        else:
            outputs = model(**inputs, logits_to_keep=keep)
        logits = outputs.logits.float()
        chosen = targets[:, keep].to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chosen.reshape(-1),
                                                 ignore_index=IGNORE_INDEX, reduction="sum")
        # As the default loss: divided by the tokens of the whole accumulated batch when the
        # Trainer counted them for the model, else the mean of this micro-batch.
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss = loss / num_items_in_batch  # a 0-d count divides a loss on any device
            if self.args.average_tokens_across_devices:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        else:
            loss = loss / (chosen != IGNORE_INDEX).sum()
        return (loss, outputs) if return_outputs else loss


def training_arguments(profile: Profile, output_dir: str | os.PathLike, push_to_hub: bool = False, **overrides):
    """`TrainingArguments` for the profile: the published recipe's hyper-parameters for `full`,
    a short CPU run for `tiny`. `push_to_hub=True` needs a Hub login and says so if missing."""
    from transformers import TrainingArguments

    if push_to_hub and not overrides.get("hub_model_id"):
        raise ValueError("push_to_hub=True needs the repository to push to: hub_model_id='your-name/voxtral-lora' "
                         "(without it the Trainer would invent one from the output folder's name).")
    if push_to_hub and hub_token() is None:
        raise RuntimeError(f"push_to_hub=True needs a Hugging Face login: {LOGIN_ADVICE}, or leave push_to_hub off.")
    dtype = pick_dtype(profile)
    on_gpu = torch.cuda.is_available()
    plan = training_plan(profile)
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.accumulation,
        learning_rate=profile.learning_rate,
        num_train_epochs=profile.train_epochs,
        max_steps=profile.max_train_steps,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,  # a float below 1 is a fraction of the training steps
        weight_decay=0.01,
        activation_checkpointing=plan.activation_checkpointing,  # "gradient_checkpointing" before transformers 5.2x
        activation_checkpointing_kwargs={"use_reentrant": False},
        bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16,
        logging_steps=profile.logging_steps,
        eval_strategy="steps",
        eval_steps=profile.eval_steps,
        save_strategy="steps",
        save_steps=profile.eval_steps,
        save_total_limit=2,
        remove_unused_columns=False,  # the collator needs the raw audio and category columns
        report_to="none",
        seed=SEED,
        data_seed=SEED,
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        push_to_hub=push_to_hub,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def reads_per_row(args, rows: int) -> tuple[float, int]:
    """(how many times training reads each training row, how many evaluation passes it makes), from
    the arguments: the epochs, or `max_steps` x the effective batch over the rows."""
    import math

    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * rows / batch)
    passes = steps * batch / rows if args.max_steps > 0 else args.num_train_epochs
    evaluations = steps // args.eval_steps if args.eval_strategy == "steps" and args.eval_steps else 0
    return passes, evaluations


def trainer_splits(model, processor, args, train_dataset, eval_dataset=None, precompute: bool = True,
                   cache_tower_output: bool = True):
    """The training and evaluation splits as `make_trainer` feeds them: the frozen tower's output
    stored for a split read more than once, else log-mel features computed once (`precompute`)."""
    passes, evaluations = reads_per_row(args, len(train_dataset))
    if cache_tower_output and passes <= 1 and not {TOWER_OUTPUT, "input_features"} & set(train_dataset.column_names):
        print(f"The frozen audio tower runs in every step: this run reads each training row {passes:.2g} time(s), "
              "so computing its output ahead would not save time.")
    prepared = []
    for split, reads in ((train_dataset, passes), (eval_dataset, evaluations)):
        if split is not None and TOWER_OUTPUT not in split.column_names:
            if cache_tower_output and reads > 1:
                split = cache_tower_outputs(split, model, processor)
            elif precompute and "input_features" not in split.column_names:
                split = precompute_features(split, processor)
        prepared.append(split)
    return tuple(prepared)


def make_trainer(model, processor, profile: Profile, train_dataset, eval_dataset=None, output_dir="outputs/lora",
                 callbacks=None, precompute: bool = True, cache_tower_output: bool = True, **overrides):
    """A `transformers.Trainer` wired with our collator and the profile's training arguments; its loss
    computes the output head only where the answer is learned (`helpers.training.AnswerLossTrainer`).

    With `cache_tower_output` (default) the frozen audio tower runs once per row, before the first
    epoch, and every epoch and evaluation pass reuses its output (`helpers.frozen_tower`); a split
    read only once (a run shorter than an epoch, a single evaluation) gains nothing from it and is not
    cached. Otherwise `precompute` (default) computes the log-mel features once, and the tower runs
    in every step.
    """
    args = training_arguments(profile, output_dir, **overrides)
    if eval_dataset is None:
        args.eval_strategy = "no"
    train_dataset, eval_dataset = trainer_splits(model, processor, args, train_dataset, eval_dataset, precompute,
                                                 cache_tower_output)
    if profile.train_minutes:
        callbacks = [*(callbacks or []), TimeBudget(profile.train_minutes)]
    return AnswerLossTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                             data_collator=VoxtralAudioCollator(processor, dtype=model_dtype(model)), callbacks=callbacks)
