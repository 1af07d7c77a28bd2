"""CPU benchmarks in the tiny profile: ours against the published recipe's approach, side by side.

    .venv/bin/python benchmarks/run.py [--skip-notebooks]

Writes benchmarks/results/latest.json and latest.md (the table the README shows). Every "ours"
figure is checked equal in output to its baseline before it is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
EPOCHS = 3
BATCH = 8


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def batches(dataset, size):
    for start in range(0, len(dataset), size):
        yield [dataset[i] for i in range(start, min(start + size, len(dataset)))]


def data_pipeline(profile, splits, processor) -> dict:
    """Samples/s per epoch of turning rows into training batches, over a 3-epoch run."""
    from helpers.collator import VoxtralAudioCollator, precompute_features
    from helpers.published import published_collate

    train = splits["train"]
    baseline = []
    for _ in range(EPOCHS):  # the published way: base64 WAV + chat template for every batch, every epoch
        start = time.perf_counter()
        for rows in batches(train, BATCH):
            published_collate(processor, rows)
        baseline.append(len(train) / (time.perf_counter() - start))

    collator = VoxtralAudioCollator(processor)
    ours = []
    start = time.perf_counter()
    cached = precompute_features(train, processor, load_from_cache_file=False)  # the one-off cost lands in epoch 1
    for epoch in range(EPOCHS):
        if epoch:
            start = time.perf_counter()
        for rows in batches(cached, BATCH):
            collator(rows)
        ours.append(len(train) / (time.perf_counter() - start))

    rows = [train[i] for i in range(BATCH)]
    same = torch.equal(published_collate(processor, rows)["input_features"],
                       collator([cached[i] for i in range(BATCH)])["input_features"])
    cached.cleanup_cache_files()  # the benchmark's own copy (1.5 MB a row); training keeps its cache
    total = lambda rates: EPOCHS * len(train) / sum(len(train) / r for r in rates)  # noqa: E731
    return {"unit": "samples/s", "epochs": EPOCHS, "rows": len(train),
            "baseline_per_epoch": [round(r, 1) for r in baseline], "ours_per_epoch": [round(r, 1) for r in ours],
            "baseline": round(total(baseline), 1), "ours": round(total(ours), 1),
            "ratio": round(total(ours) / total(baseline), 2), "identical_features": same}


def evaluation(profile, splits, model, processor) -> dict:
    """End to end over the test split: prompts, features and greedy generation."""
    from helpers.evaluate import evaluate
    from helpers.published import published_generate

    test = splits["test"]
    start = time.perf_counter()
    theirs = [published_generate(model, processor, test[i], profile.max_new_tokens) for i in range(len(test))]
    baseline = len(test) / (time.perf_counter() - start)
    start = time.perf_counter()
    result = evaluate(model, processor, test, batch_size=profile.eval_batch_size,
                      max_new_tokens=profile.max_new_tokens, progress=False)
    ours = len(test) / (time.perf_counter() - start)
    return {"unit": "samples/s", "rows": len(test), "batch_size": profile.eval_batch_size,
            "baseline": round(baseline, 1), "ours": round(ours, 1), "ratio": round(ours / baseline, 2),
            "identical_predictions": [p["prediction"] for p in result.predictions] == theirs}


def notebooks() -> dict:
    """Wall time of each notebook, executed headless in the tiny profile."""
    import nbformat
    from nbclient import NotebookClient

    times = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(notebook, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        times[path.stem] = round(time.perf_counter() - start, 1)
        print(f"  {path.stem}: {times[path.stem]} s", flush=True)
    times["total"] = round(sum(times.values()), 1)
    return {"unit": "s", "per_notebook": times}


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Measured {results['date']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']}), tiny profile.", "",
             "| comparison | published approach | ours | ratio | same output |", "|---|---|---|---|---|"]
    d, e = results["data_pipeline"], results["evaluation"]
    lines.append(f"| data pipeline, 3 epochs ({d['rows']} rows) | {d['baseline']} samples/s "
                 f"(per epoch {d['baseline_per_epoch']}) | {d['ours']} samples/s (per epoch {d['ours_per_epoch']}) | "
                 f"{d['ratio']}x | {d['identical_features']} |")
    lines.append(f"| evaluation end to end ({e['rows']} rows) | {e['baseline']} samples/s (one at a time) | "
                 f"{e['ours']} samples/s (batch {e['batch_size']}) | {e['ratio']}x | {e['identical_predictions']} |")
    t = results["train_step_cpu_tiny"]
    if "tuned_over_published" in t:
        v = t["variants"]
        lines.append(f"| LoRA train step, tiny model on CPU (smoke test) | {v[0]['samples_per_s']} samples/s | "
                     f"{v[1]['samples_per_s']} samples/s | {t['tuned_over_published']}x | n/a (same data) |")
    lines.append("| LoRA train step, full-size model on GPU | not yet measured | not yet measured | | |")
    lines.append("| evaluation, full-size model on GPU, batch 16 | not yet measured | not yet measured | | |")
    if "notebooks" in results:
        per = results["notebooks"]["per_notebook"]
        lines += ["", "| notebook (tiny profile) | wall time |", "|---|---|"]
        lines += [f"| {name} | {seconds} s |" for name, seconds in per.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-notebooks", action="store_true")
    args = parser.parse_args(argv)
    os.environ["VOXTRAL_PROFILE"] = "tiny"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_step

    from helpers.data import load_splits
    from helpers.model import load_model_and_processor
    from helpers.profiles import get_profile

    profile = get_profile("tiny")
    splits = load_splits(profile)
    model, processor = load_model_and_processor(profile)
    results = {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
    print("data pipeline ...", flush=True)
    results["data_pipeline"] = data_pipeline(profile, splits, processor)
    print(json.dumps(results["data_pipeline"]), flush=True)
    print("evaluation ...", flush=True)
    results["evaluation"] = evaluation(profile, splits, model, processor)
    print(json.dumps(results["evaluation"]), flush=True)
    print("train step (tiny, CPU) ...", flush=True)
    results["train_step_cpu_tiny"] = train_step.main(["--device", "cpu", "--tiny", "--steps", "3"])
    results["train_step_gpu"] = "not yet measured: no GPU was available to this session"
    if not args.skip_notebooks:
        print("notebooks ...", flush=True)
        results["notebooks"] = notebooks()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (RESULTS / "latest.md").write_text(table)
    print("\n" + table + f"\nwritten: {RESULTS / 'latest.json'}")
    return results


if __name__ == "__main__":
    main()
