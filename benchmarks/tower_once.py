"""The frozen audio tower run once per row against once per step, side by side in one run (tiny profile, CPU).

    .venv/bin/python -m benchmarks.tower_once [--epochs 3] [--rounds 2] [--threads 1]

* every step (before): log-mel features computed once (`precompute_features`); the tower runs in
  every training step and every evaluation-loss pass;
* once (after): the tower's output computed once per row (`helpers.frozen_tower.cache_tower_outputs`,
  from the audio, log-mel included) and reused by every epoch and evaluation pass.

Both are timed end to end: the preparation pass plus notebook 03's training (all epochs, with its
evaluation-loss passes on the test split). The two routes take turns `--rounds` times and the
median is reported; their losses and final LoRA weights are compared (float32: equal to 1e-6).
It also counts, from the full-size architecture (Voxtral-Mini-3B, meta device), the share of a
training sample's arithmetic the tower takes, which is what caching removes from every epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from transformers import set_seed

from benchmarks.run import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ROUTES = ("every step", "once")


def tower_share_full_size(answer_tokens: int = 3) -> dict:
    """The tower's share of one training sample's FLOPs at full size (one 30-s chunk): 2 per weight
    and position forward, 2 more backward for the language model's activations (its weights are
    frozen), attention scores (4 x positions^2 x width per layer, forward) included, the output head
    only on the answer's tokens (the answer-only loss); and again with activation checkpointing's
    second forward pass of the language model."""
    from benchmarks.train_step import AUDIO_TOKENS, TEXT_TOKENS, full_size_config, parameter_counts

    config = full_size_config()
    tower, head, rest = parameter_counts(config)
    tokens = 3 + AUDIO_TOKENS + TEXT_TOKENS
    audio, text = config.audio_config, config.text_config
    positions = audio.max_source_positions
    tower_flops = 2 * tower * positions + 4 * positions**2 * audio.hidden_size * audio.num_hidden_layers
    text_attention = 4 * tokens**2 * text.num_attention_heads * text.head_dim * text.num_hidden_layers
    language = 2 * (2 * rest * tokens + text_attention) + 4 * head * answer_tokens
    recompute = 2 * rest * tokens + text_attention
    return {"tower_parameters": tower, "tokens_per_sample": tokens, "tower_tflops": tower_flops / 1e12,
            "language_model_tflops": language / 1e12, "checkpointing_recompute_tflops": recompute / 1e12,
            "tower_share": tower_flops / (tower_flops + language),
            "tower_share_with_checkpointing": tower_flops / (tower_flops + language + recompute)}


def run_route(route: str, profile, splits, epochs: float, output_dir: Path) -> dict:
    from peft import get_peft_model_state_dict

    from helpers.collator import precompute_features
    from helpers.frozen_tower import cache_tower_outputs
    from helpers.loading import load_model_and_processor
    from helpers.lora import add_lora, freeze_audio_tower, lora_config
    from helpers.training import make_trainer

    model, processor = load_model_and_processor(profile)
    set_seed(42)
    model = add_lora(freeze_audio_tower(model), lora_config(lora_dropout=0.0))
    start = time.perf_counter()
    if route == "once":
        train, test = (cache_tower_outputs(splits[s], model, processor, load_from_cache_file=False) for s in ("train", "test"))
    else:
        train, test = (precompute_features(splits[s], processor, load_from_cache_file=False) for s in ("train", "test"))
    prepared = time.perf_counter() - start
    trainer = make_trainer(model, processor, profile, train, test, output_dir=output_dir, precompute=False,
                           cache_tower_output=route == "once", num_train_epochs=epochs, save_strategy="no",
                           disable_tqdm=True)
    result = trainer.train()
    total = time.perf_counter() - start
    history = trainer.state.log_history
    return {"prepare_seconds": round(prepared, 2), "train_seconds": round(total - prepared, 2),
            "total_seconds": round(total, 2), "steps": result.global_step,
            "evaluation_passes": sum("eval_loss" in entry for entry in history),
            "losses": [entry["loss"] for entry in history if "loss" in entry],
            "eval_losses": [entry["eval_loss"] for entry in history if "eval_loss" in entry],
            "lora": {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.model).items()}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="how many times each route is measured, in turns")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, default=RESULTS / "tower_once.json")
    parser.add_argument("--output-dir", type=Path, default=ROOT / ".cache" / "tower-once")
    options = parser.parse_args(argv)

    from helpers.data import load_splits
    from helpers.profiles import get_profile

    torch.set_num_threads(options.threads)
    profile = get_profile("tiny")
    splits = load_splits(profile)
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {route: [] for route in ROUTES}
    for round_number in range(options.rounds):
        for route in ROUTES:
            measured = run_route(route, profile, splits, options.epochs, options.output_dir / route)
            runs[route].append(measured)
            print(f"round {round_number + 1}: tower {route}: {measured['total_seconds']} s "
                  f"({measured['prepare_seconds']} s preparing)", flush=True)
    before, after = runs["every step"][0], runs["once"][0]
    lora_difference = max((before["lora"][k] - after["lora"][k]).abs().max().item() for k in before["lora"])
    loss_difference = max(abs(a - b) for a, b in zip(before["losses"] + before["eval_losses"],
                                                     after["losses"] + after["eval_losses"]))
    routes = {route: {key: statistics.median(run[key] for run in measured)
                      for key in ("prepare_seconds", "train_seconds", "total_seconds")}
              | {"steps": measured[0]["steps"], "evaluation_passes": measured[0]["evaluation_passes"]}
              for route, measured in runs.items()}
    share = tower_share_full_size()
    report = {"what": f"tiny profile, {len(splits['train'])} training rows, {len(splits['test'])} test rows, "
                      f"{options.epochs:g} epochs, LoRA dropout 0, float32; seconds are medians over the rounds",
              "machine": machine(), "torch_threads": options.threads, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "rounds": options.rounds, "routes": routes,
              "speed-up": routes["every step"]["total_seconds"] / routes["once"]["total_seconds"],
              "largest_loss_difference": loss_difference, "largest_lora_difference": lora_difference,
              "full_size": share}
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'tower':<11} {'prepare s':>9} {'train s':>8} {'total s':>8}  steps  evaluation passes")
    for route, r in routes.items():
        print(f"{route:<11} {r['prepare_seconds']:9.1f} {r['train_seconds']:8.1f} {r['total_seconds']:8.1f}  "
              f"{r['steps']:5d}  {r['evaluation_passes']}")
    print(f"speed-up {report['speed-up']:.2f}x; largest loss difference {loss_difference:.1e}, "
          f"largest LoRA weight difference {lora_difference:.1e}")
    print(f"full size, per training sample (one 30-s chunk): tower {share['tower_tflops']:.2f} TFLOP of "
          f"{share['tower_tflops'] + share['language_model_tflops']:.2f} ({100 * share['tower_share']:.0f}%), "
          f"{100 * share['tower_share_with_checkpointing']:.0f}% with activation checkpointing")
    print(f"written: {options.json}")
    return report


if __name__ == "__main__":
    main()
