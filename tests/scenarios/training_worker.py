"""A training run to kill: the process that tests/scenarios/test_killed_runs.py stops with SIGKILL.

`run(config)` trains the tiny profile through `tutorial_kit.resume.train` and appends one JSON line
per event to `config["events"]`: `begin` (with the step the Trainer starts from), `step_begin`,
`substep` (a micro-batch done inside a step), `wrote` (each file a checkpoint save finishes),
`saved` (a checkpoint complete) and `done`. With `config["pause_at"]` (a dict matched against
those events, or `{"event": "half_written", "step": N, "file": "adapter_model.safetensors"}`,
which writes half of that file) the run stops there and sleeps until it is killed, so the test
knows exactly where the process died. stdout and stderr go to `config["log"]`.

A fork server can import `PRELOAD` once for every run (importing them takes 10-20 s here).
Run by hand: python tests/scenarios/training_worker.py '{"output_dir": "/tmp/run", ...}'
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import datasets
import peft.peft_model
import safetensors.torch
import torch
from transformers import TrainerCallback, TrainerState

from helpers.data import load_splits
from helpers.loading import load_model_and_processor
from helpers.lora import add_lora, freeze_audio_tower
from helpers.profiles import get_profile
from helpers.training import make_trainer
from tutorial_kit import checkpoints, resume

# What a fork server should import before forking: everything slow that `run` needs. (It has to
# be importable without tests/ on the path: Python 3.11's fork server ignores the parent's sys.path.)
PRELOAD = ["torch", "peft", "datasets", "transformers.trainer", "transformers.models.voxtral.modeling_voxtral",
           "transformers.tokenization_mistral_common", "helpers.training", "tutorial_kit.checkpoints", "helpers.loading",
           "helpers.lora", "helpers.data", "helpers.audio", "helpers.collator"]

# 6 rows in steps of 1 x 2: 3 steps an epoch, so both checkpoints (2 and 4) fall inside an epoch
# and a resume skips batches; LoRA dropout as in the tutorial.
SETTINGS = dict(rows=6, micro_batch=1, accumulation=2, max_steps=4, save_steps=2)


class Events:
    def __init__(self, path, pause_at: dict | None):
        self.path = Path(path)
        self.pause_at = pause_at or {}
        self.started = time.monotonic()

    def matches(self, record: dict) -> bool:
        return bool(self.pause_at) and all(record.get(k) == v for k, v in self.pause_at.items())

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def __call__(self, event: str, **fields) -> None:
        record = {"event": event, **fields}
        self.write({**record, "seconds": round(time.monotonic() - self.started, 2), "wall": time.time()})
        if self.matches(record):
            self.pause()

    def pause(self) -> None:
        self.write({"event": "paused", "pid": os.getpid()})
        time.sleep(3600)  # until the test kills this process


class Reporter(TrainerCallback):
    def __init__(self, events: Events):
        self.events = events

    def on_train_begin(self, args, state, control, **kwargs):
        self.events("begin", step=state.global_step, micro_batch=args.per_device_train_batch_size,
                    accumulation=args.gradient_accumulation_steps)

    def on_step_begin(self, args, state, control, **kwargs):
        self.events("step_begin", step=state.global_step + 1)

    def on_substep_end(self, args, state, control, **kwargs):
        self.events("substep", step=state.global_step + 1)

    def on_save(self, args, state, control, **kwargs):
        self.events("saved", step=state.global_step)


def _step_of(path) -> int | None:
    return checkpoints.checkpoint_step(Path(path).parent)


def report_file_writes(events: Events) -> None:
    """Every file a checkpoint save writes reports itself; one can be written half and paused."""
    save_torch, save_tensors, save_state = torch.save, peft.peft_model.safe_save_file, TrainerState.save_to_json

    def torch_save(obj, f, *args, **kwargs):
        save_torch(obj, f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)):
            events("wrote", step=_step_of(f), file=Path(f).name)

    def tensors_save(tensors, filename, metadata=None):
        half = {"event": "half_written", "step": _step_of(filename), "file": Path(filename).name}
        if events.matches(half):
            data = safetensors.torch.save(tensors, metadata=metadata)
            with open(filename, "wb") as f:
                f.write(data[: len(data) // 2])
            events(**half)
        save_tensors(tensors, filename, metadata=metadata)
        events("wrote", step=_step_of(filename), file=Path(filename).name)

    def state_save(self, json_path):
        save_state(self, json_path)
        events("wrote", step=_step_of(json_path), file=Path(json_path).name)

    torch.save, peft.peft_model.safe_save_file, TrainerState.save_to_json = torch_save, tensors_save, state_save


def run(config: dict) -> None:
    log = open(config["log"], "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    torch.set_num_threads(1)  # a second thread on a shared 2-core machine spins more than it computes
    settings = {**SETTINGS, **config.get("settings", {})}
    events = Events(config["events"], config.get("pause_at"))
    report_file_writes(events)
    events("started")

    profile = get_profile("tiny")
    if config.get("features"):  # rows whose log-mel features were computed once, by the test
        rows, precompute = datasets.load_from_disk(config["features"]).select(range(settings["rows"])), False
    else:
        rows, precompute = load_splits(profile)["train"].select(range(settings["rows"])), True
    torch.manual_seed(0)  # the LoRA initialisation; a resumed run loads its weights instead
    model, processor = load_model_and_processor(profile)
    model = add_lora(freeze_audio_tower(model))
    trainer = make_trainer(model, processor, profile, rows, output_dir=config["output_dir"],
                           callbacks=[Reporter(events)], precompute=precompute, max_steps=settings["max_steps"],
                           save_steps=settings["save_steps"], logging_steps=1, disable_tqdm=True,
                           per_device_train_batch_size=settings["micro_batch"],
                           gradient_accumulation_steps=settings["accumulation"])
    result = resume.train(trainer)
    model.save_pretrained(config["adapter"])
    events("done", step=result.global_step, loss=result.training_loss)


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
