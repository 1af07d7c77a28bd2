"""tutorial_kit.checkpoints: a torn checkpoint is set aside with a warning, and training starts over when
none is whole."""
import shutil

import pytest
from training_runs import copy_of  # noqa: I001 - tests/ is on the path

from tutorial_kit import checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


TEARS = {
    "adapter weights cut off": lambda c: _cut(c / "adapter_model.safetensors"),
    "adapter config cut off": lambda c: _cut(c / "adapter_config.json"),
    "no trainer state": lambda c: (c / "trainer_state.json").unlink(),
    "trainer state cut off": lambda c: _cut(c / "trainer_state.json"),
    "trainer state of another step": lambda c: shutil.copy(c.parent / "checkpoint-3" / "trainer_state.json", c),
    "optimizer cut off": lambda c: _cut(c / "optimizer.pt", 0.9),
    "no scheduler": lambda c: (c / "scheduler.pt").unlink(),
    "empty random-number state": lambda c: _cut(c / "rng_state.pth", 0),
}


@pytest.mark.parametrize("tear", TEARS)
def test_a_torn_checkpoint_is_set_aside_with_a_warning(finished, tmp_path, tear):
    output_dir = copy_of(finished[0], tmp_path)
    TEARS[tear](output_dir / "checkpoint-4")
    with pytest.warns(checkpoints.IncompleteCheckpointWarning, match=f"'{output_dir / 'checkpoint-4'}' is incomplete"):
        assert checkpoints.last_complete_checkpoint(output_dir) == output_dir / "checkpoint-3"
    assert not (output_dir / "checkpoint-4").exists() and (output_dir / "torn-checkpoint-4").is_dir()
    assert checkpoints.last_complete_checkpoint(output_dir) == output_dir / "checkpoint-3"  # no second warning


def test_with_every_checkpoint_torn_training_starts_from_the_beginning(finished, tmp_path):
    output_dir = copy_of(finished[0], tmp_path)
    for name in ("checkpoint-3", "checkpoint-4"):
        (output_dir / name / "rng_state.pth").unlink()
    with pytest.warns(checkpoints.IncompleteCheckpointWarning) as caught:
        assert checkpoints.last_complete_checkpoint(output_dir) is None
    assert len(caught) == 2
    assert checkpoints.last_complete_checkpoint(tmp_path / "never-created") is None
