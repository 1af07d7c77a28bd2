"""Training survives what a Colab runtime does to it: kills mid-step and mid-save, kills in a row,
running out of GPU memory, a full disk, and torn adapter files.

The kill tests start a real training process (tests/scenarios/training_worker.py, forked from a server that
holds the imports), stop it with SIGKILL at a known point, run it again, and check both the step
the Trainer resumed from and that the final adapter is the uninterrupted run's (LoRA dropout on,
same seeds). The final weights alone could not tell a resume from a deterministic restart.
"""
import json
import multiprocessing
import multiprocessing.forkserver
import os
import random
import time

import pytest
import training_worker  # tests/ is on sys.path: pytest puts a test folder without __init__.py there
from safetensors import SafetensorError
from safetensors.torch import load_file
from training_runs import TOLERANCE, max_difference  # noqa: I001 - tests/ is on the path

from tutorial_kit import checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")


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
