"""Evaluation throughput with the full-size Voxtral architecture: the published way against ours.

Random weights from `VoxtralConfig()` (no download) and a processor with the real model's 131072
token ids. The published way generates one sample at a time from a base64 WAV through the chat
template (`helpers.published.published_generate`); ours is `helpers.evaluate.evaluate` at batch
16. Both are greedy, so their predictions must agree: checked in float32 with TF32 off (batched
and single-sample bf16 kernels round differently, and a random model's near-tied logits flip).

    python -m benchmarks.evaluation_full_size --save-rows rows.npz    # rows from the tiny dataset
    python -m benchmarks.evaluation_full_size --rows rows.npz         # on a GPU (no `datasets` needed)
    python -m benchmarks.evaluation_full_size --device cpu --tiny     # smoke test, tiny model
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

BATCH_SIZE = 16
MAX_NEW_TOKENS = 16  # the full profile's


def tiny_rows(count: int) -> list[dict]:
    """`count` rows of the tiny dataset, categories interleaved, audio decoded."""
    from helpers.audio import load_audio
    from helpers.data import load_splits
    from helpers.profiles import get_profile

    splits = load_splits(get_profile("tiny"))
    rows = list(islice((splits[name][i] for name in ("test", "train") for i in range(len(splits[name]))), count))
    if len(rows) < count:
        raise ValueError(f"asked for {count} rows; the tiny dataset has {len(rows)}")
    return [{"audio": {"array": load_audio(r["audio"]), "sampling_rate": 16000}, "category": r["category"],
             "official_answer": r["official_answer"]} for r in rows]


def save_rows(rows: list[dict], path: str) -> None:
    arrays = [r["audio"]["array"] for r in rows]
    np.savez_compressed(path, audio=np.concatenate(arrays), lengths=np.array([len(a) for a in arrays]),
                        category=np.array([r["category"] for r in rows]),
                        official_answer=np.array([str(r["official_answer"]) for r in rows]))


def load_rows(path: str) -> list[dict]:
    data = np.load(path)
    arrays = np.split(data["audio"], np.cumsum(data["lengths"])[:-1])
    return [{"audio": {"array": a, "sampling_rate": 16000}, "category": str(c), "official_answer": str(o)}
            for a, c, o in zip(arrays, data["category"], data["official_answer"])]


def build(tiny: bool, device: str, dtype: torch.dtype, folder: str):
    from transformers import VoxtralForConditionalGeneration

    from tutorial_kit import tiny as tiny_assets

    if tiny:
        model_dir = tiny_assets.ensure_tiny_assets().model_dir
        model = VoxtralForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).to(device)
        processor = tiny_assets.build_processor(folder)
    else:
        from benchmarks.train_step import full_size_config

        processor = tiny_assets.build_processor(folder, tiny_assets.FULL_SIZE_SPECIAL_TOKENS,
                                                tiny_assets.FULL_SIZE_TEXT_TOKENS)
        torch.manual_seed(0)
        with torch.device(device):
            model = VoxtralForConditionalGeneration(full_size_config()).to(dtype)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model.eval(), processor


def compare(model, processor, rows: list[dict], device: str, max_new_tokens: int) -> dict:
    from benchmarks.train_step import synchronize
    from helpers.evaluate import evaluate
    from helpers.published import published_generate

    synchronize(device)
    start = time.perf_counter()
    theirs = [published_generate(model, processor, row, max_new_tokens) for row in rows]
    synchronize(device)
    baseline = len(rows) / (time.perf_counter() - start)
    start = time.perf_counter()
    ours_result = evaluate(model, processor, rows, batch_size=BATCH_SIZE, max_new_tokens=max_new_tokens, progress=False)
    synchronize(device)
    ours = len(rows) / (time.perf_counter() - start)
    predictions = [p["prediction"] for p in ours_result.predictions]
    return {"rows": len(rows), "baseline": round(baseline, 2), "ours": round(ours, 2), "ratio": round(ours / baseline, 2),
            "same_predictions": sum(a == b for a, b in zip(theirs, predictions)), "examples": predictions[:2]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny model (CPU smoke test)")
    parser.add_argument("--rows", help="rows saved with --save-rows (default: the tiny dataset)")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--check-count", type=int, default=16, help="rows for the float32 agreement check")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--save-rows", help="write --count tiny-dataset rows to this .npz and stop")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.save_rows:
        save_rows(tiny_rows(args.count), args.save_rows)
        return {}
    rows = (load_rows(args.rows) if args.rows else tiny_rows(args.count))[:args.count]
    from benchmarks.train_step import software
    from helpers.hardware import pick_dtype

    on_gpu = args.device.startswith("cuda")
    dtype = pick_dtype() if on_gpu else torch.float32  # fp16 on a T4
    dtype_name = str(dtype).removeprefix("torch.")
    results = {"device": torch.cuda.get_device_name(0) if on_gpu else "CPU", "tiny": args.tiny,
               "batch_size": BATCH_SIZE, "max_new_tokens": args.max_new_tokens, "dtype": dtype_name, **software()}
    with tempfile.TemporaryDirectory() as folder:
        model, processor = build(args.tiny, args.device, dtype, folder)
        compare(model, processor, rows[:2], args.device, 2)  # warm-up: kernels, caches, allocator
        results[dtype_name] = compare(model, processor, rows, args.device, args.max_new_tokens)
        print(json.dumps(results), flush=True)
        if dtype != torch.float32:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            model.float()
            results["float32_check"] = compare(model, processor, rows[:args.check_count], args.device, args.max_new_tokens)
    check = results["float32_check"] if "float32_check" in results else results["float32"]
    results["identical_predictions_float32"] = check["same_predictions"] == check["rows"]
    print(json.dumps(results), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
