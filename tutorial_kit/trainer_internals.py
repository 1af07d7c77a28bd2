"""The few private parts of `transformers.Trainer` that resuming and out-of-memory recovery rely on.

All in one place, each behind a function with a test (tests/kit/test_trainer_internals.py) that fails when
transformers changes it, so an upgrade shows at once which recovery would break.
"""
from __future__ import annotations

from pathlib import Path


def save_checkpoint(trainer) -> None:
    """Write `checkpoint-<global step>` as the Trainer's own periodic save does (weights, optimizer, scheduler,
    random-number state, trainer state)."""
    trainer._save_checkpoint(trainer.model, trial=None)


def load_checkpoint_weights(trainer, checkpoint: Path) -> None:
    """Load a checkpoint's weights (the adapter, for a PEFT model) into `trainer.model`."""
    trainer._load_from_checkpoint(str(checkpoint))


def rebuild_train_batches(trainer) -> None:
    """Make the next `trainer.train()` build its training DataLoader from `args`' (new) micro-batch."""
    trainer._train_batch_size = trainer.args.train_batch_size


def unwrap_optimizer(trainer) -> None:
    """Hand the next `trainer.train()` the bare optimizer: it wraps it for accelerate again itself."""
    trainer.optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
