"""Training that a dying runtime cannot spoil: run the training cell again and it carries on.

`train(trainer)` replaces `trainer.train()`:

* it resumes from the newest *complete* checkpoint in `trainer.args.output_dir`; a checkpoint torn
  by a kill while it was being saved is moved aside (to `torn-checkpoint-N`) with a warning;
* it trains from the start when there is no checkpoint yet, and only loads the result when the
  run already finished;
* when the GPU runs out of memory it halves the micro-batch and doubles gradient accumulation
  (same effective batch, same update), turns activation checkpointing on, and continues from
  the last finished optimizer step;
* when the disk fills up while saving it removes the half-written checkpoint and says how much
  space a checkpoint needs.

`check_adapter_files(folder)` says which file of an adapter folder is damaged, and why.

`AnswerLossTrainer` computes the output head and the loss only where a token is learned (the
answer), instead of over the whole audio-filled prompt: same loss, same gradients, a fraction of
the work and memory of the 131072-word head.
"""
from __future__ import annotations

import errno
import gc
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from helpers.checkpoints import (
    TRAINER_STATE,
    _checkpoint_folders,
    checkpoint_problem,
    checkpoint_step,
    first_line,
    folder_size,
    last_complete_checkpoint,
    readable_size,
)
from helpers.hardware import pick_dtype, training_plan
from helpers.loading import LOGIN_ADVICE, hub_token, model_dtype
from helpers.profiles import Profile

OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

# -- out of memory -------------------------------------------------------------------------

def _random_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_random_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class _LastFinishedStep(TrainerCallback):
    """The random-number state at the end of the newest optimizer step (or at the start).

    A step that fails half-way has already drawn dropout masks; a checkpoint written after the
    failure must hold the state from before them, as the Trainer's own checkpoint at that step would.
    """

    def __init__(self):
        self.random_state = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.random_state = _random_state()

    def on_step_end(self, args, state, control, **kwargs):
        self.random_state = _random_state()


def smaller_training_tier(micro_batch: int, accumulation: int, checkpointing: bool) -> tuple[int, int] | None:
    """(micro-batch, accumulation) one step down, with checkpointing on and the same effective batch.

    The micro-batch halves (or drops to its largest divisor below half, so the effective batch
    still divides); None when it is already 1 with checkpointing: nothing smaller is left.
    """
    if micro_batch == 1 and checkpointing:
        return None
    smaller = max(d for d in range(1, micro_batch // 2 + 1) if micro_batch % d == 0) if micro_batch > 1 else 1
    return smaller, accumulation * micro_batch // smaller


def _save_last_finished_step(trainer, memory: _LastFinishedStep) -> None:
    """A checkpoint at the last finished optimizer step, unless the Trainer saved that step itself."""
    step = trainer.state.global_step
    existing = Path(trainer.args.output_dir) / f"checkpoint-{step}"
    if existing.is_dir() and checkpoint_problem(existing, not trainer.args.save_only_model) is None:
        return
    if memory.random_state is not None:
        _restore_random_state(memory.random_state)
    trainer._save_checkpoint(trainer.model, trial=None)


def _step_down(trainer, tier: tuple[int, int]) -> None:
    args = trainer.args
    micro, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    smaller, more = tier
    step = trainer.state.global_step
    was = f"micro-batch {micro} x {accumulation}" + (" with checkpointing" if args.activation_checkpointing else "")
    print(f"Out of GPU memory in step {step + 1} ({was}): continuing from step {step} with micro-batch "
          f"{smaller} x {more} and activation checkpointing; the effective batch stays {micro * accumulation}.")
    args.per_device_train_batch_size = smaller
    args.per_device_eval_batch_size = min(args.per_device_eval_batch_size, smaller)
    args.gradient_accumulation_steps = more
    args.activation_checkpointing = True
    # Reentrant checkpointing returns no gradients for LoRA layers behind frozen embeddings.
    args.activation_checkpointing_kwargs = args.activation_checkpointing_kwargs or {"use_reentrant": False}
    trainer._train_batch_size = args.train_batch_size  # what Trainer builds its training DataLoader from


def _recover_from_out_of_memory(trainer, memory: _LastFinishedStep, reason: str) -> None:
    trainer.model.zero_grad(set_to_none=True)  # the failed step's half-accumulated gradients
    # Trainer wraps the optimizer again on the next train(); hand it the bare one.
    trainer.optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    args = trainer.args
    tier = smaller_training_tier(args.per_device_train_batch_size, args.gradient_accumulation_steps,
                                 bool(args.activation_checkpointing))
    if tier is not None:
        trainer.state.train_batch_size = tier[0] * max(1, args.n_gpu)  # recorded in the checkpoint below
    _save_last_finished_step(trainer, memory)
    if tier is None:
        step = trainer.state.global_step
        raise OutOfMemoryError(
            f"Out of GPU memory in step {step + 1} even with micro-batch 1 and activation checkpointing "
            f"({reason}). Free the GPU (restart the runtime so that no other model holds memory), load the "
            f"model in 4-bit (load_in_4bit=True) or train on shorter audio, then run this cell again: training "
            f"continues from step {step} (saved in '{trainer.args.output_dir}').")
    _step_down(trainer, tier)


# -- full disk -----------------------------------------------------------------------------

def _causes(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _state_size_estimate(trainer) -> int:
    # the trainable weights, and Adam's two running averages of the same size
    return 3 * sum(p.numel() * p.element_size() for p in trainer.model.parameters() if p.requires_grad)


def _is_full_disk(error: BaseException, trainer) -> bool:
    causes = list(_causes(error))
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(cause) or "os error 28" in str(cause):  # safetensors' message
            return True
    # torch.save on a full disk fails in its zip writer with a RuntimeError and no errno
    if any(word in str(cause) for cause in causes for word in ("PytorchStreamWriter", "inline_container", "iostream")):
        output_dir = Path(trainer.args.output_dir)
        if output_dir.exists():
            return shutil.disk_usage(output_dir).free < _state_size_estimate(trainer) + 2**20
    return False


def _full_disk_error(trainer, error: BaseException) -> OSError:
    output_dir = Path(trainer.args.output_dir)
    with_state = not trainer.args.save_only_model
    partial = [f for f in _checkpoint_folders(output_dir) if checkpoint_problem(f, with_state) is not None]
    for folder in partial:
        shutil.rmtree(folder, ignore_errors=True)
    complete = [f for f in _checkpoint_folders(output_dir) if checkpoint_problem(f, with_state) is None]
    last = complete[-1] if complete else None
    needed = folder_size(last) if last else _state_size_estimate(trainer)
    free = shutil.disk_usage(output_dir).free if output_dir.exists() else 0
    message = (f"The disk is full: saving the training state in '{output_dir}' failed ({first_line(error)}). "
               f"A checkpoint takes about {readable_size(needed)}; {readable_size(free)} are free. ")
    if partial:
        message += f"The incomplete {', '.join(f.name for f in partial)} was removed. "
    if last:
        message += (f"{last.name} is intact. Free some space (old adapters, merged models, outputs you no longer "
                    f"need) and run this cell again: training continues from step {checkpoint_step(last)}.")
    else:
        message += ("No checkpoint was saved yet. Free some space (old adapters, merged models, outputs you no "
                    "longer need) and run this cell again.")
    return OSError(errno.ENOSPC, message)


# -- the training loop ---------------------------------------------------------------------

def planned_steps(trainer) -> int:
    """The optimizer steps the trainer's arguments and dataset make, as Trainer counts them."""
    return trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]


def _warn_if_planned_otherwise(checkpoint: Path, steps: int) -> None:
    from transformers import TrainerState

    planned = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE)).max_steps
    if planned != steps:
        warnings.warn(f"'{checkpoint}' was saved by a run of {planned} steps, and this trainer plans {steps} (other "
                      "epochs, rows or batch size). Going on from it; to train the new plan from scratch, use another "
                      "output_dir or delete this one.", stacklevel=3)


def _load_finished(trainer, checkpoint: Path):
    """Load a finished run instead of training again: the final weights, state and metrics."""
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput

    state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE))
    try:  # written by `train` at the very end: the history with the final train_loss
        final = TrainerState.load_from_json(str(Path(trainer.args.output_dir) / TRAINER_STATE))
        if final.global_step == state.global_step:
            state = final
    except (OSError, ValueError, TypeError):
        pass
    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = state
    metrics = next(({k: v for k, v in entry.items() if k != "step"}
                    for entry in reversed(state.log_history) if "train_loss" in entry), {})
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    loss = metrics.get("train_loss", sum(losses) / len(losses) if losses else float("nan"))
    print(f"Training already finished: {checkpoint.name} in '{trainer.args.output_dir}' holds all "
          f"{state.global_step} steps. Loaded it instead of training again (delete the folder to train "
          "from scratch).")
    return TrainOutput(state.global_step, loss, metrics)


def train(trainer):
    """`trainer.train()` that carries on where the last run stopped; returns its `TrainOutput`.

    Run it again after the runtime died and it resumes from the newest complete checkpoint in
    `trainer.args.output_dir` (torn ones are moved aside with a warning), or starts from the
    beginning when there is none. Run it after training finished and it trains nothing: it loads
    the final checkpoint into the model and returns the recorded result. Out of GPU memory, it
    steps down to a smaller micro-batch with the same effective batch and continues from the last
    finished step; on a full disk it raises an `OSError` that says how much space is needed.
    """
    output_dir = Path(trainer.args.output_dir)
    memory = _LastFinishedStep()
    trainer.add_callback(memory)
    processes = trainer.args.world_size
    if processes > 1 and trainer.is_world_process_zero():
        # One process stepping down alone would wait for the others in a step they never take.
        print(f"{processes} processes: out of GPU memory, training stops with a message instead of stepping down "
              "to a smaller micro-batch.")
    try:
        while True:
            checkpoint = last_complete_checkpoint(output_dir, not trainer.args.save_only_model)
            steps = planned_steps(trainer)
            if checkpoint is not None:
                _warn_if_planned_otherwise(checkpoint, steps)
            if checkpoint is not None and checkpoint_step(checkpoint) >= steps:
                return _load_finished(trainer, checkpoint)
            if checkpoint is None:
                print(f"Training from the start: no checkpoint in '{output_dir}' yet ({steps} steps).")
            else:
                step = checkpoint_step(checkpoint)
                print(f"Resuming from {checkpoint.name} in '{output_dir}': step {step} of {steps}.")
            try:
                result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
                trainer.save_state()
                return result
            except OutOfMemoryError as error:
                reason = first_line(error)  # only the text: the exception holds the failed step's tensors
            if processes > 1:
                raise OutOfMemoryError(
                    f"Out of GPU memory in step {trainer.state.global_step + 1} on process {trainer.args.process_index} "
                    f"of {processes} ({reason}). Train again with a smaller --micro-batch (now "
                    f"{trainer.args.per_device_train_batch_size}): the effective batch stays the same, and training "
                    f"continues from the last checkpoint in '{output_dir}'.")
            _recover_from_out_of_memory(trainer, memory, reason)
    except Exception as error:
        if _is_full_disk(error, trainer):
            raise _full_disk_error(trainer, error) from None
        raise
    finally:
        trainer.remove_callback(memory)


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
        keep = (targets != -100).any(dim=0).nonzero().flatten()
        outputs = model(**inputs, logits_to_keep=keep)
        logits = outputs.logits.float()
        chosen = targets[:, keep].to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), chosen.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        # As the default loss: divided by the tokens of the whole accumulated batch when the
        # Trainer counted them for the model, else the mean of this micro-batch.
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss = loss / num_items_in_batch  # a 0-d count divides a loss on any device
            if self.args.average_tokens_across_devices:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        else:
            loss = loss / (chosen != -100).sum()
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
        seed=42,
        data_seed=42,
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        push_to_hub=push_to_hub,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def make_trainer(model, processor, profile: Profile, train_dataset, eval_dataset=None, output_dir="outputs/lora",
                 callbacks=None, precompute: bool = True, **overrides):
    """A `transformers.Trainer` wired with our collator and the profile's training arguments; its loss
    computes the output head only where the answer is learned (`helpers.training.AnswerLossTrainer`).

    With `precompute` (default) the audio features are computed once, before the first epoch,
    instead of in every batch of every epoch.
    """
    from helpers.collator import VoxtralAudioCollator, precompute_features
    from helpers.training import AnswerLossTrainer

    if precompute:
        train_dataset = precompute_features(train_dataset, processor)
        if eval_dataset is not None:
            eval_dataset = precompute_features(eval_dataset, processor)

    from helpers.training import TimeBudget

    args = training_arguments(profile, output_dir, **overrides)
    if profile.train_minutes:
        callbacks = [*(callbacks or []), TimeBudget(profile.train_minutes)]
    if eval_dataset is None:
        args.eval_strategy = "no"
    return AnswerLossTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                             data_collator=VoxtralAudioCollator(processor, dtype=model_dtype(model)), callbacks=callbacks)
