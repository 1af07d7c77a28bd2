"""CPU benchmarks in the tiny profile: ours against the published recipe's approach, side by side.

    .venv/bin/python -m benchmarks.run [--skip-notebooks]

Writes benchmarks/results/latest.json and latest.md (the table the README shows). Every "ours"
figure is checked equal in output to its baseline before it is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from benchmarks import train_step

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "benchmarks" / "results"
EPOCHS = 3
BATCH = 8


def machine() -> dict:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
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


GPU_FILES = {"train_step_gpu": "gpu_train_step.json", "evaluation_gpu": "gpu_evaluation.json"}


def gpu_results() -> dict:
    """The GPU benchmarks' latest results (`make bench-gpu` writes them), where a GPU has run them."""
    return {key: json.loads((RESULTS / name).read_text()) for key, name in GPU_FILES.items() if (RESULTS / name).exists()}


def gpu_rows(train: dict | None, evaluation: dict | None) -> list[str]:
    unmeasured = "not yet measured (`make bench-gpu` on a GPU)"
    rows = []
    if train and "tuned_over_published" in train:
        v = {variant["name"]: variant for variant in train["variants"]}
        published, tuned = v[train_step.PUBLISHED.name], v[train_step.TUNED.name]
        rows.append(f"| LoRA train step, full-size model, {train['device']}, {train['dtype']} | "
                    f"{published['samples_per_s']:.1f} samples/s (batch 2 x 8, checkpointing; "
                    f"peak {published['peak_memory_gb']:.1f} GiB, MFU {published['mfu']:.0%}) | "
                    f"{tuned['samples_per_s']:.1f} samples/s (batch 16; peak {tuned['peak_memory_gb']:.1f} GiB, "
                    f"MFU {tuned['mfu']:.0%}; "
                    f"3 epochs of 900 in {tuned['projected_3_epochs_900_samples_min']:.1f} min) | "
                    f"{train['tuned_over_published']}x | same update (tested on CPU) |")
        quantized = v.get(train_step.TUNED_4BIT.name, {})
        if "samples_per_s" in quantized:
            rows.append(f"| 4-bit LoRA train step (T4-sized), {train['device']} | | {quantized['samples_per_s']:.1f} samples/s "
                        f"(batch 8 x 2, checkpointing; peak {quantized['peak_memory_gb']:.1f} GiB) | | |")
    else:
        rows.append(f"| LoRA train step, full-size model on GPU | {unmeasured} | {unmeasured} | | |")
    if evaluation:
        dtype = evaluation["dtype"]
        e, check = evaluation[dtype], evaluation["float32_check"]
        rows.append(f"| evaluation, full-size model, {evaluation['device']}, {dtype} ({e['rows']} rows) | {e['baseline']} "
                    f"samples/s (one at a time) | {e['ours']} samples/s (batch {evaluation['batch_size']}) | {e['ratio']}x | "
                    f"float32: {check['same_predictions']}/{check['rows']} identical; "
                    f"{dtype}: {e['same_predictions']}/{e['rows']} |")
    else:
        rows.append(f"| evaluation, full-size model on GPU, batch 16 | {unmeasured} | {unmeasured} | | |")
    return rows


def markdown(results: dict) -> str:
    m = results["machine"]
    header = f"CPU rows: measured {results['date']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']}), tiny profile."
    gpu = [r for r in (results.get("train_step_gpu"), results.get("evaluation_gpu")) if r]
    if gpu:
        measured = {f"measured {r.get('date', '?')} on one {r['device']}, torch {r.get('torch', '?')}, "
                    "full-size architecture with random weights" for r in gpu}
        header += " GPU rows: " + "; ".join(sorted(measured)) + "."
    lines = [header, "",
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
        lines.append(f"| LoRA train step, tiny model on CPU (smoke test) | {v[0]['samples_per_s']:.1f} samples/s | "
                     f"{v[1]['samples_per_s']:.1f} samples/s | {t['tuned_over_published']}x | same update (tested) |")
    lines += gpu_rows(results.get("train_step_gpu"), results.get("evaluation_gpu"))
    if "notebooks" in results:
        per = results["notebooks"]["per_notebook"]
        lines += ["", "| notebook (tiny profile) | wall time |", "|---|---|"]
        lines += [f"| {name} | {seconds} s |" for name, seconds in per.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-notebooks", action="store_true")
    parser.add_argument("--table-only", action="store_true",
                        help="measure nothing: rewrite latest.md from latest.json and the GPU results (after make bench-gpu)")
    args = parser.parse_args(argv)
    if args.table_only:
        results = {**json.loads((RESULTS / "latest.json").read_text()), **gpu_results()}
        (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "latest.md").write_text(markdown(results))
        print(markdown(results))
        return results
    os.environ["VOXTRAL_PROFILE"] = "tiny"

    from helpers.data import load_splits
    from helpers.loading import load_model_and_processor
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
    results.update(gpu_results())
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
