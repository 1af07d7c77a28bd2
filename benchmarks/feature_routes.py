"""The three ways `python -m helpers.train --features` feeds audio to training, measured (tiny profile, CPU).

    .venv/bin/python -m benchmarks.feature_routes [--steps 12] [--json benchmarks/results/feature_routes.json]

* cached: log-mel features computed once (`precompute_features`), stored in float32;
* float16: the same, stored in float16;
* streaming: nothing stored, features computed in the DataLoader's worker processes while training.

For each: the preparation time and the disk each row takes (cached routes), the training speed
in samples/s over the whole run (worker start-up included) and once running (from the second
step on), and the final training loss, which must match the cached route's (identical for
streaming, within float16 rounding for float16).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

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
                           precompute=False, max_steps=steps, save_strategy="no", logging_steps=1, disable_tqdm=True,
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
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per route (8 rows each)")
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

    _, processor = fresh()
    routes = {}
    for name, dtype in (("cached", "float32"), ("float16", "float16")):
        start = time.perf_counter()
        features = precompute_features(train_rows, processor, dtype=dtype, load_from_cache_file=False)
        prepared = time.perf_counter() - start
        routes[name] = {"prepare_seconds": round(prepared, 2), "prepare_rows_per_second": round(len(train_rows) / prepared, 2),
                        "cache_mb_per_row": round(cache_bytes(features) / len(train_rows) / 1e6, 3),
                        **train_route(profile, fresh, features, options.steps, 0, options.output_dir / name)}
        print(name, routes[name], flush=True)
    for workers in (0, 1, 2):
        name = f"streaming-{workers}-workers"
        routes[name] = {"prepare_seconds": 0.0, "cache_mb_per_row": 0.0,
                        **train_route(profile, fresh, train_rows, options.steps, workers, options.output_dir / name)}
        print(name, routes[name], flush=True)

    reference = routes["cached"]["losses"]
    for name, route in routes.items():
        route["largest_loss_difference_to_cached"] = max(abs(a - b) for a, b in zip(route["losses"], reference))
    report = {"what": "tiny profile, training rows of Big Bench Audio's stand-in, micro-batch 8, LoRA dropout 0",
              "machine": machine(), "rows": len(train_rows), "steps": options.steps, "routes": routes}
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
