"""Training survives what a Colab runtime does to it: kills mid-step and mid-save, kills in a row,
running out of GPU memory, a full disk, and torn adapter files.

The kill tests start a real training process (tests/training_worker.py, forked from a server that
holds the imports), stop it with SIGKILL at a known point, run it again, and check both the step
the Trainer resumed from and that the final adapter is the uninterrupted run's (LoRA dropout on,
same seeds). The final weights alone could not tell a resume from a deterministic restart.
"""
import errno
import json
import multiprocessing
import multiprocessing.forkserver
import os
import random
import shutil
import time

import pytest
import torch
import training_worker  # tests/ is on sys.path: pytest puts a test folder without __init__.py there
from peft import get_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from helpers import checkpoints, training
from helpers.collator import precompute_features
from helpers.loading import load_model_and_processor
from helpers.lora import add_lora, freeze_audio_tower, lora_config
from helpers.training import make_trainer

# float32 on CPU: every resume here matched bit for bit (measured 0.0); one lost, repeated or
# re-drawn step moves the weights by ~1e-3.
TOLERANCE = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a shared 2-core machine a second one spins more than it computes (4x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# -- in-process runs -------------------------------------------------------------------------

class Recorder(TrainerCallback):
    def __init__(self):
        self.begins, self.steps = [], []

    def on_train_begin(self, args, state, control, **kwargs):
        self.begins.append(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps.append(state.global_step + 1)


@pytest.fixture(scope="module")
def featurized(splits, processor):
    return precompute_features(splits["train"].select(range(12)), processor)


def tiny_trainer(profile, rows, output_dir, seed=0, lora_dropout=None, **overrides):
    torch.manual_seed(seed)
    model, processor = load_model_and_processor(profile)
    config = lora_config() if lora_dropout is None else lora_config(lora_dropout=lora_dropout)
    model = add_lora(freeze_audio_tower(model), config)
    recorder = Recorder()
    settings = dict(max_steps=4, save_steps=1, logging_steps=1, disable_tqdm=True,
                    per_device_train_batch_size=2, gradient_accumulation_steps=2)
    settings.update(overrides)
    trainer = make_trainer(model, processor, profile, rows, output_dir=output_dir, callbacks=[recorder],
                           precompute=False, **settings)
    return trainer, recorder


def lora_weights(trainer) -> dict:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.model).items()}


@pytest.fixture(scope="module")
def finished(profile, featurized, tmp_path_factory):
    """A short run through `train` from an empty folder: 4 steps, checkpoints 3 and 4 kept."""
    output_dir = tmp_path_factory.mktemp("finished") / "out"
    trainer, recorder = tiny_trainer(profile, featurized.select(range(8)), output_dir)
    result = training.train(trainer)
    assert recorder.begins == [0] and recorder.steps == [1, 2, 3, 4]  # no checkpoint: from the start
    assert sorted(p.name for p in output_dir.iterdir()) == ["checkpoint-3", "checkpoint-4", "trainer_state.json"]
    return output_dir, lora_weights(trainer), result


def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "out")


def test_running_again_after_training_finished_trains_nothing(profile, featurized, finished, tmp_path, capsys):
    folder, weights, result = finished
    trainer, recorder = tiny_trainer(profile, featurized.select(range(8)), copy_of(folder, tmp_path), seed=123)
    again = training.train(trainer)
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
        training.train(trainer)


def test_resume_restores_the_dropout_random_numbers(profile, featurized, finished, tmp_path):
    folder, weights, _ = finished
    resumed_dir = copy_of(folder, tmp_path / "resumed")
    shutil.rmtree(resumed_dir / "checkpoint-4")
    trainer, recorder = tiny_trainer(profile, featurized.select(range(8)), resumed_dir, seed=123)
    training.train(trainer)
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
    training.train(trainer)
    assert max_difference(lora_weights(trainer), weights) > 10 * TOLERANCE


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


def test_damaged_adapter_files_are_named(finished, tmp_path):
    adapter = shutil.copytree(finished[0] / "checkpoint-4", tmp_path / "adapter")
    assert checkpoints.check_adapter_files(adapter)["peft_type"] == "LORA"
    weights = adapter / "adapter_model.safetensors"
    original = weights.read_bytes()
    _cut(weights)
    with pytest.raises(ValueError, match=f"'{weights}' is damaged .*incomplete metadata.*cut off while being written"):
        checkpoints.check_adapter_files(adapter)
    save_file({}, str(weights))
    with pytest.raises(ValueError, match="holds no tensors"):
        checkpoints.check_adapter_files(adapter)
    weights.write_bytes(original)
    _cut(adapter / "adapter_config.json")
    with pytest.raises(ValueError, match=f"'{adapter / 'adapter_config.json'}' is not valid JSON"):
        checkpoints.check_adapter_files(adapter)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    with pytest.raises(ValueError, match="not a LoRA adapter configuration"):
        checkpoints.check_adapter_files(adapter)
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_config.json' is missing"):
        checkpoints.check_adapter_files(adapter)


# -- out of GPU memory -----------------------------------------------------------------------

class MemoryLimit:
    """Makes the model's forward raise CUDA's out-of-memory error on micro-batches above `limit`
    rows from step `from_step` on (as when longer audio arrives), and records which rows each
    optimizer step used."""

    def __init__(self, trainer, limit, from_step=0):
        self.trainer, self.limit, self.from_step = trainer, limit, from_step
        self.rows_by_step: dict[int, list[str]] = {}
        features = trainer.train_dataset["input_features"]
        self.names = {features[i].tobytes(): trainer.train_dataset[i]["id"] for i in range(len(features))}
        trainer.model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        if not module.training:
            return
        step = self.trainer.state.global_step + 1
        rows = kwargs["input_ids"].shape[0]
        if rows > self.limit and step > self.from_step:
            raise training.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB for {rows} rows.")
        features = kwargs["input_features"].cpu().numpy()
        self.rows_by_step.setdefault(step, []).extend(self.names[f.tobytes()] for f in features)


def test_out_of_memory_halves_the_micro_batch_and_keeps_every_step(profile, featurized, tmp_path, capsys):
    # Without dropout: masks are drawn per micro-batch, so with dropout no two micro-batch sizes
    # agree even without a failure. Measured: 1.1e-7 from the reference (float32 rounding of step 1,
    # 4 rows at once instead of 2 + 2), 1.6e-6 for a whole run at 4 x 1, 0.0 between the reference
    # with and without checkpointing; one step moves the weights by ~1.5e-3.
    settings = dict(max_steps=3, save_steps=3, lora_dropout=0.0)  # 3 steps an epoch: step 1 is mid-epoch
    trainer, recorder = tiny_trainer(profile, featurized, tmp_path / "fails", per_device_train_batch_size=4,
                                     gradient_accumulation_steps=1, **settings)
    limit = MemoryLimit(trainer, limit=2, from_step=1)
    training.train(trainer)
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
    training.train(reference)
    assert {s: sorted(r) for s, r in limit.rows_by_step.items()} == {
        s: sorted(r) for s, r in reference_limit.rows_by_step.items()}  # the same rows in every step
    assert all(len(rows) == 4 for rows in limit.rows_by_step.values())  # effective batch 4 throughout
    assert max_difference(lora_weights(trainer), lora_weights(reference)) <= TOLERANCE


def test_out_of_memory_with_nothing_smaller_left_says_what_to_do(profile, featurized, tmp_path):
    trainer, _ = tiny_trainer(profile, featurized.select(range(4)), tmp_path / "out", per_device_train_batch_size=1,
                              gradient_accumulation_steps=4, activation_checkpointing=True, save_steps=10)
    MemoryLimit(trainer, limit=0, from_step=1)
    with pytest.raises(training.OutOfMemoryError, match="step 2 even with micro-batch 1 and activation checkpointing"
                       ".*load_in_4bit=True.*continues from step 1"):
        training.train(trainer)
    assert checkpoints.checkpoint_problem(tmp_path / "out" / "checkpoint-1") is None  # step 1 kept for the rerun


def test_smaller_training_tiers():
    assert training.smaller_training_tier(8, 2, False) == (4, 4)
    assert training.smaller_training_tier(16, 1, True) == (8, 2)
    assert training.smaller_training_tier(3, 2, True) == (1, 6)
    assert training.smaller_training_tier(1, 16, False) == (1, 16)  # only checkpointing left to turn on
    assert training.smaller_training_tier(1, 16, True) is None


# -- full disk -------------------------------------------------------------------------------

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
        monkeypatch.setattr(training.shutil, "disk_usage", lambda path: free)
    with pytest.raises(OSError) as caught:
        training.train(trainer)
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
        training.train(trainer)
        assert recorder.begins == [1] and recorder.steps == [2]


def test_other_save_errors_are_not_called_a_full_disk(profile, featurized, tmp_path, monkeypatch):
    trainer, _ = tiny_trainer(profile, featurized.select(range(4)), tmp_path / "out", max_steps=1)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
    with pytest.raises(PermissionError, match="denied"):
        training.train(trainer)


# -- killed processes ------------------------------------------------------------------------

class Attempt:
    def __init__(self, events: list[dict], log: str):
        self.events, self.log = events, log

    def steps(self, event: str) -> list[int]:
        return [e["step"] for e in self.events if e["event"] == event]

    @property
    def begins(self) -> list[int]:
        """The step the Trainer started from, at each `trainer.train` call."""
        return self.steps("begin")


def read_events(path) -> list[dict]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut off by the kill
            break
    return events


@pytest.fixture(scope="module", autouse=True)
def fork_server(request):
    """A server that imports PRELOAD once (10-30 s here) and forks every training process from there.

    Started with the module's first test when any kill test is selected, so the imports run on the
    second core while the in-process tests above run on the first.
    """
    wanted = any("worker" in item.fixturenames for item in request.session.items)
    if not wanted or "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(training_worker.PRELOAD)
    multiprocessing.forkserver.ensure_running()
    return context


@pytest.fixture(scope="module")
def worker(fork_server, featurized, tmp_path_factory):
    """Starts training processes on rows featurized once (saved to disk for them)."""
    if fork_server is None:
        pytest.skip("the kill tests need a fork server (Linux, macOS)")
    features = tmp_path_factory.mktemp("features") / "rows"
    featurized.save_to_disk(str(features))

    def start(folder, pause_at=None):
        return run_worker(fork_server, folder, features, pause_at)

    return start


def run_worker(context, folder, features, pause_at=None, timeout=300) -> Attempt:
    """One training process in `folder`; with `pause_at`, SIGKILLed when it gets there."""
    folder.mkdir(exist_ok=True)
    attempt = len(list(folder.glob("events-*.jsonl")))
    events_file, log_file = folder / f"events-{attempt}.jsonl", folder / f"log-{attempt}.txt"
    config = dict(output_dir=str(folder / "out"), events=str(events_file), log=str(log_file),
                  adapter=str(folder / "adapter"), pause_at=pause_at, features=str(features))
    process = context.Process(target=training_worker.run, args=(config,))
    process.start()
    deadline = time.monotonic() + timeout
    try:
        while process.is_alive():
            events = read_events(events_file)
            if pause_at and events and events[-1]["event"] == "paused":
                process.kill()  # SIGKILL: no cleanup, no atexit, files as they are
                break
            assert time.monotonic() < deadline, f"no result after {timeout} s: {events[-3:]}"
            time.sleep(0.02)
    finally:
        if process.is_alive():
            process.kill()
        process.join()
    log = log_file.read_text() if log_file.exists() else ""
    events = read_events(events_file)
    if pause_at:
        assert process.exitcode == -9, f"exit code {process.exitcode}, events {events[-3:]}\n{log[-3000:]}"
        assert {k: events[-2].get(k) for k in pause_at} == pause_at, events[-3:]
    else:
        assert process.exitcode == 0, f"exit code {process.exitcode}\n{log[-3000:]}"
        assert events[-1]["event"] == "done"
    return Attempt(events, log)


def adapter_of(folder) -> dict:
    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def straight(worker, tmp_path_factory):
    """The uninterrupted run every killed one must end at."""
    folder = tmp_path_factory.mktemp("straight")
    attempt = worker(folder)
    assert attempt.begins == [0] and attempt.steps("step_begin") == [1, 2, 3, 4]
    return adapter_of(folder)


def test_killed_in_the_middle_of_a_step_resumes_from_the_last_checkpoint(worker, straight, tmp_path):
    killed = worker(tmp_path, pause_at={"event": "substep", "step": 3})
    assert killed.steps("saved") == [2]  # step 3 had done one of its two micro-batches

    resumed = worker(tmp_path)
    assert resumed.begins == [2] and resumed.steps("step_begin") == [3, 4]
    assert "Resuming from checkpoint-2" in resumed.log
    assert max_difference(adapter_of(tmp_path), straight) <= TOLERANCE


def test_killed_while_writing_a_checkpoint_resumes_from_the_one_before(worker, straight, tmp_path):
    killed = worker(tmp_path, pause_at={
        "event": "half_written", "step": 4, "file": "adapter_model.safetensors"})
    torn = tmp_path / "out" / "checkpoint-4"
    with pytest.raises(SafetensorError, match="incomplete metadata"):  # what plain Trainer resume hits
        load_file(str(torn / "adapter_model.safetensors"))
    assert killed.steps("saved") == [2]

    resumed = worker(tmp_path)
    assert resumed.begins == [2] and resumed.steps("step_begin") == [3, 4]
    assert f"Checkpoint '{torn}' is incomplete" in resumed.log and "torn-checkpoint-4" in resumed.log
    assert (tmp_path / "out" / "torn-checkpoint-4").is_dir()
    assert checkpoints.checkpoint_problem(torn) is None  # saved again, whole, by the resumed run
    assert max_difference(adapter_of(tmp_path), straight) <= TOLERANCE


def kill_points() -> list[dict]:
    """Where a kill can land, in the order training reaches them (SETTINGS: 4 steps, saves at 2 and 4)."""
    settings = training_worker.SETTINGS
    points = []
    for step in range(1, settings["max_steps"] + 1):
        points += [{"event": "step_begin", "step": step}, {"event": "substep", "step": step}]
        if step % settings["save_steps"] == 0:
            points += [{"event": "half_written", "step": step, "file": "adapter_model.safetensors"},
                       {"event": "wrote", "step": step, "file": "adapter_model.safetensors"},
                       {"event": "wrote", "step": step, "file": "optimizer.pt"},
                       {"event": "wrote", "step": step, "file": "rng_state.pth"},
                       {"event": "saved", "step": step}]
    return points


CHOSEN_KILLS = [
    {"event": "substep", "step": 1},  # before any checkpoint: the next run starts from 0
    {"event": "wrote", "step": 2, "file": "optimizer.pt"},  # checkpoint-2 has weights, no state: from 0 again
    {"event": "half_written", "step": 4, "file": "adapter_model.safetensors"},  # from 2
    {"event": "saved", "step": 4},  # everything saved: the last run only loads it
]


def random_kills(seed: int, count: int = 4) -> list[dict]:
    points = kill_points()
    return [points[i] for i in sorted(random.Random(seed).sample(range(len(points)), count))]


@pytest.mark.parametrize("plan", ["chosen", pytest.param("random", marks=pytest.mark.extended)])
def test_killed_several_times_in_a_row_ends_at_the_uninterrupted_adapter(worker, straight, tmp_path, plan):
    seed = int(os.environ.get("VOXTRAL_KILL_SEED", "0"))
    kills = CHOSEN_KILLS if plan == "chosen" else random_kills(seed)
    last_saved = 0  # the newest checkpoint known to be whole: where the next run must start
    for pause_at in [*kills, None]:
        attempt = worker(tmp_path, pause_at=pause_at)
        if last_saved == training_worker.SETTINGS["max_steps"]:
            assert attempt.begins == [] and attempt.steps("step_begin") == []
            assert "Training already finished" in attempt.log
        else:
            assert attempt.begins == [last_saved], (kills, pause_at, attempt.events[:2])
            assert attempt.steps("step_begin")[0] == last_saved + 1
        last_saved = max([last_saved, *attempt.steps("saved")])
    assert max_difference(adapter_of(tmp_path), straight) <= TOLERANCE, kills
