"""tutorial_kit.trainer_internals: the private parts of `transformers.Trainer` that resuming relies on are still
there and still mean what we use them for. A failure here after an upgrade names the recovery that would break;
tests/kit/test_resume.py runs them for real."""
import inspect

from accelerate.optimizer import AcceleratedOptimizer
from transformers import Trainer

from tutorial_kit import trainer_internals


def test_the_trainer_saves_a_checkpoint_for_a_model_and_a_trial():
    parameters = list(inspect.signature(Trainer._save_checkpoint).parameters)
    assert parameters[:3] == ["self", "model", "trial"]


def test_the_trainer_loads_a_checkpoints_weights_from_a_folder():
    parameters = list(inspect.signature(Trainer._load_from_checkpoint).parameters)
    assert parameters[:2] == ["self", "resume_from_checkpoint"]


def test_the_training_dataloader_is_built_from_the_stored_batch_size():
    """Out of memory, the micro-batch shrinks in `args`; the Trainer reads `_train_batch_size` when it builds its
    DataLoader, so that is what must follow."""
    assert "self._train_batch_size" in inspect.getsource(Trainer.get_train_dataloader)


def test_accelerate_wraps_the_optimizer_around_the_bare_one():
    import torch
    from accelerate import Accelerator

    Accelerator(cpu=True)  # accelerate's wrapper needs its state set up, as the Trainer does
    bare = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    trainer = type("T", (), {})()
    trainer.optimizer = AcceleratedOptimizer(bare, device_placement=False)
    trainer_internals.unwrap_optimizer(trainer)
    assert trainer.optimizer is bare
    trainer_internals.unwrap_optimizer(trainer)  # a bare one stays as it is
    assert trainer.optimizer is bare
