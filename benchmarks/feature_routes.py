"""The three ways `python -m tutorial_kit.train --features` feeds audio to training, measured (tiny profile, CPU).

    .venv/bin/python -m benchmarks.feature_routes [--steps 8] [--rounds 3] [--threads 1]

* cached: log-mel features computed once (`precompute_features`), stored in float32;
* float16: the same, stored in float16;
* streaming: nothing stored, features computed in the DataLoader's worker processes while training.

For each: the preparation time and the disk each row takes (cached routes), the training speed
in samples/s over the whole run (worker start-up included) and once running (from the second
step on), and the losses, which must match the cached route's (identical for streaming, within
float16 rounding for float16). The routes take turns, `--rounds` times, and the median is
reported: on a shared machine the load changes from minute to minute, and turns spread it evenly.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from transformers import TrainerCallback, set_seed

from benchmarks.run import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


class StepClock(TrainerCallback):
    """Wall time from the end of the first optimizer step to the end of the last."""

    def __init__(self):
        self.first_step_done = None
        self.last_step_done = None

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if state.global_step == 1:
            self.first_step_done = now
        self.last_step_done = now


def cache_bytes(dataset) -> int:
    return sum(Path(f["filename"]).stat().st_size for f in dataset.cache_files)


def train_route(profile, processor_and_model, train_rows, steps: int, workers: int, output_dir: Path) -> dict:
    from helpers.lora import add_lora, freeze_audio_tower, lora_config
    from helpers.training import make_trainer

    model, processor = processor_and_model()
    set_seed(42)
    model = add_lora(freeze_audio_tower(model), lora_config(lora_dropout=0.0))
    clock = StepClock()
    trainer = make_trainer(model, processor, profile, train_rows, output_dir=output_dir, callbacks=[clock],
                           precompute=False, cache_tower_output=False, max_steps=steps, save_strategy="no",
                           logging_steps=1, disable_tqdm=True,
                           dataloader_num_workers=workers)
    start = time.perf_counter()
    result = trainer.train()
    total = time.perf_counter() - start
    batch = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "workers": workers,
        "train_seconds": round(total, 2),
        "train_samples_per_second": round(steps * batch / total, 2),
        "running_samples_per_second": round((steps - 1) * batch / (clock.last_step_done - clock.first_step_done), 2),
        "losses": losses,
        "training_loss": result.training_loss,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per measurement (8 rows each)")
    parser.add_argument("--rounds", type=int, default=3, help="how many times each route is measured, in turns")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the training process (the DataLoader's workers use one each)")
    parser.add_argument("--json", type=Path, default=RESULTS / "feature_routes.json")
    parser.add_argument("--output-dir", type=Path, default=ROOT / ".cache" / "feature-routes")
    options = parser.parse_args(argv)

    from helpers.collator import precompute_features
    from helpers.data import load_splits
    from helpers.loading import load_model_and_processor
    from helpers.profiles import get_profile

    profile = get_profile("tiny")
    splits = load_splits(profile)
    train_rows = splits["train"]

    def fresh():
        return load_model_and_processor(profile)

    torch.set_num_threads(options.threads)
    _, processor = fresh()
    load_before = os.getloadavg()
    routes: dict[str, dict] = {}
    stored = {}
    for name, dtype in (("cached", "float32"), ("float16", "float16")):
        start = time.perf_counter()
        stored[name] = precompute_features(train_rows, processor, dtype=dtype, load_from_cache_file=False)
        prepared = time.perf_counter() - start
        routes[name] = {"prepare_seconds": round(prepared, 2), "prepare_rows_per_second": round(len(train_rows) / prepared, 2),
                        "cache_mb_per_row": round(cache_bytes(stored[name]) / len(train_rows) / 1e6, 3), "runs": []}
    plan = [("cached", stored["cached"], 0), ("float16", stored["float16"], 0)]
    plan += [(f"streaming-{workers}-workers", train_rows, workers) for workers in (0, 1, 2)]
    for name, _, _ in plan[2:]:
        routes[name] = {"prepare_seconds": 0.0, "prepare_rows_per_second": None, "cache_mb_per_row": 0.0, "runs": []}
    for round_number in range(options.rounds):
        for name, rows, workers in plan:
            measured = train_route(profile, fresh, rows, options.steps, workers, options.output_dir / name)
            routes[name]["runs"].append(measured)
            print(f"round {round_number + 1}: {name}: {measured['train_samples_per_second']} samples/s", flush=True)
    reference = routes["cached"]["runs"][0]["losses"]
    for route in routes.values():
        runs = route["runs"]
        route["workers"] = runs[0]["workers"]
        for key in ("train_samples_per_second", "running_samples_per_second"):
            route[key] = statistics.median(run[key] for run in runs)
        route["largest_loss_difference_to_cached"] = max(abs(a - b) for run in runs for a, b in zip(run["losses"], reference))
    report = {"what": "tiny profile, training rows of Big Bench Audio's stand-in, micro-batch 8, LoRA dropout 0; "
                      "samples/s are medians over the rounds",
              "machine": machine(), "torch_threads": options.threads, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "rows": len(train_rows), "steps": options.steps,
              "rounds": options.rounds, "routes": routes}
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(report, indent=2) + "\n")
    width = max(map(len, routes))
    print(f"\n{'route':<{width}}  prepare s  MB/row  train samples/s  running samples/s  loss diff")
    for name, r in routes.items():
        print(f"{name:<{width}}  {r['prepare_seconds']:9.1f}  {r['cache_mb_per_row']:6.3f}  {r['train_samples_per_second']:15.2f}"
              f"  {r['running_samples_per_second']:17.2f}  {r['largest_loss_difference_to_cached']:.1e}")
    print(f"written: {options.json}")
    return report


if __name__ == "__main__":
    main()
