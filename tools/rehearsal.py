"""Rehearse the `full` profile end to end against local stand-ins laid out like the Hub repos.

    python tools/rehearsal.py --size small --check      # CPU, CI: small stand-in model, 1000 MP3 rows
    python tools/rehearsal.py --size full --card native  # a GPU as it is (bf16 on 80 GB cards)
    python tools/rehearsal.py --size full --card t4      # the same GPU held to a T4: fp16, 4-bit, 15 GiB

The five notebooks run in order, each in a fresh kernel, exactly as a learner runs them with
`VOXTRAL_PROFILE=full`, except for the environment: `VOXTRAL_MODEL` and `VOXTRAL_DATASET` point at
the stand-ins (`tools.standin`) and `VOXTRAL_MAX_STEPS` shortens training. Per notebook it records
the wall time and the peak GPU memory, and writes them as JSON. `--check` compares the output of
every cell tagged `nbval-check-output` with the expected outputs stored for this rehearsal; `--store`
records them (after a deliberate change to a notebook).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script (tools/rehearsal.py): the stand-ins are `tools.standin`
    sys.path.insert(0, str(ROOT))

from helpers.profiles import cache_dir  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
EXPECTED = ROOT / "tests" / "expected" / "full_profile_small_standin.json"
CHECK_TAG = "nbval-check-output"  # the cell tag nbval compares outputs for
CARDS = {
    "native": {},  # the GPU as it is: its dtype, its memory, its training plan
    "t4": {"VOXTRAL_DTYPE": "float16", "VOXTRAL_GPU_MEMORY_GIB": "15"},  # fp16; 15 GiB makes it load in 4 bits
}
# Appended to each notebook's copy: what the kernel measured, read back from its output.
MEASURE_CELL = """\
import json as _json, torch as _torch
_trainer = globals().get("trainer")
_summary = next((e for e in reversed(_trainer.state.log_history) if "train_runtime" in e), None) if _trainer else None
print("REHEARSAL", _json.dumps({
    "peak_gib": _torch.cuda.max_memory_allocated() / 2**30 if _torch.cuda.is_available() else None,
    "training": {"steps": _trainer.state.global_step, "train_runtime_s": _summary["train_runtime"],
                 "seconds_per_step": _summary["train_runtime"] / max(1, _trainer.state.global_step),
                 "samples_per_second": _summary["train_samples_per_second"],
                 "micro_batch": _trainer.args.per_device_train_batch_size,
                 "accumulation": _trainer.args.gradient_accumulation_steps,
                 "checkpointing": bool(_trainer.args.activation_checkpointing)} if _summary else None}))"""


def checked_outputs(notebook) -> dict[str, str]:
    """The text each checked cell printed or returned, keyed by cell id."""
    outputs = {}
    for cell in notebook.cells:
        if cell.cell_type == "code" and CHECK_TAG in cell.metadata.get("tags", []):
            parts = []
            for output in cell.outputs:
                if output.get("output_type") == "stream" and output.get("name") == "stdout":
                    parts.append(output["text"])
                elif "data" in output:
                    parts.append(output["data"].get("text/plain", ""))
            # The stand-ins live in the tutorial's cache, whose path differs between machines.
            outputs[cell.id] = "".join(parts).replace(str(cache_dir()), "$VOXTRAL_TUTORIAL_CACHE")
    return outputs


def run(environment: dict[str, str], workdir: Path, notebooks=NOTEBOOKS, timeout: int = 3600) -> list[dict]:
    """Execute the notebooks in order, each in a fresh kernel, and measure them."""
    os.environ.update(environment)
    # The executed copies are read later, where a progress bar saved while it ran shows 0%.
    for variable in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(variable, "1")
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(MEASURE_CELL))
        start = time.perf_counter()
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(workdir)}}).execute()
        seconds = time.perf_counter() - start
        measured = json.loads(next(o["text"] for o in notebook.cells[-1].outputs
                                   if "REHEARSAL" in o.get("text", "")).split("REHEARSAL", 1)[1])
        notebook.cells.pop()
        (workdir / "executed").mkdir(exist_ok=True)
        nbformat.write(notebook, workdir / "executed" / path.name)  # to read what a learner would see
        peak = measured["peak_gib"]
        results.append({"notebook": path.stem, "seconds": round(seconds, 1),
                        "peak_gpu_gib": None if peak is None else round(peak, 2), "training": measured["training"],
                        "checked_outputs": checked_outputs(notebook)})
        memory = "-" if peak is None else f"{peak:.1f} GiB"
        print(f"{path.stem:<20} {seconds:7.1f} s   peak GPU memory {memory}", flush=True)
    return results


def device() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"device": f"CPU ({os.cpu_count()} cores)", "torch": torch.__version__}
    return {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("small", "full"), default="small",
                        help="stand-in model: small (CPU, seconds) or full (Voxtral-Mini-3B's size, random weights; a GPU)")
    parser.add_argument("--card", choices=sorted(CARDS), default="native",
                        help="native: the GPU as it is; t4: held to a T4's fp16 and 15 GiB (so 4-bit)")
    parser.add_argument("--rows", type=int, default=1000, help="rows in the stand-in dataset (Big Bench Audio has 1000)")
    parser.add_argument("--max-steps", type=int, default=8, help="training steps in notebook 03 (VOXTRAL_MAX_STEPS)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "outputs" / "rehearsal",
                        help="working directory of the notebooks (outputs land under it)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help=f"compare checked outputs with {EXPECTED.relative_to(ROOT)}")
    action.add_argument("--store", action="store_true", help=f"record checked outputs in {EXPECTED.relative_to(ROOT)}")
    arguments = parser.parse_args(argv)

    import torch

    from tools.standin import ensure_standins

    if arguments.size == "full" and not torch.cuda.is_available():
        parser.error("--size full is Voxtral-Mini-3B's size (4.7B parameters): it needs a CUDA GPU. Use --size small here.")

    started = time.perf_counter()
    standins = ensure_standins(size=arguments.size, rows=arguments.rows)
    print(f"stand-ins ready in {time.perf_counter() - started:.0f} s: {standins.model_dir}, {standins.dataset_dir}")
    outputs = arguments.workdir / "outputs"
    environment = {"VOXTRAL_PROFILE": "full", "VOXTRAL_MODEL": str(standins.model_dir),
                   "VOXTRAL_DATASET": str(standins.dataset_dir), "VOXTRAL_MAX_STEPS": str(arguments.max_steps),
                   "VOXTRAL_OUTPUTS": str(outputs), **CARDS[arguments.card]}
    notebooks = run(environment, arguments.workdir)
    report = {"size": arguments.size, "card": arguments.card, "rows": arguments.rows, "max_steps": arguments.max_steps,
              "environment": {k: v for k, v in environment.items() if k not in ("VOXTRAL_MODEL", "VOXTRAL_DATASET")},
              **device(), "date": time.strftime("%Y-%m-%d"),
              "training": next((n["training"] for n in notebooks if n["training"]), None),
              "notebooks": [{k: v for k, v in n.items() if k not in ("checked_outputs", "training")} for n in notebooks]}
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {arguments.json}")

    found = {n["notebook"]: n["checked_outputs"] for n in notebooks}
    if arguments.store:
        EXPECTED.parent.mkdir(parents=True, exist_ok=True)
        EXPECTED.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"stored the checked outputs in {EXPECTED}")
    if arguments.check:
        expected = json.loads(EXPECTED.read_text())
        differences = [(name, cell) for name in expected | found for cell in expected.get(name, {}) | found.get(name, {})
                       if expected.get(name, {}).get(cell) != found.get(name, {}).get(cell)]
        for name, cell in differences:
            print(f"DIFFERENT {name} cell {cell}:\n  expected {expected.get(name, {}).get(cell)!r}\n"
                  f"  found    {found.get(name, {}).get(cell)!r}")
        if differences:
            return 1
        print(f"checked outputs as expected in all {len(found)} notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
