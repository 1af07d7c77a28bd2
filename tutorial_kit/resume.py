"""Training that a dying runtime cannot spoil: run the training cell again and it carries on.

`train(trainer)` replaces `trainer.train()`:

* it resumes from the newest *complete* checkpoint in `trainer.args.output_dir`; a checkpoint torn
  by a kill while it was being saved is moved aside (to `torn-checkpoint-N`) with a warning;
* it trains from the start when there is no checkpoint yet, and only loads the result when the
  run already finished;
* when the GPU runs out of memory it halves the micro-batch and doubles gradient accumulation
  (same effective batch, same update), turns activation checkpointing on, and continues from
  the last finished optimizer step (with several processes it stops with a message instead);
* when the disk fills up while saving it removes the half-written checkpoint and says how much
  space a checkpoint needs.

The Trainer internals it relies on are in `tutorial_kit.trainer_internals`, each with a test.
"""
from __future__ import annotations

import errno
import gc
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from helpers.loading import first_line
from helpers.training import planned_steps
from tutorial_kit import trainer_internals
from tutorial_kit.checkpoints import (
    TRAINER_STATE,
    checkpoint_folders,
    checkpoint_problem,
    checkpoint_step,
    folder_size,
    last_complete_checkpoint,
    readable_size,
)

OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

# -- out of memory ----------------------------------------------------------------------------

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


def _save_last_finished_step(trainer, last_step: _LastFinishedStep) -> None:
    """A checkpoint at the last finished optimizer step, unless the Trainer saved that step itself."""
    step = trainer.state.global_step
    existing = Path(trainer.args.output_dir) / f"checkpoint-{step}"
    if existing.is_dir() and checkpoint_problem(existing, not trainer.args.save_only_model) is None:
        return
    if last_step.random_state is not None:
        _restore_random_state(last_step.random_state)
    trainer_internals.save_checkpoint(trainer)


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
    trainer_internals.rebuild_train_batches(trainer)


def _recover_from_out_of_memory(trainer, last_step: _LastFinishedStep, reason: str) -> None:
    trainer.model.zero_grad(set_to_none=True)  # the failed step's half-accumulated gradients
    trainer_internals.unwrap_optimizer(trainer)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    args = trainer.args
    tier = smaller_training_tier(args.per_device_train_batch_size, args.gradient_accumulation_steps,
                                 bool(args.activation_checkpointing))
    if tier is not None:
        trainer.state.train_batch_size = tier[0] * max(1, args.n_gpu)  # recorded in the checkpoint below
    _save_last_finished_step(trainer, last_step)
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
    partial = [f for f in checkpoint_folders(output_dir) if checkpoint_problem(f, with_state) is not None]
    for folder in partial:
        shutil.rmtree(folder, ignore_errors=True)
    complete = [f for f in checkpoint_folders(output_dir) if checkpoint_problem(f, with_state) is None]
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
    trainer_internals.load_checkpoint_weights(trainer, checkpoint)
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
    last_step = _LastFinishedStep()
    trainer.add_callback(last_step)
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
            _recover_from_out_of_memory(trainer, last_step, reason)
    except Exception as error:
        if _is_full_disk(error, trainer):
            raise _full_disk_error(trainer, error) from None
        raise
    finally:
        trainer.remove_callback(last_step)


