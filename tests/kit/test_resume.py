"""tutorial_kit.resume: training that carries on when the cell runs again, out of GPU memory, and on a
full disk (in-process runs; tests/scenarios/test_killed_runs.py kills real processes)."""
import errno
import json
import os
import shutil

import pytest
import torch
from training_runs import TOLERANCE, copy_of, lora_weights, max_difference, tiny_trainer  # noqa: I001 - tests/ is on the path

from helpers.collator import TOWER_OUTPUT
from tutorial_kit import checkpoints, resume

pytestmark = pytest.mark.usefixtures("one_thread")


def test_running_again_after_training_finished_trains_nothing(profile, featurized, finished, tmp_path, capsys):
    folder, weights, result = finished
    trainer, recorder = tiny_trainer(profile, featurized.select(range(8)), copy_of(folder, tmp_path), seed=123)
    again = resume.train(trainer)
    assert recorder.begins == [] and recorder.steps == []
    assert "Training already finished: checkpoint-4" in capsys.readouterr().out
    assert again.global_step == 4 and again.training_loss == pytest.approx(result.training_loss)
    assert again.metrics["train_loss"] == pytest.approx(result.metrics["train_loss"])
    assert max_difference(lora_weights(trainer), weights) == 0  # the final checkpoint, loaded
    assert [h["loss"] for h in trainer.state.log_history if "loss" in h] == [
        h["loss"] for h in json.loads((folder / "trainer_state.json").read_text())["log_history"] if "loss" in h]


def test_a_checkpoint_of_another_plan_is_named(profile, featurized, finished, tmp_path):
    trainer, _ = tiny_trainer(profile, featurized.select(range(8)), copy_of(finished[0], tmp_path), max_steps=3)
    with pytest.warns(UserWarning, match="checkpoint-4' was saved by a run of 4 steps, and this trainer plans 3"):
        resume.train(trainer)


def test_resume_restores_the_dropout_random_numbers(profile, featurized, finished, tmp_path):
    folder, weights, _ = finished
    resumed_dir = copy_of(folder, tmp_path / "resumed")
    shutil.rmtree(resumed_dir / "checkpoint-4")
    trainer, recorder = tiny_trainer(profile, featurized.select(range(8)), resumed_dir, seed=123)
    resume.train(trainer)
    assert recorder.begins == [3] and recorder.steps == [4]
    assert max_difference(lora_weights(trainer), weights) <= TOLERANCE

    # Control: the same resume with other random numbers draws other dropout masks; the result is
    # ~1e-3 away (measured; the restored resume: 0.0), so the check above does see the restored state.
    scrambled_dir = copy_of(folder, tmp_path / "scrambled")
    shutil.rmtree(scrambled_dir / "checkpoint-4")
    rng_file = scrambled_dir / "checkpoint-3" / "rng_state.pth"
    rng = torch.load(rng_file, weights_only=False)
    rng["cpu"] = torch.Generator().manual_seed(7).get_state()
    torch.save(rng, rng_file)
    trainer, _ = tiny_trainer(profile, featurized.select(range(8)), scrambled_dir, seed=123)
    resume.train(trainer)
    assert max_difference(lora_weights(trainer), weights) > 10 * TOLERANCE


class MemoryLimit:
    """Makes the model's forward raise CUDA's out-of-memory error on micro-batches above `limit`
    rows from step `from_step` on (as when longer audio arrives), and records which rows each
    optimizer step used."""

    def __init__(self, trainer, limit, from_step=0):
        self.trainer, self.limit, self.from_step = trainer, limit, from_step
        self.rows_by_step: dict[int, list[str]] = {}
        # the audio the model gets: log-mel features, or the frozen tower's stored output (helpers.frozen_tower)
        column = TOWER_OUTPUT if TOWER_OUTPUT in trainer.train_dataset.column_names else "input_features"
        features = trainer.train_dataset[column]
        # a row's first 30-s chunk names it; a second chunk (a clip over 30 s) names nothing
        self.names = {features[i][0].tobytes(): trainer.train_dataset[i]["id"] for i in range(len(features))}
        trainer.model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        if not module.training:
            return
        step = self.trainer.state.global_step + 1
        rows = kwargs["input_ids"].shape[0]
        if rows > self.limit and step > self.from_step:
            raise resume.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB for {rows} rows.")
        features = kwargs.get("input_features", kwargs.get(TOWER_OUTPUT)).cpu().numpy()
        self.rows_by_step.setdefault(step, []).extend(self.names[f.tobytes()] for f in features if f.tobytes() in self.names)


def test_out_of_memory_halves_the_micro_batch_and_keeps_every_step(profile, featurized, tmp_path, capsys):
    # Without dropout: masks are drawn per micro-batch, so with dropout no two micro-batch sizes
    # agree even without a failure. Measured: 1.1e-7 from the reference (float32 rounding of step 1,
    # 4 rows at once instead of 2 + 2), 1.6e-6 for a whole run at 4 x 1, 0.0 between the reference
    # with and without checkpointing; one step moves the weights by ~1.5e-3.
    settings = dict(max_steps=3, save_steps=3, lora_dropout=0.0)  # 3 steps an epoch: step 1 is mid-epoch
    trainer, recorder = tiny_trainer(profile, featurized, tmp_path / "fails", per_device_train_batch_size=4,
                                     gradient_accumulation_steps=1, **settings)
    limit = MemoryLimit(trainer, limit=2, from_step=1)
    resume.train(trainer)
    assert ("Out of GPU memory in step 2 (micro-batch 4 x 1): continuing from step 1 with micro-batch 2 x 2 "
            "and activation checkpointing; the effective batch stays 4.") in capsys.readouterr().out
    # continued from step 1, which no regular checkpoint (every 3 steps) had saved
    assert recorder.begins == [0, 1] and recorder.steps == [1, 2, 2, 3]
    args = trainer.args
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 2)
    assert args.activation_checkpointing

    # checkpointing changes no number (measured 0.0) and triples the CPU time: the reference runs without
    reference, _ = tiny_trainer(profile, featurized, tmp_path / "small", per_device_train_batch_size=2,
                                gradient_accumulation_steps=2, **settings)
    reference_limit = MemoryLimit(reference, limit=2)
    resume.train(reference)
    assert {s: sorted(r) for s, r in limit.rows_by_step.items()} == {
        s: sorted(r) for s, r in reference_limit.rows_by_step.items()}  # the same rows in every step
    assert all(len(rows) == 4 for rows in limit.rows_by_step.values())  # effective batch 4 throughout
    assert max_difference(lora_weights(trainer), lora_weights(reference)) <= TOLERANCE


def test_out_of_memory_with_nothing_smaller_left_says_what_to_do(profile, featurized, tmp_path):
    trainer, _ = tiny_trainer(profile, featurized.select(range(4)), tmp_path / "out", per_device_train_batch_size=1,
                              gradient_accumulation_steps=4, activation_checkpointing=True, save_steps=10)
    MemoryLimit(trainer, limit=0, from_step=1)
    with pytest.raises(resume.OutOfMemoryError, match="step 2 even with micro-batch 1 and activation checkpointing"
                       ".*load_in_4bit=True.*continues from step 1"):
        resume.train(trainer)
    assert checkpoints.checkpoint_problem(tmp_path / "out" / "checkpoint-1") is None  # step 1 kept for the rerun


def test_smaller_training_tiers():
    assert resume.smaller_training_tier(8, 2, False) == (4, 4)
    assert resume.smaller_training_tier(16, 1, True) == (8, 2)
    assert resume.smaller_training_tier(3, 2, True) == (1, 6)
    assert resume.smaller_training_tier(1, 16, False) == (1, 16)  # only checkpointing left to turn on
    assert resume.smaller_training_tier(1, 16, True) is None


def _no_space(path):
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def _torch_full_disk(path):
    # what torch.save raises on a full disk: a RuntimeError from its zip writer, no errno
    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    error.__context__ = RuntimeError("basic_ios::clear: iostream error")
    return error


@pytest.mark.parametrize("shape", ["OSError", "torch.save"])
def test_a_full_disk_while_saving_keeps_the_last_checkpoint(profile, featurized, tmp_path, monkeypatch, shape):
    output_dir = tmp_path / "out"
    trainer, _ = tiny_trainer(profile, featurized.select(range(8)), output_dir, max_steps=2)
    save = torch.save

    def fill_up(obj, f, *args, **kwargs):
        if str(f).endswith(os.path.join("checkpoint-2", "optimizer.pt")):  # the adapter is already written
            raise (_no_space if shape == "OSError" else _torch_full_disk)(f)
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fill_up)
    if shape == "torch.save":
        free = shutil.disk_usage(tmp_path)._replace(free=1000)
        monkeypatch.setattr(resume.shutil, "disk_usage", lambda path: free)
    with pytest.raises(OSError) as caught:
        resume.train(trainer)
    size = sum(f.stat().st_size for f in (output_dir / "checkpoint-1").rglob("*") if f.is_file())
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    assert f"The disk is full: saving the training state in '{output_dir}' failed" in message
    assert f"A checkpoint takes about {size / 1000:.1f} kB" in message
    assert "The incomplete checkpoint-2 was removed. checkpoint-1 is intact" in message
    assert "training continues from step 1" in message
    assert not (output_dir / "checkpoint-2").exists()
    assert checkpoints.checkpoint_problem(output_dir / "checkpoint-1") is None

    if shape == "OSError":  # space freed: the same cell carries on from step 1
        monkeypatch.undo()
        trainer, recorder = tiny_trainer(profile, featurized.select(range(8)), output_dir, max_steps=2)
        resume.train(trainer)
        assert recorder.begins == [1] and recorder.steps == [2]


def test_other_save_errors_are_not_called_a_full_disk(profile, featurized, tmp_path, monkeypatch):
    trainer, _ = tiny_trainer(profile, featurized.select(range(4)), tmp_path / "out", max_steps=1)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
    with pytest.raises(PermissionError, match="denied"):
        resume.train(trainer)
