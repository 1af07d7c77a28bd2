"""`python -m tutorial_kit.train`: notebook 03 as a command, the same adapter, and a rerun that resumes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, set_seed

from tutorial_kit import train as train_command
from tutorial_kit.train import build_parser, split_among_processes

ROOT = Path(__file__).resolve().parents[2]


def adapter_tensors(folder) -> dict:
    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def logged(folder, key: str) -> list[float]:
    state = json.loads((Path(folder) / "trainer_state.json").read_text())
    return [entry[key] for entry in state["log_history"] if key in entry]


def test_help_explains_every_option_in_words():
    done = subprocess.run([sys.executable, "-m", "tutorial_kit.train", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for option in ("--profile", "--output-dir", "--max-steps", "--epochs", "--seed", "--lora-dropout", "--micro-batch",
                   "--features", "--workers", "--dataset", "--metadata", "--audio-column", "--question-column",
                   "--category-column", "--answer-column", "--test-size"):
        assert option in text
    for words in ("OUTPUT_DIR/adapter", "OUTPUT_DIR/checkpoints", "continues from the last complete one",
                  "optimizer steps", "LoRA dropout", "against over-fitting", "effective batch", "float16",
                  "DataLoader worker", "metadata.csv", "generic instruction", "torchrun --nproc_per_node 2",
                  "accelerate launch --multi_gpu --num_processes 2", "same test rows"):
        assert words in text, words


def test_column_options_without_a_dataset_are_refused():
    done = subprocess.run([sys.executable, "-m", "tutorial_kit.train", "--question-column", "prompt"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "give its folder (or Hub id) with --dataset" in done.stderr
    done = subprocess.run([sys.executable, "-m", "tutorial_kit.train", "--question-column", "a", "--category-column", "b",
                           "--dataset", "x"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


@pytest.mark.parametrize("text, problem", [("--lora-dropout=1", "up to (not including) 1"),
                                           ("--max-steps=0", "positive whole number"),
                                           ("--test-size=2.5", "give a fraction between 0 and 1 (0.1 = 10% of the "
                                                                             "rows), a number of rows (20), or 0"),
                                           ("--features=disk", "invalid choice")])
def test_bad_option_values_say_what_is_expected(text, problem, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([text])
    assert problem in capsys.readouterr().err


def test_accumulation_is_divided_among_processes():
    assert split_among_processes(8, 2, 1) == (8, 2, None)
    assert split_among_processes(8, 2, 2) == (8, 1, None)  # 8 x 1 x 2 = 16
    assert split_among_processes(4, 4, 2) == (4, 2, None)


@pytest.mark.parametrize("planned, processes, expected", [
    ((8, 1), 2, (4, 1)),   # the tiny profile under two processes: 8 = 4 x 1 x 2
    ((8, 2), 4, (4, 1)),   # the full profile's 8 x 2 on four GPUs: 16 = 4 x 1 x 4
    ((16, 1), 8, (2, 1)),
    ((8, 1), 4, (2, 1)),
    ((6, 1), 4, None),     # 6 rows do not split among 4 processes
])
def test_a_batch_that_does_not_divide_takes_the_largest_micro_batch_that_keeps_it(planned, processes, expected):
    micro_batch, accumulation = planned
    if expected is None:
        with pytest.raises(ValueError, match=r"The effective batch of 6 rows cannot be shared equally by 4 processes: use a "
                                             r"number of processes that divides 6 \(1, 2, 3, 6\)\.$"):
            split_among_processes(micro_batch, accumulation, processes)
        return
    smaller, per_process, note = split_among_processes(micro_batch, accumulation, processes)
    assert (smaller, per_process) == expected
    assert smaller * per_process * processes == micro_batch * accumulation and smaller <= micro_batch
    assert note == (f"{processes} processes share the effective batch of {micro_batch * accumulation} as micro-batch "
                    f"{smaller} x {per_process} accumulation step each (the plan was {micro_batch} x {accumulation} in one "
                    "process).")


def notebook_03(output_dir: Path, max_steps: int):
    """Notebook 03's cells, in order, as the helpers run them (the training run shortened to
    `max_steps`, as $VOXTRAL_MAX_STEPS does), with the LoRA weights' starting values seeded."""
    from helpers.data import load_splits
    from helpers.loading import load_model_and_processor, save_adapter
    from helpers.lora import add_lora, freeze_audio_tower, lora_config
    from helpers.profiles import get_profile
    from helpers.training import make_trainer
    from tutorial_kit.resume import train

    profile = get_profile("tiny", max_train_steps=max_steps)
    splits = load_splits(profile)
    model, processor = load_model_and_processor(profile)
    set_seed(42)
    model = add_lora(freeze_audio_tower(model), lora_config())
    trainer = make_trainer(model, processor, profile, splits["train"], splits["test"], output_dir=output_dir / "run")
    train(trainer)
    return save_adapter(model, processor, output_dir / "adapter")


TRAINED = ["--profile", "tiny", "--max-steps", "4"]


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory) -> Path:
    """The command with its defaults (the frozen tower's output computed once per row), 4 steps."""
    output_dir = tmp_path_factory.mktemp("cli")
    assert train_command.main([*TRAINED, "--output-dir", str(output_dir)]) == 0
    return output_dir


@pytest.fixture(scope="module")
def log_mel_run(tmp_path_factory) -> Path:
    """The command with log-mel features stored in float32 and the tower run in every step, 4 steps."""
    output_dir = tmp_path_factory.mktemp("cli-log-mel")
    assert train_command.main([*TRAINED, "--features", "cached", "--output-dir", str(output_dir)]) == 0
    return output_dir


@pytest.mark.extended  # two training runs: about a minute on 2 cores
def test_the_command_trains_notebook_03s_adapter(cached_run, tmp_path):
    expected = notebook_03(tmp_path / "notebook", max_steps=4)
    ours, theirs = adapter_tensors(cached_run / "adapter"), adapter_tensors(expected)
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    assert logged(cached_run / "checkpoints", "loss") == logged(tmp_path / "notebook" / "run", "loss")
    assert (cached_run / "adapter" / "tekken.json").is_file()  # the processor beside it: the folder loads alone
    summary = json.loads((cached_run / "training_run.json").read_text())
    assert summary["steps"] == 4 and summary["train_rows"] == 160 and summary["effective_batch"] == 8


@pytest.mark.extended  # two training runs of 24 steps: about a minute on 2 cores
def test_the_tower_once_per_row_trains_the_adapter_of_the_tower_every_step(tmp_path, capsys):
    # 24 steps of 8 rows read the 160 training rows more than once: the tower's output is stored.
    runs = {route: tmp_path / route for route in ("tower", "cached")}
    for route, folder in runs.items():
        assert train_command.main(["--profile", "tiny", "--max-steps", "24", "--features", route,
                                   "--output-dir", str(folder)]) == 0
        expected = "audio tower: once per row" if route == "tower" else "audio tower: in every step"
        assert expected in capsys.readouterr().out
    ours, theirs = adapter_tensors(runs["tower"] / "adapter"), adapter_tensors(runs["cached"] / "adapter")
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert (ours[name] - theirs[name]).abs().max() <= 1e-6, name
    assert logged(runs["tower"] / "checkpoints", "loss") == pytest.approx(logged(runs["cached"] / "checkpoints", "loss"),
                                                                         abs=1e-6)
    assert json.loads((runs["tower"] / "training_run.json").read_text())["features"] == "tower"


@pytest.mark.extended  # two training runs: about a minute on 2 cores
def test_streaming_features_train_the_same_adapter(log_mel_run, tmp_path):
    # Features computed in a DataLoader worker while training are the cached ones, bit for bit.
    assert train_command.main([*TRAINED, "--features", "streaming", "--workers", "1", "--output-dir", str(tmp_path)]) == 0
    ours, theirs = adapter_tensors(tmp_path / "adapter"), adapter_tensors(log_mel_run / "adapter")
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name


@pytest.mark.extended  # two training runs: about a minute on 2 cores
def test_float16_features_train_with_nearly_the_same_loss(log_mel_run, tmp_path):
    assert train_command.main([*TRAINED, "--features", "float16", "--output-dir", str(tmp_path)]) == 0
    ours, theirs = logged(tmp_path / "checkpoints", "loss"), logged(log_mel_run / "checkpoints", "loss")
    assert ours == pytest.approx(theirs, rel=1e-3)


class StopAt(TrainerCallback):
    """Ends training after step `step`, as a runtime that died there would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


@pytest.mark.extended
def test_a_rerun_carries_on_from_the_last_checkpoint(tmp_path, capsys):
    # 12 steps, checkpoints every 10 (the tiny profile's), LoRA dropout on: the random numbers must resume too.
    arguments = ["--profile", "tiny", "--max-steps", "12"]
    assert train_command.main([*arguments, "--output-dir", str(tmp_path / "straight")]) == 0

    stopped = build_parser().parse_args([*arguments, "--output-dir", str(tmp_path / "stopped")])
    train_command.run(stopped, callbacks=[StopAt(10)])
    assert (tmp_path / "stopped" / "checkpoints" / "checkpoint-10").is_dir()
    capsys.readouterr()
    assert train_command.main([*arguments, "--output-dir", str(tmp_path / "stopped")]) == 0
    assert "Resuming from checkpoint-10" in capsys.readouterr().out
    straight, resumed = adapter_tensors(tmp_path / "straight" / "adapter"), adapter_tensors(tmp_path / "stopped" / "adapter")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6)

    assert train_command.main([*arguments, "--output-dir", str(tmp_path / "stopped")]) == 0  # finished: nothing to do
    assert "Training already finished" in capsys.readouterr().out
